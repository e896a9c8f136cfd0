"""bench/control_clients.py: many control-socket clients in one process.

    python3 bench/control_clients.py SOCKET CLIENTS PAUSE TALK DONE OUT

Opens CLIENTS connections to the control socket SOCKET and, on each, asks
`status` every PAUSE seconds (the clients are spread over the pause) while
the file TALK exists, until the file DONE exists; then waits up to 10 s for the last answers and
writes "answered failed silent" to OUT (silent: connections never answered). A request not answered with "ok":true
counts as failed. One process with one poll loop, so the load the clients
put on the machine is a small fraction of a core, not one process per
request: what the bench measures is the run answering, not the clients.
"""
import os
import selectors
import socket
import sys
import time

REQUEST = b'{"cmd":"status"}\n'


def main(path, clients, pause, talk, done, out):
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(clients):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.setblocking(False)
        c = {"sock": s, "buf": b"", "sent": 0, "ok": 0, "bad": 0,
             "next": time.monotonic() + pause * i / clients}
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)

    def read(c):
        data = c["sock"].recv(1 << 20)
        if not data:
            sel.unregister(c["sock"])
            return
        c["buf"] += data
        *lines, c["buf"] = c["buf"].split(b"\n")
        for line in lines:
            if b'"ok":true' in line:
                c["ok"] += 1
            else:
                c["bad"] += 1

    while not os.path.exists(done):
        now = time.monotonic()
        talking = os.path.exists(talk)
        for c in conns:
            if now >= c["next"]:
                if talking:
                    c["sock"].sendall(REQUEST)
                    c["sent"] += 1
                c["next"] += pause
        wake = min(c["next"] for c in conns)
        for key, _ in sel.select(max(0.0, min(wake - time.monotonic(), 0.05))):
            read(key.data)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(c["ok"] + c["bad"] < c["sent"] for c in conns):
        for key, _ in sel.select(0.1):
            read(key.data)
    answered = sum(c["ok"] for c in conns)
    failed = sum(c["sent"] - c["ok"] for c in conns)
    silent = sum(1 for c in conns if c["ok"] == 0)
    with open(out + ".tmp", "w") as f:
        f.write(f"{answered} {failed} {silent}\n")
    os.rename(out + ".tmp", out)


if __name__ == "__main__":
    p = sys.argv[1:]
    main(p[0], int(p[1]), float(p[2]), p[3], p[4], p[5])
