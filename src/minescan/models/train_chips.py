"""Training the discovery FCN on real 48 x 48 RGB Sentinel-2 chips (``minescan train-chips``).

Pipeline (one command, fixed seeds):

1. **Temporal cross-validation.** Each fold holds out the galleries of one composite year (2024, 2023, 2019 by
   default) and trains on the others plus the undated galleries, which mimics "apply the model to a later
   year". The split is grouped by *gallery*: a gallery's clearer and cloudier twins share a year, so no
   gallery and no twin is on both sides. Each fold trains the full configuration (all branches) and scores
   its held-out chips (with D4 test-time augmentation when configured). The decision threshold is picked
   on the pooled out-of-fold scores: the lowest cut-off whose specificity reaches ``spec_target``.
2. **Refit.** Train the same configuration (same epochs, same seeds) on all chips and ship it with that
   threshold and the out-of-fold figures in its card.

Every branch is :func:`minescan.models.networks.build_discovery_fcn` (three MaxPool3 -> output stride 27, free input
size), so the shipped ensemble, whose branches' softmax outputs are averaged inside one Keras model, still runs
as a fully convolutional network over whole tiles.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from minescan.errors import InputDataError
from minescan.models import score_chips as cs
from minescan.models.chips import (
    CHIP_BANDS,
    UINT8_REFLECTANCE_MAX,
    ChipSet,
    gallery_of,
    uint8_to_reflectance,
    valid_mask,
)
from minescan.models.networks import DISCOVERY_CLASSES, STRIDE
from minescan.models.store import normalisation_stats, normalise, save_model

log = logging.getLogger("minescan.models.train_chips")

WINDOW = 48
N_REFERENCE_CHIPS = 16
REFERENCE_FILE = "reference_scores.json"


@dataclass
class TrainConfig:
    # two published-width FCN branches (different initialisations), softmax averaged
    branches: list = field(default_factory=lambda: [[32, 64, 64, 64], [32, 64, 64, 64]])
    dropout: float = 0.5
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    seed: int = 42
    # temporal folds: each holds out the galleries whose composite starts in these years ([] = no validation)
    folds: list = field(default_factory=lambda: [["2024"], ["2023"], ["2019"]])
    spec_target: float = 0.99
    tta: str = "d4"
    refit: bool = True
    # augmentation, in reflectance (see radiometric_luts())
    aug_gain: float = 0.4             # per-chip brightness factor exp(U(-a, a))
    aug_band_gain: float = 0.1        # per-band colour factor exp(U(-a, a))
    aug_offset: float = 0.015         # per-chip additive offset U(-a, a) reflectance
    aug_gamma: float = 0.3            # per-chip contrast curve r -> 0.3 * (r/0.3) ** exp(U(-a, a))
    aug_noise: float = 0.002          # gaussian noise sd, reflectance
    aug_haze: float = 0.0             # max blend towards a bright haze colour (0 = off) ...
    aug_haze_p: float = 0.25          # ... applied to this share of chips, whatever their label
    threads: int = 2

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        data = json.loads(text)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputDataError(f"training config: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**data)


# --- splits -----------------------------------------------------------------------------------------------------

def galleries(chips: ChipSet) -> np.ndarray:
    if chips.source is None:
        raise InputDataError(f"{chips.path}: array 'source' is needed for a split grouped by gallery")
    return np.array([gallery_of(s) for s in chips.source])


def temporal_split(chips: ChipSet, val_years=("2024",)) -> tuple[np.ndarray, np.ndarray]:
    """(train index, validation index): validation = galleries whose composite period starts in ``val_years``.

    Grouped by gallery: raises if any gallery (clear and cloudy twins together) would fall on both sides.
    """
    if chips.period is None:
        raise InputDataError(f"{chips.path}: array 'period' is needed for a temporal split")
    groups = galleries(chips)
    is_val = np.array([str(p)[:4] in set(val_years) for p in chips.period])
    both = set(groups[is_val]) & set(groups[~is_val])
    if both:
        raise InputDataError(f"{chips.path}: gallery(s) {', '.join(sorted(both))} span both sides of the split")
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# --- augmentation -----------------------------------------------------------------------------------------------

def d4_random(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply a random one of the 8 dihedral transforms to each chip of (N, H, W, C)."""
    out = np.empty_like(x)
    k = rng.integers(0, 4, len(x))
    flip = rng.integers(0, 2, len(x)).astype(bool)
    for kk in range(4):
        for f in (False, True):
            m = (k == kk) & (flip == f)
            if m.any():
                r = np.rot90(x[m], kk, axes=(1, 2))
                out[m] = r[:, :, ::-1] if f else r
    return out


def radiometric_luts(n: int, cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-chip, per-band lookup tables uint8 value -> jittered reflectance, shape (n, 3, 256), float32.

    Brightness, colour balance, haze offset and contrast change between years, sensors (S2A/B/C) and
    composites, so the network should not lean on absolute level. Every such change is a function of the
    pixel value alone, so it is applied as a table (fast). Output is clipped to [0, 0.3] as the previews are.
    """
    cmax = UINT8_REFLECTANCE_MAX
    v = (np.arange(256, dtype=np.float64) / 255.0)[None, None, :]  # (1, 1, 256) in [0, 1] (x 0.3 = reflectance)
    gain = np.exp(rng.uniform(-cfg.aug_gain, cfg.aug_gain, (n, 1, 1)))
    band = np.exp(rng.uniform(-cfg.aug_band_gain, cfg.aug_band_gain, (n, 3, 1)))
    gamma = np.exp(rng.uniform(-cfg.aug_gamma, cfg.aug_gamma, (n, 1, 1)))
    offset = rng.uniform(-cfg.aug_offset, cfg.aug_offset, (n, 1, 1))
    r = (v ** gamma) * cmax * gain * band + offset
    if cfg.aug_haze:
        # thin cloud / haze: every cloudier composite chip is a negative, so haze must not mean "no mine"
        alpha = rng.uniform(0, cfg.aug_haze, (n, 1, 1)) * (rng.random((n, 1, 1)) < cfg.aug_haze_p)
        haze = rng.uniform(0.15, 0.3, (n, 1, 1)) * np.exp(rng.uniform(-0.05, 0.05, (n, 3, 1)))
        r = r * (1 - alpha) + alpha * haze
    return np.clip(r, 0, cmax).astype(np.float32)


def augment_batch(x: np.ndarray, norm: dict, cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """uint8 chips (N, H, W, 3) -> augmented, normalised network input (float32).

    A random D4 transform per chip, radiometric jitter (:func:`radiometric_luts`), gaussian noise, then the
    model's normalisation; no-data pixels (0 in every band) stay at 0 after normalisation, as in the scan.
    """
    x = d4_random(x, rng)
    n = len(x)
    lut = radiometric_luts(n, cfg, rng)
    std = np.asarray(norm["std"], dtype=np.float32)[None, :, None]
    zlut = np.moveaxis(normalise(np.moveaxis(lut, 1, -1), norm), -1, 1)  # tables (n, 3, 256), as the scan
    z = np.empty(x.shape, dtype=np.float32)
    for i in range(n):  # a per-chip table lookup; faster than one fancy-indexing gather over the batch
        for b in range(3):
            z[i, :, :, b] = zlut[i, b][x[i, :, :, b]]
    if cfg.aug_noise:
        bank = _noise_bank(x.shape[1:], rng)
        z += bank[rng.integers(0, len(bank), n)] * (np.float32(cfg.aug_noise) / std[0, :, 0])
    z *= valid_mask(x)[..., None]
    return z


def _noise_bank(shape: tuple, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Standard-normal noise chips, drawn once per epoch and shared (drawing N x 48 x 48 x 3 is slow)."""
    return rng.standard_normal((size, *shape), dtype=np.float32)


# --- networks ---------------------------------------------------------------------------------------------------

def _keras():
    from minescan.models.networks import _keras as k

    return k()


def configure_tensorflow(seed: int, threads: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    keras = _keras()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised in this process
        pass
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)


def build_ensemble(branches: list, name: str = "amazon_rgb48"):
    """One Keras model averaging the softmax of the given FCN branches (a single branch is returned as is)."""
    keras = _keras()
    if len(branches) == 1:
        return branches[0]
    inputs = keras.Input(shape=(None, None, len(CHIP_BANDS)), name="bands")
    outs = [b(inputs) for b in branches]
    return keras.Model(inputs, keras.layers.Average(name="ensemble_mean")(outs), name=name)


def train_branches(x: np.ndarray, y: np.ndarray, norm: dict, cfg: TrainConfig, seed: int, tag: str) -> list:
    """Train all FCN branches jointly (one loss each, same augmented batches, different initialisations).

    Fresh augmentation every epoch; class-balanced sample weights; AdamW with cosine decay.
    """
    from minescan.models.networks import build_discovery_fcn

    keras = _keras()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    branches = [build_discovery_fcn(len(CHIP_BANDS), WINDOW, tuple(int(w) for w in widths), cfg.dropout,
                                    name=f"fcn{i}_{'x'.join(str(w) for w in widths)}")
                for i, widths in enumerate(cfg.branches)]
    inputs = keras.Input(shape=(WINDOW, WINDOW, len(CHIP_BANDS)), name="bands")
    joint = keras.Model(inputs, [b(inputs) for b in branches], name="joint")
    steps = int(np.ceil(len(y) / cfg.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=steps * cfg.epochs, alpha=0.02)
    opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    joint.compile(optimizer=opt, loss=[loss] * len(branches))
    pos = y.mean()
    w = np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos)).astype(np.float32)
    target = np.eye(2, dtype=np.float32)[y.astype(int)].reshape(-1, 1, 1, 2)
    nb = len(branches)
    for epoch in range(cfg.epochs):
        t0 = time.time()
        order = rng.permutation(len(y))
        z = augment_batch(x[order], norm, cfg, rng)
        t_aug = time.time() - t0
        hist = joint.fit(z, [target[order]] * nb, sample_weight=[w[order]] * nb, batch_size=cfg.batch_size,
                         epochs=epoch + 1, initial_epoch=epoch, verbose=0, shuffle=False)
        log.info("[%s] epoch %d/%d loss %.4f (%.1fs, augmentation %.1fs)", tag, epoch + 1, cfg.epochs,
                 hist.history["loss"][-1] / nb, time.time() - t0, t_aug)
    return branches


def train_ensemble(chips: ChipSet, cfg: TrainConfig, tag: str):
    """Train all branches on ``chips``; returns (keras model averaging them, normalisation)."""
    x = chips.x
    norm = normalisation_stats(uint8_to_reflectance(x), valid_mask(x), clip_max=UINT8_REFLECTANCE_MAX)
    t0 = time.time()
    branches = train_branches(x, chips.y, norm, cfg, cfg.seed, tag)
    log.info("[%s] %d branch(es) trained in %.0fs", tag, len(branches), time.time() - t0)
    return build_ensemble(branches), norm


# --- the whole command ------------------------------------------------------------------------------------------

def reference_indices(n: int, seed: int = 7) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=min(N_REFERENCE_CHIPS, n), replace=False))


def run(chips: ChipSet, out_dir: str | Path, cfg: TrainConfig, chips_arg: str | None = None) -> dict:
    """Temporal cross-validation (one run per held-out year) + refit; writes the model directory, returns the card."""
    if chips.y is None:
        raise InputDataError(f"{chips.path}: array 'y' (labels) is needed for training")
    if len(np.unique(chips.y)) < 2:
        raise InputDataError(f"{chips.path}: array 'y' must contain both classes for training")
    configure_tensorflow(cfg.seed, cfg.threads)
    out_dir = Path(out_dir)
    t_start = time.time()
    metrics: dict = {}
    threshold = 0.5
    validation_note = "no validation run (no folds); threshold 0.5"
    last = None
    if cfg.folds:
        metrics, threshold, last = cross_validate(chips, cfg)
        validation_note = ("threshold chosen on, and metrics measured on, the pooled out-of-fold scores of the "
                           "temporal folds (each chip scored by a model trained without its year's galleries)")
    if cfg.refit or last is None:
        log.info("refit on all %d chips", len(chips))
        network, norm = train_ensemble(chips, cfg, "refit")
        fit_set = chips
    else:
        network, norm, fit_set = last
    elapsed = time.time() - t_start

    ref_idx = reference_indices(len(chips))
    ref_scores = cs.predict_probabilities(network, cs.prepare_chips(chips.x[ref_idx], norm), tta=cfg.tta)
    n_params = int(network.count_params())
    card = {
        "kind": "discovery",
        "name": "amazon-rgb48",
        "architecture": (f"ensemble (mean of softmax) of {len(cfg.branches)} discovery FCN branches "
                         f"(Balaniuk et al. 2020 family: 3x [conv3x3 same + maxpool3], conv1x1 valid, dropout "
                         f"{cfg.dropout}, conv1x1 softmax); widths {cfg.branches}; {n_params} parameters"),
        "bands": list(CHIP_BANDS),
        "window": WINDOW,
        "stride": STRIDE,
        "classes": list(DISCOVERY_CLASSES),
        "positive_class": "mine",
        "threshold": round(float(threshold), 6),
        "threshold_applies_to": f"chip score with tta={cfg.tta}",
        "tta": cfg.tta,
        # for one FCN pass per cell (the scan): the same rule on out-of-fold scores without TTA
        "threshold_without_tta": round(float(metrics.get("without_tta", {}).get("threshold", threshold)), 6),
        "normalisation": norm,
        "input_scaling": "reflectance = uint8 / 255 * 0.3 for the RGB previews; DN * 1e-4 for L1C tiles",
        "metrics": cs.json_safe(metrics),
        "metrics_note": validation_note,
        "training_data": {
            "source": "real-chips dev.npz: RGB previews (B4,B3,B2) decoded from the training galleries of "
                      "earthrise-media/mining-detector (commit bbbcb2d722c930626f322bec751a22e4acb22750)",
            "file": chips_arg or str(chips.path),
            "n_chips": int(len(fit_set)),
            "n_positive": int(fit_set.y.sum()),
            "n_negative": int(len(fit_set) - fit_set.y.sum()),
            "licence": "CC BY 4.0 (data); cite Earth Genome, repository earthrise-media/mining-detector",
            "refit_on_all": bool(fit_set is chips),
        },
        "training": {**asdict(cfg), "wall_seconds": round(elapsed, 1)},
        "reference_scores": {"indices": ref_idx, "scores": [round(float(s), 7) for s in ref_scores],
                             "tta": cfg.tta, "file": chips_arg or str(chips.path)},
    }
    save_model(out_dir, network, cs.json_safe(card))
    log.info("wrote %s in %.0fs total", out_dir, time.time() - t_start)
    return card


SUMMARY_KEYS = ("auc", "sensitivity", "specificity", "precision", "f1", "sensitivity_at_specificity_0.99",
                "threshold_at_specificity_0.99", "n", "n_positive", "n_negative")


def cross_validate(chips: ChipSet, cfg: TrainConfig):
    """One training per fold (held-out years); pooled out-of-fold scores set the threshold and the metrics."""
    oof = np.full(len(chips), np.nan)
    oof_plain = np.full(len(chips), np.nan)
    folds = []
    last = None
    for years in cfg.folds:
        tr, va = temporal_split(chips, years)
        train_set, val_set = chips.subset(tr), chips.subset(va)
        if len(np.unique(val_set.y)) < 2 or len(np.unique(train_set.y)) < 2:
            raise InputDataError(f"{chips.path}: holding out {years} leaves one class only on a side")
        log.info("fold %s: %d training chips, %d validation chips", years, len(tr), len(va))
        t0 = time.time()
        net, norm = train_ensemble(train_set, cfg, f"fold {'/'.join(years)}")
        seconds = time.time() - t0
        z = cs.prepare_chips(val_set.x, norm)
        oof[va] = cs.predict_probabilities(net, z, tta=cfg.tta)
        oof_plain[va] = oof[va] if cfg.tta == "none" else cs.predict_probabilities(net, z, tta="none")
        folds.append({"validation_years": list(years), "index": va, "n_train": int(len(tr)),
                      "train_galleries": sorted(set(galleries(train_set))),
                      "validation_galleries": sorted(set(galleries(val_set))), "train_seconds": round(seconds, 1)})
        last = (net, norm, train_set)
    held = np.flatnonzero(~np.isnan(oof))
    y, p = chips.y[held], oof[held]
    threshold = cs.threshold_at_specificity(y, p, cfg.spec_target)
    metrics = cs.binary_metrics(y, p, threshold)
    metrics["per_source"] = cs.per_source_rates(y, p, threshold, chips.source[held])
    if cfg.tta != "none":  # the scan applies the FCN once per cell: the same figures without TTA
        pp = oof_plain[held]
        plain = cs.binary_metrics(y, pp, cs.threshold_at_specificity(y, pp, cfg.spec_target))
        metrics["without_tta"] = {k: plain[k] for k in SUMMARY_KEYS + ("threshold",)}
    per_fold = []
    for f in folds:
        va = f.pop("index")
        fm = cs.binary_metrics(chips.y[va], oof[va], threshold)
        f.update({k: fm[k] for k in SUMMARY_KEYS})
        per_fold.append(f)
        log.info("fold %s: auc %.4f sens %.4f spec %.4f (pooled threshold) sens@spec0.99 %.4f",
                 f["validation_years"], fm["auc"], fm["sensitivity"], fm["specificity"],
                 fm["sensitivity_at_specificity_0.99"])
    metrics["folds"] = per_fold
    metrics["split"] = {
        "kind": "temporal cross-validation grouped by gallery: each fold holds out the galleries of one "
                "composite year; undated galleries always train",
        "folds": [list(y) for y in cfg.folds],
        "n_validation": int(len(held)),
    }
    metrics["threshold_rule"] = f"lowest cut-off with pooled out-of-fold specificity >= {cfg.spec_target}"
    log.info("pooled out-of-fold: auc %.4f sens %.4f spec %.4f sens@spec0.99 %.4f threshold %.4f",
             metrics["auc"], metrics["sensitivity"], metrics["specificity"],
             metrics["sensitivity_at_specificity_0.99"], threshold)
    return metrics, threshold, last
