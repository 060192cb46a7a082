# compaction-lab — every target depends on `setup`, which is idempotent and works on a fresh
# Debian 12 machine as root.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

# With recommends, as the lab recipes were measured (chromium brings its fonts for the report screenshot).
APT_PACKAGES := python3-venv python3-dev qemu-system-x86 qemu-system-arm qemu-utils qemu-user-static \
  mmdebstrap gdb trace-cmd stress-ng busybox-static build-essential bc bison flex libelf-dev \
  libssl-dev dwarves cpio kmod rsync openssh-client e2fsprogs gcc-aarch64-linux-gnu linux-source-6.1 \
  systemd chromium iproute2 procps util-linux xz-utils fdisk
# The compiled extension's source too: pip install -e rebuilds it when it changes.
EXT_SOURCES := collect/funcgraph.pyx
SETUP_STAMP := $(VENV)/.setup-$(shell cat pyproject.toml Makefile $(EXT_SOURCES) | sha1sum | cut -c1-12)

.PHONY: setup demo test lint pytest molecule bench clean
setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml Makefile $(EXT_SOURCES)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo ">> apt: installing $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@[ -x $(PY) ] || /usr/bin/python3 -m venv $(VENV)
	@echo ">> venv: installing pinned tool chain and collect (editable)"
	@$(BIN)/pip install -q --disable-pip-version-check -e '.[lab,dev]' > $(VENV)/pip.log 2>&1 \
	  || { cat $(VENV)/pip.log; exit 1; }
	@$(PY) -c 'import ansible, ansible_runner, molecule, pyinfra, collect.funcgraph, compaction_module_utils'
	@rm -f $(VENV)/.setup-*; touch $@

# This machine + lab-x86 + lab-arm (localhost runs collect). lab_down.yml also on failure or Ctrl-C.
DEMO_HOSTS := localhost,local,lab-x86,lab-arm
demo: setup
	@trap '$(BIN)/ansible-playbook playbooks/lab_down.yml -l $(DEMO_HOSTS) > /dev/null' EXIT; \
	  $(BIN)/ansible-playbook playbooks/demo.yml -l $(DEMO_HOSTS)

lint: setup
	$(BIN)/yamllint -s .
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ansible-lint --profile production

# pytest's exit 5 (no tests collected) is a failure like any other here.
pytest: setup
	$(BIN)/pytest

# Role scenarios on real QEMU guests, sharing one x86_64 and one arm64 guest (molecule/, .config/molecule/).
# destroy_after_failure fails on purpose; tests/test_lab.py runs it.
# destroy first: a run killed mid-scenario leaves molecule's state saying "created" for guests that are gone.
molecule: setup
	$(BIN)/molecule destroy --all
	$(BIN)/molecule test --all --exclude destroy_after_failure

test: lint pytest molecule

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache collect/funcgraph.c collect/funcgraph.*.so
