# Roost — build, test, run. See README.md.
#
#   make              build every binary into build/bin
#   make test         unit tests + end-to-end tests (-Werror), summary line at the end
#   make test SANITIZE=1   the same under ASan+UBSan (separate build dir build/san)
#   make run          the whole stack as local processes (the supervisor)
#   make deps         install the Debian packages the build and tests need
#   make bench        benchmarks (not tests); results in bench/RESULTS.md
#   make up           the stack as containers (docker compose), built offline, healthy
#   make down         stop the containers; volumes (mail, keys, config) stay
#   make test-compose the containers end to end: built from scratch, mail, restarts, scaling
#   make ZMQ_LINK=static   libzmq and its helpers linked into each binary (the images do this)

VERSION := 0.1.0
SANITIZE ?= 0
WERROR ?= 0

ifeq ($(SANITIZE),1)
BUILD := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := -O1
else
BUILD := build
SANFLAGS :=
OPT := -O2
endif

# ZMQ_LINK (below) builds in its own directory, so that the two never mix.
ZMQ_LINK ?= shared
ifeq ($(ZMQ_LINK),static)
BUILD := $(BUILD)/static
endif

CC ?= cc
PYTHON := /usr/bin/python3
PKG_LIBS := libzmq jansson
CPPFLAGS := -D_GNU_SOURCE -DROOST_VERSION=\"$(VERSION)\" -Iproto -Ilib -I$(BUILD)/gen
CFLAGS := -std=c11 $(OPT) -g -Wall -Wextra $(if $(filter 1,$(WERROR)),-Werror) $(SANFLAGS) \
	$(shell pkg-config --cflags $(PKG_LIBS) 2>/dev/null)
LDFLAGS := $(SANFLAGS)
LDLIBS := $(shell pkg-config --libs $(PKG_LIBS) 2>/dev/null || echo -lzmq -ljansson)

# ZMQ_LINK=shared (default): libzmq.so and libjansson.so, as Debian ships them.
# ZMQ_LINK=static (the container images, docker/Dockerfile): libzmq, jansson
# and what libzmq needs (libsodium, libbsd, libmd, libstdc++, libgcc) come
# from Debian's .a files into each binary; libc, OpenSSL and SQLite stay
# shared. libzmq.so pulls 16 more libraries into every process, Kerberos and two
# multicast transports Roost never uses among them; linked statically, the
# linker takes only the objects libzmq references, and proto/static/zmq_unused.c
# answers the GSSAPI, PGM and NORM calls so their libraries are not linked at
# all. Each container of the stack then maps about 3 MB less (bench/RESULTS.md,
# "The stack in containers: memory"). It has its own build directory (above).
ifeq ($(ZMQ_LINK),static)
ZMQ_UNUSED := $(BUILD)/obj/proto/static/zmq_unused.o
CPPFLAGS += -DROOST_ZMQ_STATIC
LDFLAGS += -static-libgcc -pthread
LDLIBS := -Wl,--as-needed -Wl,-Bstatic -lzmq -ljansson -lsodium -lbsd -lmd -lstdc++ -Wl,-Bdynamic -lm
else ifneq ($(ZMQ_LINK),shared)
$(error ZMQ_LINK must be shared or static)
endif

# Debian packages for building and testing (make deps). postfix and swaks are
# the real SMTP peers of the end-to-end tests (tests/e2e/mta.py; swaks needs
# libnet-ssleay-perl for STARTTLS, the test TLS certificates come from openssl);
# isync (mbsync) and fetchmail are imapd's real clients (tests/e2e/test_imapd_mbsync.py,
# test_imapd_fetchmail.py); python3-dnslib is the stub DNS server of
# tests/e2e/test_dns.py (roostctl dns-records, check-dns);
# iproute2, iptables, wireguard-tools and wireguard-go: the VPS script of
# roostctl vps-config run in network namespaces (test_wg_vps.py; wireguard-go
# where the kernel has no WireGuard).
# check-deps.sh installs postfix unconfigured and leaves no system Postfix running.
# libstdc++-12-dev has the libstdc++.a of ZMQ_LINK=static.
DEB_PKGS := gcc make pkg-config libzmq3-dev libjansson-dev libsqlite3-dev libssl-dev \
	libstdc++-12-dev libcmocka-dev python3 python3-pytest python3-zmq python3-jsonschema \
	postfix swaks libnet-ssleay-perl openssl isync fetchmail python3-dnslib \
	iproute2 iptables wireguard-tools wireguard-go

PROTO_SRC := $(wildcard proto/*.c)
# proto/ (the bus) and lib/ (mail formats) go into one archive every binary links.
PROTO_OBJ := $(PROTO_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/msgtypes.o \
	$(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard lib/*.c))
LIBROOST := $(BUILD)/lib/libroost.a
GEN_H := $(BUILD)/gen/msgtypes.h
SCHEMAS := $(wildcard proto/schemas/*.json)

BUSD_SRC := $(wildcard services/busd/*.c)
ROOSTCTL_SRC := $(wildcard tools/roostctl/*.c)
RUN_SRC := $(wildcard tools/roost-run/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)

BINS := $(BUILD)/bin/busd $(BUILD)/bin/roostctl $(BUILD)/bin/roost-run \
	$(BUILD)/bin/echo-worker $(BUILD)/bin/bus-client $(BUILD)/bin/busbench $(BUILD)/bin/storaged \
	$(BUILD)/bin/storebench $(BUILD)/bin/smtpd \
	$(if $(wildcard services/imapd/main.c),$(BUILD)/bin/imapd)
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all test run build-for-run deps check-deps clean bench up down test-compose
all: $(BINS)

# With ZMQ_LINK=static every program links the answers for the parts of
# libzmq it never uses (it is in $^ of each link rule below). After `all`:
# a rule's first target would otherwise be what a bare `make` builds.
$(BINS) $(UNIT_BINS): $(ZMQ_UNUSED)
ifneq ($(ZMQ_UNUSED),)
$(ZMQ_UNUSED): CPPFLAGS += $(shell pkg-config --cflags openpgm-5.3 2>/dev/null)
endif

# ---- generated message-type table (proto/schemas is the source of truth) ----
$(GEN_H) $(BUILD)/gen/msgtypes.c: $(SCHEMAS) proto/gen_msgtypes.py
	@mkdir -p $(BUILD)/gen
	$(PYTHON) proto/gen_msgtypes.py proto/schemas $(GEN_H) $(BUILD)/gen/msgtypes.c
	@touch $(GEN_H) $(BUILD)/gen/msgtypes.c

$(BUILD)/obj/%.o: %.c $(GEN_H) $(wildcard proto/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/gen/msgtypes.o: $(BUILD)/gen/msgtypes.c $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(LIBROOST): $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/bin/busd: $(BUSD_SRC:%.c=$(BUILD)/obj/%.o) $(LIBROOST)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/bin/roost-run: $(RUN_SRC:%.c=$(BUILD)/obj/%.o) $(LIBROOST)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/bin/echo-worker: $(BUILD)/obj/tests/echo_worker.o $(LIBROOST)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lcrypto -o $@

$(BUILD)/bin/bus-client: $(BUILD)/obj/tests/bus_client.o $(LIBROOST)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lcrypto -o $@

$(BUILD)/bin/busbench: $(BUILD)/obj/bench/busbench.o $(LIBROOST)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lm -o $@

$(BUILD)/bin/storebench: $(BUILD)/obj/bench/storebench.o $(LIBROOST)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lsqlite3 -lm -o $@

# storaged's modules (everything but its main.c) as a library, so that the
# unit tests can link them.
STORAGED_SRC := $(filter-out services/storaged/main.c,$(wildcard services/storaged/*.c))
LIBSTORAGED := $(if $(STORAGED_SRC),$(BUILD)/lib/libstoraged.a)
STORAGED_LIBS := -lsqlite3 -lcrypto -pthread

$(BUILD)/lib/libstoraged.a: $(STORAGED_SRC:%.c=$(BUILD)/obj/%.o)
	@mkdir -p $(dir $@)
	rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/bin/storaged: $(BUILD)/obj/services/storaged/main.o $(LIBSTORAGED) $(LIBROOST)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(STORAGED_LIBS) -o $@

# smtpd's modules likewise (the parsers have unit tests).
SMTPD_SRC := $(filter-out services/smtpd/main.c,$(wildcard services/smtpd/*.c))
LIBSMTPD := $(BUILD)/lib/libsmtpd.a

$(LIBSMTPD): $(SMTPD_SRC:%.c=$(BUILD)/obj/%.o)
	@mkdir -p $(dir $@)
	rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/obj/services/smtpd/%.o: $(wildcard services/smtpd/*.h)

$(BUILD)/bin/smtpd: $(BUILD)/obj/services/smtpd/main.o $(LIBSMTPD) $(LIBROOST)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lssl -lcrypto -o $@

# imapd's modules likewise (the IMAP parser and the MIME formatting have unit tests).
IMAPD_SRC := $(filter-out services/imapd/main.c,$(wildcard services/imapd/*.c))
LIBIMAPD := $(if $(IMAPD_SRC),$(BUILD)/lib/libimapd.a)

$(BUILD)/lib/libimapd.a: $(IMAPD_SRC:%.c=$(BUILD)/obj/%.o)
	@mkdir -p $(dir $@)
	rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/obj/services/imapd/%.o: $(wildcard services/imapd/*.h)

$(BUILD)/bin/imapd: $(BUILD)/obj/services/imapd/main.o $(LIBIMAPD) $(LIBROOST)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lssl -lcrypto -o $@

$(BUILD)/obj/tests/unit/%.o: CPPFLAGS += -Iservices/storaged -Iservices/smtpd -Iservices/imapd

# roostctl restore works on storaged's data directory itself (its lock,
# its schema version): roostctl links storaged's library too.
$(BUILD)/obj/tools/roostctl/%.o: CPPFLAGS += -Iservices/storaged

$(BUILD)/bin/roostctl: $(ROOSTCTL_SRC:%.c=$(BUILD)/obj/%.o) $(LIBSTORAGED) $(LIBROOST)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(STORAGED_LIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIBSTORAGED) $(LIBSMTPD) $(LIBIMAPD) $(LIBROOST)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(STORAGED_LIBS) -lssl -lcmocka -o $@

# ---- tests ----
# check-deps installs missing Debian packages (make deps) or says which are missing.
check-deps:
	@tools/check-deps.sh $(DEB_PKGS)

test: check-deps
	$(MAKE) WERROR=1 SANITIZE=$(SANITIZE) all $(UNIT_BINS)
	@tools/run-tests.sh $(BUILD)

deps:
	@tools/check-deps.sh --install $(DEB_PKGS)

# ---- running ----
# The recipe's only command is the supervisor; building (and installing
# missing packages) happens in the prerequisite.
run: build-for-run
	@$(BUILD)/bin/roost-run

build-for-run: check-deps
	@$(MAKE) -s all

# ---- containers (docker-compose.yml, docker/Dockerfile, tools/docker/) ----
up:
	@tools/docker/up.sh up

down:
	@tools/docker/up.sh down

test-compose:
	@tools/docker/test-compose.sh

bench: all
	bench/bus.sh
	bench/store.sh
	bench/smtp-inbound.sh
	bench/imap.sh

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
