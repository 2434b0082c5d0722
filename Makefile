# lxd-gateway. `make` builds build/lxd-gateway; `make test` and `make demo` install what they need first.
CC ?= cc
VERSION := 0.1.0
PKGS := libh2o-evloop libcurl jansson openssl yaml-0.1
WARN := -Wall -Wextra -Werror -Wno-missing-field-initializers
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -DH2O_USE_LIBUV=0 -DGW_VERSION='"$(VERSION)"' -Igateway -Iplugins \
	$(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(CFLAGS) $(EXTRA_CFLAGS)
LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lwslay -lssl -lcrypto -lz -lpthread $(EXTRA_LDFLAGS)

BUILD ?= build
CORE_SRC := $(filter-out gateway/main.c,$(wildcard gateway/*.c)) $(wildcard plugins/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(wildcard tests/unit/*.c)

PREFIX ?= /usr/local
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
SYSCONF_DIR ?= /etc/lxd-gateway

.PHONY: all deps deps-build install-files test unit arch e2e asan demo demo-down bench format format-check clean install install-check fuzz fuzz-smoke \
	fuzz-replay fuzz-build soak
all: $(BUILD)/lxd-gateway

$(BUILD)/obj/%.o: %.c $(wildcard gateway/*.h plugins/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/lxd-gateway: $(CORE_OBJ) $(BUILD)/obj/gateway/main.o
	$(CC) -o $@ $^ $(LIBS)

# a unit test that #includes a module's .c (to reach its static functions) links without that module's object
UNIT_EXCLUDE := gateway/members.c gateway/operations.c
$(BUILD)/unit-tests: $(UNIT_SRC) $(CORE_OBJ) $(CORE_SRC)
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $(UNIT_SRC) $(filter-out $(UNIT_EXCLUDE:%.c=$(BUILD)/obj/%.o),$(CORE_OBJ)) $(LIBS)

deps:
	@bash scripts/deps.sh

deps-build:
	@bash scripts/deps.sh --build

unit: $(BUILD)/unit-tests arch
	$(BUILD)/unit-tests tests/unit/data

# no include cycle, no include up a floor (gateway/README.md names the floors)
arch:
	python3 tests/arch/cycles.py

e2e: all
	bash tests/e2e/run.sh $(BUILD)/lxd-gateway

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
		EXTRA_LDFLAGS="-fsanitize=address,undefined" build-asan/lxd-gateway

# binary, man page, systemd unit, example configuration (an existing configuration is never touched); the build
# packages first (only those), so that it works as the first command on a fresh machine
install: deps-build
	$(MAKE) install-files

install-files: all
	install -D -m 0755 $(BUILD)/lxd-gateway $(DESTDIR)$(PREFIX)/bin/lxd-gateway
	install -D -m 0644 doc/lxd-gateway.8 $(DESTDIR)$(PREFIX)/share/man/man8/lxd-gateway.8
	sed 's|/usr/local/bin/lxd-gateway|$(PREFIX)/bin/lxd-gateway|; s|/etc/lxd-gateway/|$(SYSCONF_DIR)/|' conf/lxd-gateway.service | \
		install -D -m 0644 /dev/stdin $(DESTDIR)$(SYSTEMD_UNIT_DIR)/lxd-gateway.service
	install -D -m 0644 conf/lxd-gateway.yaml $(DESTDIR)$(SYSCONF_DIR)/lxd-gateway.yaml.example

# `make install` into a scratch DESTDIR: every file where it belongs, a man page groff reads without warnings
install-check: all
	bash tests/install.sh

# the whole suite, as CI runs it: deps, a warning-free build, unit tests, fuzz smoke, e2e on the normal and the
# sanitizer build, both at once, each on a cluster of its own (netns lxdgw and lxdgw2; see tests/e2e/run.sh)
test: deps
	$(MAKE) format-check all unit install-check asan fuzz-smoke
	bash tests/e2e/run.sh $(BUILD)/lxd-gateway build-asan/lxd-gateway

# demo, bench and install run make again once `deps` has installed the packages: pkg-config's flags are read when
# make reads this file, which on a fresh machine is before the libraries are there
demo: deps
	$(MAKE) all
	HA=$(HA) LXDGW_DEMO_BINARY=$(BUILD)/lxd-gateway bash scripts/demo.sh

demo-down:
	bash scripts/demo.sh down

bench: deps
	$(MAKE) all
	bash bench/run.sh

# not part of `make test`: SOAK_MINUTES (default 30) of mixed traffic through two replicas behind HAProxy while replicas
# and members are killed and restarted; a cluster of its own (netns lxdgwS, /var/tmp/lxdgw-clusterS). tests/soak/soak.py
soak: deps
	$(MAKE) all
	bash tests/soak/run.sh $(BUILD)/lxd-gateway

format:
	clang-format -i gateway/*.[ch] $(wildcard plugins/*.[ch]) $(wildcard tests/unit/*.[ch] tests/fuzz/*.[ch])

format-check:
	@out=$$(for f in gateway/*.[ch] $(wildcard plugins/*.[ch]) $(wildcard tests/unit/*.[ch] tests/fuzz/*.[ch]); do \
		clang-format --dry-run $$f 2>&1 | grep -q . && echo $$f; done); \
	if [ -n "$$out" ]; then echo "clang-format would change: $$out (run make format)"; exit 1; fi

# libFuzzer harnesses (tests/fuzz/, how-to in tests/fuzz/fuzz_req.h): clang with -fsanitize=fuzzer,address,undefined.
# The core is built into build-fuzz/ with -fsanitize=fuzzer-no-link; a harness that #includes a module's .c (to reach
# its static functions) links without that module's object (FUZZ_EXCLUDE_<target>).
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_BUILD := build-fuzz
FUZZ_TARGETS := route envelope audit body journal member_json peer_json wsclient relay config move vfilter
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS = $(ALL_CFLAGS) -O1 -g $(FUZZ_SAN) -Wno-unused-function -Wno-unknown-warning-option
FUZZ_OBJ := $(CORE_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_BIN := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
FUZZ_EXCLUDE_body := gateway/backend.c
FUZZ_EXCLUDE_journal := gateway/journal.c
FUZZ_EXCLUDE_member_json := gateway/trust.c gateway/members.c gateway/enroll.c gateway/backend.c
FUZZ_EXCLUDE_peer_json := gateway/peers.c gateway/operations.c gateway/oplist.c gateway/backend.c
FUZZ_EXCLUDE_wsclient := gateway/wsclient.c
FUZZ_EXCLUDE_relay := gateway/relay.c
FUZZ_EXCLUDE_move := plugins/volume_move.c gateway/backend.c gateway/flows.c

$(FUZZ_BUILD)/obj/%.o: %.c $(wildcard gateway/*.h plugins/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_req.h tests/fuzz/fuzz_backend.h $(FUZZ_OBJ) $(CORE_SRC)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Itests/fuzz -o $@ $< \
		$(filter-out $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(FUZZ_EXCLUDE_$*)),$(FUZZ_OBJ)) $(LIBS)

fuzz-build: $(FUZZ_BIN)
.SECONDARY: $(FUZZ_OBJ) # kept between runs (make would delete them as intermediates of the harnesses)

# every harness for FUZZ_SECONDS (from its seeds and kept crash inputs); all run, then it fails if one crashed
fuzz: fuzz-build
	bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# the same for ~10 s each: the part of `make test`
fuzz-smoke: fuzz-build
	bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

# runs each harness once over its kept crash inputs (tests/fuzz/crashes/<target>/): after a fix, all must pass
fuzz-replay: fuzz-build
	bash tests/fuzz/run.sh $(FUZZ_BUILD) replay $(FUZZ_TARGETS)

clean:
	rm -rf build build-asan build-fuzz
