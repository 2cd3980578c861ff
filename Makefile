# One command each: `make demo` runs the whole loop embedded; `make test` runs the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo up test test-unit bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to the CPU build in the `train` extra; the trainer image uses CUDA.
	$(PY) -m pip install -q -e '.[postgres,gcp,train,serve,dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/ctflow demo

up: install
	$(VENV)/bin/ctflow up

test: install
	scripts/ensure-test-services.sh
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

bench: install
	scripts/ensure-test-services.sh
	$(PY) tests/bench/run_all.py

# Types (mypy, configured in pyproject.toml), lint rules and formatting; CI runs it before the tests.
lint: install
	$(VENV)/bin/ruff check services tests trainer_image
	$(VENV)/bin/ruff format --check services tests trainer_image
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .bench
