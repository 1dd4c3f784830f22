# Two commands on a fresh machine: `make demo` and `make test`. Both install into .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The stamp changes whenever the pins or the package metadata change, so install re-runs then.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt android_demo/package-lock.json | sha256sum | cut -c1-12)
PYTEST_ARGS ?=
CHROMIUM := 150.0.7871.100-1~deb12u1
X11_PACKAGES := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-xinerama0 libxkbcommon-x11-0 fonts-dejavu-core
# pip.conf here lists local index folders that lack most packages: hide that noise, keep errors.
QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt android_demo/package-lock.json
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip $(QUIET)
	@# torch first, alone and pinned: the local CPU wheel; anything looser pulls CUDA builds.
	$(PIP) install -q -c constraints.txt torch==2.13.0 $(QUIET)
	$(PIP) install -q -c constraints.txt -e ".[all]" $(QUIET)
	@# optimum-intel declares torchvision (CUDA-only wheels here, and it breaks optimum.intel).
	$(PIP) install -q -c constraints.txt --no-deps optimum-intel $(QUIET)
	@$(PIP) list --format=freeze | grep -iE '^(nvidia-|torchvision|triton)' \
		&& { echo "install: CUDA / torchvision packages crept in (see above); fix constraints.txt"; exit 1; } || true
	@$(PY) -c "import torch; assert '+cpu' in torch.__version__, torch.__version__"
	@# The mobile demo's JavaScript packages, exactly as package-lock.json pins them.
	@if command -v npm >/dev/null; then cd android_demo && npm ci --no-audit --no-fund --loglevel=error; \
		else echo "install: npm not found: the android_demo tests will skip"; fi
	@# Debian's Chromium for the demo's browser tests (playwright-core drives it; no browser download).
	@# Pinned to the tested build; Debian's mirror drops old security builds, so the current one is the fallback.
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& { apt-get update -q >/dev/null; apt-get install -y -q chromium=$(CHROMIUM) >/dev/null 2>&1 \
			|| apt-get install -y -q chromium >/dev/null; } \
		|| echo "install: no /usr/bin/chromium (needs root and apt): the browser test will fail"; }
	@# A virtual screen and the X libraries Qt's xcb plugin loads, for the desktop app's window test.
	@dpkg -s $(X11_PACKAGES) >/dev/null 2>&1 || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& { apt-get update -q >/dev/null; apt-get install -y -q $(X11_PACKAGES) >/dev/null; } \
		|| echo "install: no Xvfb / X libraries (needs root and apt): the desktop window test will fail"; }
	@rm -f $(VENV)/.installed-* && touch $@
	@echo "install: ok ($(VENV))"

demo: install
	$(VENV)/bin/qwen-edge demo

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
