# Container Labs. `make lab` runs the series; `make test` runs the tests. Both work on a fresh Debian 12
# machine as root (they install what is missing and start dockerd) and where Docker already runs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
NOTEBOOK_TIMEOUT ?= 1800

.PHONY: lab ui test lint bench record clean doctor

# A notebook whose inputs did not change since its last run is reused, not executed again; FRESH=1 executes all.
# A failed notebook costs only its own chapter: the book is built from what ran (a failure page for the rest)
# and make still fails. An interrupt (Ctrl-C, SIGTERM: a status above 128) stops at once, with no book.
lab: $(INSTALLED)
	$(BIN)/labkit setup
	status=0; $(BIN)/labkit run $(if $(FRESH),--fresh) --timeout $(NOTEBOOK_TIMEOUT) || status=$$?; \
	if [ $$status -gt 128 ]; then exit $$status; fi; \
	$(BIN)/labkit book || status=$$?; exit $$status

test: $(INSTALLED) lint
	sh tools/install-test-tools.sh
	$(BIN)/labkit setup
	$(BIN)/python -m pytest

lint: $(INSTALLED)
	$(BIN)/ruff check labkit tests notebooks
	$(BIN)/mypy

# Speed is measured here, never asserted in tests: data/bench/ (CSV + provenance), shown in the book.
bench: $(INSTALLED)
	$(BIN)/labkit setup
	$(BIN)/labkit bench

# A deliberate refresh of the committed results (commit data/results/ on its own), from a committed tree only:
# `labkit run --record` refuses changed or untracked code (labkit/, notebooks/, tests/) before any notebook runs.
record: $(INSTALLED)
	$(BIN)/labkit setup
	$(BIN)/labkit run --record --timeout $(NOTEBOOK_TIMEOUT)
	$(BIN)/labkit claims

# JupyterLab on 127.0.0.1 over your copies of the notebooks (build/lab/); prints its URL, Ctrl-C stops it.
ui: $(INSTALLED)
	$(BIN)/labkit lab

doctor: $(INSTALLED)
	$(BIN)/labkit doctor

clean: $(INSTALLED)
	$(BIN)/labkit clean

$(INSTALLED): pyproject.toml tools/bootstrap-python.sh
	sh tools/bootstrap-python.sh "$(PYTHON)" "$(VENV)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@
