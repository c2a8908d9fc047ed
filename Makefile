# Two entry points for a fresh machine: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
# torch==2.13.0: on this project's CPU machines pip takes the local CPU wheel; elsewhere PyPI's default build
# (CUDA on Linux). Override with e.g. `make test TORCH_SPEC="torch==2.14.1"`.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow install clean chromium

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
	$(VENV)/bin/python -m pytest -q -rs --durations=15  # -rs: one line per skipped test (e.g. the browser test without Chromium); the 15 slowest tests are listed, to keep the suite under 20 minutes
	$(VENV)/bin/python -m pytest -q -m isolated

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m slow

# Chromium for the browser test of `mtu chat` (tests/test_chat_browser.py, skipped without it): Debian's packages as
# root, quiet and quick when already there; elsewhere a line saying how to get it.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; \
	else echo "make chromium: install Chromium yourself (Debian/Ubuntu: sudo apt-get install -y chromium chromium-driver)"; fi

clean:
	rm -rf $(VENV) mtu-demo mtu-selfcheck
