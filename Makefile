# Two entry points for a fresh machine: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
# torch==2.13.0: on this project's CPU machines pip takes the local CPU wheel; elsewhere PyPI's default build
# (CUDA on Linux). Override with e.g. `make test TORCH_SPEC="torch==2.14.1"`.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/pip install -q -e ".[test]"
	$(VENV)/bin/python -c "import mtu, torch, diffusers; print('mtu', mtu.__version__, 'torch', torch.__version__, 'diffusers', diffusers.__version__)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mtu demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q
	$(VENV)/bin/python -m pytest -q -m isolated

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) mtu-demo mtu-selfcheck
