"""``minescan segment train``: a SegFormer on GeoTIFFs + a polygon layer of disturbed ground -> model directory.

Steps: masks rasterised from the polygons onto each image's grid (:mod:`minescan.segment.masks`); images cut
into ``tile_px`` tiles; a 70/15/15 split over tile places (never a place on two sides); per-band
normalisation from the training tiles; training on random ``patch_px`` crops of the training tiles with the
MineSegSAT transforms (random crop always, vertical flip 50 %, rotation by a multiple of 90 degrees 50 %,
horizontal flip 50 %, channel shuffle 30 %); AdamW with cosine annealing; fixed seeds. Metrics on whole
tiles by windowed prediction (test-time patch merging): pixel F1, precision and recall computed per tile and
averaged over tiles (as the paper reports them), and the pooled IoU.

Per-tile metric convention: tiles without disturbed pixels that get no prediction either are left out of
the averages (counted as ``images_empty``; scoring them 1 would inflate the figures on scenes where most
tiles hold no mine); otherwise a ratio with an empty denominator scores 0.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from minescan.errors import InputDataError
from minescan.models.networks import _keras
from minescan.models.store import normalisation_stats, normalise, save_model
from minescan.segment.losses import loss_card, make_loss
from minescan.segment.masks import SPLITS, grouped_split, read_image, read_polygons, tile_arrays, tile_refs
from minescan.segment.network import ALIGN, build_segformer, variant_config
from minescan.segment.predict import check_window, predict_array

log = logging.getLogger(__name__)


@dataclass
class SegmentTrainConfig:
    """Training settings (config section ``segment.train``; documented in config_schema.yaml)."""

    bands: list[str] = field(default_factory=list)
    scale: float = 1e-4
    variant: str = "small"
    stage2_depth: int | None = None
    tile_px: int = 256
    patch_px: int = 128
    batch_size: int = 8
    epochs: int = 20
    steps_per_epoch: int = 8
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    loss: str = "tversky"
    alpha: float = 0.5
    beta: float = 0.5
    delta: float = 1.0
    channel_shuffle: float = 0.3
    threshold: float = 0.5
    window_px: int = 256
    overlap_px: int = 64
    seed: int = 42
    threads: int = 2


def augment(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, patch_px: int, channel_shuffle: float):
    """One training sample: random crop, then vertical flip 50 %, rotation by k x 90 degrees 50 %, horizontal
    flip 50 %, band shuffle with probability ``channel_shuffle`` (the MineSegSAT transforms)."""
    h, w = y.shape
    r = int(rng.integers(0, h - patch_px + 1))
    c = int(rng.integers(0, w - patch_px + 1))
    x, y = x[r:r + patch_px, c:c + patch_px], y[r:r + patch_px, c:c + patch_px]
    if rng.random() < 0.5:
        x, y = x[::-1], y[::-1]
    if rng.random() < 0.5:
        k = int(rng.integers(1, 4))
        x, y = np.rot90(x, k), np.rot90(y, k)
    if rng.random() < 0.5:
        x, y = x[:, ::-1], y[:, ::-1]
    if rng.random() < channel_shuffle:
        x = x[..., rng.permutation(x.shape[-1])]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def per_image_metrics(truths: list[np.ndarray], preds: list[np.ndarray]) -> dict:
    """Pixel F1 / precision / recall per image, averaged over the images where there is something (truth or
prediction); pooled IoU over all pixels."""
    f1s, ps, rs = [], [], []
    tp_all = fp_all = fn_all = empty = 0
    for t, p in zip(truths, preds, strict=True):
        t, p = t.astype(bool), p.astype(bool)
        tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        if tp + fp + fn == 0:  # nothing there, nothing predicted: says nothing about the segmentation
            empty += 1
            continue
        ps.append(tp / (tp + fp) if tp + fp else 0.0)
        rs.append(tp / (tp + fn) if tp + fn else 0.0)
        f1s.append(2 * tp / (2 * tp + fp + fn))
    union = tp_all + fp_all + fn_all
    return {"images": len(truths), "images_empty": empty, "f1": round(float(np.mean(f1s)), 4) if f1s else None,
            "precision": round(float(np.mean(ps)), 4) if ps else None,
            "recall": round(float(np.mean(rs)), 4) if rs else None,
            "iou_pooled": round(tp_all / union, 4) if union else None}


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def check_config(cfg: SegmentTrainConfig) -> None:
    from minescan.errors import ConfigError

    if cfg.patch_px % ALIGN or cfg.patch_px > cfg.tile_px:
        raise ConfigError(f"segment.train.patch_px {cfg.patch_px}: must be a multiple of {ALIGN} and at most "
                          f"segment.train.tile_px ({cfg.tile_px})")
    check_window(cfg.window_px, cfg.overlap_px)


def train_segmenter(images: list[str], polygons: str, out, cfg: SegmentTrainConfig,
                    polygons_layer: str | None = None, name: str | None = None,
                    polygons_where: str | None = None) -> dict:
    """Train and write the model directory ``out``; returns its card."""
    from minescan.models.train_chips import configure_tensorflow

    check_config(cfg)
    if not cfg.bands:
        raise InputDataError("segment train: no bands given")
    configure_tensorflow(cfg.seed, cfg.threads)
    keras = _keras()
    gdf = read_polygons(polygons, polygons_layer, polygons_where)
    imgs = [read_image(p, cfg.bands, cfg.scale, gdf) for p in images]
    refs = tile_refs(imgs, cfg.tile_px)
    sides = grouped_split([r.place for r in refs], seed=cfg.seed)
    by_side = {s: [r for r, side in zip(refs, sides, strict=True) if side == s] for s in SPLITS}
    if not by_side["train"]:
        raise InputDataError(f"segment train: no training tile ({len(refs)} tiles of {cfg.tile_px} px in all)")
    train_tiles = [tile_arrays(imgs, r, cfg.tile_px) for r in by_side["train"]]
    refl = np.concatenate([x.reshape(-1, x.shape[-1]) for x, _, _ in train_tiles])
    valid = np.concatenate([v.reshape(-1) for _, v, _ in train_tiles])
    norm = normalisation_stats(refl, valid)
    del refl, valid
    xs = [normalise(x, norm, v) for x, v, _ in train_tiles]
    ys = [m.astype(np.float32) for _, _, m in train_tiles]

    arch = variant_config(cfg.variant, cfg.stage2_depth)
    net = build_segformer(len(cfg.bands), arch, name=name or "segformer")
    total = cfg.epochs * cfg.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=max(1, total), alpha=0.0)
    net.compile(optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay),
                loss=make_loss(cfg.loss, cfg.alpha, cfg.beta, cfg.delta))
    rng = np.random.default_rng(cfg.seed)
    history = []
    for epoch in range(cfg.epochs):
        losses = []
        for _ in range(cfg.steps_per_epoch):
            batch = [augment(rng, xs[k], ys[k], cfg.patch_px, cfg.channel_shuffle)
                     for k in rng.integers(0, len(xs), cfg.batch_size)]
            bx = np.stack([b[0] for b in batch]).astype(np.float32)
            by = np.stack([b[1] for b in batch])[..., None].astype(np.float32)
            losses.append(float(net.train_on_batch(bx, by)))
        history.append(round(float(np.mean(losses)), 5))
        log.info("epoch %d/%d: loss %.4f", epoch + 1, cfg.epochs, history[-1])

    metrics = {}
    for side in SPLITS:
        truths, preds = [], []
        for r in by_side[side]:
            x, v, m = tile_arrays(imgs, r, cfg.tile_px)
            prob = predict_array(net, normalise(x, norm, v), cfg.window_px, cfg.overlap_px)
            truths.append(m)
            preds.append((prob >= cfg.threshold) & v)
        metrics[side] = per_image_metrics(truths, preds)
    card = {
        "kind": "segmentation", "name": name or Path(out).name, "architecture": {"network": "segformer", **arch},
        "bands": list(cfg.bands), "window": cfg.patch_px, "patch_px": cfg.patch_px, "tile_px": cfg.tile_px,
        "classes": ["background", "disturbed"], "positive_class": "disturbed", "threshold": cfg.threshold,
        "input_scaling": {"reflectance_scale": cfg.scale,
                          "note": "z = (min(tile value x scale, clip_max) - mean) / std; nodata -> 0"},
        "normalisation": norm, "loss": loss_card(cfg.loss, cfg.alpha, cfg.beta, cfg.delta),
        "prediction": {"window_px": cfg.window_px, "overlap_px": cfg.overlap_px},
        "metrics": {**metrics, "note": "pixel F1/precision/recall per tile averaged over tiles; IoU pooled",
                    "loss_per_epoch": history},
        "training": {k: v for k, v in asdict(cfg).items() if k not in ("bands", "threads")},
        "training_data": {
            "images": [{"path": str(p), "sha256_16": _sha256(p)} for p in images],
            "polygons": {"path": str(polygons), "layer": polygons_layer, "where": polygons_where,
                         "sha256_16": _sha256(polygons),
                         "features": len(gdf)},
            "tiles": {s: len(by_side[s]) for s in SPLITS},
            "split": "70/15/15 over tile places (grouped), seeded",
        },
    }
    save_model(out, net, card)
    return card
