# The two entry points of the README. Each installs uv (into .tools/) when it is missing, then the locked workspace.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)

.PHONY: repro test lint sync

## make repro: rebuild the default DVC pipelines (data, models, metrics, plots) on embedded data
repro: sync
	$(UV) run --frozen dvc repro

## make test: the whole test suite (what CI runs)
test: sync
	$(UV) run --frozen pytest

lint: sync
	$(UV) run --frozen ruff check . && $(UV) run --frozen ruff format --check .

sync: $(UV)
	$(UV) sync --frozen

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools && $(CURDIR)/.tools/bin/python -m pip install --quiet uv
