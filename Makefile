# iothub — one entry per check, so every CI failure reproduces locally.
#   make test    install what the tests need, then lint, spell-check and run every test
#   make demo    local hub emulator + device client on the MicroPython unix port
#                (TRANSPORT=websockets: MQTT over WebSockets through a local HTTP proxy)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# The device runtime. Override with a custom build, e.g. MICROPYTHON=~/mp/ports/unix/build-iothub/micropython
MICROPYTHON ?= $(abspath $(BIN)/micropython)
export MICROPYTHON
PROFILE ?= ecc
AUTH ?= sas
MODE ?= hub
TRANSPORT ?= mqtt
PORT ?= /dev/ttyACM0
# mpy-cross -O level of the .mpy package (make mpy, make deploy): 3 stores no line numbers
# (about 1 KB less RAM for a connected client); MPY_OPT=0 keeps them for debugging.
MPY_OPT ?= 3

APT_PACKAGES := mosquitto tinyproxy ca-certificates openssl
STAMP := $(VENV)/.installed

.PHONY: all setup apt venv test lint format spell pytest demo bench mpy deploy repl package-json clean

all: test

setup: apt $(STAMP)

# Debian packages, installed only when missing (CI and fresh machines run as root).
apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): requirements-dev.txt tools/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q -e tools
	touch $@

test: setup lint spell pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

spell: $(STAMP)
	$(BIN)/codespell firmware tools host_tests boards docs README.md Makefile

pytest: setup
	$(BIN)/pytest -q -rs host_tests

demo: setup
	$(PY) tools/demo.py --profile $(PROFILE) --auth $(AUTH) --mode $(MODE) --transport $(TRANSPORT)

# Every benchmark, writing its README blocks into docs/figures.md, then the README from it.
# (bench_lifecycle.py, the fault-recovery and soak figures, takes about 4 minutes of it.)
FIGURES := docs/figures.md
bench: setup
	@for b in tools/bench/bench_*.py; do echo "== $$b"; $(PY) $$b --figures $(FIGURES) || exit 1; done
	$(PY) tools/bench/figures.py --update-readme --figures-file $(FIGURES)

# Precompile the device package to .mpy (build/mpy/iothub/*.mpy).
mpy: $(STAMP)
	$(PY) tools/iothub_tool/mpy.py --out build/mpy --opt $(MPY_OPT)

# Copy the device package (.mpy for the board's bytecode), config.py and the example main.py to a board.
deploy: $(STAMP)
	$(PY) tools/iothub_tool/deploy.py --port $(PORT) --opt $(MPY_OPT)

repl: $(STAMP)
	$(BIN)/mpremote connect $(PORT) repl

# Refresh package.json (mip) after adding or removing a device module.
package-json: $(STAMP)
	$(PY) tools/iothub_tool/mpy.py --write-package-json

clean:
	rm -rf build .pytest_cache .ruff_cache
