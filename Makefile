# Two commands matter: `make run` and `make test`. Both create/reuse .venv and install first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
USER_ID := $(if $(filter command line,$(origin USER)),$(USER),player2)

.PHONY: install run test token bench clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m harness.devstack

test: install
	$(PY) -m pytest

token: install
	@$(PY) -m shared.auth $(USER_ID)

bench: install
	$(PY) -m harness bench

clean:
	rm -rf .run .pytest_cache
