# The README's two fresh-machine commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python

.PHONY: demo test venv

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade --quiet pip

venv: $(VPY)

# Installs the project with its test extra into .venv (created when missing), then runs pytest.
test: $(VPY)
	$(VPY) -m pip install --quiet -e '.[test]'
	$(VPY) -m pytest

# Installs the project into .venv (created when missing), prepares MovieLens-100K (downloaded from
# PyPI inside the recbole wheel) unless data/movielens-100k is already prepared, then runs the
# paper's ablation study on it with an embedded local Ray and prints the table.
demo: $(VPY)
	$(VPY) -m pip install --quiet -e .
	mkdir -p data
	test -f data/movielens-100k/metadata.json || \
		$(VENV)/bin/ihas prepare --preset movielens-100k --output data/movielens-100k
	$(VPY) -m ablations --study paper-table4 --data data/movielens-100k --output results/paper-table4
