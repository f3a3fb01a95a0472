# Two entry points for a new machine: `make demo` and `make test`. Both build the local venv from scratch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The torch build this project is developed and tested with; pyproject.toml only states a range.
TORCH_PACKAGES ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test lint bench clean js chromium check-install

setup: $(VENV)/.installed

# The front end is built first, so the editable install's build hook finds the bundles and skips npm.
$(VENV)/.installed: pyproject.toml | js
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PACKAGES)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $@

# The demo ranking in the shell, then the widgets themselves: JupyterLab on the first notebook (on this machine
# only; LAB_ARGS=--no-browser on a machine without a browser). Ctrl+C stops it.
LAB_ARGS ?=
demo: setup
	$(BIN)/neuronwidgets rank
	@echo
	@echo "Starting JupyterLab on notebooks/01_explore.ipynb (run its cells to see the Explorer)."
	@echo "Open the http://127.0.0.1:... URL it prints below if no browser opens; stop it with Ctrl+C."
	$(BIN)/jupyter lab notebooks/01_explore.ipynb --ServerApp.ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The front end: npm ci from the committed lock file, esbuild into neuronwidgets/static/ (gitignored).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

js: node_modules/.installed
	npm run build

# The end-to-end tests drive Debian's Chromium (never a browser downloaded by Playwright).
chromium:
	test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

test: lint js chromium
	npm test
	$(BIN)/python -m pytest -q
	$(MAKE) check-install

# A user's install: wheel and sdist from a clean clone of HEAD, the wheel in a fresh venv without Node or the dev
# extras, the Explorer in JupyterLab from it. Commit first: uncommitted changes are not in the clone.
check-install: setup chromium
	PY=$(BIN)/python TORCH_PACKAGES="$(TORCH_PACKAGES)" bash .ci/check-install.sh

bench: setup
	$(BIN)/python benchmarks/ablation.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist node_modules neuronwidgets/static test-artifacts
