# KTA: two commands do everything on a fresh machine.
#   make run   - set up .venv if needed, then train on split-digits and print the accuracy matrix
#   make test  - set up .venv if needed, then run the test suite
PYTHON ?= python3.11
VENV   := .venv
STAMP  := $(VENV)/.kta-setup-stamp

.PHONY: setup run test bench clean-venv

setup: $(STAMP)

# The stamp is stale when the dependency list or the set-up script changes.
$(STAMP): setup.cfg tools/setup_venv.sh
	PYTHON=$(PYTHON) bash tools/setup_venv.sh $(VENV)
	touch $(STAMP)

run: setup
	$(VENV)/bin/kta run --scenario split-digits --strategy naive --epochs 1 --seed 0

test: setup
	$(VENV)/bin/python -m pytest -q tests

bench: setup
	$(VENV)/bin/python examples/benchmarks/speed.py

clean-venv:
	rm -rf $(VENV)
