# Everything runs from a local virtual environment made from pyproject.toml, at the exact versions
# constraints.txt locks (what the tests last ran with); `make lock` refreshes the lock.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: install demo teacher test test-slow lint format benchmarks clean lock

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# A fresh environment from pyproject.toml's ranges alone, then its exact versions become the lock.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -e '.[test]'
	{ sed -n '1,2p' constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^distill'; } > constraints.new
	mv constraints.new constraints.txt
	rm -rf .lock-venv

install: $(VENV)/.installed

demo: install
	$(BIN)/distill demo --out $(OUT)

teacher: install
	$(BIN)/distill train-teacher --env reacher --out $(OUT)/teacher

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs
