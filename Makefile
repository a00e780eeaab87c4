# dockyard: a container engine in Python that speaks the Docker Engine API.
# Every target installs what it needs first, so `make run` and `make test` work on a fresh Debian machine (as root).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SOCKET ?= /var/run/dockyard.sock
DATA_ROOT ?= /var/lib/dockyard
EXEC_ROOT ?= /run/dockyard
# Debian packages the daemon and its tests use: OCI runtimes, the conmon shim, busybox for the seed image,
# a C toolchain for the hello-world seed, ps for `docker top`, mount/unshare/nsenter, iproute2; Python and
# OpenSSL headers for the audit writer's C extension (setup.py).
APT_PACKAGES := crun runc conmon busybox-static gcc libc6-dev procps util-linux iproute2 e2fsprogs openssl passwd curl \
	python3-dev libssl-dev
PYTEST_ARGS ?=
# make bench: side by side with a reference dockerd when ../shared/reference/start-dockerd exists
BENCH_ARGS ?= --start-reference

.PHONY: install sysdeps venv seed run test bench lint lock clean

install: sysdeps venv

sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v docker >/dev/null || { echo "installing the docker CLI (tests drive dockyard with it)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null; }

venv: $(VENV)/.installed

# setup.py and the C sources too: `pip install -e .` builds the extension into src/ (a change rebuilds it)
CHAINFAST_SOURCES = $(wildcard src/dockyard/security/_chainfast.c src/dockyard/security/chainfast*.[ch])
$(VENV)/.installed: pyproject.toml requirements.lock setup.py $(CHAINFAST_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

seed: install
	$(PY) -m dockyard.store.seed --data-root $(DATA_ROOT)

run: seed
	exec $(VENV)/bin/dockyardd -H unix://$(SOCKET) --data-root $(DATA_ROOT) --exec-root $(EXEC_ROOT)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/run_bench.py $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

lock: venv
	{ echo "# Pinned runtime and development dependencies (regenerate: make lock)"; \
	  $(VENV)/bin/pip freeze --exclude-editable | grep -v '^dockyard'; } > requirements.lock

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache src/dockyard/security/_chainfast*.so
