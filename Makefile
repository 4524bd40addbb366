# Two commands do all the set-up:  `make demo` (train + evaluate + sample a tiny model on CPU)
# and `make test` (the test suite). Both create .venv on first use (CPU torch wheel first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test clean
setup: $(VENV)/.installed
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

test: setup
	$(PY) -m pytest -q

# Local copies of the data when ../shared/data exists (offline machines); otherwise downloaded once.
SHARED ?= ../shared/data
DEMO_DATA := $(if $(wildcard $(SHARED)/tinyshakespeare/input.txt),--train_file $(SHARED)/tinyshakespeare/input.txt)
DEMO_HELLASWAG := $(if $(wildcard $(SHARED)/hellaswag/hellaswag_val.jsonl),--hellaswag_file $(SHARED)/hellaswag/hellaswag_val.jsonl)

demo: setup
	$(PY) run_pretrain.py --preset tiny --output_dir runs/tiny-shakespeare $(DEMO_DATA) $(DEMO_HELLASWAG)
	$(PY) -m nanogpt2.plot runs/tiny-shakespeare

clean:
	rm -rf $(VENV) runs
