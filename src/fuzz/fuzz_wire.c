/*
 * fuzz_wire.c - libFuzzer target over the value decoder (wire_dec.c), which
 * reads what a worker sends: bytes no one vouches for.
 *
 * Each input is decoded as core.decode decodes it (wire_dec_value until
 * the bytes run out, functions refused: the parent's side), then as
 * core.decode_into's list, then as a chunk's list of items read value by
 * value (wire_dec_list_*, as chunk.c reads it, functions refused). Tables
 * are filled in place where array.c allows, as in orch.core. A crash, a sanitizer report, or a decode that
 * grows the Lua heap by more than AMPLIFY_MAX times the input (plus a
 * fixed allowance) aborts, and libFuzzer saves the input; spec/fuzz/wire/
 * keeps such inputs, replayed by spec/04-fuzz_replay_spec.lua.
 *
 * Built by `make fuzz` with the objects of wire*.c and wbuf.c and the
 * system liblua5.4; not part of orch.core. One file per target: the
 * frame reader (chan.c) gets its own fuzz_<name>.c beside this one, built
 * and run by the same Makefile rule (see FUZZ_TARGETS) with its own seeds
 * (seeds.lua <name>) and reproducers (spec/fuzz/<name>/).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lualib.h>

#include "../orch.h"

#define AMPLIFY_MAX 64
#define AMPLIFY_SLACK (16 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The Lua heap, counted: its size now and its peak since the last reset. */
static size_t heap_now, heap_peak;

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    if (ptr == NULL)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        heap_now -= osize;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p) {
        heap_now = heap_now - osize + nsize;
        if (heap_now > heap_peak)
            heap_peak = heap_now;
    }
    return p;
}

/* Protected: decodes the string at 1 as core.decode does, the values
 * pushed and dropped. Returns 0 decoded, 1 refused. */
static int decode_values(lua_State *L)
{
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    wire_dec d;
    int bad = 0;
    wire_dec_begin(&d, L, s, len, 0);
    while (d.pos < d.len && !bad) {
        bad = wire_dec_value(&d) != 0;
        if (!bad && d.err[0] != '\0')
            abort(); /* success leaves no error behind */
    }
    if (bad && d.err[0] == '\0')
        abort(); /* a refusal always says why */
    wire_dec_end(&d);
    lua_pushinteger(L, bad);
    return 1;
}

/* Protected: reads the string at 1 as a list, value by value. */
static int decode_list(lua_State *L)
{
    size_t len, n;
    const char *s = lua_tolstring(L, 1, &len);
    wire_dec d;
    wire_dec_begin(&d, L, s, len, 0);
    int bad = wire_dec_list_begin(&d, &n) != 0;
    for (size_t k = 0; k < n && !bad; k++) {
        int top = lua_gettop(L);
        bad = wire_dec_list_next(&d) != 0;
        if (!bad && lua_gettop(L) != top + 1)
            abort(); /* one value a step */
        lua_settop(L, top);
    }
    bad = bad || wire_dec_list_end(&d) != 0;
    if (bad && d.err[0] == '\0')
        abort();
    wire_dec_end(&d);
    return 0;
}

static lua_State *fuzz_state(void)
{
    static lua_State *L;
    if (L)
        return L;
    L = lua_newstate(counting_alloc, NULL);
    if (!L)
        abort();
    luaL_openlibs(L);
    lua_newtable(L);
    array_open(L);
    wire_open(L); /* decode_into, from the module table it fills */
    lua_getfield(L, -1, "decode_into");
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.decode_into");
    lua_pop(L, 1);
    return L;
}

/* Calls the function below its nargs arguments, protected, from a
 * collected heap, and aborts if the heap grew by more than the input
 * allows. A memory error is a finding too (the heap is nowhere near a
 * real limit here); any other error is an expected refusal. */
static void run(lua_State *L, int nargs, size_t size)
{
    lua_gc(L, LUA_GCCOLLECT);
    size_t base = heap_now;
    heap_peak = heap_now;
    int rc = lua_pcall(L, nargs, 0, 0);
    size_t grown = heap_peak - base;
    if (rc == LUA_ERRMEM) {
        fprintf(stderr, "fuzz_wire: out of memory decoding\n");
        abort();
    }
    if (grown > AMPLIFY_MAX * size + AMPLIFY_SLACK) {
        fprintf(stderr, "fuzz_wire: %zu bytes grew the Lua heap by %zu\n", size, grown);
        abort();
    }
    lua_settop(L, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = fuzz_state();
    lua_settop(L, 0);

    lua_pushcfunction(L, decode_values);
    lua_pushlstring(L, (const char *)data, size);
    run(L, 1, size);

    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.decode_into");
    lua_pushlstring(L, (const char *)data, size);
    lua_newtable(L);
    lua_pushinteger(L, 1);
    run(L, 3, size);

    lua_pushcfunction(L, decode_list);
    lua_pushlstring(L, (const char *)data, size);
    run(L, 1, size);
    return 0;
}
