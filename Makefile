# Every target creates the virtual environment when it is missing, so a fresh machine needs only
# Python 3.11 and the package registries.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SAMPLE_ARGS := --input sample/input --output out --image_sizes sample/image_sizes.csv \
	--score_threshold 0.7

.PHONY: install run test clean docs

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
