# The two commands the README promises: `make demo` and `make test`. Both create .venv first when missing.
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.requirements-stamp
REQUIREMENTS := $(wildcard requirements/*.txt)
SHARED ?= ../shared
RASTER ?=
export QT_QPA_PLATFORM ?= offscreen
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: setup test lint demo model bench bench-quick package deploy clean

setup: $(STAMP)

$(STAMP): $(REQUIREMENTS) scripts/setup.sh
	@bash scripts/setup.sh
	@touch $@

test: setup
	$(PY) -m ruff check rs_text_search training tests bench
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check rs_text_search training tests bench

demo: setup
	$(PY) -m rs_text_search.demo $(if $(RASTER),--raster "$(RASTER)",) --shared "$(SHARED)"

clean:
	rm -rf build dist demo_output tests/artifacts .pytest_cache .ruff_cache
