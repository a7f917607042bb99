# Two commands for a newcomer:
#   make serve   -> SQLite file, migrated, demo data seeded, served on http://127.0.0.1:8000
#   make test    -> the whole suite, on SQLite and PostgreSQL
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
export CL_DATABASE_URL ?= sqlite:///var/channel-ledger.sqlite3

.PHONY: install serve test lint bench check clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	mkdir -p var
	$(BIN)/channel-ledger migrate
	$(BIN)/channel-ledger seed-demo
	$(BIN)/channel-ledger serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/lint-imports setup.cfg
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/channel-ledger check

bench: $(STAMP)
	$(BIN)/python bench/ledger_bench.py

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
