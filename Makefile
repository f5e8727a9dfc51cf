# The entry points of the README. Each installs uv (into .tools/) when it is missing, then the locked workspace.
# After `make sync`, `source .venv/bin/activate` puts uv (the dev group's), dvc, pytest and the formers-* CLIs on PATH.
SHELL := /bin/bash
# uv: on PATH, else the locked one of .venv (after a first sync), else a bootstrap copy in .tools/
UV := $(shell command -v uv 2>/dev/null || ls $(CURDIR)/.venv/bin/uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)

.PHONY: repro test lint sync dist

## make repro: rebuild the default DVC pipelines (data, models, metrics, plots) on embedded data
repro: sync
	$(UV) run --frozen dvc repro

## make test: the whole test suite (what CI runs)
test: sync
	$(UV) run --frozen pytest -n 2 --dist loadfile  # two workers (one torch thread each, tests/conftest.py); a file stays on one worker, in order

lint: sync
	$(UV) run --frozen ruff check . && $(UV) run --frozen ruff format --check .

sync: $(UV)
	$(UV) sync --frozen

## make dist: every member's wheel and sdist in dist/ (one domain from them: pip install --find-links dist formers-vision)
dist: $(UV)
	$(UV) build --all-packages --out-dir dist

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools && $(CURDIR)/.tools/bin/python -m pip install --quiet uv
