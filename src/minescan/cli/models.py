"""``minescan train``, ``evaluate-chips`` and ``train-chips``: training and scoring models (``minescan.models``).

    minescan train discovery|impact --points FILE --images TIF ... --out DIR

    minescan evaluate-chips --model models/amazon-rgb48 --chips FILE.npz [--out scores.csv] [--json]
    minescan train-chips --chips ../shared/data/real-chips/dev.npz --out DIR [--seed 42] [--config JSON]
    minescan import-model [--preset NAME] --h5 FILE [--h5 FILE ...] --out DIR [options]

``register(subparsers)`` adds both; each handler returns an exit code. Bad input raises
:class:`minescan.errors.MinescanError` subclasses, which the main CLI prints as one line (exit 2).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

from minescan import SENTINEL2_BANDS
from minescan.errors import InputDataError


def register(subparsers) -> None:
    sub = subparsers
    p = sub.add_parser("train", help="train the discovery FCN or impact CNN from labelled points + images")
    p.add_argument("kind", choices=["discovery", "impact"])
    p.add_argument("--points", required=True, help="CSV lon,lat,class[,impact] or a vector file")
    p.add_argument("--images", nargs="+", required=True, help="GeoTIFFs the points fall in")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--bands", nargs="+", default=list(SENTINEL2_BANDS))
    p.add_argument("--scale", type=float, default=1e-4)
    p.add_argument("--window", type=int, default=None, help="chip size (default 201 discovery, 21 impact)")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threshold", type=float, default=0.6)
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_train)

    ev = subparsers.add_parser(
        "evaluate-chips", help="score 48x48 RGB chips (.npz) with a discovery model; metrics when labelled",
        description="Score the chips of an .npz file (x: (N,48,48,3) uint8 R,G,B = B4,B3,B2; optional y: 0/1 "
                    "labels, source: names) with a discovery model. With labels, report metrics at the model "
                    "card's threshold, AUC, sensitivity at specificity 0.99 and per-source rates.")
    ev.add_argument("--model", required=True, help="model directory (model.keras + card.json)")
    ev.add_argument("--chips", required=True, help=".npz file with x (and optionally y, source)")
    ev.add_argument("--out", help="write one CSV row per chip (index, score, flagged, [y], [source])")
    ev.add_argument("--json", action="store_true", help="print the metrics as one JSON object on the last line")
    ev.add_argument("--tta", choices=("card", "none", "d4"), default="card",
                    help="test-time augmentation: as the model card says (default), none, or d4 (8 flips/rotations)")
    ev.add_argument("--threshold", type=float,
                    help="override the model card's threshold (default: the card's threshold for the TTA mode used)")
    ev.set_defaults(func=evaluate_chips_command)

    tr = subparsers.add_parser(
        "train-chips", help="train the discovery FCN ensemble on real RGB chips and write a model directory",
        description="Temporal validation grouped by gallery (holdout: each fold holds out one composite year; "
                    "forward, with config validation='forward': each fold trains on earlier years plus the undated "
                    "galleries and validates on a later year; the threshold is chosen on the pooled out-of-fold "
                    "scores), then a refit on all chips; writes "
                    "model.keras + card.json (with validation figures and reference scores) to --out.")
    tr.add_argument("--chips", required=True, help="labelled chip .npz (x, y, source, period)")
    tr.add_argument("--out", required=True, help="output model directory")
    tr.add_argument("--seed", type=int, help="random seed (default from the config: 42)")
    tr.add_argument("--epochs", type=int, help="epochs per branch (default from the config)")
    tr.add_argument("--config", help="JSON object (or a file holding one) overriding training settings "
                                     "(see minescan.models.train_chips.TrainConfig)")
    tr.add_argument("--name", help="model name written to the card (default amazon-rgb48)")
    tr.add_argument("--no-refit", action="store_true", help="ship the last fold's model instead of refitting on all chips")
    tr.add_argument("--threads", type=int, help="CPU threads for TensorFlow (default 2)")
    tr.set_defaults(func=train_chips_command)

    register_import(subparsers)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from exc


#: the names of :data:`minescan.models.imported.PRESETS`, sorted: the parser lists them without importing that
#: module (and numpy) for every command; test_imported keeps the two equal
IMPORT_PRESETS = ("amw-2021-rgb", "amw-2024")


def register_import(subparsers) -> None:
    im = subparsers.add_parser(
        "import-model", help="import published Keras .h5 patch classifiers (one, or an averaged ensemble)",
        description="Write a minescan discovery model directory (model.keras + card.json) from Keras .h5 patch "
                    "classifiers and what the files cannot say (a --preset, or the options). Layers outside an "
                    "allow-list (Lambda above all) are refused before anything is loaded. Options override "
                    f"the preset. Presets: {', '.join(IMPORT_PRESETS)}.")
    im.add_argument("--preset", choices=IMPORT_PRESETS, help="settings of a known model family")
    im.add_argument("--h5", action="append", required=True, metavar="FILE",
                    help="a .h5 model file; repeat for an ensemble (scores averaged)")
    im.add_argument("--out", required=True, help="model directory to write")
    im.add_argument("--bands", nargs="+", help="band names in the network's input order (e.g. B4 B3 B2)")
    im.add_argument("--window", type=int, help="patch size in px (default 48)")
    im.add_argument("--crop", type=int, help="centre crop fed to the network, px (default: the whole patch)")
    im.add_argument("--stride", type=int, help="scan step in px, also the cell size (default: half the patch)")
    im.add_argument("--input-scale", type=float, help="network input = DN x this (default 1e-4: DN / 10000)")
    im.add_argument("--zscore-mean", type=_floats, help="per-band DN means, comma-separated (z-score input)")
    im.add_argument("--zscore-std", type=_floats, help="per-band DN standard deviations (with --zscore-mean)")
    im.add_argument("--mine-output", type=int, help="index of the 'mine' output of a softmax head (default 1)")
    im.add_argument("--threshold", type=float, help="main probability threshold (default 0.5)")
    im.add_argument("--isolated-threshold", type=float,
                    help="dual threshold: stricter cut-off for isolated candidates (feeds the spatial prior)")
    im.add_argument("--isolation-k", type=int, help="isolated: the k-th nearest other candidate is far (default 5)")
    im.add_argument("--isolation-km", type=float, help="... more than this many km away (default 3)")
    im.add_argument("--name", help="model name in the card (default: the first file's name)")
    im.add_argument("--licence", help="licence of the weights")
    im.add_argument("--citation", help="how to cite the model")
    im.set_defaults(func=import_model_command)


def import_model_command(args) -> int:
    from minescan.models.imported import import_h5, spec_from_preset

    if (args.zscore_mean is None) != (args.zscore_std is None):
        raise InputDataError("import-model: --zscore-mean and --zscore-std go together")
    zscore = (args.zscore_mean, args.zscore_std) if args.zscore_mean is not None else None
    spec = spec_from_preset(
        args.preset, bands=tuple(args.bands) if args.bands else None, window=args.window, crop=args.crop,
        stride=args.stride, input_scale=args.input_scale, zscore=zscore, mine_output=args.mine_output,
        threshold=args.threshold, isolated_threshold=args.isolated_threshold, isolation_k=args.isolation_k,
        isolation_km=args.isolation_km, name=args.name, licence=args.licence, citation=args.citation)
    card = import_h5(args.h5, args.out, spec)
    prior = card.get("spatial_prior")
    print(f"{args.out}: {len(args.h5)} network(s), bands {', '.join(card['bands'])}, {card['window']} px patch "
          f"({card['patch']['crop']} px input), stride {card['stride']} px, threshold {card['threshold']}"
          + (f", isolated {prior['isolated_threshold']} beyond the {prior['isolation_k']}th neighbour at "
             f"{prior['isolation_km']} km" if prior else ""))
    return 0


def cmd_train(args) -> int:
    from minescan.scan.device import setup as log_device

    log_device()  # GPU memory growth; the device this TensorFlow job runs on, in its log
    from minescan.models.train_points import train

    card = train(args.kind, args.points, args.images, args.out, bands=args.bands, scale=args.scale,
                 window=args.window, folds=args.folds, epochs=args.epochs, batch_size=args.batch_size,
                 learning_rate=args.learning_rate, seed=args.seed, threshold=args.threshold, name=args.name)
    m = card["metrics"]
    if m.get("folds"):
        print(f"{args.kind}: {len(m['folds'])}-fold CV accuracy {m['mean_accuracy']:.3f} F1 {m['mean_f1']:.3f}")
    return 0


def _tta_for(args, card: dict) -> str:
    return card.get("tta", "none") if args.tta == "card" else args.tta


def evaluate_chips_command(args) -> int:
    from minescan.models import score_chips as cs
    from minescan.models.chips import CHIP_BANDS, load_chips
    from minescan.models.store import load_model
    from minescan.scan.device import setup as log_device

    chips = load_chips(args.chips)  # validates before TensorFlow starts and the (slow) model load
    log_device()  # GPU memory growth; the device this TensorFlow job runs on, in its log
    model = load_model(args.model, expect_kind="discovery")

    if list(model.bands) != list(CHIP_BANDS):
        raise InputDataError(f"{args.chips}: chips hold bands {', '.join(CHIP_BANDS)} (R, G, B) but model "
                             f"{args.model} takes {', '.join(model.bands)}")
    chip_window = int(model.card.get("chip_window", model.window))  # v2: 48 px chips reflect-padded to 54
    if chip_window != chips.x.shape[1]:
        raise InputDataError(f"{args.chips}: array 'x' holds {chips.x.shape[1]} px chips but model "
                             f"{args.model} expects {chip_window} px")
    tta = _tta_for(args, model.card)
    if args.threshold is not None:
        threshold = float(args.threshold)
    else:  # single-pass scores take the threshold chosen for them
        threshold = model.scan_threshold if tta == "none" else model.threshold
    t0 = time.perf_counter()
    scores = cs.score_chips(model, chips.x, tta=tta)
    seconds = time.perf_counter() - t0
    flagged = scores >= threshold
    if args.out:
        _write_scores(Path(args.out), scores, flagged, chips)
    result = {"n": int(len(scores)), "model": str(args.model), "model_version": model.version,
              "chips": str(args.chips), "tta": tta, "threshold": threshold,
              "n_flagged": int(flagged.sum()), "seconds": round(seconds, 3)}
    if chips.y is not None:
        m = cs.binary_metrics(chips.y, scores, threshold)
        result.update(m)
        if chips.source is not None:
            result["per_source"] = cs.per_source_rates(chips.y, scores, threshold, chips.source)
    if args.json:
        print(json.dumps(cs.json_safe(result), sort_keys=False))
    else:
        _print_summary(result)
    return 0


def _write_scores(path: Path, scores, flagged, chips) -> None:
    from minescan.io_utils import atomic_output

    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        header = ["index", "score", "flagged"]
        if chips.y is not None:
            header.append("y")
        if chips.source is not None:
            header.append("source")
        w.writerow(header)
        for i, (s, f) in enumerate(zip(scores, flagged, strict=True)):
            row = [i, f"{s:.6f}", int(f)]
            if chips.y is not None:
                row.append(int(chips.y[i]))
            if chips.source is not None:
                row.append(chips.source[i])
            w.writerow(row)


def _print_summary(r: dict) -> None:
    print(f"{r['n']} chips scored in {r['seconds']:.1f}s (tta={r['tta']}); threshold {r['threshold']:.4f}: "
          f"{r['n_flagged']} flagged as mine")
    if "auc" not in r:
        return
    print(f"AUC {r['auc']:.4f}  sensitivity {r['sensitivity']:.4f}  specificity {r['specificity']:.4f}  "
          f"precision {r['precision']:.4f}  F1 {r['f1']:.4f}  "
          f"sensitivity@specificity0.99 {r['sensitivity_at_specificity_0.99']:.4f}")
    for name, v in r.get("per_source", {}).items():
        rate = v["sensitivity"] if v["n_positive"] else v["specificity"]
        label = "sensitivity" if v["n_positive"] else "specificity"
        print(f"  {name}: n={v['n']} flagged {v['flagged_rate']:.3f} {label} {rate:.3f}")


def train_chips_command(args) -> int:
    from minescan.scan.device import setup as log_device

    log_device()  # GPU memory growth; the device this TensorFlow job runs on, in its log
    from dataclasses import replace

    from minescan.models.chips import load_chips
    from minescan.models.train_chips import TrainConfig, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        text = args.config
        if text and not text.lstrip().startswith("{"):
            if not Path(text).is_file():
                raise InputDataError(f"--config: {text} is neither a JSON object nor an existing file")
            text = Path(text).read_text()
        cfg = TrainConfig.from_json(text) if text else TrainConfig()
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputDataError(f"--config: not a valid training configuration ({exc})") from exc
    if args.seed is not None:
        cfg = replace(cfg, seed=args.seed)
    if args.epochs is not None:
        cfg = replace(cfg, epochs=args.epochs)
    if args.threads is not None:
        cfg = replace(cfg, threads=args.threads)
    if args.no_refit:
        cfg = replace(cfg, refit=False)
    chips = load_chips(args.chips, require_labels=True)
    card = run(chips, args.out, cfg, chips_arg=args.chips, name=args.name)
    m = card["metrics"]
    if "auc" in m:
        print(f"validation ({m['split']['kind']}, {m['split']['n_validation']} chips): AUC {m['auc']:.4f} "
              f"sensitivity {m['sensitivity']:.4f} specificity {m['specificity']:.4f} at threshold "
              f"{card['threshold']:.4f}; sensitivity@specificity0.99 {m['sensitivity_at_specificity_0.99']:.4f}, "
              f"@0.995 {m['sensitivity_at_specificity_0.995']:.4f}")
    print(f"model written to {args.out} ({card['training']['wall_seconds']:.0f}s)")
    return 0
