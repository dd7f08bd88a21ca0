# minescan: the two commands.
#   make demo   create .venv and run the embedded demo scan (simulated scene -> train -> scan -> layers)
#   make test   create .venv and run the test suite
# Other targets: make bench (benchmarks), make lint, make clean-demo,
#   make venv-gpu   .venv-gpu: TensorFlow with CUDA instead of tensorflow-cpu, for GPU nodes (docs/gpu.md)

PYTHON ?= python3
VENV   := .venv
GPU_VENV := .venv-gpu
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the local test cluster of `make test` (tests/test_slurm.py uses the same values when it starts one itself)
SLURM_TEST_ENV := MINESCAN_SLURM_FAKE_GPUS=4 MINESCAN_SLURM_MEM_MB=64000

.PHONY: demo test bench lint clean-demo venv venv-gpu

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# The GPU environment (never built by demo/test): pip install -e ".[gpu]" (tensorflow[and-cuda]), then
# scripts/use-gpu-tensorflow.sh swaps out the tensorflow-cpu that the base dependencies pulled in. Run
# Snakemake from it on a GPU cluster (.venv-gpu/bin/snakemake --profile profiles/slurm); it works on CPUs too.
venv-gpu: $(GPU_VENV)/.installed

$(GPU_VENV)/.installed: pyproject.toml scripts/use-gpu-tensorflow.sh
	@test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(GPU_VENV)/bin/python -m pip install --quiet -e ".[gpu,dev]"
	bash scripts/use-gpu-tensorflow.sh $(GPU_VENV)
	$(GPU_VENV)/bin/minescan device
	@touch $@

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/default --configfile config/demo.yaml
	@$(BIN)/python -c "import json; s = json.load(open('results/demo/2026Q1/summary.json')); e = s['evaluation']; \
	print(f\"\nDemo scan (SIMULATED scene): {s['sites']} sites, {s['detections']} detections, {s['rejected_no_ore']} rejected as no ore\"); \
	print(f\"site-level recall {e['recall']} ({e['found_mines']}/{e['truth_mines']} true mines), precision {e['precision']} ({e['correct_sites']}/{e['detected_sites']} sites)\"); \
	seg = s['models'].get('segmentation'); a = e.get('site_area'); \
	seg and print(f\"segmentation (held-out SIMULATED tiles, per tile): pixel F1 {seg['test_metrics']['f1']} precision {seg['test_metrics']['precision']} recall {seg['test_metrics']['recall']}\"); \
	a and print(f\"site area vs truth, median relative error: cells {a['median_relative_error_cells']}, segmented {a['median_relative_error_segmented']} ({a['sites_on_true_mines']} sites)\"); \
	print('layers in results/demo/2026Q1/')"
	@test ! -f results/demo/2026Q1/pixel/evaluation.json || $(BIN)/python -c "import json; from minescan.pixel.demo_eval import summary_lines; \
	print(chr(10).join(summary_lines(json.load(open('results/demo/2026Q1/pixel/evaluation.json')))))"
	@# detect.precision bfloat16 on the demo's tiles, on TensorFlow and (CPUs with bfloat16 units) OpenVINO
	@$(BIN)/python scripts/demo_precision.py --out results/demo-precision

test: $(STAMP)
	@# as root (CI): headless Chromium for the map tests (they skip, saying why, without it)
	@if [ "$$(id -u)" = 0 ] && ! command -v chromium >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "make test: could not install chromium (the map tests will skip)"; fi
	@# as root (CI), a real single-node SLURM runs tests/test_slurm.py; elsewhere that test skips, saying why.
	@# Two pytest-xdist workers, a test file per worker at a time (module fixtures stay in one process): the
	@# DAG tests wait on their subprocesses much of the time, so two files share the 2 cores well.
	@# Its node has 4 pretend GPUs (gres backed by /dev/null...), so the scan runs through the GPU profile
	@if [ "$$(id -u)" = 0 ]; then bash scripts/slurm-local.sh install && $(SLURM_TEST_ENV) bash scripts/slurm-local.sh start \
	  || echo "make test: the local SLURM cluster did not start (tests/test_slurm.py will fail or skip)"; fi
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=10; rc=$$?; \
	  if [ "$$(id -u)" = 0 ]; then bash scripts/slurm-local.sh stop || true; fi; exit $$rc

bench: $(STAMP)
	@$(BIN)/minescan device 2>/dev/null | head -n 1
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/snakemake --lint

clean-demo:
	rm -rf results/demo results/demo-precision results/demo-training results/models/demo-discovery results/models/demo-impact results/models/demo-segment results/logs results/benchmarks
