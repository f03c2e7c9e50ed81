# lockstep: `make train` runs the demo fine-tune, `make test` runs the tests.
# Both set up their own environments on first use (and update them when the pins change).

PYTHON      ?= python3
VENV        ?= .venv
PINNED_VENV ?= .venv-pinned
TARGET      ?= local
CONFIG      ?= configs/demo.yaml
PYTEST_ARGS ?=

# (wildcard: a missing lock reaches runner.stacks.install, which says how to make it)
CPU_LOCK    := lockfiles/cpu.in $(wildcard lockfiles/cpu.txt)
PINNED_LOCK := lockfiles/cu121-torch251-pypi.in $(wildcard lockfiles/cu121-torch251-pypi.txt)

.PHONY: help train test bench venv pinned-venv clean

help:
	@echo "make train [CONFIG=configs/demo.yaml] [TARGET=local]   fine-tune (default: the embedded demo on CPU)"
	@echo "                                                        TARGET=docker: inside the stack's image (docker or podman)"
	@echo "                                                        TARGET=slurm: an sbatch job (see the config's slurm section)"
	@echo "make test [PYTEST_ARGS=...]                             run the test suite"
	@echo "make bench                                              run the benchmarks (results in runs/bench/)"
	@echo "make clean                                              remove the virtual environments"

train: $(VENV)/.installed
	$(VENV)/bin/lockstep train $(CONFIG) --backend $(TARGET)

test: $(VENV)/.installed $(PINNED_VENV)/.installed
	LOCKSTEP_PINNED_PYTHON="$(abspath $(PINNED_VENV))/bin/python" $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Benchmarks report numbers (and keep them as JSON); they are not pass/fail speed tests. The same as `nox -s bench`:
# runs/bench/latest.json, a numbered copy in runs/bench/history compared with the previous one, and docs/benchmarks.md
# regenerated from it (also after a failed benchmark, which the page lists; the exit status is still the failure).
bench: $(VENV)/.installed
	mkdir -p runs/bench
	status=0; LOCKSTEP_BENCH_COMMAND="make bench$(if $(PYTEST_ARGS), PYTEST_ARGS='$(PYTEST_ARGS)')" \
	  $(VENV)/bin/python -m pytest tests/bench -s --benchmark-json=runs/bench/latest.json \
	  --benchmark-storage=file://runs/bench/history --benchmark-autosave --benchmark-compare --benchmark-sort=name $(PYTEST_ARGS) \
	  || status=$$?; \
	if [ $$status -le 1 ]; then $(VENV)/bin/python -m tests.bench.results || exit $$?; fi; exit $$status

venv: $(VENV)/.installed
pinned-venv: $(PINNED_VENV)/.installed

# Environments come from the stacks' hash-checked locks; a changed .in file without a new
# lock stops here with the command that makes it (`nox -s lock -- STACK`).
# The current generation (stack `cpu`), plus lockstep itself in editable mode.
$(VENV)/.installed: $(CPU_LOCK) pyproject.toml
	$(PYTHON) -m runner.stacks.install cpu $(VENV)
	touch $@

# The library generation pinned for Modal (torch 2.5.1, transformers 4.46.3, trl 0.11.4), for tests.
$(PINNED_VENV)/.installed: $(PINNED_LOCK) pyproject.toml
	$(PYTHON) -m runner.stacks.install cu121-torch251-pypi $(PINNED_VENV)
	touch $@

clean:
	rm -rf $(VENV) $(PINNED_VENV)
