# Two commands do all set-up on a fresh machine:
#   make demo   the main job on the embedded fundus phantom, end to end
#   make test   the test suite (fast tests; `make test-all` adds the slow ones)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= outputs/demo

.PHONY: venv demo test test-all bench bench-quick docs clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# render the phantom -> train phantom_smoke -> evaluate the exported model -> explain it -> model card
# -> a clinician review session of the explained eyes and its static report
# (each step replaces what an earlier `make demo` wrote into $(OUT): --overwrite / overwrite=true)
# (the explanations of the diagnosis are scored on glaucomatous eyes, label=1: a healthy eye has no
# evidence for glaucoma to point at; the review session holds 4 of them and 4 eyes without glaucoma, --normal 4,
# whose maps it computes as the explain run would, so that its readers judge both kinds of decision)
demo: venv
	$(BIN)/xmed-data phantom --out $(OUT)/data/phantom_smoke --n 3000 --size 256 --seed 0 --overwrite
	$(BIN)/xmed-data inspect --dataset phantom --root $(OUT)/data/phantom_smoke --no-decode
	$(BIN)/xmed-train experiment=phantom_smoke paths.data_dir=$(OUT)/data paths.output_dir=$(OUT)/train overwrite=true
	$(BIN)/xmed-eval ckpt_path=$(OUT)/train/model data=phantom data.root=$(OUT)/data/phantom_smoke paths.output_dir=$(OUT)/eval overwrite=true
	$(BIN)/xmed-explain ckpt_path=$(OUT)/train/model data.root=$(OUT)/data/phantom_smoke 'explainer=[gradcam,integrated_gradients,rise]' n=8 label=1 paths.output_dir=$(OUT)/explain overwrite=true model_card=$(OUT)/train/model_card.md
	$(BIN)/xmed-review build $(OUT)/review --explain $(OUT)/explain --n 4 --normal 4 --quiet --overwrite
	$(BIN)/xmed-review export $(OUT)/review --out $(OUT)/review_report
	@echo "demo outputs are in $(abspath $(OUT)): data/ (phantom), train/ (checkpoints, model, metrics, model_card.md), eval/, explain/ (saliency maps, overlays, scores), review/ (the clinician review session), review_report/ (its static report)"
	@echo "open the live review page:  $(BIN)/xmed-review reader $(OUT)/review 'Your Name'   (prints your private link), then  $(BIN)/xmed-review serve $(OUT)/review"

# one test process per core (at most 8), each computing with one thread (tests/conftest.py); the
# slowest tests are listed at the end
test: venv
	$(BIN)/python -m pytest -q -n auto --maxprocesses 8 --dist loadscope --durations 10

test-all: venv
	$(BIN)/python -m pytest -q -m ""

# every CPU benchmark, each figure next to its baseline measured in the same run:
# benchmarks/results/results.{json,md} (the GPU suite: bash benchmarks/gpu.sh)
bench: venv
	$(BIN)/python -m benchmarks

# the same benchmarks at tiny sizes, a check that each runs (about 2 min): outputs/benchmarks-quick/
bench-quick: venv
	$(BIN)/python -m benchmarks --quick

# the documentation site (mkdocs.yml: docs/ and the API pages from the docstrings), warnings as errors:
# outputs/docs_site/
docs: venv
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) outputs .pytest_cache
