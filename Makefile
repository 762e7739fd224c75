# channel-gateway: every command a user or CI runs goes through here.
# Targets are verbs: run, test, bench, build, install, deploy.

SHELL := /bin/bash
NPM   ?= npm
# Root installs system packages directly; anyone else through sudo.
SUDO  := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: all run test build deps redis-server bench clean typecheck token

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

build: deps
	npx tsc -p tsconfig.json

typecheck: deps
	npx tsc --noEmit -p tsconfig.json

# Starts the cluster in the foreground on the embedded default (no Redis).
run: build
	node dist/main.js

# The test suite needs a real redis-server binary (tests start and stop
# their own, on free ports); install Debian's package when it is missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  $(SUDO) systemctl disable --now redis-server >/dev/null 2>&1 || true; \
	}
	@redis-server --version

test: deps redis-server build
	npx tap

token: build
	@$(NPM) run --silent token -- $(ARGS)

clean:
	rm -rf dist .tap coverage
