# Rackhand: `make run` starts a demo, `make test` runs every test. `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
NPM ?= npm
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# Front-end npm packages (web/package-lock.json pins them) copied where Rackhand serves them.
VENDOR := app/web/static/vendor
ASSETS := $(VENDOR)/.installed

.DEFAULT_GOAL := help
.PHONY: help install peers run test lint format bench fuzz screenshots clean
# Real protocol peers the tests and the benchmarks drive (Debian packages).
PEERS := ipmitool:ipmitool ipmipower:freeipmi-tools ipmi_sim:openipmi ssh:openssh-client \
	openssl:openssl chromium:chromium npm:npm
# A hypervisor host (tests/hypervisor_host.py), without recommends: those are hundreds of MB
# (GUIs, other hypervisors' drivers, firmware for other machines) the tests never start.
LEAN_PEERS := virsh:libvirt-clients libvirtd:libvirt-daemon-system \
	qemu-system-x86_64:qemu-system-x86 /usr/sbin/sshd:openssh-server

# Install the packages of those `tool:package` pairs whose tool is missing (a path is tested
# as a file: sshd is in /usr/sbin, off a user's PATH), with apt-get's extra options $(2).
define apt_peers
missing=$$(for pair in $(1); do tool=$${pair%%:*}; \
	if [ "$${tool#/}" != "$$tool" ]; then [ -x "$$tool" ]; else command -v "$$tool" >/dev/null; fi \
	|| echo $${pair#*:}; done | sort -u | tr '\n' ' '); \
if [ -n "$${missing// }" ]; then \
	echo "installing $$missing"; \
	apt-get install -y -q $(2) $$missing >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q $(2) $$missing >/dev/null; }; \
fi
endef

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

# npm ci installs exactly the lockfile's versions (no install scripts run); then each
# package's dist files the pages load are copied to $(VENDOR)/<package>/ (a line per package).
$(ASSETS): web/package.json web/package-lock.json
	@command -v $(NPM) >/dev/null || { echo "npm is missing: install Node.js and npm" \
		"(Debian: apt-get install nodejs npm), then run make install again" >&2; exit 1; }
	cd web && $(NPM) ci --ignore-scripts --no-audit --no-fund --loglevel=error
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/{swagger-ui,htmx,xterm,xterm-fit,asciinema-player,pico}
	cp web/node_modules/swagger-ui-dist/{swagger-ui-bundle.js,swagger-ui.css,favicon-32x32.png,package.json,LICENSE,NOTICE} \
		$(VENDOR)/swagger-ui/
	cp web/node_modules/htmx.org/{dist/htmx.min.js,package.json,LICENSE} $(VENDOR)/htmx/
	cp web/node_modules/@xterm/xterm/{lib/xterm.js,css/xterm.css,package.json,LICENSE} $(VENDOR)/xterm/
	cp web/node_modules/@xterm/addon-fit/{lib/addon-fit.js,package.json,LICENSE} $(VENDOR)/xterm-fit/
	cp web/node_modules/asciinema-player/{dist/bundle/asciinema-player.min.js,dist/bundle/asciinema-player.css,package.json,LICENSE} \
		$(VENDOR)/asciinema-player/
	cp web/node_modules/@picocss/pico/{css/pico.min.css,package.json,LICENSE.md} $(VENDOR)/pico/
	@touch $@

install: $(STAMP) $(ASSETS)  ## create .venv, install Rackhand with its dev tools and its front-end files

peers:  ## install the real peers (ipmitool, FreeIPMI, ipmi_sim, OpenSSH, openssl, Chromium, libvirt, QEMU) and npm if missing
	@$(call apt_peers,$(PEERS),)
	@$(call apt_peers,$(LEAN_PEERS),--no-install-recommends)

run: $(STAMP) peers $(ASSETS)  ## start Rackhand on 127.0.0.1:8000 with the demo fleet (data in ./var)
	$(BIN)/rackhand serve --demo

test: $(STAMP) peers $(ASSETS)  ## run every test, on SQLite and on PostgreSQL
	$(BIN)/pytest -n 2 --dist loadgroup

lint: $(STAMP)  ## ruff, mypy (strict), import contracts, alembic check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@db=$$(mktemp -u /tmp/rackhand-lint-XXXXXXXX.db) && \
		RACKHAND_DATABASE_URL=sqlite+aiosqlite:///$$db $(BIN)/alembic -c alembic.ini upgrade head >/dev/null 2>&1 && \
		RACKHAND_DATABASE_URL=sqlite+aiosqlite:///$$db $(BIN)/alembic -c alembic.ini check; \
		status=$$?; rm -f $$db; exit $$status

format: $(STAMP)  ## fix formatting and the fixable lint
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) peers  ## benchmarks (catalogue, audit, power, consoles, dashboard, agents, guests): docs/benchmarks.md
	$(BIN)/python -m bench

fuzz: $(STAMP)  ## schemathesis against a live server (SQLite, PostgreSQL), in its own network namespace
	$(BIN)/python -m bench.fuzz

screenshots: $(STAMP) peers $(ASSETS)  ## the dashboard's main pages as PNGs in docs/screenshots/ (simulated rack)
	$(BIN)/python -m tests.web.screenshots

clean:  ## remove the virtualenv, caches and installed front-end files (not ./var)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis web/node_modules $(VENDOR)
