"""Training the discovery FCN on real 48 x 48 RGB Sentinel-2 chips (``minescan train-chips``).

Pipeline (one command, fixed seeds):

1. **Validation grouped by gallery**, one of two schemes (``TrainConfig.validation``):

   - ``"holdout"`` (v1): each fold holds out the galleries of one composite year (2024, 2023, 2019) and trains
     on the others plus the undated galleries;
   - ``"forward"`` (v2, issue 18): forward chaining; each fold validates on one year's galleries and trains only
     on galleries whose composite starts in or before an earlier year, plus the undated ones (default: train
     <= 2023 -> validate 2024, train <= 2019 -> validate 2023), which is how a monitoring user applies the model.

   A gallery's clearer and cloudier twins share a year, and the split code refuses any gallery (so any twin) on
   both sides. Each fold trains the full configuration (all branches) and scores its validation chips (with D4
   test-time augmentation when configured). The decision threshold is picked on the pooled out-of-fold scores:
   the lowest cut-off whose specificity reaches ``spec_target``.
2. **Refit.** Train the same configuration (same epochs, same seeds) on all chips and ship it with that
   threshold and the out-of-fold figures in its card.

Every branch is :func:`minescan.models.networks.build_discovery_fcn` (three MaxPool3 -> output stride 27, free input
size), so the shipped ensemble, whose branches' softmax outputs are averaged inside one Keras model, still runs
as a fully convolutional network over whole tiles. With ``pad`` = 3 the chips are reflect-padded to a 54 px window
(two cells, 2 x 2 valid head), whose single output cell sees the chip symmetrically; with 48 px the valid pooling
drops the chip's last rows and columns (receptive field chip px -13..39).
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
    reflect_pad,
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
    # --- v2 options (issue 18); the defaults reproduce the v1 recipe ---
    # "holdout": one fold per year in ``folds`` (train on every other year); "forward": forward chaining, one
    # fold per [validation year, last training year] in ``forward_folds`` (train on galleries whose composite
    # starts in or before the last training year, plus the undated galleries)
    validation: str = "holdout"
    forward_folds: list = field(default_factory=lambda: [["2024", "2023"], ["2023", "2019"]])
    pad: int = 0                      # reflect-pad chips by this many px each side (3: 48 -> 54 px window)
    bootstrap: float = 0.0            # > 0: each branch trains on its own bootstrap sample of this share
    aug_rotate: float = 0.0           # continuous rotation, uniform in +-degrees (180 = full circle), reflect fill
    aug_shift: float = 0.0            # shift, uniform in +- this share of the chip side
    aug_zoom: float = 0.0             # zoom factor exp(U(-a, a))
    plateau_patience: int = 0         # > 0: constant LR, halved after this many epochs without a better
    #                                   validation loss (folds only; the refit runs the folds' mean best epoch count)
    early_stop_patience: int = 0      # > 0: stop after this many epochs without improvement, keep the best weights
    hard_negative_weight: float = 1.0  # loss weight of the cloudier-composite (clear 0.05) negatives

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        data = json.loads(text)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputDataError(f"training config: unknown key(s) {', '.join(sorted(unknown))}")
        cfg = cls(**data)
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.validation not in ("holdout", "forward"):
            raise InputDataError(f"training config: validation must be 'holdout' or 'forward', got {self.validation!r}")
        for fold in self.forward_folds:
            if (len(fold) != 2 or not all(str(v).isdigit() for v in fold)
                    or int(fold[0]) <= int(fold[1])):
                raise InputDataError(f"training config: forward_folds entry {fold} must be [validation year, "
                                     "last training year] with the validation year later")
        if not 0.0 <= self.bootstrap <= 1.0:
            raise InputDataError(f"training config: bootstrap must be in [0, 1], got {self.bootstrap}")
        if self.pad < 0:
            raise InputDataError(f"training config: pad must be >= 0, got {self.pad}")

    @property
    def window(self) -> int:
        """The network's window: the chip plus its reflect padding."""
        return WINDOW + 2 * self.pad


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


def _start_years(chips: ChipSet) -> np.ndarray:
    if chips.period is None:
        raise InputDataError(f"{chips.path}: array 'period' is needed for a temporal split")
    return np.array([str(p)[:4] for p in chips.period])


def forward_split(chips: ChipSet, val_year: str, last_train_year: str) -> tuple[np.ndarray, np.ndarray]:
    """(train index, validation index) for forward chaining: validate on the galleries whose composite starts in
    ``val_year``, train on those starting in or before ``last_train_year`` plus the undated ones; chips of the
    years in between are left out. Raises if a gallery (clear and cloudy twins together) is on both sides.
    """
    if int(val_year) <= int(last_train_year):
        raise InputDataError(f"forward fold: validation year {val_year} must be later than {last_train_year}")
    start = _start_years(chips)
    dated = np.char.isdigit(start)
    is_val = start == str(val_year)
    is_train = ~dated | (dated & (np.where(dated, start, "0").astype(int) <= int(last_train_year)))
    groups = galleries(chips)
    both = set(groups[is_val]) & set(groups[is_train])
    if both:
        raise InputDataError(f"{chips.path}: gallery(s) {', '.join(sorted(both))} span both sides of the split")
    return np.flatnonzero(is_train), np.flatnonzero(is_val)


def fold_splits(chips: ChipSet, cfg: TrainConfig) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """[(description, train index, validation index)] for the configured validation scheme."""
    out = []
    if cfg.validation == "forward":
        for val_year, last in cfg.forward_folds:
            tr, va = forward_split(chips, str(val_year), str(last))
            out.append(({"validation_years": [str(val_year)], "train_years_up_to": str(last),
                         "train_undated": True}, tr, va))
    else:
        for years in cfg.folds:
            tr, va = temporal_split(chips, years)
            out.append(({"validation_years": list(years)}, tr, va))
    return out


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


def _reflect_index(k: np.ndarray, n: int) -> np.ndarray:
    k = np.mod(k, 2 * n)
    return np.where(k >= n, 2 * n - 1 - k, k)


def affine_random(x: np.ndarray, rng: np.random.Generator, rotate_deg: float, shift: float,
                  zoom: float) -> np.ndarray:
    """Random continuous rotation (+-``rotate_deg``), shift (+-``shift`` of the side) and zoom (exp(U(-zoom, zoom)))
    of each uint8 chip about its centre; bilinear, reflect fill (half-sample symmetric), rounded back to uint8."""
    n, h, w, c = x.shape
    theta = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg, n))
    scale = np.exp(rng.uniform(-zoom, zoom, n))
    t = rng.uniform(-shift, shift, (n, 2)) * np.array([h, w])
    ci, cj = (h - 1) / 2.0, (w - 1) / 2.0
    ii, jj = np.meshgrid(np.arange(h) - ci, np.arange(w) - cj, indexing="ij")
    cos = (np.cos(theta) / scale)[:, None, None]
    sin = (np.sin(theta) / scale)[:, None, None]
    u = cos * ii - sin * jj + ci - t[:, 0, None, None]  # source row of each output pixel
    v = sin * ii + cos * jj + cj - t[:, 1, None, None]
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = (u - u0)[..., None].astype(np.float32), (v - v0)[..., None].astype(np.float32)
    u0, v0 = u0.astype(np.int64), v0.astype(np.int64)
    r0, r1 = _reflect_index(u0, h), _reflect_index(u0 + 1, h)
    c0, c1 = _reflect_index(v0, w), _reflect_index(v0 + 1, w)
    flat = np.ascontiguousarray(x).reshape(n * h * w, c)  # gather rows of a flat (pixels, bands) table: fast
    base = (np.arange(n) * (h * w))[:, None, None]
    r0, r1 = base + r0 * w, base + r1 * w

    def at(rows, cols):
        return flat[(rows + cols).ravel()].reshape(n, h, w, c).astype(np.float32)

    out = ((at(r0, c0) * (1 - fv) + at(r0, c1) * fv) * (1 - fu)
           + (at(r1, c0) * (1 - fv) + at(r1, c1) * fv) * fu)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


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

    Reflect padding to the network's window (``cfg.pad``), a random continuous rotation / shift / zoom when
    configured, a random D4 transform per chip, radiometric jitter (:func:`radiometric_luts`), gaussian noise, then the
    model's normalisation; no-data pixels (0 in every band) stay at 0 after normalisation, as in the scan.
    """
    x = reflect_pad(x, cfg.pad)
    if cfg.aug_rotate or cfg.aug_shift or cfg.aug_zoom:
        x = affine_random(x, rng, cfg.aug_rotate, cfg.aug_shift, cfg.aug_zoom)
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


def sample_weights(y: np.ndarray, clear: np.ndarray | None, cfg: TrainConfig, n_branches: int,
                   rng: np.random.Generator) -> np.ndarray:
    """(n_branches, N) loss weights: class-balanced, cloudier-composite negatives times ``hard_negative_weight``,
    and with ``bootstrap`` > 0 each branch's own bootstrap draw (round(bootstrap * N) chips with replacement;
    a chip's weight is multiplied by how often it was drawn, so out-of-bag chips weigh 0)."""
    pos = y.mean()
    w = np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos)).astype(np.float32)
    if cfg.hard_negative_weight != 1.0 and clear is not None:
        hard = (y == 0) & (np.asarray(clear).astype(str) == "0.05")
        w = np.where(hard, w * np.float32(cfg.hard_negative_weight), w)
    out = np.repeat(w[None], n_branches, axis=0)
    if cfg.bootstrap > 0:
        m = max(1, int(round(cfg.bootstrap * len(y))))
        for i in range(n_branches):
            counts = np.bincount(rng.integers(0, len(y), m), minlength=len(y)).astype(np.float32)
            out[i] *= counts * np.float32(len(y) / m)  # mean weight as without bootstrap
    return out


def _balanced_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-0.5 * (np.log(p[y == 1]).mean() + np.log(1 - p[y == 0]).mean()))


def train_branches(x: np.ndarray, y: np.ndarray, norm: dict, cfg: TrainConfig, seed: int, tag: str,
                   clear: np.ndarray | None = None, val: tuple | None = None, epochs: int | None = None):
    """Train all FCN branches jointly (one loss each, same augmented batches, different initialisations and,
    with ``bootstrap``, different bootstrap samples). Returns (branches, info).

    Fresh augmentation every epoch. AdamW with cosine decay; with ``plateau_patience`` and validation chips
    ``val = (x, y)``: constant LR halved on a plateau of the validation loss (balanced log-loss of the
    branches' mean, no TTA), early stopping after ``early_stop_patience`` epochs, best weights kept.
    """
    from minescan.models.networks import build_discovery_fcn

    keras = _keras()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    window = cfg.window
    epochs = int(epochs or cfg.epochs)
    branches = [build_discovery_fcn(len(CHIP_BANDS), window, tuple(int(w) for w in widths), cfg.dropout,
                                    name=f"fcn{i}_{'x'.join(str(w) for w in widths)}")
                for i, widths in enumerate(cfg.branches)]
    inputs = keras.Input(shape=(window, window, len(CHIP_BANDS)), name="bands")
    joint = keras.Model(inputs, [b(inputs) for b in branches], name="joint")
    steps = int(np.ceil(len(y) / cfg.batch_size))
    watch = val is not None and cfg.plateau_patience > 0
    if watch:
        lr = cfg.learning_rate
    else:
        lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=steps * epochs, alpha=0.02)
    opt = keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    joint.compile(optimizer=opt, loss=[loss] * len(branches))
    nb = len(branches)
    w = sample_weights(y, clear, cfg, nb, rng)
    target = np.eye(2, dtype=np.float32)[y.astype(int)].reshape(-1, 1, 1, 2)
    info = {"epochs_run": 0, "best_epoch": None, "lr_cuts": [], "val_loss": []}
    if watch:
        zv = cs.prepare_chips(reflect_pad(val[0], cfg.pad), norm)
        watcher = build_ensemble(branches, name="watch")  # shares the branches' layers: current weights
        best, best_weights, since = np.inf, None, 0
    for epoch in range(epochs):
        t0 = time.time()
        order = rng.permutation(len(y))
        z = augment_batch(x[order], norm, cfg, rng)
        t_aug = time.time() - t0
        hist = joint.fit(z, [target[order]] * nb, sample_weight=[w[i][order] for i in range(nb)],
                         batch_size=cfg.batch_size, epochs=epoch + 1, initial_epoch=epoch, verbose=0, shuffle=False)
        info["epochs_run"] = epoch + 1
        msg = ""
        if watch:
            pv = cs.predict_probabilities(watcher, zv, tta="none")
            vl = _balanced_log_loss(val[1], pv)
            info["val_loss"].append(round(vl, 5))
            msg = f" val loss {vl:.4f}"
            if vl < best - 1e-4:
                best, since, info["best_epoch"] = vl, 0, epoch + 1
                best_weights = [b.get_weights() for b in branches]
            else:
                since += 1
                if since % cfg.plateau_patience == 0:
                    new_lr = float(opt.learning_rate.numpy()) * 0.5
                    opt.learning_rate.assign(new_lr)
                    info["lr_cuts"].append(epoch + 1)
                    msg += f" -> lr {new_lr:.2e}"
        log.info("[%s] epoch %d/%d loss %.4f%s (%.1fs, augmentation %.1fs)", tag, epoch + 1, epochs,
                 hist.history["loss"][-1] / nb, msg, time.time() - t0, t_aug)
        if watch and cfg.early_stop_patience and since >= cfg.early_stop_patience:
            log.info("[%s] early stop after epoch %d (best %d)", tag, epoch + 1, info["best_epoch"])
            break
    if watch and best_weights is not None:
        for b, bw in zip(branches, best_weights, strict=True):
            b.set_weights(bw)
    return branches, info


def train_ensemble(chips: ChipSet, cfg: TrainConfig, tag: str, val: ChipSet | None = None,
                   epochs: int | None = None):
    """Train all branches on ``chips``; returns (keras model averaging them, normalisation, info)."""
    x = chips.x
    norm = normalisation_stats(uint8_to_reflectance(x), valid_mask(x), clip_max=UINT8_REFLECTANCE_MAX)
    t0 = time.time()
    branches, info = train_branches(x, chips.y, norm, cfg, cfg.seed, tag, clear=chips.clear,
                                    val=None if val is None else (val.x, val.y), epochs=epochs)
    log.info("[%s] %d branch(es) trained in %.0fs", tag, len(branches), time.time() - t0)
    return build_ensemble(branches), norm, info


# --- the whole command ------------------------------------------------------------------------------------------

def reference_indices(n: int, seed: int = 7) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=min(N_REFERENCE_CHIPS, n), replace=False))


def run(chips: ChipSet, out_dir: str | Path, cfg: TrainConfig, chips_arg: str | None = None,
        name: str | None = None) -> dict:
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
    refit_epochs = None
    if (cfg.folds if cfg.validation == "holdout" else cfg.forward_folds):
        metrics, threshold, last, refit_epochs = cross_validate(chips, cfg)
        validation_note = ("threshold chosen on, and metrics measured on, the pooled out-of-fold scores of the "
                           + ("forward-chaining folds (each chip scored by a model trained only on earlier "
                              "composites and the undated galleries)" if cfg.validation == "forward" else
                              "temporal folds (each chip scored by a model trained without its year's galleries)"))
    if cfg.refit or last is None:
        log.info("refit on all %d chips (%d epochs)", len(chips), refit_epochs or cfg.epochs)
        network, norm, _ = train_ensemble(chips, cfg, "refit", epochs=refit_epochs)
        fit_set = chips
    else:
        network, norm, fit_set = last
    elapsed = time.time() - t_start

    ref_idx = reference_indices(len(chips))
    ref_scores = cs.predict_probabilities(network, cs.prepare_chips(reflect_pad(chips.x[ref_idx], cfg.pad), norm),
                                          tta=cfg.tta)
    n_params = int(network.count_params())
    k = cfg.window // STRIDE
    boot = f", each branch on its own {cfg.bootstrap:.0%} bootstrap sample" if cfg.bootstrap else ""
    name = name or "amazon-rgb48"
    card = {
        "kind": "discovery",
        "name": name,
        "architecture": (f"ensemble (mean of softmax) of {len(cfg.branches)} discovery FCN branches "
                         f"(Balaniuk et al. 2020 family: 3x [conv3x3 same + maxpool3], conv{k}x{k} valid, dropout "
                         f"{cfg.dropout}, conv1x1 softmax){boot}; widths {cfg.branches}; {n_params} parameters"),
        "bands": list(CHIP_BANDS),
        "window": cfg.window,
        **({"chip_window": WINDOW, "chip_pad": cfg.pad, "chip_pad_mode": "symmetric"} if cfg.pad else {}),
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
        "training": {**asdict(cfg), "wall_seconds": round(elapsed, 1),
                     **({"refit_epochs": refit_epochs} if refit_epochs else {})},
        "reference_scores": {"indices": ref_idx, "scores": [round(float(s), 7) for s in ref_scores],
                             "tta": cfg.tta, "file": chips_arg or str(chips.path)},
    }
    save_model(out_dir, network, cs.json_safe(card))
    log.info("wrote %s in %.0fs total", out_dir, time.time() - t_start)
    return card


SUMMARY_KEYS = ("auc", "sensitivity", "specificity", "precision", "f1", "sensitivity_at_specificity_0.99",
                "threshold_at_specificity_0.99", "sensitivity_at_specificity_0.995", "threshold_at_specificity_0.995",
                "n", "n_positive", "n_negative")


def cross_validate(chips: ChipSet, cfg: TrainConfig):
    """One training per fold; pooled out-of-fold scores set the threshold and the metrics.

    Returns (metrics, threshold, last fold's (network, norm, train set), mean best epoch or None)."""
    oof = np.full(len(chips), np.nan)
    oof_plain = np.full(len(chips), np.nan)
    folds = []
    last = None
    best_epochs = []
    for desc, tr, va in fold_splits(chips, cfg):
        years = desc["validation_years"]
        train_set, val_set = chips.subset(tr), chips.subset(va)
        if len(np.unique(val_set.y)) < 2 or len(np.unique(train_set.y)) < 2:
            raise InputDataError(f"{chips.path}: holding out {years} leaves one class only on a side")
        log.info("fold %s: %d training chips, %d validation chips", years, len(tr), len(va))
        t0 = time.time()
        net, norm, info = train_ensemble(train_set, cfg, f"fold {'/'.join(years)}",
                                         val=val_set if cfg.plateau_patience > 0 else None)
        seconds = time.time() - t0
        z = cs.prepare_chips(reflect_pad(val_set.x, cfg.pad), norm)
        oof[va] = cs.predict_probabilities(net, z, tta=cfg.tta)
        oof_plain[va] = oof[va] if cfg.tta == "none" else cs.predict_probabilities(net, z, tta="none")
        if info.get("best_epoch"):
            best_epochs.append(info["best_epoch"])
        folds.append({**desc, "index": va, "n_train": int(len(tr)),
                      "train_galleries": sorted(set(galleries(train_set))),
                      "validation_galleries": sorted(set(galleries(val_set))), "train_seconds": round(seconds, 1),
                      "epochs_run": info["epochs_run"], "best_epoch": info["best_epoch"],
                      "lr_cuts": info["lr_cuts"]})
        last = (net, norm, train_set)
    held = np.flatnonzero(~np.isnan(oof))
    y, p = chips.y[held], oof[held]
    threshold = cs.threshold_at_specificity(y, p, cfg.spec_target)
    metrics = cs.binary_metrics(y, p, threshold)
    metrics["per_source"] = cs.per_source_rates(y, p, threshold, chips.source[held])
    metrics["per_gallery"] = cs.per_source_rates(y, p, threshold, galleries(chips)[held])
    if cfg.tta != "none":  # the scan applies the FCN once per cell: the same figures without TTA
        pp = oof_plain[held]
        plain = cs.binary_metrics(y, pp, cs.threshold_at_specificity(y, pp, cfg.spec_target))
        metrics["without_tta"] = {k: plain[k] for k in SUMMARY_KEYS + ("threshold",)}
    per_fold = []
    for f in folds:
        va = f.pop("index")
        fm = cs.binary_metrics(chips.y[va], oof[va], threshold)
        f.update({k: fm[k] for k in SUMMARY_KEYS})
        f["threshold_note"] = ("sensitivity/specificity at the pooled threshold; sensitivity_at_specificity_* "
                               "on this fold's own ROC")
        f["per_gallery"] = cs.per_source_rates(chips.y[va], oof[va], threshold, galleries(chips)[va])
        per_fold.append(f)
        log.info("fold %s: auc %.4f sens %.4f spec %.4f (pooled threshold) sens@spec0.99 %.4f sens@spec0.995 %.4f",
                 f["validation_years"], fm["auc"], fm["sensitivity"], fm["specificity"],
                 fm["sensitivity_at_specificity_0.99"], fm["sensitivity_at_specificity_0.995"])
    metrics["folds"] = per_fold
    if cfg.validation == "forward":
        kind = ("forward-chaining validation grouped by gallery: each fold trains on the galleries whose composite "
                "starts in or before a year plus the undated galleries, and validates on a later year's galleries")
        spec = [list(f) for f in cfg.forward_folds]
    else:
        kind = ("temporal cross-validation grouped by gallery: each fold holds out the galleries of one "
                "composite year; undated galleries always train")
        spec = [list(y) for y in cfg.folds]
    metrics["split"] = {"kind": kind, "scheme": cfg.validation, "folds": spec, "n_validation": int(len(held))}
    metrics["threshold_rule"] = f"lowest cut-off with pooled out-of-fold specificity >= {cfg.spec_target}"
    log.info("pooled out-of-fold: auc %.4f sens %.4f spec %.4f sens@spec0.99 %.4f sens@spec0.995 %.4f "
             "threshold %.4f", metrics["auc"], metrics["sensitivity"], metrics["specificity"],
             metrics["sensitivity_at_specificity_0.99"], metrics["sensitivity_at_specificity_0.995"], threshold)
    best = round(float(np.mean(best_epochs))) if best_epochs else None
    return metrics, threshold, last, best
