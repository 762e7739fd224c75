# channel-gateway: every command a user or CI runs goes through here.
# Targets are verbs: run, test, bench, build, install, deploy.

SHELL := /bin/bash
NPM   ?= npm
# Root installs system packages directly; anyone else through sudo.
SUDO  := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: all run test build deps system-deps redis-server bench clean typecheck token release install uninstall install-redis deploy docs lint

VERSION        := $(shell node -p "require('./package.json').version" 2>/dev/null)
RELEASE        := release/channel-gateway-$(VERSION).tar.gz
# Installation layout; DESTDIR stages into a tree without touching the host.
DESTDIR        ?=
PREFIX         ?= /opt/channel-gateway
ENVDIR         ?= /etc/channel-gateway
UNITDIR        ?= /etc/systemd/system
SYSCTLDIR      ?= /etc/sysctl.d
SERVICE_USER   ?= channel-gateway
NODE_BIN       ?= $(shell command -v node)
# Descriptors per process = the most WebSockets one worker can hold.
NOFILE         ?= 262144
# Must match the gateway's SHUTDOWN_TIMEOUT_S; systemd waits 10 s longer
# so the gateway's own watchdog acts first.
SHUTDOWN_TIMEOUT_S ?= 30
REDIS_BIND     ?= 127.0.0.1
HOSTS          ?=

all: build

# npm ci only when the lockfile changed since the last install: `make run`
# must not reinstall on every start.
# `tap build` compiles tap's runner with the plugin list from package.json
# (the TypeScript plugin removed: tests run through tsx); npm ci undoes it.
node_modules/.package-lock.json: package-lock.json package.json
	$(NPM) ci --no-audit --no-fund
	npx tap build >/dev/null
	@touch $@

deps: node_modules/.package-lock.json

# The gateway (tsc), and the browser SDK bundled by esbuild: an ES module and
# a single script defining `ChannelWidget`, with typings (served as /widget.js).
build: deps
	npx tsc -p tsconfig.json
	npx esbuild src/sdk/index.ts --bundle --minify --format=esm --target=es2022 --outfile=dist/sdk/widget.mjs --log-level=warning
	npx esbuild src/sdk/index.ts --bundle --minify --format=iife --global-name=ChannelWidget --target=es2022 --outfile=dist/sdk/widget.js --log-level=warning
	npx tsc -p tsconfig.sdk.json

# Type-checks the sources, the tests and the benchmarks (tsx runs the last
# two without checking types).
typecheck: deps
	npx tsc -p tsconfig.test.json

# Lints with oxlint's type-aware rules (.oxlintrc.json): promises nobody
# awaits or catches, promises where a callback must return nothing, unused
# names, and `any` outside the tests; plus oxlint's correctness set.
lint: deps
	npx oxlint --type-aware --deny-warnings src test bench

# Starts the cluster in the foreground on the embedded default (no Redis).
# The echo engine streams word by word with a pause, so streaming shows.
run: build
	AI_ECHO_DELAY_MS=$${AI_ECHO_DELAY_MS:-40} node dist/main.js

# The tests use real parts, from Debian's packages when they are missing:
# redis-server (tests start and stop their own, on free ports), chromium
# (the widget in a real browser, driven by playwright-core: browsers cannot
# be downloaded here) and haproxy (the client IP behind a balancer).
SYSTEM_PACKAGES := redis-server:redis-server chromium:chromium haproxy:haproxy
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do command -v $${p%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${p%%:*} ] || missing="$$missing $${p##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  $(SUDO) systemctl disable --now redis-server haproxy >/dev/null 2>&1 || true; \
	fi
	@redis-server --version | cut -c1-40; chromium --version 2>/dev/null || true; (haproxy -v 2>/dev/null || /usr/sbin/haproxy -v) | head -1

# Kept as a name for the one system part the Redis-mode tests need.
redis-server: system-deps

test: deps system-deps build typecheck lint
	npx tap

# The standard benchmark set against bare uWS and ws, measured in one run;
# writes bench/RESULTS.md. Knobs: see `node --import tsx bench/run.ts --help`.
bench: deps redis-server build
	node --import tsx bench/run.ts $(SCENARIOS)

token: build
	@$(NPM) run --silent token -- $(ARGS)

# A versioned tarball: compiled code, package files, deploy files and this
# Makefile (so `make install` runs on the target without building).
# RELEASE_NEEDS= packages the dist/ already built, without building again:
# the deploy test does so, because a build rewrites dist/ under the tests
# that run beside it (files read half-written).
RELEASE_NEEDS ?= build
release: $(RELEASE_NEEDS)
	@test -f dist/main.js || { echo "release: dist/ is missing: run 'make build'" >&2; exit 1; }
	rm -rf release/channel-gateway-$(VERSION)
	mkdir -p release/channel-gateway-$(VERSION)
	cp -R dist deploy package.json package-lock.json Makefile README.md release/channel-gateway-$(VERSION)/
	tar -C release -czf $(RELEASE) channel-gateway-$(VERSION)
	rm -rf release/channel-gateway-$(VERSION)
	@echo "$(RELEASE)"

# Run as root on the target (from a checkout after `make build`, or from an
# unpacked release). With DESTDIR set, only lays out files.
install:
	@test -f dist/main.js || { echo "install: dist/ is missing: run 'make build' or install from a release tarball" >&2; exit 1; }
	@test -n "$(NODE_BIN)" || { echo "install: node not found (set NODE_BIN)" >&2; exit 1; }
	install -d -m 0755 $(DESTDIR)$(PREFIX) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCTLDIR)
	rm -rf $(DESTDIR)$(PREFIX)/dist
	cp -R dist $(DESTDIR)$(PREFIX)/dist
	install -m 0644 package.json package-lock.json README.md $(DESTDIR)$(PREFIX)/
	cd $(DESTDIR)$(PREFIX) && $(NPM) ci --omit=dev --ignore-scripts --no-audit --no-fund >/dev/null
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@USER@|$(SERVICE_USER)|g' -e 's|@ENVFILE@|$(ENVDIR)/gateway.env|g' \
	    -e 's|@NODE@|$(NODE_BIN)|g' -e 's|@NOFILE@|$(NOFILE)|g' -e 's|@SHUTDOWN@|$(SHUTDOWN_TIMEOUT_S)|g' \
	    -e 's|@STOPTIMEOUT@|$(shell echo $$(($(SHUTDOWN_TIMEOUT_S) + 10)))|g' \
	    deploy/channel-gateway.service.in > $(DESTDIR)$(UNITDIR)/channel-gateway.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/channel-gateway.service
	install -m 0644 deploy/sysctl.conf $(DESTDIR)$(SYSCTLDIR)/60-channel-gateway.conf
	install -d -m 0750 $(DESTDIR)$(ENVDIR)
	@# The environment file holds secrets and local settings: never overwritten.
	@if [ -e $(DESTDIR)$(ENVDIR)/gateway.env ]; then echo "keeping existing $(DESTDIR)$(ENVDIR)/gateway.env"; \
	 else install -m 0640 deploy/gateway.env.example $(DESTDIR)$(ENVDIR)/gateway.env; fi
	@if [ -z "$(DESTDIR)" ]; then \
	  id -u $(SERVICE_USER) >/dev/null 2>&1 || useradd --system --no-create-home --home-dir $(PREFIX) --shell /usr/sbin/nologin $(SERVICE_USER); \
	  chgrp $(SERVICE_USER) $(ENVDIR) $(ENVDIR)/gateway.env; \
	  sysctl -q -p $(SYSCTLDIR)/60-channel-gateway.conf || echo "install: could not apply sysctl settings here (container?)"; \
	  if [ -d /run/systemd/system ]; then systemctl daemon-reload && systemctl enable channel-gateway; fi; \
	fi

# Removes what install added, except the environment file (secrets, local
# settings) and the system user (files it owns keep their owner).
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now channel-gateway || true; fi
	rm -rf $(DESTDIR)$(PREFIX)
	rm -f $(DESTDIR)$(UNITDIR)/channel-gateway.service $(DESTDIR)$(SYSCTLDIR)/60-channel-gateway.conf
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# Debian's redis-server configured for the bridge (see deploy/redis.conf.in).
install-redis:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
	sed -e 's|@BIND@|$(REDIS_BIND)|g' -e 's|@PROTECTED@|$(if $(filter 127.0.0.1 ::1 localhost,$(REDIS_BIND)),yes,no)|g' \
	    deploy/redis.conf.in | $(SUDO) tee /etc/redis/channel-gateway.conf >/dev/null
	grep -q '^include /etc/redis/channel-gateway.conf' /etc/redis/redis.conf || \
	  echo 'include /etc/redis/channel-gateway.conf' | $(SUDO) tee -a /etc/redis/redis.conf >/dev/null
	@if [ -d /run/systemd/system ]; then $(SUDO) systemctl restart redis-server; else $(SUDO) service redis-server restart; fi
	@case "$(REDIS_BIND)" in 127.0.0.1|::1|localhost) ;; *) echo "install-redis: Redis listens on $(REDIS_BIND) without protected mode: firewall it to the gateway hosts";; esac

# Rolls the release over HOSTS one at a time (see deploy/deploy.sh).
# DRY_RUN=1 prints the commands.
deploy: $(if $(DRY_RUN),,release)
	deploy/deploy.sh $(RELEASE) $(HOSTS)

clean:
	rm -rf dist .tap coverage release

# Rewrites the README's reference tables from the code (test/docs.test.ts
# fails when they disagree).
docs: deps
	node --import tsx src/cli/readme.ts
