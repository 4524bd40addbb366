# Two commands do all the set-up:  `make demo` (train + evaluate + sample a tiny model on CPU)
# and `make test` (the test suite). Both create .venv on first use (CPU torch wheel first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-floor clean
setup: $(VENV)/.installed
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

test: setup
	$(PY) -m pytest -q
	$(MAKE) test-floor

# The lowest transformers that setup.cfg declares (the one GPU images ship), beside the newest in .venv:
# the model, cache, save/load, trust_remote_code, conversion and HF-conformance tests run under it too. It is
# installed into a folder that shadows .venv's copy through PYTHONPATH, with the huggingface_hub 1.x it needs.
TRANSFORMERS_FLOOR := $(shell sed -n 's/^ *transformers>=\([0-9.]*\),.*/\1/p' setup.cfg)
FLOOR := .venv-floor
FLOOR_TESTS := tests/test_model.py tests/test_configuration_nanogpt2.py tests/test_checkpoint.py tests/test_convert.py \
	tests/test_hf_conformance.py tests/test_model_variants.py
$(FLOOR)/.installed: setup.cfg | setup
	rm -rf $(FLOOR)
	$(PY) -m pip install -q --no-deps --target $(FLOOR) "transformers==$(TRANSFORMERS_FLOOR).*" \
		"huggingface_hub>=1.5,<2" "httpx<1" httpcore h11 anyio
	touch $@

test-floor: $(FLOOR)/.installed
	PYTHONPATH=$(FLOOR) $(PY) -c "import transformers as t; assert t.__version__.startswith('$(TRANSFORMERS_FLOOR)'), t.__version__"
	PYTHONPATH=$(FLOOR) $(PY) -m pytest -q $(FLOOR_TESTS)

# Local copies of the data when ../shared/data exists (offline machines); otherwise downloaded once.
SHARED ?= ../shared/data
DEMO_DATA := $(if $(wildcard $(SHARED)/tinyshakespeare/input.txt),--train_file $(SHARED)/tinyshakespeare/input.txt)
DEMO_HELLASWAG := $(if $(wildcard $(SHARED)/hellaswag/hellaswag_val.jsonl),--hellaswag_file $(SHARED)/hellaswag/hellaswag_val.jsonl)

demo: setup
	$(PY) run_pretrain.py --preset tiny --output_dir runs/tiny-shakespeare --overwrite_output_dir $(DEMO_DATA) $(DEMO_HELLASWAG)
	$(PY) -m nanogpt2.plot runs/tiny-shakespeare

clean:
	rm -rf $(VENV) $(FLOOR) runs
