# The two set-up commands of the README, each creating the environment itself:
#   make demo   synthesise the embedded corpus, train the basic RNN, evaluate, transcribe
#   make test   the test suite (the end-to-end checks marked slow run with `make test-slow`; CI runs both)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/demo
DATA ?= data/synthetic

.PHONY: demo test test-slow bench install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,export]'
	touch $@

demo: install
	$(PY) -m speechrnn.train hydra.run.dir=$(RUN)
	$(PY) -m speechrnn.evaluate ckpt_path=$(RUN)/checkpoints/best.ckpt split=testing hydra.run.dir=$(RUN)/evaluate
	$(PY) -m speechrnn.transcribe $(RUN)/checkpoints/best.ckpt \
		$$(sed -n '1~145p' $(DATA)/testing_list.txt | head -n 12 | sed 's|^|$(DATA)/|')

test: install
	$(PY) -m pytest -q -m "not slow"

test-slow: install
	$(PY) -m pytest -q -m slow

bench: install
	$(PY) -m speechrnn.bench
