# ngx_http_model_gateway_module: build, run, test and benchmark.
#
# Everything is built under build/; the module is compiled against Debian's
# nginx-dev (the configure scripts of the nginx that runs it) with
# --with-compat, so the .so loads into the stock nginx binary.

SHELL     := /bin/bash
TOP       := $(CURDIR)
B         := $(TOP)/build
NGX_SRC   ?= /usr/share/nginx/src
MODULE    := ngx_http_model_gateway_module.so
NGINX     ?= /usr/sbin/nginx

DEBS      := nginx nginx-dev libhiredis-dev libjansson-dev libssl-dev \
             redis-server redis-tools wrk gcc make perl openssl \
             libio-socket-ssl-perl libclang-rt-14-dev clang curl prometheus

MOD_SRCS  := $(wildcard $(TOP)/ngx_module/*.c $(TOP)/ngx_module/*.h \
                        $(TOP)/src/*.c $(TOP)/src/*.h) $(TOP)/config
CORE_SRCS := $(wildcard $(TOP)/src/*.c)
UNIT_SRCS := $(wildcard $(TOP)/t/unit/test_*.c)
UNIT_BINS := $(patsubst $(TOP)/t/unit/%.c,$(B)/unit/%,$(UNIT_SRCS))

CFLAGS_UNIT := -std=gnu99 -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter \
               -fsanitize=address,undefined -fno-omit-frame-pointer \
               -fno-sanitize-recover=all -D_GNU_SOURCE -I$(TOP)/src -I$(TOP)/t/unit

ASAN_CC_OPT := -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer
ASAN_LD_OPT := -fsanitize=address,undefined

.PHONY: all deps build asan unit sdk test test-unit test-nginx test-asan fleet \
        test-cluster fleet-cluster run deb bench bench-bounds fuzz clean \
        style

all: build

# Installs the Debian packages the project needs, only when one is missing.
deps:
	@missing=""; for p in $(DEBS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	        | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

# The official openai npm package, pinned in t/sdk/package-lock.json, for
# t/110-sdk.t.  A machine that has node and npm keeps its own (they need
# not be Debian's); one without them gets Debian's nodejs and npm.  npm ci
# runs only when node_modules is missing or older than the lock file, the
# stamp marking a complete install.
SDK       := $(TOP)/t/sdk
SDK_STAMP := $(SDK)/node_modules/.mg-installed

$(SDK_STAMP): $(SDK)/package-lock.json $(SDK)/package.json
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	    echo "installing: nodejs npm (for t/110-sdk.t)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
	npm ci --prefix $(SDK) --no-audit --no-fund
	touch $@

sdk: $(SDK_STAMP)

# $(1): build dir, $(2): extra configure arguments
define ngx_configure
	rm -rf $(1) && mkdir -p $(1) && cp -a $(NGX_SRC)/. $(1)/
	cd $(1) && . ./conf_flags && ./configure "$${NGX_CONF_FLAGS[@]}" \
	    --add-dynamic-module=$(TOP) $(2) >configure.log 2>&1 \
	    || { tail -30 configure.log; exit 1; }
	touch $(1)/.configured
endef

$(B)/nginx/.configured: $(TOP)/config | deps
	$(call ngx_configure,$(B)/nginx,)

$(B)/asan/.configured: $(TOP)/config | deps
	$(call ngx_configure,$(B)/asan,--with-cc-opt="$(ASAN_CC_OPT)" \
	    --with-ld-opt="$(ASAN_LD_OPT)")

$(B)/$(MODULE): $(B)/nginx/.configured $(MOD_SRCS)
	$(MAKE) -s -C $(B)/nginx -f objs/Makefile modules
	@# replaced atomically: a running nginx may have the old one mapped
	cp $(B)/nginx/objs/$(MODULE) $@.tmp && mv -f $@.tmp $@

$(B)/asan/$(MODULE): $(B)/asan/.configured $(MOD_SRCS)
	$(MAKE) -s -C $(B)/asan -f objs/Makefile modules
	cp $(B)/asan/objs/$(MODULE) $@.tmp && mv -f $@.tmp $@

build: deps $(B)/$(MODULE)

asan: deps $(B)/asan/$(MODULE)

# C unit tests of src/, built with ASan/UBSan; each prints TAP.  src/ is
# compiled once into an archive that every test links; an object depends
# on every header of src/, so a header change rebuilds what may include it.
CORE_HDRS := $(wildcard $(TOP)/src/*.h)
UNIT_OBJS := $(patsubst $(TOP)/src/%.c,$(B)/unit/obj/%.o,$(CORE_SRCS))

$(B)/unit/obj/%.o: $(TOP)/src/%.c $(CORE_HDRS)
	@mkdir -p $(B)/unit/obj
	@cc $(CFLAGS_UNIT) -c -o $@ $<

# rebuilt whole, so an object of a removed source does not linger in it
$(B)/unit/libmg.a: $(UNIT_OBJS)
	@rm -f $@ && ar rcs $@ $^

$(B)/unit/%: $(TOP)/t/unit/%.c $(B)/unit/libmg.a $(CORE_HDRS) \
             $(wildcard $(TOP)/t/unit/*.h)
	@cc $(CFLAGS_UNIT) -o $@ $< $(B)/unit/libmg.a -ljansson -lcrypto -lm

unit: $(UNIT_BINS)

test-unit: deps unit
	prove --exec '' $(UNIT_BINS)

test-nginx: build sdk
	MG_MODULE=$(B)/$(MODULE) prove -I t/lib t/

test: deps build unit sdk
	prove --exec '' $(UNIT_BINS)
	MG_MODULE=$(B)/$(MODULE) prove -I t/lib t/

# The same suite against the AddressSanitizer/UBSan build of the module.
test-asan: deps asan sdk
	MG_MODULE=$(B)/asan/$(MODULE) MG_ASAN=1 prove -I t/lib t/

run: build
	@$(TOP)/bin/mg-run $(B)/$(MODULE)

# The fleet simulation at the issue's size: 3 nodes x 10,000 sessions
# (make test runs it with 2,000).
fleet: deps build
	MG_FLEET_SESSIONS=10000 MG_MODULE=$(B)/$(MODULE) \
	    prove -v -I t/lib t/190-fleet.t

# Redis Cluster: the gateway's faults on a real six-node cluster
# (t/210-cluster.t), the fleet simulation on it (t/211-fleet-cluster.t,
# 1,000 sessions) and the cluster over TLS (t/212-cluster-tls.t). make test
# runs them too, with the rest of t/; this
# target is for a machine or a CI step that wants only them, within
# CLUSTER_TIMEOUT seconds (timeout kills prove's whole process group; the
# harness then stops every redis-server and nginx it started).
CLUSTER_TIMEOUT ?= 600
CLUSTER_TESTS   := t/210-cluster.t t/211-fleet-cluster.t t/212-cluster-tls.t

test-cluster: build
	MG_MODULE=$(B)/$(MODULE) timeout -k 10 $(CLUSTER_TIMEOUT) \
	    prove -I t/lib $(CLUSTER_TESTS)

# The cluster fleet at the issue's size: 3 nodes x 10,000 sessions.
fleet-cluster: deps build
	MG_FLEET_SESSIONS=10000 MG_MODULE=$(B)/$(MODULE) \
	    timeout -k 10 $(CLUSTER_TIMEOUT) \
	    prove -v -I t/lib t/211-fleet-cluster.t

# The Debian package libnginx-mod-http-model-gateway, built as Debian's own
# nginx modules are (debian/: dh with nginx-dev's nginx add-on), from the
# committed tree, into build/deb/.
deb: deps
	@missing=""; for p in debhelper dpkg-dev; do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	        | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi
	rm -rf $(B)/deb && mkdir -p $(B)/deb/src
	git -C $(TOP) archive HEAD | tar -x -C $(B)/deb/src
	cd $(B)/deb/src && dpkg-buildpackage -us -uc -b >../build.log 2>&1 \
	    || { tail -40 ../build.log; exit 1; }
	@ls $(B)/deb/*.deb

bench: build
	@$(TOP)/bench/run.sh $(B)/$(MODULE)

# the request translators on their worst inputs: sizes and time per MB
bench-bounds:
	@mkdir -p $(B)
	@cc -std=gnu99 -O2 -D_GNU_SOURCE -I$(TOP)/src -o $(B)/bench-bounds \
	    $(TOP)/bench/bounds.c $(CORE_SRCS) -ljansson -lcrypto -lm
	@$(B)/bench-bounds

# libFuzzer targets (fuzz/fuzz_*.c), each run for FUZZ_SECONDS, seeded from
# t/fixtures/<name>/ (and its corpus/); new inputs go to build/fuzz only.
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined \
              -fno-sanitize-recover=all -D_GNU_SOURCE -I$(TOP)/src
# src/ for the targets: the same instrumentation without libFuzzer's main
FUZZ_LIB_FLAGS := $(subst fuzzer,fuzzer-no-link,$(FUZZ_FLAGS))
FUZZ_OBJS := $(patsubst $(TOP)/src/%.c,$(B)/fuzz/obj/%.o,$(CORE_SRCS))

$(B)/fuzz/obj/%.o: $(TOP)/src/%.c $(CORE_HDRS)
	@mkdir -p $(B)/fuzz/obj
	@clang $(FUZZ_LIB_FLAGS) -c -o $@ $<

$(B)/fuzz/libmg-fuzz.a: $(FUZZ_OBJS)
	@rm -f $@ && ar rcs $@ $^

fuzz: deps $(B)/fuzz/libmg-fuzz.a
	@mkdir -p $(B)/fuzz
	@set -e -o pipefail; for f in $(TOP)/fuzz/fuzz_*.c; do \
	    n=$$(basename $$f .c); s=$${n#fuzz_}; \
	    echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
	    clang $(FUZZ_FLAGS) -o $(B)/fuzz/$$n $$f $(B)/fuzz/libmg-fuzz.a \
	        -ljansson -lcrypto -lm; \
	    mkdir -p $(B)/fuzz/$$n-corpus; \
	    seeds=""; \
	    for d in $(TOP)/t/fixtures/$$s $(TOP)/t/fixtures/$$s/corpus \
	             $(TOP)/t/fixtures/$$s/request $(TOP)/t/fixtures/$$s/response \
	             $(TOP)/t/fixtures/$$s/stream; do \
	        [ -d $$d ] && seeds="$$seeds $$d"; \
	    done; \
	    $(B)/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        $(B)/fuzz/$$n-corpus $$seeds 2>&1 | tail -3; \
	done

style:
	@! grep -n "$$(printf '\t')" ngx_module/*.[ch] src/*.[ch] t/unit/*.[ch] \
	    fuzz/*.c
	@awk 'length > 80 { print FILENAME ":" FNR ": longer than 80"; n++ } \
	    END { exit n > 0 }' ngx_module/*.[ch] src/*.[ch] t/unit/*.[ch] \
	    fuzz/*.c

clean:
	rm -rf $(B)
