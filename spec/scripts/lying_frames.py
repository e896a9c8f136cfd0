"""A lying child for spec/49-big_frames_spec.lua: run by an orch child
(os.execute), it takes that child's ends of its channel (its Unix socket
and the write end of its frame pipe, with pidfd_getfd) and sends the
parent one big frame that lies in the way KIND says, then a plain frame.

  python3 lying_frames.py KIND TYPE PAYLOAD_HEX AFTER_HEX

A big frame: a 4-byte length of 0x80000008, the type byte, the payload's
length (8 bytes); the payload is in a memfd whose fd comes first on the
socket, on a byte 'F' of its own (chan.c). PAYLOAD_HEX is what the memfd
holds for KIND "good"; AFTER_HEX the payload of the plain frame after it.
KIND "shared" sends the form only the parent may send (0x80000009, the
payload at byte 64 of an unsealed memfd).
"""
import ctypes
import os
import socket
import struct
import sys

SYS_PIDFD_GETFD = 438
F_ADD_SEALS, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 1033, 2, 4, 8


def links(pid):
    """fd -> (link, access mode) of a process's fds above 2."""
    out = {}
    for name in os.listdir("/proc/%d/fd" % pid):
        fd = int(name)
        try:
            link = os.readlink("/proc/%d/fd/%d" % (pid, fd))
            with open("/proc/%d/fdinfo/%d" % (pid, fd)) as f:
                flags = int([ln for ln in f if ln.startswith("flags:")][0].split()[1], 8)
        except OSError:
            continue
        if fd > 2:
            out[fd] = (link, flags & 3)
    return out


def channel_fds(pid):
    """The child's socket, and its frame pipe: the pipe it writes whose
    other end only its parent (orch) holds, for reading."""
    parent = links(int(open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[1]))
    read_there = {l for l, m in parent.values() if m == 0} - {l for l, m in parent.values() if m != 0}
    sock = pipe = None
    for fd, (link, mode) in links(pid).items():
        if link.startswith("socket:"):
            sock = fd
        elif link.startswith("pipe:") and mode == 1 and link in read_there:
            pipe = fd
    return sock, pipe


def grab(pid, fd):
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    got = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if got < 0:
        raise OSError(ctypes.get_errno(), "pidfd_getfd")
    os.close(pidfd)
    return got


def memfd(data, seals):
    import fcntl
    fd = os.memfd_create("lying", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    if seals:
        fcntl.fcntl(fd, F_ADD_SEALS, seals)
    return fd


def main():
    kind, ftype, payload, after = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), \
        bytes.fromhex(sys.argv[4])
    ppid = os.getppid()
    sfd, pfd = channel_fds(ppid)
    sock = socket.socket(fileno=grab(ppid, sfd))
    pipe = grab(ppid, pfd)
    sealed = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE
    form = 0x80000008
    size = len(payload)
    fds = []
    if kind == "good":
        fds = [memfd(payload, sealed)]
    elif kind == "unsealed":
        fds = [memfd(payload, 0)]
    elif kind == "short":
        fds = [memfd(payload[: size // 2], sealed)]
    elif kind == "notmemfd":
        fds = [os.open("/dev/null", os.O_RDONLY)]
    elif kind == "file":
        fds = [os.open(sys.argv[0], os.O_RDONLY)]
    elif kind == "two":
        fds = [memfd(payload, sealed), memfd(payload, sealed)]
    elif kind == "huge":
        size = 1 << 40
    elif kind == "shared":
        fds, form = [memfd(bytes(64) + payload, 0)], 0x80000009
    if fds:
        socket.send_fds(sock, [b"F"], fds)
        for fd in fds:
            os.close(fd)
    os.write(pipe, struct.pack("<IBQ", form, ftype, size))
    os.write(pipe, struct.pack("<IB", len(after), ftype) + after)


main()
