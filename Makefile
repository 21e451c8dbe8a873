# The two commands of the README. Each sets everything up on a fresh machine (a virtual environment
# in .venv with the pinned PyTorch) and is idempotent: a re-run only redoes what changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dermdiff-installed

.PHONY: demo test lint install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test,study]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dermdiff demo --out outputs/demo --resume $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	bash .ci/install-browser
	$(PY) -m pytest -q $(TEST_ARGS)

clean:
	rm -rf $(VENV) outputs build *.egg-info
