/*
 * orch.h - private interface between the files of orch.core.
 *
 * Two tiers: plumbing (wbuf, chan framing, proc set-up) returns 0 / -1 and
 * never touches Lua except where a function takes a lua_State; binding code
 * turns results into Lua values and errors. Only luaopen_orch_core is
 * exported from the shared object; everything declared here is hidden.
 *
 * One section per file, lowest first: a file calls only what is declared
 * above its own section; the loop reaches above itself only through its
 * before-block hooks and Lua callbacks.
 */
#ifndef ORCH_H
#define ORCH_H

#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <lua.h>
#include <lauxlib.h>
#include <ev.h>

#define ORCH_HIDDEN __attribute__((visibility("hidden")))

/* ---- spin.c: whether polling before blocking pays -----------------------
 * 1 while the runnable processes of the system (/proc/loadavg, read at most
 * every 2 ms) do not outnumber the cores: polling then takes no core from
 * anyone. */
ORCH_HIDDEN int spin_pays(void);

/* ---- wbuf.c: a growable byte buffer ------------------------------------
 * Owned by a userdata (or a module-level static) so that a Lua error raised
 * while it is being filled leaks nothing. */
typedef struct wbuf {
    char *data;
    size_t len; /* bytes used */
    size_t off; /* bytes already consumed from the front (readers/writers) */
    size_t cap;
} wbuf;

ORCH_HIDDEN int wbuf_reserve(wbuf *b, size_t extra); /* 0, or -1 (ENOMEM) */
/* Room for want more bytes, growing to no more than that (a frame that
 * announced its size). 0, or -1 (ENOMEM). */
ORCH_HIDDEN int wbuf_reserve_exact(wbuf *b, size_t want);
ORCH_HIDDEN void wbuf_compact(wbuf *b);                /* drop consumed bytes */
ORCH_HIDDEN void wbuf_reset(wbuf *b);                  /* len = off = 0; may shrink */
ORCH_HIDDEN void wbuf_free(wbuf *b);
/* A scratch buffer: pushes a new one (a userdata owning a wbuf), to be
 * upvalue 1 of a C function. In that function, take pushes its holder and
 * returns it emptied (a fresh one if it is busy: a nested call, or an
 * error left it so); give, holder at that index, frees it for the next
 * call once the encoding succeeded. */
ORCH_HIDDEN wbuf *wbuf_scratch_new(lua_State *L);
/* t[name] = fn, with a scratch buffer of its own as upvalue 1 (t on top). */
ORCH_HIDDEN void wbuf_scratch_fn(lua_State *L, lua_CFunction fn, const char *name);
ORCH_HIDDEN wbuf *wbuf_scratch_take(lua_State *L);
ORCH_HIDDEN void wbuf_scratch_give(lua_State *L, wbuf *b, int holder);

/* ---- exit.c: work done before the process ends ------------------------
 * fn runs once before this process ends: at exit(), or in core.die_by
 * before it raises the signal that ends the process. Hooks run in reverse
 * order of registration; registering one again does nothing; at most 4.
 * A hook touches no Lua and checks it runs in the process it acts for. */
typedef void (*exit_hook)(void);
ORCH_HIDDEN void exit_hook_add(exit_hook fn);
/* Runs (and forgets) the hooks: exit() and core.die_by call it. */
ORCH_HIDDEN void exit_hooks_run(void);

/* ---- array.c: a table's array part, read and written in place ----------
 * A slot of the array part is Lua 5.4's TValue; array_of gives a table's
 * slots (keys 1..*n) only where array_open found this Lua's tables laid
 * out as 5.4's, else NULL. *hash_empty (if asked): the table has no hash
 * part, so its keys are all in 1..*n. A slot pointer is good until Lua
 * code or an allocation may run; only integers are written. */
typedef struct array_slot {
    union {
        lua_Integer i;
        lua_Number n;
        void *p;
    } v;
    unsigned char tt;
} array_slot;
#define ARRAY_INT 0x03 /* an integer's tag (LUA_VNUMINT) */

static inline int array_slot_empty(const array_slot *s)
{
    return (s->tt & 0x0f) == 0; /* nil, empty or absent key */
}

static inline void array_slot_set_int(array_slot *s, lua_Integer v)
{
    s->v.i = v;
    s->tt = ARRAY_INT;
}

/* Checks the layout; registers array_in_place() and
 * set_array_in_place(on) in the table at the top. */
ORCH_HIDDEN void array_open(lua_State *L);
ORCH_HIDDEN array_slot *array_of(lua_State *L, int idx, size_t *n, int *hash_empty);

/* ---- wire_enc.c, wire_dec.c, wire.c: the value serializer --------------
 * Encodes Lua values (nil, boolean, integer, float, string, table with
 * shared references and cycles, function) into bytes (wire_enc.c);
 * decodes them with every read bounds-checked, since the bytes come from
 * another process (wire_dec.c). The two share the format's tags and
 * varints in wire.h and keep their Lua functions (core.encode...,
 * core.decode...), which wire.c registers. One encoder/decoder context
 * spans one frame, so a table that appears in two arguments of the same
 * frame stays one table on the other side. */
#define WIRE_FUNCTIONS 1 /* allow functions (parent -> child only) */
#define WIRE_MAXDEPTH 200 /* tables and functions nested deeper are refused */
#define WIRE_INLINE_REFS 8 /* refs remembered without a Lua table */

/* One step of the path to the value being encoded, kept only so that an
 * error can name where it happened (built as a string only on error). */
typedef struct wire_step {
    int kind;             /* S_INT, S_VAL, S_KEY, S_UPVAL in wire.h */
    int idx;              /* stack index of the key, for table keys */
    lua_Integer n;        /* array index */
    const char *name;     /* upvalue name */
} wire_step;

/* An integer run being written (wire.h's T_IRUN): where its count goes,
 * that count's width, the values so far and the last of them. */
typedef struct wire_run {
    size_t at, w, n;
    lua_Integer last;
} wire_run;

/* A long string an encoding leaves where it is instead of copying it
 * into its buffer: its n bytes at p belong at `at` (from b->off), before
 * the bytes written there. */
#define WIRE_EXTS 4 /* such strings in one encoding, at most */
typedef struct wire_ext {
    size_t at;
    const char *p;
    size_t n;
} wire_ext;

typedef struct wire_enc {
    lua_State *L;
    wbuf *b;    /* owned by a userdata: a raise leaks nothing */
    /* strings of ext_min bytes or more (0: none) are left where they are
     * (ext[], n_ext of them): whoever sets ext_min writes the frame out
     * while they are still alive (chan_enc_begin) */
    size_t ext_min;
    int n_ext;
    wire_ext ext[WIRE_EXTS];
    int ext_keep; /* stack index of a slot (nil at first) for a table of
                     those strings, 1..n_ext, made at the first; 0: none */
    int flags;
    int ctx;    /* absolute stack index of the context (seen tables...) */
    int nrefs;  /* tables/functions numbered so far */
    int depth;
    const char *root;                       /* path prefix for errors */
    const void *seen[WIRE_INLINE_REFS];     /* refs 1..8, by identity */
    size_t seen_at[WIRE_INLINE_REFS];       /* ...and where their tag is */
    wire_run run;           /* the open list's integer run */
    size_t list_n, list_k;  /* the open list's length, values written */
    wire_step path[WIRE_MAXDEPTH];
} wire_enc;

/* Pushes one context value onto the stack; wire_enc_end pops it. */
ORCH_HIDDEN void wire_enc_begin(wire_enc *e, lua_State *L, wbuf *b, int flags);
/* Appends the value at idx. A value that cannot cross raises a Lua error
 * naming its place from root: "args[2].conn: cannot send userdata". */
ORCH_HIDDEN void wire_enc_value(wire_enc *e, int idx, const char *root);
ORCH_HIDDEN void wire_enc_integer(wire_enc *e, lua_Integer n);
/* Appends p[0..n) as they are (no tag, no length): left where they are
 * when n reaches e->ext_min (with ext_keep 0: the caller keeps them). */
ORCH_HIDDEN void wire_enc_raw(wire_enc *e, const char *p, size_t n);
/* Appends a new array table holding t[i..j] of the table at idx, as if
 * that slice had been built and encoded (map's chunks, with no copy). */
ORCH_HIDDEN void wire_enc_slice(wire_enc *e, int idx, lua_Integer i, lua_Integer j,
                                const char *root);
/* A list written value by value, as wire_enc_slice writes one: begin with
 * its length n, then exactly n values (the value at idx, of this type,
 * each), then end.
 * A value that cannot cross is named root[k]. One list open at a time. */
ORCH_HIDDEN void wire_enc_list_begin(wire_enc *e, size_t n, const char *root);
ORCH_HIDDEN void wire_enc_list_add(wire_enc *e, int idx, int type);
/* The next n values: the integers of slots a[0..n) (all integers). */
ORCH_HIDDEN void wire_enc_list_ints(wire_enc *e, const array_slot *a, size_t n);
ORCH_HIDDEN void wire_enc_list_end(wire_enc *e);
/* Appends the upvalues of the Lua function at fidx: _ENV as a marker,
 * the others by value, named "upvalue 'name'" in errors. */
ORCH_HIDDEN void wire_enc_upvalues(wire_enc *e, int fidx);
ORCH_HIDDEN void wire_enc_end(wire_enc *e);

typedef struct wire_dec {
    lua_State *L;
    const char *data;
    size_t len, pos;
    size_t budget; /* bytes not yet claimed by a table's presize */
    int flags;
    int ctx;    /* absolute stack index of the context (shared values) */
    int nrefs;  /* tables/functions met so far */
    int depth;
    int fn_ref, fn_idx; /* wire_dec_upvalues' function: its ref, its index */
    size_t list_left, run_left; /* the open list's values left, in its run */
    char err[160]; /* "byte 17: truncated string" */
} wire_dec;

/* Pushes one context value; wire_dec_end removes it (values decoded
 * after it stay on the stack, in order). */
ORCH_HIDDEN void wire_dec_begin(wire_dec *d, lua_State *L, const char *data,
                                size_t len, int flags);
/* 0: one value pushed. -1: d->err says what and at which byte, nothing
 * pushed. Only memory errors raise. Functions are refused unless flags
 * has WIRE_FUNCTIONS. */
ORCH_HIDDEN int wire_dec_value(wire_dec *d);
ORCH_HIDDEN int wire_dec_integer(wire_dec *d, lua_Integer *n);
/* Sets the upvalues written by wire_enc_upvalues on the function at fidx
 * (_ENV becomes the globals). 0 or -1 as above. The function must stay at
 * fidx until the last value of the frame is decoded: references to it
 * are resolved from there. */
ORCH_HIDDEN int wire_dec_upvalues(wire_dec *d, int fidx);
/* The decoder's numbering so far, to go on with in another decoder
 * (wire_dec_resume): its context table (or nil) is pushed. */
ORCH_HIDDEN void wire_dec_state(wire_dec *d, int *nrefs, int *fn_ref);
/* As wire_dec_begin, going on with the numbering of a decoder whose
 * context table (or nil) is at ctx and whose function is at fn_idx (in
 * this decoder's stack frame): values may refer to what it decoded. */
ORCH_HIDDEN void wire_dec_resume(wire_dec *d, lua_State *L, const char *data, size_t len,
                                 int flags, int ctx, int nrefs, int fn_ref, int fn_idx);
/* A list (wire_enc_slice, wire_enc_list_*) read value by value: begin
 * sets *n, each next pushes one value, end checks the list is over and
 * was the last thing in the bytes. 0, or -1 with d->err (nothing pushed). */
ORCH_HIDDEN int wire_dec_list_begin(wire_dec *d, size_t *n);
ORCH_HIDDEN int wire_dec_list_next(wire_dec *d);
/* The next values while they are integers of a run, up to max, into the
 * slots a[0..): how many (0: take the next value with wire_dec_list_next). */
ORCH_HIDDEN size_t wire_dec_list_ints(wire_dec *d, array_slot *a, size_t max);
ORCH_HIDDEN int wire_dec_list_end(wire_dec *d);
ORCH_HIDDEN void wire_dec_end(wire_dec *d);

/* Pushes the Lua function at fidx dumped as bytecode (a string), with
 * debug information kept so tracebacks name lines. */
ORCH_HIDDEN void wire_dump_function(lua_State *L, int fidx);

/* Registers encode(v...) -> string and decode(s) -> v... in the table at
 * the top of the stack (specs and the Lua layer use them). */
ORCH_HIDDEN void wire_open(lua_State *L);

/* ---- the protocol between the parent and its children -----------------
 * A frame is a 4-byte little-endian payload length, one byte of message
 * type, then the payload: one wire context holding the message's fields.
 * A big frame's payload is in a memfd whose fd crosses the socket (chan.c,
 * docs/core.md "Frames").
 * Stop requests do not travel in frames: they are a realtime signal whose
 * value carries the task id and the level (stop_pack below). */
enum {
    /* parent -> child */
    MSG_TASK = 1,   /* id, fnid, [bytecode|nil, upvalues] or fn, nargs, args... */
    MSG_QUIT = 2,   /* finish what was sent, then exit 0 */
    MSG_REPLY = 4,  /* values answering the child's last MSG_CALL */
    /* either way */
    MSG_WAKE = 5,   /* no payload: a frame is on the lane (lane.c); never dispatched */
    /* child -> parent */
    MSG_RESULT = 10, /* id, values... */
    MSG_ERROR = 11,  /* id, kind, message, traceback, value */
    MSG_LOG = 12,    /* level, message */
    MSG_READY = 13,  /* a service says it is ready */
    MSG_CALL = 14,   /* a request the parent answers with MSG_REPLY */
    MSG_SEND = 15,   /* a one-way message for the child's owner */
    MSG_RETIRE = 16  /* reason: the worker leaves after the result before it;
                        no task sent after that result was started */
};

#define FRAME_HEADER 5
#define FRAME_MAX ((size_t)0x7fffffff)

/* Stop levels carried by the stop signal. Its value (an int) packs the
 * low 30 bits of the task id over the level's 2 bits; these two helpers
 * are the only place that knows. */
enum { STOP_ASK = 1, STOP_CANCEL = 2, STOP_TIMEOUT = 3 };
#define STOP_ID_MASK 0x3fffffffu

static inline int stop_pack(lua_Integer id, int level)
{
    return (int)(((unsigned)id & STOP_ID_MASK) << 2 | (unsigned)level);
}

/* The task id as a stop value carries it (a task's key in the child). */
static inline int stop_key(lua_Integer id)
{
    return (int)((unsigned)id & STOP_ID_MASK);
}

static inline void stop_unpack(int value, int *key, int *level)
{
    *key = (int)((unsigned)value >> 2);
    *level = value & 3;
}

/* ---- memfd.c: big payloads in sealed memfds, passed over a socket ------ */
/* A memfd holding the nv pieces v[] one after the other, sealed (write,
 * shrink, grow, seals); -1 with errno when one cannot be made (the caller
 * sends the bytes instead). */
ORCH_HIDDEN int memfd_from(const struct iovec *v, int nv);
/* Checks the received fd (a memfd sealed against writing and shrinking,
 * at least n bytes long), reads its first n bytes into a block of their
 * own, *buf (NULL for n = 0), and closes fd whatever happens. 0, or -1
 * with *why. */
ORCH_HIDDEN int memfd_read(int fd, size_t n, void **buf, const char **why);
/* Frees a payload memfd_read or memfd_read_shared read (NULL: none). */
ORCH_HIDDEN void memfd_payload_free(void *buf);
/* sendmsg of p[0..n) with fd attached (SCM_RIGHTS, MSG_NOSIGNAL): bytes
 * sent (the fd went with them when > 0), or -1 with errno. */
ORCH_HIDDEN ssize_t memfd_send_with(int sock, const char *p, size_t n, int fd, int flags);
/* fd on a byte of its own, blocking. 0, or -1 with errno. */
ORCH_HIDDEN int memfd_send(int sock, int fd);
/* recvmsg into p[0..n): the fds that came go to fds (at most max, the
 * others closed), *nfds counts them all (-1: lost, none free here).
 * Bytes read, 0 at EOF, -1. */
ORCH_HIDDEN ssize_t memfd_recv_with(int sock, char *p, size_t n, int flags, int *fds, int *nfds,
                                    int max);
/* The fd memfd_send sent, without blocking; -1 with *why if it is not
 * there (or not alone). */
ORCH_HIDDEN int memfd_recv(int sock, const char **why);

/* A channel's shared memfd, the writer's side: payloads are written over
 * the last one once the reader has let it go (memfd.c). fd -1: none. */
typedef struct memfd_shared {
    int fd;
    size_t size;  /* its length, the header's included */
    int busy;     /* a payload was written that the reader has not let go */
} memfd_shared;
#define MEMFD_SHARED_AT 64 /* where the payload starts in a shared memfd */
/* The nv pieces v[] (n bytes in all) into s, one after the other, s made
 * or resized as needed, and *send_fd a new fd of it for the reader: 0; or
 * -1 when the reader still holds the last payload, the process's budget
 * for shared memfds is spent or a call failed (the caller uses a sealed
 * memfd instead). */
ORCH_HIDDEN int memfd_shared_put(memfd_shared *s, const struct iovec *v, int nv, size_t n,
                                 int *send_fd);
/* Closes s. */
ORCH_HIDDEN void memfd_shared_close(memfd_shared *s);
/* s as closed, without closing its fd (another process's, or closed). */
ORCH_HIDDEN void memfd_shared_forget(memfd_shared *s);
/* In a fresh child, the shared memfds inherited closed: none held here. */
ORCH_HIDDEN void memfd_forked(void);
/* The reader: checks the shared memfd fd (a memfd of at least
 * MEMFD_SHARED_AT + n bytes), reads the payload into a block of its own
 * (*buf, as memfd_read), lets the writer write over it, and closes fd
 * whatever happens. 0, or -1 with *why. */
ORCH_HIDDEN int memfd_read_shared(int fd, size_t n, void **buf, const char **why);

/* ---- lane.c: a shared-memory path beside a channel's stream ------------
 * A pair of lanes (one each way) is mapped before the fork. The writer
 * puts whole frames while the reader is awake; the reader merges them with
 * what it reads from the fd by their `at`, the writer's fd byte count
 * when it put them (see lane.c). */
typedef struct lane lane;
/* n pairs in one mapping, the first returned (NULL when it cannot be
 * mapped); pair k of them is lane_pair_nth(first, k). */
ORCH_HIDDEN lane *lane_pairs(size_t n);
ORCH_HIDDEN lane *lane_pair_nth(lane *first, size_t k);
/* The pair is no longer used here; its mapping goes with its last pair. */
ORCH_HIDDEN void lane_pair_free(lane *pair);
/* In a fresh child: every pair inherited is unmapped but own (or NULL). */
ORCH_HIDDEN void lane_forked(lane *own);
ORCH_HIDDEN lane *lane_at(lane *pair, int k); /* lane k (0 or 1) of the pair */
/* The writer: whether the reader is awake (a hint); puts the bytes of v
 * as one record (0, or -1: no room); then whether the reader is still
 * awake (after a fence: if not, the writer wakes it through the fd). */
ORCH_HIDDEN int lane_awake(const lane *l);
ORCH_HIDDEN int lane_put(lane *l, uint64_t at, const struct iovec *v, int nv);
ORCH_HIDDEN int lane_still_awake(lane *l);
/* The reader: awake; about to sleep (returns whether records wait: then
 * it must not sleep); whether records wait. */
ORCH_HIDDEN void lane_wake(lane *l);
ORCH_HIDDEN int lane_sleep(lane *l);
ORCH_HIDDEN int lane_has(const lane *l);
/* The next record's at: 1, 0 (none), -1 (EPROTO: the lane makes no sense). */
ORCH_HIDDEN int lane_next_at(const lane *l, uint64_t *at);
/* Appends to in the records due once wire_in bytes were read from the fd.
 * Bytes appended, or -1 (EPROTO, ENOMEM). */
ORCH_HIDDEN ssize_t lane_take(lane *l, wbuf *in, uint64_t wire_in);
/* The fd bytes from..to were just read to the end of in: records due
 * inside them go in at their places. Bytes added, or -1 (EPROTO, ENOMEM). */
ORCH_HIDDEN ssize_t lane_place(lane *l, wbuf *in, uint64_t from, uint64_t to);

/* ---- chan.c: a framed endpoint (plumbing; chan_enc_* raise) -----------
 * Frames come in from rfd into `in`, go out from `out` to wfd. At most one
 * frame is open in `out` (being encoded, or left by an encode that
 * raised), and it never leaves; a frame encoded while one is open is made
 * aside and follows it (`later`). */
#define CHAN_FDS 16 /* big frames whose fd waits: in either direction */

typedef struct chan {
    int rfd, wfd;      /* -1 when closed */
    int sock;          /* rfd or wfd if it is a Unix socket (fds cross on it), or -1 */
    wbuf in, out;
    wbuf later;        /* whole frames made while a frame was open in out */
    size_t frame_at;   /* where the open frame starts in out, from out.off */
    int frame_open;
    size_t max_in;     /* payload limit of a frame read (FRAME_MAX) */
    size_t max_out;    /* payload limit of a frame made (FRAME_MAX) */
    /* big frames (payload in a memfd, see chan.c) */
    size_t big_min;    /* payloads from this size on go in a memfd; 0: never */
    int in_short;      /* the last chan_fill read less than it asked for */
    uint64_t out_sent; /* bytes of out written so far (chan_flush) */
    uint64_t out_end;  /* where the frame last closed in out ends, as out_sent
                          counts (0: it was made aside) */
    int in_fds[CHAN_FDS];  /* received ahead of their frames (sock == rfd) */
    int n_in_fds;
    struct { size_t ahead; int fd; } out_fds[CHAN_FDS]; /* to attach (sock == wfd) */
    int n_out_fds;
    int head;          /* HEAD_* in chan.c: what chan_next knows of in's head */
    size_t head_len;   /* its bytes in `in` */
    void *big;         /* the head's payload, read in (big frames) */
    size_t big_len;
    int share_out;     /* big frames out go in `shared` (the parent's end) */
    memfd_shared shared;
    const char *why;   /* why a big frame was refused (chan_next -2) */
    lane *rx, *tx;     /* lanes beside rfd and wfd (lane.c), or NULL */
    lane *lanes;       /* the pair they are in: the chan's to unmap, or NULL */
    uint64_t wire_in;  /* bytes read from rfd so far */
    uint64_t wire_out; /* bytes written to wfd so far */
    int out_cut;       /* wfd holds part of a frame: the lane waits */
    uint64_t lane_in;  /* bytes of frames taken from rx so far */
    uint64_t lane_out; /* bytes of frames put on tx so far */
} chan;

ORCH_HIDDEN void chan_init(chan *c, int rfd, int wfd);
/* Gives c the lanes of pair: tx = lane k, rx = the other; own: c unmaps
 * the pair when it is closed (the parent's end). */
ORCH_HIDDEN void chan_set_lanes(chan *c, lane *pair, int k, int own);
/* The reader is awake: frames may come on its lane until chan_sleep, and
 * it looks there before it sleeps. */
ORCH_HIDDEN void chan_wake(chan *c);
/* The reader is about to sleep on rfd: 1 when frames came on its lane
 * meanwhile (read them, do not sleep), else 0. */
ORCH_HIDDEN int chan_sleep(chan *c);
/* Closes both fds and frees `out` (unless a frame is open in it: an
 * encoder may still be writing there); `in` stays, with the frames not
 * yet consumed. chan_free frees everything. */
ORCH_HIDDEN void chan_close(chan *c);
ORCH_HIDDEN void chan_free(chan *c);
/* Closes both fds, the fds queued either way and the shared memfd. */
ORCH_HIDDEN void chan_close_fds(chan *c);
/* In a forked child: closes the fds of a channel inherited from the
 * parent (as chan_close_fds) without writing to c, whose memory the child
 * still shares with the parent (a write would copy its page). */
ORCH_HIDDEN void chan_close_inherited(const chan *c);
/* c as closed, its fds and lanes forgotten (closed or unmapped already,
 * by another process), its buffers left as they are. */
ORCH_HIDDEN void chan_forget(chan *c);
/* Opens a frame of this type at the end of out. 0, or -1 (ENOMEM). */
ORCH_HIDDEN int chan_frame_begin(chan *c, int type);
/* Closes the open frame (fills in its length); frames made aside follow
 * it. 0, or -1 when it is over max_out (then dropped). */
ORCH_HIDDEN int chan_frame_end(chan *c);
/* The same for a frame whose encoding left strings out of it (ext[],
 * n_ext: wire_enc's); they are in it once it is closed. -2: no memory
 * for them (the frame dropped). */
ORCH_HIDDEN int chan_frame_end_ext(chan *c, const wire_ext *ext, int n_ext);
/* A frame made aside while another is open in out (see chan.c's
 * invariants): begun in b (its header), then, whole, kept to follow the
 * open one. chan_aside_end: 0, -1 over max_out, -2 no memory (c as it
 * was either way; b is the caller's). */
ORCH_HIDDEN int chan_aside_begin(wbuf *b, int type);
ORCH_HIDDEN int chan_aside_end(chan *c, wbuf *b);
/* Drops the open frame, if any. */
ORCH_HIDDEN void chan_rollback(chan *c);
/* Bytes of whole frames not yet written (the open frame is not counted
 * and stays). */
ORCH_HIDDEN size_t chan_pending(chan *c);
/* If b[off..len) starts with a whole frame, sets *type, *payload and *plen
 * (the payload after the header) and returns 1; 0 if more bytes are
 * needed; -1 for a length over FRAME_MAX. b is a chan's `in` or any
 * buffer of frames. */
ORCH_HIDDEN int chan_peek(const wbuf *b, int *type, const char **payload, size_t *plen);
/* As chan_peek with a length limit of max; *type is set for -1 too. */
ORCH_HIDDEN int chan_peek_max(const wbuf *b, size_t max, int *type, const char **payload,
                              size_t *plen);
/* Marks the frame chan_peek found as read. Its bytes stay valid until the
 * buffer is next filled. */
ORCH_HIDDEN void chan_consume(wbuf *b, size_t plen);
/* The frame at the head of c->in, as chan_peek_max(&c->in, c->max_in),
 * a big frame's payload mapped from its memfd: 1, 0, -1 (a length over
 * max_in: out of sync), or -2 for a big frame refused (c->why says why;
 * *type is set). Asking again before chan_take gives the same answer. */
ORCH_HIDDEN int chan_next(chan *c, int *type, const char **payload, size_t *plen);
/* Marks the frame chan_next found (1 or -2) as read. Its payload stays
 * valid until the next chan_next, chan_fill or chan_free_in. */
ORCH_HIDDEN void chan_take(chan *c);
/* Frees `in` and what chan_next holds (a mapping, fds received). */
ORCH_HIDDEN void chan_free_in(chan *c);
/* Drops what is left in `in` unread, a big frame found but not taken
 * included (a frame taken keeps its payload: it may be being decoded). */
ORCH_HIDDEN void chan_drop_in(chan *c);
/* Drops what was not written of out (the peer is gone), fds included. */
ORCH_HIDDEN void chan_drop_out(chan *c);
/* Writes what it can of out without blocking (an open frame is dropped
 * first: the loop never flushes inside an encode). 0 when all is written,
 * 1 when the socket is full, -1 on error (errno). */
ORCH_HIDDEN int chan_flush(chan *c);
/* Writes all of out, blocking (the child), but for an open frame, which
 * stays. 0, or -1 (errno); the rest is emptied either way. */
ORCH_HIDDEN int chan_flush_blocking(chan *c);
/* Reads what is there (at most max bytes) into in; an empty `in` that grew
 * large is given back first, and a frame's announced size is reserved at
 * once only up to max_in. Returns bytes read, 0 at EOF, -1 with errno
 * (EAGAIN when nothing is there). */
ORCH_HIDDEN ssize_t chan_fill(chan *c, size_t max);
/* As chan_fill, but polls a socket for up to ns nanoseconds, never
 * blocking: -1 with EAGAIN when nothing came. */
ORCH_HIDDEN ssize_t chan_fill_spin(chan *c, long ns);
/* chan_enc.c, the binding: opens a frame and a wire context on it (raises
 * on ENOMEM);
 * chan_enc_end closes both (raises when the frame is over max_out). An
 * encode that raises in between leaves an open frame that never leaves.
 * With a frame already open, the frame is made aside (a buffer pushed on
 * the stack below the context, removed by chan_enc_end): safe to call from
 * a finalizer that runs inside another encode on the same chan. */
ORCH_HIDDEN void chan_enc_begin(lua_State *L, chan *c, int type, wire_enc *e, int flags);
ORCH_HIDDEN void chan_enc_end(lua_State *L, chan *c, wire_enc *e);
/* One frame of this type holding the values at first..top (popped),
 * named "value[k]" in errors; a refusal drops the frame at once. */
ORCH_HIDDEN void chan_enc_values(lua_State *L, chan *c, int type, int first, int flags);

/* ---- chunk.c: map's chunks, run in a worker ------------------------------ */
ORCH_HIDDEN void chunk_open(lua_State *L);
/* Pushes chunk_run(fn, items, ctx, nrefs, fn_ref) -> results, pid, seconds:
 * a chunk task's function (task_load), fn over each of the encoded items,
 * decoded in the numbering of their frame (wire_dec_state). */
ORCH_HIDDEN void chunk_push_runner(lua_State *L);

/* ---- task.c: a task's wire form ---------------------------------------- */
ORCH_HIDDEN void task_open(lua_State *L);
/* The state is closing: its tables of function ids are forgotten (a
 * state opened next makes its own). */
ORCH_HIDDEN void task_forget_state(void);
/* The fnid of the packed task at arg (raises if it is not one). */
ORCH_HIDDEN lua_Integer task_fnid(lua_State *L, int arg);
/* Encodes a TASK frame's fields into e: id, the packed task's (at arg)
 * fnid, its code (with_code: the first task of that function for this
 * worker) or nil, then the rest of the packed task. */
ORCH_HIDDEN void task_put(lua_State *L, wire_enc *e, lua_Integer id, int arg, int with_code);
/* Child: decodes a TASK frame's payload and pushes its function and
 * arguments; returns the argument count. Raises on a bad frame; *id is
 * set as soon as the id is read. */
ORCH_HIDDEN int task_load(lua_State *L, const char *payload, size_t plen, lua_Integer *id);
/* Replaces the "module.name" (or "module") at idx with require(module).name
 * (or require(module)); raises when that is not a function or callable. */
ORCH_HIDDEN void task_resolve(lua_State *L, int idx);

/* ---- loop.c: the one libev loop and calls into Lua --------------------- */
ORCH_HIDDEN struct ev_loop *loop_get(void);
/* The thread that is inside core.step(): the one callbacks run on. */
ORCH_HIDDEN lua_State *loop_state(void);
/* Calls the function below nargs arguments on the stack in protected mode
 * with a traceback. On error, keeps the error, breaks out of the loop and
 * returns -1; loop_step raises it again once ev_run has returned. */
ORCH_HIDDEN int loop_call(lua_State *L, int nargs);
/* fn runs each time the loop is about to block (once per turn), before
 * it polls; registering it again does nothing. At most 4 hooks. */
typedef void (*loop_hook)(void);
ORCH_HIDDEN void loop_on_before_block(loop_hook fn);
/* fn reads, without polling the loop, where the event a step waits for
 * most likely comes from (conn.c: the child last handed a frame it was
 * idle for); a step's spin calls it between its turns of the loop. One
 * such function; registering another replaces it. */
ORCH_HIDDEN void loop_on_spin(loop_hook fn);
/* fn runs before a step blocks, and may read (call back into Lua): if it
 * did, the step does not block. One such function. */
ORCH_HIDDEN void loop_on_sleep(loop_hook fn);
/* The number of seconds at arg: raises for NaN and negative ones. */
ORCH_HIDDEN lua_Number loop_check_seconds(lua_State *L, int arg);
/* Seconds on the monotonic clock (core.now): for durations and deadlines,
 * never moved by a change of the time of day. */
ORCH_HIDDEN double loop_clock(void);
/* Starts w (set to fire `after` seconds on) counting from now: libev
 * counts from the latest turn of the loop, which the Lua code run since
 * may have left seconds behind. */
ORCH_HIDDEN void loop_timer_start(ev_timer *w);
ORCH_HIDDEN void loop_open(lua_State *L);
/* In a fresh child, once the parent's signal watchers are stopped:
 * disarms the parent's timers and gives the child a loop of its own, so
 * a task or service can run a pool or supervisor. */
ORCH_HIDDEN void loop_child_reset(lua_State *L);
/* The state L is closing: its armed timers are disarmed (their libev
 * watchers would outlive their memory) and a kept callback error goes. */
ORCH_HIDDEN void loop_forget_state(lua_State *L);

/* ---- sig.c: signals ------------------------------------------------------ */
ORCH_HIDDEN void sig_open(lua_State *L);
/* The state is closing: orch's handlers go, the signals get their
 * default dispositions back. */
ORCH_HIDDEN void sig_forget_state(void);
ORCH_HIDDEN int sig_stop_signal(void);           /* the realtime stop signal */
/* Around fork: the stop signal stays blocked (pending, never lost) until
 * the child has its handler; the parent restores its mask with *old. */
ORCH_HIDDEN void sig_block_stop(sigset_t *old);
ORCH_HIDDEN void sig_restore_mask(const sigset_t *old);
/* In a fresh child: the parent's signal watchers stopped, job-wide
 * signals become no-ops, the rest default, the mask empty but for the
 * stop signal; parent death kills the child and its process group. */
ORCH_HIDDEN void sig_child_setup(pid_t parent);
/* In a child: handler takes the stop signal from now on (SA_SIGINFO), and
 * a request that came before it is delivered. */
typedef void (*sig_stop_handler)(int sig, siginfo_t *si, void *uc);
ORCH_HIDDEN void sig_child_accept_stop(sig_stop_handler handler);
/* A worker keeps its mask between tasks: save it once, restore it after
 * each task, with the stop and parent-death dispositions if a task
 * changed them. */
ORCH_HIDDEN void sig_child_save(sigset_t *mask);
ORCH_HIDDEN void sig_child_restore(const sigset_t *mask);

/* ---- alloc.c: a child's allocator -------------------------------------- */
/* In a fresh child: small Lua objects come from then on from a slab of the
 * child's own instead of from free chunks in pages shared with the parent. */
ORCH_HIDDEN void alloc_child_init(lua_State *L);

/* ---- heap.c: the C heap's fresh pages faulted in at once ---------------- */
/* After an allocation from the C heap: pages the heap grew by since the
 * last call are populated in one system call. */
ORCH_HIDDEN void heap_grown(void);

/* ---- alloc_big.c: big blocks in huge pages, kept for reuse ------------- */
/* Wraps the state's allocator (once per process): blocks of 2 MiB or more
 * are mappings of their own, and freed ones are kept a while for reuse. */
ORCH_HIDDEN void alloc_big_init(lua_State *L);
/* In a forked child: the kept blocks (the parent's) go, and inherited
 * blocks are never kept. */
ORCH_HIDDEN void alloc_big_forked(void);
/* A block of at least n bytes for C's own use (a big frame's payload,
 * read in): a kept one when one fits, else a new mapping; NULL if none
 * can be made. Freed by alloc_big_block_free, which keeps it for reuse. */
ORCH_HIDDEN void *alloc_big_block(size_t n);
ORCH_HIDDEN void alloc_big_block_free(void *p);
/* How many big blocks have been handed out so far (to Lua or C). */
/* A value of n bytes is about to be made in L (a decoder's big string).
 * Lua's collector paces itself by bytes allocated, so a dead big value
 * waits for the next cycle, and a big value arriving every round trip
 * would take fresh pages each time. So when no kept block fits n, some
 * big value is live in a state, and the rest of L's heap is small (a
 * full collection then costs less than fresh pages of n bytes), L is
 * collected first: a dead big value's block is then kept for this one.
 * Nothing is done while L's collector is stopped. */
ORCH_HIDDEN void alloc_big_room(lua_State *L, size_t n);
ORCH_HIDDEN unsigned long alloc_big_made(void);
typedef struct alloc_big_counts {
    unsigned long made, mapped; /* blocks handed out; of those, new mappings */
    size_t kept, kept_bytes;    /* freed blocks kept now */
} alloc_big_counts;
ORCH_HIDDEN void alloc_big_stats(alloc_big_counts *c);
/* Seconds until the oldest kept block is due to go (-1: none kept);
 * alloc_big_expire lets go of those due, alloc_big_trim of all. */
ORCH_HIDDEN double alloc_big_expiry(void);
ORCH_HIDDEN void alloc_big_expire(void);
ORCH_HIDDEN void alloc_big_trim(void);

/* ---- limits.c: a worker's resource limits (plumbing) ------------------- */
typedef struct worker_limits {
    long long cpu;          /* seconds of CPU a task may use, 0: none */
    long long memory;       /* bytes of address space the worker may add */
    long long files;        /* open files (RLIMIT_NOFILE) */
    long long processes;    /* processes of the user (RLIMIT_NPROC) */
    long long max_resident; /* a worker above it after a task is replaced */
} worker_limits;

/* In a worker, before its first task: setrlimit for files, processes and
 * memory; remembers the others. 0, or -1 with err filled. */
ORCH_HIDDEN int limits_apply(const worker_limits *l, char *err, size_t n);
/* Before each task: its CPU budget starts (a no-op without one). */
ORCH_HIDDEN void limits_task_start(void);
/* After a task: 1 when the resident set is above max_resident. */
ORCH_HIDDEN int limits_over_memory(void);
/* The address-space limit in bytes, 0 when there is none. */
ORCH_HIDDEN long long limits_memory(void);

/* ---- dispatch.c: a child's frames handed to Lua ------------------------ */
/* Decodes every whole frame in c->in (consuming it) for on_message, user
 * value uv of the proc at pidx: on_message(proc, type, values...), a run
 * of RESULT frames as on_message(proc, RESULT, batch, n), a frame that
 * does not decode (for any reason, a memory error included: decoding is
 * protected) as on_message(proc, 0, why, type). 0, or -1 after a frame
 * whose length is over c->max_in: the rest of `in` is dropped, the
 * stream is out of sync. */
ORCH_HIDDEN int dispatch_frames(lua_State *L, chan *c, int pidx, int uv);

/* ---- conn.c: the parent's end of a child's channel, on the loop ---------- */
typedef struct conn {
    chan ch;           /* rfd: the parent's end of the pipe, wfd: of the socket */
    ev_io rio, wio;
    int holder;        /* registry ref of the userdata the conn lives in */
    int uv;            /* the holder's user value slot of on_message */
    int queued;        /* on the list of conns written before the loop blocks */
    struct conn *next_queued;
    int reading;       /* conn_read calls under way */
    int free_in;       /* free ch.in once they return */
} conn;

/* Closed (fds -1) and on no list. */
ORCH_HIDDEN void conn_init(conn *c);
/* With its fds in c->ch: makes them non-blocking and starts reading.
 * Frames read go to dispatch_frames(holder, uv). */
ORCH_HIDDEN void conn_start(conn *c, int holder, int uv);
/* Frames were added to c->ch.out: write them before the loop blocks. */
ORCH_HIDDEN void conn_queued(conn *c);
/* The same for a frame the child is idle for: written now when it is the
 * first of the turn on c (the later ones wait for the end of the turn). */
ORCH_HIDDEN void conn_queued_now(conn *c);
/* Reads (all there is with drain, else a turn's budget) and dispatches,
 * the holder at hidx. 0, or -1 once the channel is at its end (closed:
 * EOF, an error, or a frame over ch.max_in). A drained ch.in that grew
 * large is given back. */
ORCH_HIDDEN int conn_read(lua_State *L, conn *c, int hidx, int drain);
/* Stops watching, closes the fds, drops what was not written; ch.in stays.
 * Idempotent. */
ORCH_HIDDEN void conn_close(conn *c);
/* conn_close, and ch.in dropped and freed (once the reads under way have
 * returned: one of its frames may be being decoded). */
ORCH_HIDDEN void conn_free(conn *c);
/* In a fresh child: forgets the parent's queued list and hot conn. */
ORCH_HIDDEN void conn_forget_all(void);

/* ---- worker.c: the child's side ---------------------------------------- */
ORCH_HIDDEN void worker_open(lua_State *L);
/* Runs in a fresh child with its ends of the channel (it reads frames
 * from in, writes frames to out): takes the stop signal, runs the
 * function at fnidx; never returns. */
ORCH_HIDDEN void worker_child_main(lua_State *L, int in, int out, lane *lanes, int fnidx);

/* ---- proc.c: child processes --------------------------------------------- */
ORCH_HIDDEN void proc_open(lua_State *L);

/* ---- sha256.c: SHA-256 and HMAC-SHA256 (signed tasks) ------------------ */
#define SHA256_SIZE 32
typedef struct sha256_ctx {
    uint32_t h[8];
    uint64_t bytes;          /* message length so far */
    unsigned char buf[64];   /* the block being filled */
} sha256_ctx;
ORCH_HIDDEN void sha256_init(sha256_ctx *c);
ORCH_HIDDEN void sha256_update(sha256_ctx *c, const void *data, size_t n);
ORCH_HIDDEN void sha256_final(sha256_ctx *c, unsigned char out[SHA256_SIZE]);
ORCH_HIDDEN void hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                             unsigned char out[SHA256_SIZE]);
/* Registers sha256(msg) and hmac_sha256(key, msg) (hex digests). */
ORCH_HIDDEN void sha256_open(lua_State *L);

/* ---- joblog.c: a job log's lines ----------------------------------------- */
/* Registers joblog_done(first, list, from, n, mid) -> the lines of n done items. */
ORCH_HIDDEN void joblog_open(lua_State *L);

/* ---- redis.c: an asynchronous Redis client on the loop (hiredis) ------- */
/* Registers redis_connect{...} -> conn in the table at the top of the stack. */
ORCH_HIDDEN void redis_open(lua_State *L);
/* The state is closing: its table of live connections is forgotten. */
ORCH_HIDDEN void redis_forget_state(void);
/* ---- control_client.c: the control socket's client -----------------------
 * core.ctl_connect (the blocking client of orch ctl, orch top and the
 * stale-socket probe) and core.ctl_sockets (the sockets in a directory). */
ORCH_HIDDEN void control_client_open(lua_State *L);
/* Shared with the server: a's sun_path = path; 0, or -1 (ENAMETOOLONG). */
struct sockaddr_un;
ORCH_HIDDEN int ctl_fill_addr(struct sockaddr_un *a, const char *path);
/* Pushes nil, "what: strerror(errno)", the errno's name ("ECONNREFUSED",
 * "ENOENT", "EADDRINUSE", "EACCES", else "EIO"); returns 3. */
ORCH_HIDDEN int ctl_errno_result(lua_State *L, const char *what);

/* ---- control.c: the control socket's server, on the loop ------------------
 * core.ctl_listen (a Unix socket on the loop: same-uid peers only, line
 * framing with a size limit, non-blocking per-connection buffers), the
 * per-user directory, and a process's age for status reports. Its
 * sockets are removed before the process ends (an exit hook). */
ORCH_HIDDEN void control_open(lua_State *L);

/* ---- tty.c: raw keys and the size of a terminal (orch top) --------------- */
ORCH_HIDDEN void tty_open(lua_State *L);

#endif
