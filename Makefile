# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both install from requirements.lock, the exact versions the test suite passed with.
# torch is installed first, pinned, so that a CPU machine never pulls CUDA wheels.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH := torch==2.13.0
LOCK := requirements.lock
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-slow test-latest test-lowest lock install install-dev clean

# A venv at $(1), torch first, then the project with pip arguments $(2) (constraints, extras).
define make_venv
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet $(TORCH)
	$(1)/bin/python -m pip install --quiet $(2)
	$(1)/bin/python -m pip check
endef

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(call make_venv,$(VENV),--constraint $(LOCK) -e .)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet --constraint $(LOCK) -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(VENV)/bin/vlm-grpo demo

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m slow

# The two ends of pyproject.toml's ranges, each in a venv of its own (the lock is not used):
# the newest releases the ranges allow, and the lowest version of every direct dependency.
test-latest:
	rm -rf .venv-latest
	$(call make_venv,.venv-latest,--upgrade --upgrade-strategy eager -e ".[dev]")
	.venv-latest/bin/python scripts/lock.py --show-versions
	.venv-latest/bin/python -m pytest -q

test-lowest:
	rm -rf .venv-lowest
	$(PYTHON) scripts/lock.py --lowest > .lowest-constraints.txt
	$(call make_venv,.venv-lowest,--constraint .lowest-constraints.txt -e ".[dev]")
	.venv-lowest/bin/python scripts/lock.py --show-versions
	.venv-lowest/bin/python -m pytest -q

# Refresh the lock: resolve the newest releases the ranges allow in a scratch venv and write their
# exact versions to $(LOCK). Then run `make test` (it reinstalls from the new lock) before committing.
lock:
	rm -rf .venv-lock
	$(call make_venv,.venv-lock,-e ".[dev]")
	.venv-lock/bin/python scripts/lock.py --write $(LOCK)
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .venv-latest .venv-lowest .venv-lock .lowest-constraints.txt demo_output
