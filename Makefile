# Both quick-start commands set the machine up first (scripts/setup.sh is idempotent and fast when done).
PYTHON ?= python3
export PYTHON

.PHONY: setup mnist test bench

setup:
	@bash scripts/setup.sh

# The main job: LeNet on the real MNIST, from recipes/mnist.yaml.
mnist: setup
	$(PYTHON) -m lit_imgcls fit --recipe recipes/mnist.yaml

# The whole test suite (slow tests included), with the 25 slowest listed. pytest's exit code 5 (no tests collected) is not a failure here.
# Two pytest-xdist workers, whole files each (--dist loadfile keeps a file's module fixtures in one process): most
# tests wait on a subprocess starting Python, so two workers use the two cores of CI's machine.
TEST_WORKERS ?= 2
test: setup
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 tests; rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

bench: setup
	$(PYTHON) benchmarks/mnist_time_to_99.py
	$(PYTHON) benchmarks/fit_vs_bare_loop.py
