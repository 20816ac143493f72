# `make test`: create .venv if missing, install the project pinned for this platform, run everything.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

DATASETS := data/rotation.nc data/translation.nc data/levels.nc \
	data/discover-rotation.nc data/discover-translation.nc

ADDRESS ?= 127.0.0.1
PORT ?= 5006

.PHONY: test install bench data pretrained dashboard discover precompute loadtest uploadbench gpu-check gpu-wheels clean

install: $(STAMP)

$(STAMP): pyproject.toml .ci/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c .ci/constraints.txt -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m core bench

# the GPU check (README, GPU use) with the Python that holds your CUDA torch, not .venv (whose
# torch is the pinned CPU wheel): make gpu-check [GPU_PYTHON=python3] [GPU_CHECK_ARGS="--minutes 8"]
GPU_PYTHON ?= python3
GPU_CHECK_ARGS ?=
gpu-check:
	PYTHONPATH=. $(GPU_PYTHON) -m core gpu-check --out gpu-check $(GPU_CHECK_ARGS)

# wheels for a GPU machine without network that lacks them (Python 3.12, x86-64): carry .whl/
gpu-wheels:
	python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux2014_x86_64 -d .whl h5netcdf==1.8.2

# default datasets, simulated on first use (deterministic; not committed)
data: $(DATASETS)

data/%.nc: | $(STAMP)
	$(PY) -m core generate $* --out $@

# the shipped discoveries' data (core/pretrained.py): 32x32, 120 steps, a few seconds each
data/discover-rotation.nc: | $(STAMP)
	$(PY) -m core generate rotation --out $@ --grid 32 --steps 120 --sims 16 --breaking 4
data/discover-translation.nc: | $(STAMP)
	$(PY) -m core generate translation --out $@ --grid 32 --steps 120 --sims 14 --breaking 1

# quick start, command one: serve the dashboard on the default datasets and the shipped runs
# (dashboard/serve.py: analyses precomputed, warm start, closed sessions dropped)
dashboard: $(DATASETS)
	$(PY) -m dashboard.serve --address $(ADDRESS) --port $(PORT)

# before a class: every finished run's analyses, computed once into the run folders
precompute: $(DATASETS)
	$(PY) -m core precompute data/pretrained $(wildcard runs)

# N browser sessions against a real server on 127.0.0.1: make loadtest N=20
# (a class drifting in over a minute: make loadtest N=20 LOADTEST_ARGS="--arrive-over 60")
N ?= 20
LOADTEST_ARGS ?=
loadtest: $(DATASETS)
	$(PY) -m tests.loadtest --sessions $(N) $(LOADTEST_ARGS)

# a MB-sized netCDF dropped on the served dashboard, timed to its preview: make uploadbench MB=200
MB ?= 200
uploadbench: $(STAMP)
	$(PY) -m tests.uploadbench --mb $(MB)

# the runs and discoveries shipped in data/pretrained/ (about 25 minutes on a 2-core CPU)
pretrained: $(DATASETS)
	$(PY) -m core pretrain --runs data/pretrained

# a discovery on your own dataset: make discover DATA=data/discover-rotation.nc GROUP=C4
DATA ?= data/discover-rotation.nc
GROUP ?= C4
discover: $(STAMP)
	$(PY) -m core discover $(DATA) --group $(GROUP)

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
