"""Scoring 48 x 48 chips with a discovery model, optional test-time augmentation, and the metrics we report.

A chip's score is the model's probability of the positive class ("mine"); with ``tta="d4"`` it is the mean
over the 8 flips/rotations of the chip (the dihedral group D4). The model card's ``tta`` key says which
scoring its ``threshold`` was chosen for, and :func:`score_chips` follows the card unless told otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from minescan.errors import ModelError
from minescan.models.chips import reflect_pad, uint8_to_reflectance, valid_mask
from minescan.models.store import normalise

TTA_MODES = ("none", "d4")
SPECIFICITY_POINT = 0.99
SPECIFICITY_POINTS = (0.99, 0.995)


def prepare_chips(x_uint8: np.ndarray, norm: dict) -> np.ndarray:
    """uint8 chips -> the network's input: reflectance, clipped and z-scored, no-data pixels set to 0."""
    return normalise(uint8_to_reflectance(x_uint8), norm, valid_mask(x_uint8).astype(np.float32))


def d4_views(z: np.ndarray) -> list[np.ndarray]:
    """The 8 dihedral transforms of a batch (N, H, W, C) of square chips: 4 rotations, each also mirrored."""
    views = []
    for k in range(4):
        r = np.rot90(z, k, axes=(1, 2))
        views.append(r)
        views.append(r[:, :, ::-1])
    return views


def _positive_index(card: dict) -> int:
    classes = list(card.get("classes", ["background", "mine"]))
    positive = card.get("positive_class", "mine")
    if positive not in classes:
        raise ModelError(f"model card: positive_class '{positive}' is not one of its classes {classes}")
    return classes.index(positive)


_COMPILED: dict = {}


def _compiled_call(network):
    """The network's inference pass traced once (:func:`minescan.scan.inference.compiled`), kept for the network
    last used so that repeated scoring does not trace it again."""
    entry = _COMPILED.get(id(network))
    if entry is None or entry[0] is not network:
        from minescan.scan.inference import compiled

        entry = (network, compiled(network))
        _COMPILED.clear()  # one model at a time; do not keep old networks alive
        _COMPILED[id(network)] = entry
    return entry[1]


def predict_probabilities(network, z: np.ndarray, tta: str = "none", positive: int = 1,
                          batch_size: int = 1024) -> np.ndarray:
    """Positive-class probability for each normalised chip (N, H, W, C); mean over D4 views if tta='d4'."""
    if tta not in TTA_MODES:
        raise ModelError(f"unknown test-time augmentation '{tta}' (expected one of {', '.join(TTA_MODES)})")
    n = len(z)
    out = np.empty(n, dtype=np.float64)
    views_per_chip = 8 if tta == "d4" else 1
    step = max(1, batch_size // views_per_chip)
    call = _compiled_call(network)
    for start in range(0, n, step):
        batch = z[start:start + step]
        stack = np.concatenate(d4_views(batch), axis=0) if tta == "d4" else batch
        prob = call(np.ascontiguousarray(stack, dtype=np.float32))
        prob = prob.reshape(len(stack), -1, prob.shape[-1])
        if prob.shape[1] != 1:
            raise ModelError(f"the network yields {prob.shape[1]} output cells per chip; a chip must give exactly one")
        p = prob[:, 0, positive].astype(np.float64)
        out[start:start + len(batch)] = p.reshape(views_per_chip, len(batch)).mean(axis=0)
    return out


def score_chips(model, x_uint8: np.ndarray, tta: str | None = None, batch_size: int = 1024) -> np.ndarray:
    """Scores of uint8 chips with a :class:`minescan.models.store.LoadedModel`; TTA as in its card by default.

    A card with ``chip_pad`` (a window larger than the chips, e.g. 54 px for 48 px chips) gets the chips
    reflect-padded by that many px on every side first, as in training."""
    card = model.card
    if tta is None:
        tta = card.get("tta", "none")
    z = prepare_chips(reflect_pad(x_uint8, int(card.get("chip_pad", 0))), card["normalisation"])
    return predict_probabilities(model.network, z, tta=tta, positive=_positive_index(card), batch_size=batch_size)


# --- thresholds and metrics -----------------------------------------------------------------------------------

def _rejected_negative(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """The highest negative score that must be rejected for specificity >= target."""
    neg = np.sort(np.asarray(p, dtype=np.float64)[np.asarray(y) == 0])[::-1]
    if len(neg) == 0:
        raise ValueError("no negatives to set a specificity threshold on")
    allowed = int(math.floor((1.0 - target) * len(neg) + 1e-9))  # false positives we may keep
    return float(neg[allowed])


def threshold_at_specificity(y: np.ndarray, p: np.ndarray, target: float = SPECIFICITY_POINT) -> float:
    """The cut-off (detection: p >= cut-off) of the ROC point with specificity >= ``target`` and most sensitivity.

    Every score up to the highest negative that must be rejected is rejected; the cut-off sits halfway
    between that score and the next higher score of any chip, so that it does not sit on a score.
    """
    p = np.asarray(p, dtype=np.float64)
    reject = _rejected_negative(y, p, target)
    higher = p[p > reject]
    upper = float(higher.min()) if len(higher) else 1.0
    cut = (reject + upper) / 2.0
    return float(cut if cut > reject else np.nextafter(reject, np.inf))


def sensitivity_at_specificity(y: np.ndarray, p: np.ndarray, target: float = SPECIFICITY_POINT) -> tuple[float, float]:
    """(sensitivity, cut-off) of the ROC point with specificity >= target and the highest sensitivity."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if (y == 1).sum() == 0 or (y == 0).sum() == 0:
        return float("nan"), float("nan")
    reject = _rejected_negative(y, p, target)
    return float((p[y == 1] > reject).mean()), threshold_at_specificity(y, p, target)


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Counts and rates at ``threshold`` (detection: p >= threshold), AUC and the 0.99 and 0.995 specificity
    points."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    both = 0 < y.sum() < len(y)
    precision = _ratio(tp, tp + fp)
    sensitivity = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    sens99, cut99 = sensitivity_at_specificity(y, p, SPECIFICITY_POINT)
    return {
        "n": int(len(y)),
        "n_positive": int(y.sum()),
        "n_negative": int(len(y) - y.sum()),
        "threshold": float(threshold),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "average_precision": float(average_precision_score(y, p)) if both else float("nan"),
        "sensitivity": sensitivity,
        "specificity": _ratio(tn, tn + fp),
        "precision": precision,
        "f1": f1,
        "accuracy": _ratio(tp + tn, len(y)),
        f"sensitivity_at_specificity_{SPECIFICITY_POINT}": sens99,
        f"threshold_at_specificity_{SPECIFICITY_POINT}": cut99,
        **{k: v for point in SPECIFICITY_POINTS if point != SPECIFICITY_POINT
           for k, v in zip((f"sensitivity_at_specificity_{point}", f"threshold_at_specificity_{point}"),
                           sensitivity_at_specificity(y, p, point), strict=True)},
    }


def per_source_rates(y: np.ndarray, p: np.ndarray, threshold: float, source: np.ndarray) -> dict:
    """For each source: chip count, label counts, share flagged as mine, and sensitivity / specificity."""
    y = np.asarray(y).astype(int)
    pred = np.asarray(p) >= threshold
    source = np.asarray(source).astype(str)
    out = {}
    for name in sorted(set(source.tolist())):
        m = source == name
        yp, pp = y[m], pred[m]
        npos = int(yp.sum())
        nneg = int(len(yp) - npos)
        out[name] = {
            "n": int(m.sum()), "n_positive": npos, "n_negative": nneg,
            "flagged_rate": float(pp.mean()),
            "sensitivity": _ratio(np.sum(pp & (yp == 1)), npos),
            "specificity": _ratio(np.sum(~pp & (yp == 0)), nneg),
        }
    return out


def json_safe(obj):
    """NaN -> None recursively, so the JSON we print is standard."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.floating | np.integer):
        return json_safe(obj.item())
    return obj
