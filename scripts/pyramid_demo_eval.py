"""The pyramid scan on the SIMULATED demo scene against the full scan: share of cells skipped, site recall
and precision kept, detect time. Reproduces the demo figures of the README's "Pyramid scan" section.

    make demo                                  # once: trains the demo models this script reuses
    .venv/bin/python scripts/pyramid_demo_eval.py --out results/pyramid-eval [--variants full spectral-16 ...]

Each variant is the demo config (config/demo.yaml) with its own ``results_dir`` under ``--out``, segmentation
and the dataset export off, and ``detect.pyramid`` set as listed in VARIANTS; Snakemake runs it up to the
scan's summary.json (the demo source simulates the same scene, the trained demo models are reused as they
are). Read back: recall / precision / sites from summary.json (the demo's truth), the cells skipped from the
PYRAMID_SKIPPED_CELLS tag of every quadrant's probability.tif, and the detect jobs' wall and CPU seconds from
Snakemake's benchmark files. Writes ``OUT/pyramid_demo.json`` and ``OUT/pyramid_demo.md`` and prints the
table. Times depend on the machine's load (printed); the recall and skipped shares do not.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODELS = ("results/models/demo-discovery", "results/models/demo-impact")

# name -> detect.pyramid section (None: the full scan). The model screen uses the demo discovery model on
# the quadrant averaged over ``factor`` px.
VARIANTS: dict[str, dict | None] = {
    "full": None,
    "spectral-16": {"enabled": True, "screen": "spectral", "block_cells": 16,
                    "levels": [{"factor": 8, "threshold": 0.3}, {"factor": 4, "threshold": 0.3}]},
    "spectral-8": {"enabled": True, "screen": "spectral", "block_cells": 8,
                   "levels": [{"factor": 8, "threshold": 0.3}, {"factor": 4, "threshold": 0.3}]},
    "model-20m": {"enabled": True, "screen": "model", "model": DEMO_MODELS[0], "block_cells": 8,
                  "levels": [{"factor": 2, "threshold": 0.3}]},
    "model-40m": {"enabled": True, "screen": "model", "model": DEMO_MODELS[0], "block_cells": 8,
                  "levels": [{"factor": 4, "threshold": 0.3}]},
}


def variant_config(name: str, out: Path) -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["results_dir"] = str(out / name)
    cfg["segment"] = {**cfg.get("segment", {}), "enabled": False}
    cfg.pop("datasets", None)
    if VARIANTS[name] is not None:
        cfg["detect"] = {**cfg.get("detect", {}), "pyramid": VARIANTS[name]}
    return cfg


def skipped_cells(scan: Path) -> tuple[int, int]:
    """(cells skipped by the screen, cells of all quadrant probability rasters)."""
    import rasterio

    skipped = total = 0
    for p in sorted((scan / "quadrants").glob("*/probability.tif")):
        with rasterio.open(p) as src:
            total += src.width * src.height
            skipped += int(src.tags().get("PYRAMID_SKIPPED_CELLS", 0))
    return skipped, total


def detect_seconds(bench_dir: Path) -> tuple[float, float]:
    """Summed wall (s) and CPU (cpu_time) seconds of the detect jobs' Snakemake benchmark files."""
    wall = cpu = 0.0
    for p in sorted(bench_dir.glob("*.tsv")):
        with open(p, newline="") as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        wall += float(row["s"])
        cpu += float(row.get("cpu_time") or 0.0)
    return wall, cpu


def run_variant(name: str, out: Path, cores: int) -> dict:
    cfg_path = out / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(variant_config(name, out), sort_keys=False))
    scan = out / name / "demo" / "2026Q1"
    log = out / f"{name}.snakemake.log"
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--profile", "profiles/default", "--configfile",
           str(cfg_path), "--cores", str(cores), str(scan / "summary.json")]
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}).returncode
    if rc != 0:
        raise SystemExit(f"pyramid_demo_eval: variant {name} failed (exit {rc}); see {log}")
    summary = json.loads((scan / "summary.json").read_text())
    ev = summary["evaluation"]
    skipped, total = skipped_cells(scan)
    wall, cpu = detect_seconds(out / name / "benchmarks" / "demo" / "2026Q1" / "detect")
    return {"variant": name, "pyramid": VARIANTS[name], "sites": summary["sites"], "recall": ev["recall"],
            "found_mines": ev["found_mines"], "truth_mines": ev["truth_mines"], "precision": ev["precision"],
            "cells": total, "cells_skipped": skipped, "skipped_fraction": round(skipped / total, 4) if total else 0.0,
            "detect_wall_s": round(wall, 1), "detect_cpu_s": round(cpu, 1)}


def table(rows: list[dict]) -> str:
    full = next((r for r in rows if r["variant"] == "full"), None)
    lines = ["| variant | cells skipped | site recall | precision | sites | detect wall s | detect CPU s |"
             " CPU vs full |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        speed = (f"x{full['detect_cpu_s'] / r['detect_cpu_s']:.2f}" if full and r["detect_cpu_s"] else "–")
        lines.append(f"| {r['variant']} | {100 * r['skipped_fraction']:.1f} % | {r['recall']:.4f} "
                     f"({r['found_mines']}/{r['truth_mines']}) | {r['precision']:.4f} | {r['sites']} | "
                     f"{r['detect_wall_s']} | {r['detect_cpu_s']} | {speed} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/pyramid-eval", help="working and output directory")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--fresh", action="store_true", help="delete each variant's earlier results first")
    args = ap.parse_args(argv)
    missing = [m for m in DEMO_MODELS if not (ROOT / m / "card.json").exists()]
    if missing:
        raise SystemExit(f"pyramid_demo_eval: {missing[0]} not found: run `make demo` first (it trains them)")
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.variants:
        if args.fresh:
            shutil.rmtree(out / name, ignore_errors=True)
        load = os.getloadavg()[0]
        print(f"{name}: running (load {load:.1f}) ...", flush=True)
        rows.append({**run_variant(name, out, args.cores), "load_before": round(load, 1)})
    (out / "pyramid_demo.json").write_text(json.dumps(rows, indent=2) + "\n")
    md = table(rows)
    (out / "pyramid_demo.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
