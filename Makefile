# Two commands on a fresh machine with Python >= 3.11:  make demo   |   make test
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
OUT    ?= runs/quickstart

.PHONY: install demo test test-fast smoke bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Exact pins (requirements.lock) so a fresh install resolves the same way everywhere.
$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install -r requirements.lock
	$(BIN)/pip install --no-deps -e .
	touch $@

install: $(VENV)/.installed

# The example plugin (examples/plugin), installed for the tests that run a sweep through its entry points.
$(VENV)/.example-plugin: examples/plugin/pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install --quiet --no-deps -e examples/plugin
	touch $@

demo: install
	$(BIN)/prunetune run configs/quickstart.yaml --out $(OUT)

test: install $(VENV)/.example-plugin
	$(BIN)/python -m pytest tests -q -n 3 --dist worksteal

# The suite without the end-to-end sweeps (tests marked slow): the tier to run while editing.
test-fast: install $(VENV)/.example-plugin
	$(BIN)/python -m pytest tests -q -m "not slow" -n 3 --dist worksteal

# The cpu-smoke variant of every paper-scale config: the same pipelines on fake data (CI runs it).
smoke: install
	@set -e; mkdir -p runs/smoke; for cfg in configs/papers/*.yaml; do \
	  name=$$(basename $$cfg .yaml); echo "== $$name (cpu-smoke)"; rm -rf runs/smoke/$$name; \
	  $(BIN)/prunetune run $$cfg --variant cpu-smoke --out runs/smoke/$$name > runs/smoke/$$name.log 2>&1 \
	    || { tail -40 runs/smoke/$$name.log; exit 1; }; \
	  tail -3 runs/smoke/$$name.log; \
	done

# The benchmark suite (benchmarks/run_all.py): JSON in benchmarks/results/, then the README's
# Performance section re-rendered from it. Under 30 minutes on 2 cores; bench-quick under 5.
bench: install
	$(BIN)/python benchmarks/run_all.py

bench-quick: install
	$(BIN)/python benchmarks/run_all.py --quick

clean:
	rm -rf $(VENV) runs
