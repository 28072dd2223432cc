# Two commands on a fresh machine with Python >= 3.11:  make demo   |   make test
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
OUT    ?= runs/quickstart

.PHONY: install demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Exact pins (requirements.lock) so a fresh install resolves the same way everywhere.
$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install -r requirements.lock
	$(BIN)/pip install --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/prunetune run configs/quickstart.yaml --out $(OUT)

test: install
	$(BIN)/python -m pytest tests -q

clean:
	rm -rf $(VENV) runs
