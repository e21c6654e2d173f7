# Everyday commands. `make setup` once, then `make lint test` before every commit.
PY := .venv/bin/python
RUFF := .venv/bin/ruff

.PHONY: setup lint format test test-fast test-ray bench bench-studies quickstart

setup:            ## the environment: Debian packages, .venv with contrastlab and its test extras
	bash scripts/setup.sh

lint:             ## what CI checks before the tests
	$(RUFF) check .
	$(RUFF) format --check .

format:           ## rewrite the tree in the project's style, then fix what ruff can fix
	$(RUFF) format .
	$(RUFF) check --fix .

test:             ## the whole suite, as CI and the README run it
	$(PY) -m pytest

test-fast:        ## everything that does not start a Ray cluster (about five minutes on two cores)
	$(PY) -m pytest -m "not ray"

test-ray:         ## the tests that start Ray (one cluster at a time)
	$(PY) -m pytest -m ray

bench:            ## step throughput and augmentation, in one process (minutes); results go to benchmarks/results/
	OMP_NUM_THREADS=1 $(PY) benchmarks/throughput.py --cpu-small
	$(PY) benchmarks/augmentation.py

bench-studies:    ## Ray's overhead per run and TPE against random search (local Ray; tens of minutes)
	$(PY) benchmarks/ray_overhead.py
	$(PY) benchmarks/tpe_vs_random.py

quickstart:       ## the README's main job
	bash scripts/quickstart.sh
