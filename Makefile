# Two commands for a fresh machine (see README.md):
#   make run   - the portal on the embedded default (SQLite, Celery tasks in-process)
#   make test  - the whole test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1:8000

.PHONY: run test install install-test worker beat bench clean

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

clean:
	rm -rf $(VENV) var .pytest_cache
