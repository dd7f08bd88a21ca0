"""Scan time of one quadrant with the real-data RGB discovery models (issue 18: v2 against v1).

    PYTHONPATH=src nice -n 10 python benchmarks/bench_rgb48_scan.py [--model models/amazon-rgb48 ...]
        [--core 4608] [--threads 2] [--repeat 1]

For each model directory: a synthetic 3-band uint16 quadrant (smooth fields + noise, DN 0..3000, in memory)
of ``--core`` px (4608 = a quadrant of the 9216 px tile core), the cells whose centres lie in it computed
with the scan's :func:`minescan.scan.inference.predict_cells` (the path ``minescan detect`` takes: streamed
when the network is a plain chain, square blocks otherwise, e.g. for an ensemble), after one small warm-up
call. Prints wall seconds, cells, the FLOPs of one FCN pass per branch and the load average.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def quadrant(core: int, halo: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = core + 2 * halo
    coarse = rng.uniform(300, 2500, (n // 64 + 2, n // 64 + 2, 3))
    smooth = np.kron(coarse, np.ones((64, 64, 1)))[:n, :n]
    return np.clip(smooth + rng.normal(0, 120, (n, n, 3)), 1, 3000).astype(np.uint16)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--core", type=int, default=4608)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    models = args.model or [str(ROOT / "models" / "amazon-rgb48"), str(ROOT / "models" / "amazon-rgb48-v2")]

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from minescan.models.networks import STRIDE, FcnGeometry
    from minescan.models.store import load_model
    from minescan.scan.inference import InferenceStats, Normalisation, fcn_flops, predict_cells

    halo = 160
    img = quadrant(args.core, halo)

    def read(c0, r0, c1, r1):  # global px; the quadrant core starts at (halo, halo)
        out = np.zeros((r1 - r0, c1 - c0, 3), np.uint16)
        a0, b0 = max(c0 + halo, 0), max(r0 + halo, 0)
        a1, b1 = min(c1 + halo, img.shape[1]), min(r1 + halo, img.shape[0])
        if a1 > a0 and b1 > b0:
            out[b0 - halo - r0:b1 - halo - r0, a0 - halo - c0:a1 - halo - c0] = img[b0:b1, a0:a1]
        return out

    n_cells = args.core // STRIDE
    for path in models:
        m = load_model(path, expect_kind="discovery")
        g = FcnGeometry(m.window)
        nm = m.card["normalisation"]
        norm = Normalisation(1e-4, tuple(nm["mean"]), tuple(nm["std"]), nm.get("clip_max"), 0)
        predict_cells(m.network, g, read, norm, range(0, 4), range(0, 4))  # warm-up: tracing
        times = []
        for _ in range(args.repeat):
            st = InferenceStats()
            t0 = time.perf_counter()
            p = predict_cells(m.network, g, read, norm, range(0, n_cells), range(0, n_cells), stats=st)
            times.append(time.perf_counter() - t0)
        subs = [la for la in m.network.layers if hasattr(la, "layers")]  # ensemble branches
        gflop = sum(fcn_flops(n, m.window, m.window) for n in (subs or [m.network])) / 1e9
        print(f"{Path(path).name}: {n_cells} x {n_cells} cells ({args.core} px quadrant) in {min(times):.1f} s "
              f"(method {st.method}, window {m.window}, {m.network.count_params()} parameters, "
              f"{gflop:.4f} GFLOP per window pass; mean p {np.nanmean(p):.3f}); "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
