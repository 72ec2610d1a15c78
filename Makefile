# The README's two fresh-machine commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python

.PHONY: test venv

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade --quiet pip

venv: $(VPY)

# Installs the project with its test extra into .venv (created when missing), then runs pytest.
test: $(VPY)
	$(VPY) -m pip install --quiet -e '.[test]'
	$(VPY) -m pytest
