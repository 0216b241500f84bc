# Two commands for a fresh machine (see README.md):
#   make run   - the portal on the embedded default (SQLite, Celery tasks in-process)
#   make test  - the whole test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1:8000

.PHONY: run test install install-test worker beat bench bench-ledger bench-identity bench-consent clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed: set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_demo
	$(BIN)/python manage.py runserver $(HOST)

test: install-test
	$(BIN)/pytest $(PYTEST_ARGS)

# Production-shaped processes: set DATABASE_URL and REDIS_URL first.
worker: install
	$(BIN)/celery -A consent_portal worker --loglevel INFO

beat: install
	$(BIN)/celery -A consent_portal beat --loglevel INFO

# Benchmarks (PostgreSQL; they empty and fill databases of their own). Figures are printed
# and written to bench/*/results.json; see bench/*/results.md.
PG ?= postgres://postgres@127.0.0.1:5432
bench: bench-ledger bench-identity bench-consent

bench-ledger: install
	psql "$(PG)/postgres" -qc "CREATE DATABASE ledgerbench" 2>/dev/null || true
	DATABASE_URL=$(PG)/ledgerbench $(BIN)/python manage.py migrate --noinput -v0
	DATABASE_URL=$(PG)/ledgerbench $(BIN)/python bench/ledger/bench.py

bench-identity: install
	psql "$(PG)/postgres" -qc "CREATE DATABASE identitybench" 2>/dev/null || true
	DATABASE_URL=$(PG)/identitybench $(BIN)/python manage.py migrate --noinput -v0
	DATABASE_URL=$(PG)/identitybench $(BIN)/python bench/identity/bench.py

bench-consent: install
	psql "$(PG)/postgres" -qc "DROP DATABASE IF EXISTS bench_consent" -c "CREATE DATABASE bench_consent"
	DATABASE_URL=$(PG)/bench_consent $(BIN)/python manage.py migrate --noinput -v0
	DATABASE_URL=$(PG)/bench_consent $(BIN)/python -m bench.consent.load
	DATABASE_URL=$(PG)/bench_consent REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0} $(BIN)/python -m bench.consent.run

clean:
	rm -rf $(VENV) var .pytest_cache
