# Two commands set everything up on a fresh machine with Python 3.11+:
#   make demo   - create .venv, install sedamp, run the word-count example end to end
#   make test   - create .venv, install sedamp with its test tools, run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/sedamp run topologies/wordcount.yaml
	@echo "--- the ten most frequent words (out/wordcount/counts.tsv):"
	@head -n 10 out/wordcount/counts.tsv

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) scripts/bench_pipeline.py

clean:
	rm -rf $(VENV) out .sedamp
