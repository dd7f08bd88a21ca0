# minescan: the two commands.
#   make demo   create .venv and run the embedded demo scan (simulated scene -> train -> scan -> layers)
#   make test   create .venv and run the test suite
# Other targets: make bench (benchmarks), make lint, make clean-demo.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint clean-demo venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/default --configfile config/demo.yaml
	@$(BIN)/python -c "import json; s = json.load(open('results/demo/2026Q1/summary.json')); e = s['evaluation']; \
	print(f\"\nDemo scan (SIMULATED scene): {s['sites']} sites, {s['detections']} detections, {s['rejected_no_ore']} rejected as no ore\"); \
	print(f\"site-level recall {e['recall']} ({e['found_mines']}/{e['truth_mines']} true mines), precision {e['precision']} ({e['correct_sites']}/{e['detected_sites']} sites)\"); \
	seg = s['models'].get('segmentation'); a = e.get('site_area'); \
	seg and print(f\"segmentation (held-out SIMULATED tiles, per tile): pixel F1 {seg['test_metrics']['f1']} precision {seg['test_metrics']['precision']} recall {seg['test_metrics']['recall']}\"); \
	a and print(f\"site area vs truth, median relative error: cells {a['median_relative_error_cells']}, segmented {a['median_relative_error_segmented']} ({a['sites_on_true_mines']} sites)\"); \
	print('layers in results/demo/2026Q1/')"

test: $(STAMP)
	@# as root (CI): headless Chromium for the map tests (they skip, saying why, without it)
	@if [ "$$(id -u)" = 0 ] && ! command -v chromium >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "make test: could not install chromium (the map tests will skip)"; fi
	@# as root (CI), a real single-node SLURM runs tests/test_slurm.py; elsewhere that test skips, saying why
	@if [ "$$(id -u)" = 0 ]; then bash scripts/slurm-local.sh install && bash scripts/slurm-local.sh start \
	  || echo "make test: the local SLURM cluster did not start (tests/test_slurm.py will fail or skip)"; fi
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -p no:cacheprovider --durations=10; rc=$$?; \
	  if [ "$$(id -u)" = 0 ]; then bash scripts/slurm-local.sh stop || true; fi; exit $$rc

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/snakemake --lint

clean-demo:
	rm -rf results/demo results/demo-training results/models/demo-discovery results/models/demo-impact results/models/demo-segment results/logs results/benchmarks
