# orch - build, test and run. Every target that needs the toolchain first
# installs what is missing from Debian's packages (make deps; make lint
# installs luacheck the same way). install and uninstall never reach
# the network: `make build install` builds first if needed.

LUA        ?= lua5.4
LUA_INCDIR ?= /usr/include/lua5.4
LIBEV_INCDIR ?= /usr/include
LIBEV_LIBDIR ?= /usr/lib/x86_64-linux-gnu
CC         ?= cc
OPT        ?= -O2 -g
WARN       = -Wall -Wextra -Wshadow -Wmissing-prototypes -Werror
CFLAGS     ?= $(OPT)
ALL_CFLAGS = -std=c99 -D_GNU_SOURCE -fPIC -fvisibility=hidden $(WARN) \
             -I$(LUA_INCDIR) -I$(LIBEV_INCDIR) $(CFLAGS)
LDFLAGS    ?=
LIBS       = -L$(LIBEV_LIBDIR) -lev -lhiredis

BUILD      = build
SRCS       = $(wildcard src/*.c)
HDRS       = $(wildcard src/*.h)
OBJS       = $(SRCS:src/%.c=$(BUILD)/obj/%.o)
MODULE     = $(BUILD)/orch/core.so

DEB_PKGS   = lua5.4 liblua5.4-dev libev-dev libhiredis-dev lua-busted luarocks lua-argparse lua-cjson \
             lua-ldoc lua-markdown redis-server socat tmux
BUSTED     = busted --lua=$(LUA)

PREFIX     ?= /usr/local
LUA_LMOD   ?= $(PREFIX)/share/lua/5.4
LUA_CMOD   ?= $(PREFIX)/lib/lua/5.4
DOCDIR     ?= $(PREFIX)/share/doc/orch

.PHONY: all deps build test test-serial stress demo bench asan valgrind fuzz install uninstall clean lint doc

all: build

# Installs the Debian packages that are missing (as root, or through sudo).
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: deps
	@$(MAKE) --no-print-directory $(MODULE)

$(BUILD)/obj/%.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(MODULE): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) -shared $(ALL_CFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(LIBS)

# The whole suite but #slow, its files in parallel (orch busted); closes
# with "N passed, N failed". test-serial: the same through busted alone.
test: build
	@$(LUA) scripts/run-specs $(LUA) scripts/orch busted --exclude-tags=slow

test-serial: build
	@$(LUA) scripts/run-specs $(BUSTED) --exclude-tags=slow

# Every #slow spec, the chaos trials included.
stress: build
	@$(LUA) scripts/run-specs $(BUSTED) --tags=slow --exclude-tags=none

# The chaos trials alone (spec/70-chaos_spec.lua, a few minutes); each part
# prints a "chaos:" line. Sizes: CHAOS_* (docs/reliability.md).
.PHONY: chaos
chaos: build
	@$(LUA) scripts/run-specs $(BUSTED) --tags=chaos --exclude-tags=none

demo: build
	@echo "--- ordered shutdown: TERM after 3 s; produced must equal written"
	@timeout --preserve-status -s TERM 3 $(LUA) scripts/examples/ordered_shutdown.lua; \
	  echo "exit status $$? (143: ended by TERM after the ordered shutdown)"
	$(LUA) scripts/examples/pool.lua

bench: build
	$(LUA) bench/run.lua
	$(LUA) bench/broker.lua

# AddressSanitizer + UBSan build of the module, then the specs with the
# sanitizer runtime preloaded into the stock interpreter, each spec file in
# a process of its own (orch busted), as make test runs them.
ASAN_LIB = $(shell $(CC) -print-file-name=libasan.so)
asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan \
	  OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" build-asan/orch/core.so
	@ORCH_CPATH=build-asan/?.so LD_PRELOAD=$(ASAN_LIB) \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(LUA) scripts/run-specs $(LUA) scripts/orch busted --exclude-tags=slow,noasan

# The specs under valgrind, in one interpreter (--ignore-lua: busted does
# not start another one); workers are forked copies, silent after fork.
# Any memory error fails the run, and so does a definite leak whose stack
# passes through orch's own code (a leak of Lua's or busted's does not).
# The log is read even when specs failed; the target fails if either did.
# --keep-debuginfo: a leak's stack is named even in a C module that
# lua_close unloaded before the leak check.
VALGRIND_LOG = build/valgrind.log
VALGRIND = valgrind -q --child-silent-after-fork=yes --error-exitcode=99 --keep-debuginfo=yes \
           --leak-check=full --errors-for-leak-kinds=none --log-file=$(VALGRIND_LOG)
# An error's record: its header line (one space after the pid: no stack
# line, no leak record, no warning) up to the pid's blank line.
VALGRIND_ERRORS = /^==[0-9]+== [^ ]/ && !/lost in loss record|Warning:/ {rec=1; bad=1} \
  rec {print} /^==[0-9]+== $$/ {rec=0} END {exit bad}
# A definite leak's record whose stack passes through orch: a frame in
# one of src/*.c, named by file and line, or in core.so (no debug info).
empty :=
space := $(empty) $(empty)
ORCH_FRAME = \(($(subst $(space),|,$(strip $(basename $(notdir $(SRCS))))))\.c:[0-9]+\)|core\.so
VALGRIND_LEAKS = /definitely lost/ {rec=1; buf=""} rec {buf = buf $$0 "\n"} \
  /^==[0-9]+== $$/ {if (rec && buf ~ /$(ORCH_FRAME)/) {printf "%s", buf; bad=1} rec=0} \
  END {exit bad}
valgrind: build
	@rm -f $(VALGRIND_LOG); fail=0; \
	$(LUA) scripts/run-specs $(VALGRIND) $(LUA) /usr/bin/busted --ignore-lua \
	  --exclude-tags=slow,novalgrind || { echo "valgrind: the specs failed (above)"; fail=1; }; \
	awk '$(VALGRIND_ERRORS)' $(VALGRIND_LOG) || { echo "valgrind: memory errors (above)"; fail=1; }; \
	awk '$(VALGRIND_LEAKS)' $(VALGRIND_LOG) || { echo "valgrind: orch leaks memory (above)"; fail=1; }; \
	[ $$fail = 0 ] && echo "valgrind: the specs pass, no memory errors, no leaks in orch"

# libFuzzer targets over the code that reads what a worker sends, under
# ASan and UBSan, outside the module: src/fuzz/fuzz_NAME.c linked with the
# objects it tests (FUZZ_OBJS_NAME) and liblua5.4, seeded by
# src/fuzz/seeds.lua NAME, run FUZZ_SECONDS each. An input that crashes one
# is saved in spec/fuzz/NAME/ (commit it: spec/04-fuzz_replay_spec.lua
# replays it) and fails the run. A new target: its .c, its FUZZ_OBJS_NAME,
# its seeds, and its name in FUZZ_TARGETS.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_BUILD   = build-fuzz
FUZZ_OPT     = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
               -fno-sanitize-recover=undefined
FUZZ_LIBS    = -llua5.4 -lev
FUZZ_TARGETS = wire frame lane
FUZZ_WIRE    = $(FUZZ_BUILD)/obj/wire.o $(FUZZ_BUILD)/obj/wire_enc.o $(FUZZ_BUILD)/obj/wire_dec.o \
               $(FUZZ_BUILD)/obj/wire_path.o
FUZZ_OBJS_wire = $(FUZZ_WIRE) $(FUZZ_BUILD)/obj/wbuf.o $(FUZZ_BUILD)/obj/array.o \
                 $(FUZZ_BUILD)/obj/alloc_big.o
FUZZ_OBJS_lane = $(FUZZ_BUILD)/obj/lane.o $(FUZZ_BUILD)/obj/wbuf.o
FUZZ_OBJS_frame = $(FUZZ_BUILD)/obj/chan.o $(FUZZ_BUILD)/obj/dispatch.o $(FUZZ_BUILD)/obj/loop.o \
                  $(FUZZ_BUILD)/obj/memfd.o $(FUZZ_BUILD)/obj/alloc_big.o $(FUZZ_BUILD)/obj/spin.o \
                  $(FUZZ_BUILD)/obj/array.o $(FUZZ_BUILD)/obj/lane.o \
                  $(FUZZ_WIRE) $(FUZZ_BUILD)/obj/wbuf.o

fuzz: build
	@$(MAKE) --no-print-directory deps DEB_PKGS="clang libclang-rt-dev"
	@for t in $(FUZZ_TARGETS); do \
	  $(MAKE) --no-print-directory $(FUZZ_BUILD)/fuzz_$$t || exit 1; \
	  mkdir -p $(FUZZ_BUILD)/seeds/$$t $(FUZZ_BUILD)/corpus/$$t spec/fuzz/$$t; \
	  $(LUA) src/fuzz/seeds.lua $$t $(FUZZ_BUILD)/seeds/$$t || exit 1; \
	  echo "make fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  $(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
	    -print_final_stats=1 -artifact_prefix=spec/fuzz/$$t/ \
	    $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/seeds/$$t \
	    || { echo "make fuzz: $$t failed; the input is saved in spec/fuzz/$$t/"; exit 1; }; \
	done

$(FUZZ_BUILD)/obj/%.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(ALL_CFLAGS) $(FUZZ_OPT) -fsanitize=fuzzer-no-link -c $< -o $@

.SECONDEXPANSION:
$(FUZZ_BUILD)/fuzz_%: src/fuzz/fuzz_%.c $$(FUZZ_OBJS_$$*)
	$(FUZZ_CC) $(ALL_CFLAGS) $(FUZZ_OPT) -fsanitize=fuzzer -o $@ $^ $(FUZZ_LIBS)

lint:
	@$(MAKE) --no-print-directory deps DEB_PKGS=lua-check
	luacheck lua spec src/fuzz scripts scripts/orch scripts/run-specs bench

# The API reference (LDoc, config.ld): docs/ref/index.html, from the doc
# comments of lua/orch/*.lua and the guides (README.md, docs/*.md).
doc: deps
	ldoc .

# No deps here: installing needs no network. The installed orch command has
# the prefix's module directories written in, so it runs under any PREFIX
# (DESTDIR only stages the files).
install: $(MODULE)
	install -d $(DESTDIR)$(LUA_LMOD)/orch/cli $(DESTDIR)$(LUA_LMOD)/orch/broker $(DESTDIR)$(LUA_LMOD)/orch/busted \
	  $(DESTDIR)$(LUA_CMOD)/orch $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(DOCDIR)
	install -m 644 lua/orch/*.lua $(DESTDIR)$(LUA_LMOD)/orch/
	install -m 644 lua/orch/cli/*.lua $(DESTDIR)$(LUA_LMOD)/orch/cli/
	install -m 644 lua/orch/broker/*.lua $(DESTDIR)$(LUA_LMOD)/orch/broker/
	install -m 644 lua/orch/busted/*.lua $(DESTDIR)$(LUA_LMOD)/orch/busted/
	install -m 755 $(MODULE) $(DESTDIR)$(LUA_CMOD)/orch/core.so
	sed 's|^-- @INSTALL_PATHS@$$|package.path = "$(LUA_LMOD)/?.lua;$(LUA_LMOD)/?/init.lua;" .. package.path\
	package.cpath = "$(LUA_CMOD)/?.so;" .. package.cpath|' scripts/orch >$(DESTDIR)$(PREFIX)/bin/orch
	chmod 755 $(DESTDIR)$(PREFIX)/bin/orch
	cp -R README.md CHANGELOG.md LICENSE docs $(DESTDIR)$(DOCDIR)/

uninstall:
	rm -rf $(DESTDIR)$(LUA_LMOD)/orch $(DESTDIR)$(LUA_CMOD)/orch $(DESTDIR)$(PREFIX)/bin/orch \
	  $(DESTDIR)$(DOCDIR)

# (luarocks make builds in the tree: src/*.o and orch/core.so)
clean:
	rm -rf build build-asan $(FUZZ_BUILD) orch src/*.o
