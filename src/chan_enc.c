/*
 * chan_enc.c - the binding that encodes Lua values into a channel's frame
 * (chan.c is the plumbing under it): a frame and a wire context opened
 * together and closed together, and the errors a user meets, raised: a
 * frame over max_message, no memory for one. The values an encoder is
 * given stay on the Lua stack until chan_enc_end, which lets the encoder
 * leave long strings where they are (wire_enc's ext) for a big frame.
 */
#include <stdio.h>

#include "orch.h"

static void refuse_size(lua_State *L, chan *c, size_t n)
{
    if (c->max_out < FRAME_MAX)
        luaL_error(L, "orch: a message of %I bytes is over the limit of %I bytes (max_message)",
                   (lua_Integer)n, (lua_Integer)c->max_out);
    luaL_error(L, "orch: a message of %I bytes is over the limit of 2 GiB", (lua_Integer)n);
}

void chan_enc_begin(lua_State *L, chan *c, int type, wire_enc *e, int flags)
{
    wbuf *b = &c->out;
    if (c->frame_open) {
        /* made aside (chan.c's invariants), in a buffer the stack owns */
        b = wbuf_scratch_new(L);
        if (chan_aside_begin(b, type) < 0)
            luaL_error(L, "orch: not enough memory for a frame");
    } else if (chan_frame_begin(c, type) < 0) {
        luaL_error(L, "orch: not enough memory for a frame");
    }
    wire_enc_begin(e, L, b, flags);
    if (b == &c->out && c->big_min > 0 && c->sock >= 0)
        e->ext_min = c->big_min; /* the values stay on the stack till chan_enc_end */
}

void chan_enc_end(lua_State *L, chan *c, wire_enc *e)
{
    wbuf *b = e->b;
    int aside = e->ctx - 1; /* the buffer made aside, if any */
    wire_enc_end(e);
    if (b == &c->out) {
        if (!c->frame_open) { /* the channel was closed under the encoder */
            c->out.len = c->out.off = 0;
            return;
        }
        size_t n = b->len - b->off - c->frame_at - FRAME_HEADER;
        for (int k = 0; k < e->n_ext; k++)
            n += e->ext[k].n;
        int rc = chan_frame_end_ext(c, e->ext, e->n_ext);
        if (rc == -2)
            luaL_error(L, "orch: not enough memory for a frame");
        if (rc < 0)
            refuse_size(L, c, n);
        return;
    }
    int rc = chan_aside_end(c, b);
    if (rc == -2)
        luaL_error(L, "orch: not enough memory for a frame");
    if (rc < 0)
        refuse_size(L, c, b->len - FRAME_HEADER);
    wbuf_free(b);
    lua_remove(L, aside);
}

/* enc_values(args, values...): chan_enc_values' encoding, run protected. */
typedef struct enc_args {
    chan *c;
    int type, flags;
} enc_args;

static int enc_values(lua_State *L)
{
    enc_args *a = lua_touserdata(L, 1);
    int n = lua_gettop(L);
    wire_enc e;
    chan_enc_begin(L, a->c, a->type, &e, a->flags);
    char root[32];
    for (int i = 2; i <= n; i++) {
        snprintf(root, sizeof root, "value[%d]", i - 1);
        wire_enc_value(&e, i, root);
    }
    chan_enc_end(L, a->c, &e);
    return 0;
}

/* Values refused are an ordinary error here (a message the caller built),
 * so a refusal drops its own frame at once rather than leave it open. */
void chan_enc_values(lua_State *L, chan *c, int type, int first, int flags)
{
    enc_args a = {c, type, flags};
    int own = !c->frame_open;
    int n = lua_gettop(L) - first + 1;
    lua_pushcfunction(L, enc_values);
    lua_pushlightuserdata(L, &a);
    lua_rotate(L, first, 2);
    if (lua_pcall(L, n + 1, 0, 0) != LUA_OK) {
        if (own)
            chan_rollback(c);
        lua_error(L);
    }
}
