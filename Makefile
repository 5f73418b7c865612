# Two commands for a fresh clone: `make demo` and `make test`. Each builds .venv when it is
# missing or when pyproject.toml changed since it was built.
PYTHON ?= python3
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# This machine's pip.conf names local package folders that may be absent; pip warns once per package.
QUIET_PIP := 2>&1 | { grep -v '^WARNING: Location' || true; }
VENV := .venv
STAMP := $(VENV)/.installed

# Variables for `make demo` on your own data (see README).
DATA ?=
MODEL ?=
EPOCHS ?=
DEVICE ?=
DEMO_ARGS := $(if $(DATA),--data $(DATA)) $(if $(MODEL),--model $(MODEL)) $(if $(EPOCHS),--epochs $(EPOCHS)) \
	$(if $(DEVICE),--device $(DEVICE))

.PHONY: test demo lint docs clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip $(QUIET_PIP)
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]" $(QUIET_PIP)
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

demo: $(STAMP)
	$(VENV)/bin/python -m resnetzoo.demo $(DEMO_ARGS)

# The generated docs: the model table and the API reference (no network needed).
docs: $(STAMP)
	$(VENV)/bin/python -m resnetzoo.parity --markdown > docs/models.md
	$(VENV)/bin/python -m resnetzoo.apidoc > docs/api.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
