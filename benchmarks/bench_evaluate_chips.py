"""Scoring speed of ``minescan evaluate-chips``: 10,000 chips through the shipped model, as the CLI does it.

    .venv/bin/python benchmarks/bench_evaluate_chips.py [--model models/amazon-rgb48] [--n 10000] [--threads 2]

Builds a 10,000-chip .npz (dev chips repeated when ../shared/data/real-chips/dev.npz exists, random chips
otherwise), runs the evaluate-chips command in-process (loading + validation + scoring with the card's TTA
+ metrics + CSV) and prints chips/s. The requirement is under 60 s for 10,000 chips on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "real-chips" / "dev.npz"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "amazon-rgb48"))
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from minescan.cli import run as cli

    rng = np.random.default_rng(0)
    if DEV.is_file():
        d = np.load(DEV)
        idx = rng.integers(0, len(d["y"]), args.n)
        x, y, source = d["x"][idx], d["y"][idx], d["source"][idx]
        origin = f"{DEV} (resampled)"
    else:
        x = rng.integers(0, 256, (args.n, 48, 48, 3), dtype=np.uint8)
        y = rng.integers(0, 2, args.n).astype(np.int8)
        source = np.array(["random"] * args.n)
        origin = "random chips"
    with tempfile.TemporaryDirectory() as tmp:
        chips = os.path.join(tmp, "bench.npz")
        np.savez(chips, x=x, y=y, source=source)
        argv = ["evaluate-chips", "--model", args.model, "--chips", chips, "--out", os.path.join(tmp, "s.csv"),
                "--json"]
        buf = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(buf):
            code = cli(argv)
        wall = time.perf_counter() - t0
    assert code == 0, f"evaluate-chips exited {code}"
    result = json.loads(buf.getvalue().strip().splitlines()[-1])
    print(f"chips: {args.n} from {origin}; model {args.model} (tta={result['tta']}); threads {args.threads}")
    print(f"scoring only: {result['seconds']:.1f} s = {args.n / result['seconds']:.0f} chips/s")
    print(f"whole command (load model, validate, score, metrics, CSV): {wall:.1f} s = {args.n / wall:.0f} chips/s")
    print("PASS" if wall < 60 else "FAIL", "(requirement: 10,000 chips in under 60 s)")


if __name__ == "__main__":
    main()
