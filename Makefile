# Two commands set everything up on a fresh machine with Python 3.11+:
#   make demo   - create .venv, install sedamp alone (no test or benchmark tools),
#                 run the word-count example end to end
#   make test   - install the test tools too and run the whole suite; the Ray tests run
#                 when the ray extra is installed (`make test-ray` installs it)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet

.PHONY: demo test test-ray lint bench clean

$(VENV)/.core: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PIP) -e .
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) -e '.[test]'
	touch $@

$(VENV)/.ray: $(VENV)/.test
	$(PIP) -e '.[test,ray]'
	touch $@

$(VENV)/.lint: $(VENV)/.test
	$(PIP) -e '.[test,lint]'
	touch $@

$(VENV)/.bench: $(VENV)/.test
	$(PIP) -e '.[test,bench]'
	touch $@

demo: $(VENV)/.core
	$(VENV)/bin/sedamp run topologies/wordcount.yaml
	@echo "--- the ten most frequent words (topologies/out/wordcount/counts.tsv):"
	@head -n 10 topologies/out/wordcount/counts.tsv

test: $(VENV)/.test
	$(PY) -m pytest

test-ray: $(VENV)/.ray
	$(PY) -m pytest

lint: $(VENV)/.lint
	$(VENV)/bin/ruff check sedamp stages tests scripts
	$(VENV)/bin/mypy sedamp stages
	$(PY) scripts/check_structure.py
	$(PY) scripts/check_structure.py stages

bench: $(VENV)/.bench
	$(PY) scripts/bench_pipeline.py

clean:
	rm -rf $(VENV) out .sedamp
