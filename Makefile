# Two commands do all set-up on a fresh machine:
#   make demo   the main job on the embedded fundus phantom, end to end
#   make test   the test suite (fast tests; `make test-all` adds the slow ones)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= outputs/demo

.PHONY: venv demo test test-all bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: venv
	$(BIN)/xmed-data phantom --out $(OUT)/phantom --n 400 --size 256 --seed 0
	$(BIN)/xmed-data inspect --dataset phantom --root $(OUT)/phantom
	$(BIN)/xmed-data sheet --out $(OUT)/phantom_contact_sheet.jpg --n 16 --size 512 --seed 0
	@echo "demo outputs are in $(abspath $(OUT))"

test: venv
	$(BIN)/python -m pytest -q

test-all: venv
	$(BIN)/python -m pytest -q -m ""

bench: venv
	$(BIN)/python benchmarks/phantom_speed.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
