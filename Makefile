# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create a local virtual environment (.venv) and install graphviz's `dot` if missing.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint setup graphviz clean parser

demo: setup
	$(BIN)/dagc check examples/seed/baseline_tp8_pp2.dag examples/seed/ma_separation.dag
	$(BIN)/dagc analyze examples/seed/ma_separation.dag
	$(BIN)/dagc compare examples/seed/baseline_tp8_pp2.dag examples/seed/ma_separation.dag

test: setup
	$(BIN)/ruff check dagc tests benchmarks
	$(BIN)/ruff format --check dagc tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check dagc tests benchmarks
	$(BIN)/mypy

setup: $(VENV)/.installed graphviz

# After a change to grammar/dag.lark: regenerate the parser dagc runs (tests/test_startup.py
# fails until then).
parser: $(VENV)/.installed
	$(BIN)/python tools/generate_parser.py

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# The real `dot` binary comes from Debian's graphviz package.
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq graphviz >/dev/null; }

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache .mypy_cache
