# One-command set-up: `make demo` runs the demo pipeline, `make test` the test suite.
# Both create the virtual environment .venv on first use (CPU build of torch 2.13.0); `make demo`
# installs only the package with its `demo` extra, `make setup` (and so `make test`) all extras.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.amif-installed
DEMO_STAMP := $(VENV)/.amif-demo-installed
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: setup demo test lint clean browser

setup: $(STAMP)

$(DEMO_STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[demo]"
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP)
	$(PIP) -e ".[demo,test,web]"
	touch $(STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/amif demo --out runs/demo

# headless Chromium + chromedriver from the system packages for tests/amif_train/test_serve_browser.py
browser:
	sh .ci/install-browser

test: setup browser
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf runs .pytest_cache .ruff_cache
