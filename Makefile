# Two commands on a fresh machine: `make demo` and `make test`. Both install into .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The stamp changes whenever the pins or the package metadata change, so install re-runs then.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# torch first, alone and pinned: the local CPU wheel; anything looser pulls CUDA builds.
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[all]"
	@# optimum-intel declares torchvision (CUDA-only wheels here, and it breaks optimum.intel).
	$(PIP) install -q -c constraints.txt --no-deps optimum-intel
	@$(PIP) list --format=freeze | grep -iE '^(nvidia-|torchvision|triton)' \
		&& { echo "install: CUDA / torchvision packages crept in (see above); fix constraints.txt"; exit 1; } || true
	@$(PY) -c "import torch; assert '+cpu' in torch.__version__, torch.__version__"
	@rm -f $(VENV)/.installed-* && touch $@
	@echo "install: ok ($(VENV))"

demo: install
	$(VENV)/bin/qwen-edge demo

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
