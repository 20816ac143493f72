# `make test`: create .venv if missing, install the project pinned for this platform, run everything.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

DATASETS := data/rotation.nc data/translation.nc data/levels.nc

.PHONY: test install bench data pretrained clean

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

# default datasets, simulated on first use (deterministic; not committed)
data: $(DATASETS)

data/%.nc: | $(STAMP)
	$(PY) -m core generate $* --out $@

# the runs shipped in data/pretrained/ (about 10 minutes on a 2-core CPU)
pretrained: $(DATASETS)
	$(PY) -m core pretrain --runs data/pretrained

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
