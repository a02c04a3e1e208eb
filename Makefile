# gankit: set-up, demo and tests. Needs only Python 3.10+ on the machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A local CPU build of torch is used when this machine has one (it avoids a multi-GB CUDA
# download); anywhere else pip picks torch as usual. Override: make TORCH_SPEC='torch==2.5.1'.
LOCAL_TORCH := $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl))
TORCH_SPEC ?= $(if $(LOCAL_TORCH),$(LOCAL_TORCH),torch>=2.4)

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/gankit train quadratic --out runs/demo --overwrite

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
