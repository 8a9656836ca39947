# Every target creates the virtual environment when it is missing, so a fresh machine needs only
# Python 3.11 and the package registries.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SAMPLE_ARGS := --input sample/input --output out --image_sizes sample/image_sizes.csv \
	--score_threshold 0.7

.PHONY: install run test clean docs bench bench-quick

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	rm -rf out
	$(PY) -m pipeline $(SAMPLE_ARGS)

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf out .pytest_cache build *.egg-info

docs: install
	$(PY) -m pipeline.docs README.md

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# The full benchmark: 20,000 and 200,000 images (about 1 GB), thresholds 0.5 and 0.0, 3 repeats.
bench: $(BENCH_STAMP)
	$(PY) bench/run.py

bench-quick: $(BENCH_STAMP)
	$(PY) bench/run.py --images 20000 --repeats 1
