"""Training the discovery FCN on real 48 x 48 RGB Sentinel-2 chips (``minescan train-chips``).

Pipeline (one command, fixed seeds):

1. **Validation run.** Split the chips by *gallery* (the clearer/cloudier twins of a gallery stay together):
   by default a temporal hold-out, validating on galleries whose composite starts in 2024 and training on
   2019/2023/undated ones, which mimics "apply the model to a later year". Train an ensemble of FCN branches,
   score the validation chips (with D4 test-time augmentation when configured) and pick the decision
   threshold there: the lowest cut-off whose validation specificity reaches ``spec_target``.
2. **Refit.** Train the same configuration (same epochs, same seeds) on all chips and ship it with the
   threshold from step 1 and the validation figures from step 1 in its card.

Every branch is :func:`minescan.networks.build_discovery_fcn` (three MaxPool3 -> output stride 27, free input
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

from . import chip_scoring as cs
from .chips import CHIP_BANDS, UINT8_REFLECTANCE_MAX, ChipSet, gallery_of, uint8_to_reflectance, valid_mask
from .errors import InputDataError
from .model_io import normalisation_stats, normalise, save_model
from .networks import DISCOVERY_CLASSES, STRIDE

log = logging.getLogger("minescan.chip_training")

WINDOW = 48
N_REFERENCE_CHIPS = 16
REFERENCE_FILE = "reference_scores.json"


@dataclass
class TrainConfig:
    branches: list = field(default_factory=lambda: [[32, 64, 64, 64], [32, 64, 64, 64], [32, 64, 64, 64]])
    dropout: float = 0.5
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    seed: int = 42
    split: str = "temporal"           # "temporal" (hold out val_years) or "none" (fit only, no validation)
    val_years: list = field(default_factory=lambda: ["2024"])
    spec_target: float = 0.99
    tta: str = "d4"
    refit: bool = True
    # augmentation, in reflectance (see augment())
    aug_gain: float = 0.25            # per-chip brightness factor exp(U(-a, a))
    aug_band_gain: float = 0.06       # per-band colour factor exp(U(-a, a))
    aug_offset: float = 0.008         # per-chip additive haze/offset U(-a, a) reflectance
    aug_gamma: float = 0.15           # per-chip contrast curve r -> 0.3 * (r/0.3) ** exp(U(-a, a))
    aug_noise: float = 0.002          # gaussian noise sd, reflectance
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


def augment(refl: np.ndarray, valid: np.ndarray, cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """Radiometric jitter of reflectance chips (N, H, W, 3), then clip to [0, 0.3] as the previews are.

    Brightness, colour balance, haze offset and contrast change between years, sensors (S2A/B/C) and
    composites, so the network should not lean on absolute level. No-data pixels stay 0.
    """
    n = len(refl)
    cmax = np.float32(UINT8_REFLECTANCE_MAX)
    gain = np.exp(rng.uniform(-cfg.aug_gain, cfg.aug_gain, (n, 1, 1, 1)))
    band = np.exp(rng.uniform(-cfg.aug_band_gain, cfg.aug_band_gain, (n, 1, 1, 3)))
    gamma = np.exp(rng.uniform(-cfg.aug_gamma, cfg.aug_gamma, (n, 1, 1, 1)))
    offset = rng.uniform(-cfg.aug_offset, cfg.aug_offset, (n, 1, 1, 1))
    r = np.clip(refl, 0, cmax) / cmax
    r = (r ** gamma.astype(np.float32)) * cmax
    r = r * (gain * band).astype(np.float32) + offset.astype(np.float32)
    if cfg.aug_noise:
        r = r + rng.normal(0, cfg.aug_noise, r.shape).astype(np.float32)
    r = np.clip(r, 0, cmax)
    return (r * valid[..., None]).astype(np.float32)


# --- networks ---------------------------------------------------------------------------------------------------

def _keras():
    from .networks import _keras as k

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


def train_branch(widths, z_source: tuple, y: np.ndarray, cfg: TrainConfig, seed: int, name: str):
    """Train one FCN branch on (reflectance, valid) chips with fresh augmentation every epoch."""
    from .networks import build_discovery_fcn

    keras = _keras()
    keras.utils.set_random_seed(seed)
    refl, valid, norm = z_source
    rng = np.random.default_rng(seed)
    net = build_discovery_fcn(len(CHIP_BANDS), WINDOW, tuple(int(w) for w in widths), cfg.dropout, name=name)
    steps = int(np.ceil(len(y) / cfg.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=steps * cfg.epochs,
                                                      warmup_target=None, alpha=0.02)
    opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay)
    net.compile(optimizer=opt, loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing))
    # balanced class weights, as sample weights
    pos = y.mean()
    w = np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos)).astype(np.float32)
    target = np.eye(2, dtype=np.float32)[y.astype(int)].reshape(-1, 1, 1, 2)
    for epoch in range(cfg.epochs):
        t0 = time.time()
        order = rng.permutation(len(y))
        # D4 must move pixels and their no-data mask together: stack them
        stacked = np.concatenate([refl[order], valid[order][..., None].astype(np.float32)], axis=-1)
        stacked = d4_random(stacked, rng)
        xa = augment(stacked[..., :3], stacked[..., 3], cfg, rng)
        za = normalise(xa, norm, stacked[..., 3])
        hist = net.fit(za, target[order], sample_weight=w[order], batch_size=cfg.batch_size, epochs=epoch + 1,
                       initial_epoch=epoch, verbose=0, shuffle=False)
        log.info("%s epoch %d/%d loss %.4f (%.1fs)", name, epoch + 1, cfg.epochs, hist.history["loss"][-1],
                 time.time() - t0)
    return net


def train_ensemble(chips: ChipSet, cfg: TrainConfig, tag: str):
    """Train all branches on ``chips``; returns (keras model, normalisation)."""
    x = chips.x
    valid = valid_mask(x)
    refl = uint8_to_reflectance(x)
    norm = normalisation_stats(refl, valid, clip_max=UINT8_REFLECTANCE_MAX)
    branches = []
    for i, widths in enumerate(cfg.branches):
        t0 = time.time()
        branches.append(train_branch(widths, (refl, valid, norm), chips.y, cfg, cfg.seed + 1000 * i,
                                     name=f"fcn{i}_{'x'.join(str(w) for w in widths)}"))
        log.info("[%s] branch %d %s trained in %.0fs", tag, i, widths, time.time() - t0)
    return build_ensemble(branches), norm


# --- the whole command ------------------------------------------------------------------------------------------

def evaluate(network, norm: dict, chips: ChipSet, threshold: float | None, cfg: TrainConfig) -> tuple[dict, np.ndarray]:
    z = cs.prepare_chips(chips.x, norm)
    p = cs.predict_probabilities(network, z, tta=cfg.tta, positive=1)
    if threshold is None:
        threshold = cs.threshold_at_specificity(chips.y, p, cfg.spec_target)
    m = cs.binary_metrics(chips.y, p, threshold)
    if chips.source is not None:
        m["per_source"] = cs.per_source_rates(chips.y, p, threshold, chips.source)
    return m, p


def reference_indices(n: int, seed: int = 7) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=min(N_REFERENCE_CHIPS, n), replace=False))


def run(chips: ChipSet, out_dir: str | Path, cfg: TrainConfig, chips_arg: str | None = None) -> dict:
    """Validation run + refit; writes the model directory and returns the card."""
    if chips.y is None:
        raise InputDataError(f"{chips.path}: array 'y' (labels) is needed for training")
    if len(np.unique(chips.y)) < 2:
        raise InputDataError(f"{chips.path}: array 'y' must contain both classes for training")
    configure_tensorflow(cfg.seed, cfg.threads)
    out_dir = Path(out_dir)
    t_start = time.time()
    metrics: dict = {}
    threshold = 0.5
    validation_note = "no validation run (split 'none'); threshold 0.5"
    if cfg.split == "temporal":
        tr, va = temporal_split(chips, cfg.val_years)
        train_set, val_set = chips.subset(tr), chips.subset(va)
        if len(np.unique(val_set.y)) < 2 or len(np.unique(train_set.y)) < 2:
            raise InputDataError(f"{chips.path}: the temporal split needs both classes on each side")
        log.info("validation run: %d training chips, %d validation chips (%s)", len(tr), len(va), cfg.val_years)
        t0 = time.time()
        net_v, norm_v = train_ensemble(train_set, cfg, "validation")
        train_seconds = time.time() - t0
        metrics, _ = evaluate(net_v, norm_v, val_set, None, cfg)
        threshold = metrics["threshold"]
        if cfg.tta != "none":  # the same figures without TTA, for the scan (which applies the FCN once)
            plain = cs.binary_metrics(val_set.y, cs.predict_probabilities(net_v, cs.prepare_chips(val_set.x, norm_v)),
                                      threshold)
            metrics["without_tta"] = {k: plain[k] for k in ("auc", "sensitivity", "specificity", "precision",
                                                             "f1", "sensitivity_at_specificity_0.99",
                                                             "threshold_at_specificity_0.99")}
        metrics["split"] = {
            "kind": "temporal hold-out grouped by gallery",
            "validation_years": list(cfg.val_years),
            "n_train": int(len(tr)), "n_validation": int(len(va)),
            "train_galleries": sorted(set(galleries(train_set))),
            "validation_galleries": sorted(set(galleries(val_set))),
        }
        metrics["threshold_rule"] = f"lowest cut-off with validation specificity >= {cfg.spec_target}"
        metrics["validation_train_seconds"] = round(train_seconds, 1)
        validation_note = (f"threshold and metrics from the validation run (trained without the "
                           f"{'/'.join(cfg.val_years)} galleries)")
        log.info("validation: auc %.4f sens %.4f spec %.4f sens@spec0.99 %.4f threshold %.4f",
                 metrics["auc"], metrics["sensitivity"], metrics["specificity"],
                 metrics["sensitivity_at_specificity_0.99"], threshold)
        if not cfg.refit:
            network, norm, fit_set = net_v, norm_v, train_set
    if cfg.split != "temporal" or cfg.refit:
        log.info("refit on all %d chips", len(chips))
        network, norm = train_ensemble(chips, cfg, "refit")
        fit_set = chips
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
            "refit_on_all": bool(cfg.split != "temporal" or cfg.refit),
        },
        "training": {**asdict(cfg), "wall_seconds": round(elapsed, 1)},
        "reference_scores": {"indices": ref_idx, "scores": [round(float(s), 7) for s in ref_scores],
                             "tta": cfg.tta, "file": chips_arg or str(chips.path)},
    }
    save_model(out_dir, network, cs.json_safe(card))
    log.info("wrote %s in %.0fs total", out_dir, time.time() - t_start)
    return card
