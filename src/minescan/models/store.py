"""A model is a directory: ``model.keras`` (weights and architecture) and ``card.json`` (everything needed
to apply it correctly and to know where it came from).

card.json keys (all written by :func:`save_model`):

- ``kind``: ``discovery`` or ``impact``
- ``name``, ``architecture``: free text; ``package_version``: minescan version that wrote it
- ``bands``: band names in the order the network expects (matched by name against tile band descriptions)
- ``window``: training chip size in px; ``stride``: px between output cells (discovery only)
- ``classes``: output classes in order; ``positive_class`` (discovery)
- ``threshold``: probability cut-off for a detection (discovery); with ``tta`` set, it applies to
  test-time-augmented chip scores and ``threshold_without_tta`` is the one the scan uses
- ``normalisation``: ``{"clip_max": float|null, "mean": [...], "std": [...]}`` applied to *reflectance*
  (tile value x reflectance scale): ``z = (min(r, clip_max) - mean) / std``; nodata pixels become 0
- ``metrics``: cross-validation / validation figures; ``training_data``: provenance
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minescan import __version__
from minescan.errors import BandMismatchError, ModelError
from minescan.io_utils import atomic_write_text

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
REQUIRED_CARD_KEYS = ("kind", "bands", "window", "classes", "normalisation")


@dataclass
class LoadedModel:
    path: Path
    card: dict
    network: object = field(repr=False)

    @property
    def bands(self) -> list[str]:
        return list(self.card["bands"])

    @property
    def window(self) -> int:
        return int(self.card["window"])

    @property
    def threshold(self) -> float:
        """The card's decision threshold (for chip scores, test-time-augmented when the card says ``tta``)."""
        return float(self.card.get("threshold", 0.6))

    @property
    def scan_threshold(self) -> float:
        """The cut-off for one network pass per cell, as a scan makes: see :func:`scan_threshold`."""
        return scan_threshold(self.card)


    @property
    def version(self) -> str:
        """Short content hash of the weights and card: changes whenever the model does."""
        return model_fingerprint(self.path)

    def band_indices(self, available: list[str], source: str) -> list[int]:
        """Positions of this model's bands in ``available``; error naming each missing band and the file."""
        missing = [b for b in self.bands if b not in available]
        if missing:
            raise BandMismatchError(
                f"{source}: band(s) {', '.join(missing)} required by model {self.path} are missing "
                f"(the file has {', '.join(b or '?' for b in available) if any(available) else 'no band names'})"
            )
        return [available.index(b) for b in self.bands]

    def normalise(self, reflectance: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Per-band z-score of reflectance (..., bands) as float32, nodata set to 0 (the band mean)."""
        return normalise(reflectance, self.card["normalisation"], valid)


def scan_threshold(card: dict) -> float:
    """A card whose ``threshold`` was chosen on test-time-augmented chip scores (``tta``) also records
    ``threshold_without_tta``, which is the one that applies to a scan's single pass per cell."""
    if card.get("tta", "none") != "none" and "threshold_without_tta" in card:
        return float(card["threshold_without_tta"])
    return float(card.get("threshold", 0.6))


def normalise(reflectance: np.ndarray, norm: dict, valid: np.ndarray | None = None) -> np.ndarray:
    x = np.asarray(reflectance, dtype=np.float32)
    clip_max = norm.get("clip_max")
    if clip_max is not None:
        x = np.minimum(x, np.float32(clip_max))
    mean = np.asarray(norm["mean"], dtype=np.float32)
    std = np.asarray(norm["std"], dtype=np.float32)
    z = (x - mean) / std
    if valid is not None:
        z *= valid[..., None]
    return z


def normalisation_stats(reflectance: np.ndarray, valid: np.ndarray | None = None,
                        clip_max: float | None = None) -> dict:
    """Per-band mean and std over the last axis, ignoring nodata pixels; std floored to avoid /0."""
    x = np.asarray(reflectance, dtype=np.float64).reshape(-1, reflectance.shape[-1])
    if clip_max is not None:
        x = np.minimum(x, clip_max)
    if valid is not None:
        x = x[np.asarray(valid).reshape(-1).astype(bool)]
    if len(x) == 0:
        raise ModelError("cannot compute normalisation statistics: no valid pixels in the training chips")
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), 1e-6)
    return {"clip_max": clip_max, "mean": [round(float(v), 8) for v in mean],
            "std": [round(float(v), 8) for v in std]}


def model_fingerprint(path: Path) -> str:
    """Hash of the model file and card (``model.skops`` for a pixel model, see minescan.pixel.train)."""
    h = hashlib.sha256()
    weights = MODEL_FILE if (Path(path) / MODEL_FILE).exists() or not (Path(path) / "model.skops").exists() \
        else "model.skops"
    for name in (weights, CARD_FILE):
        h.update((Path(path) / name).read_bytes())
    return h.hexdigest()[:12]


def save_model(directory: str | Path, network, card: dict) -> Path:
    """Write ``model.keras`` and ``card.json`` atomically (each via a temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    card = dict(card)
    card.setdefault("package_version", __version__)
    for key in REQUIRED_CARD_KEYS:
        if key not in card:
            raise ModelError(f"model card for {directory} lacks required key '{key}'")
    tmp = directory / (MODEL_FILE + ".tmp.keras")
    network.save(tmp)
    os.replace(tmp, directory / MODEL_FILE)
    atomic_write_text(directory / CARD_FILE, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return directory


def read_card(directory: str | Path) -> dict:
    directory = Path(directory)
    card_path = directory / CARD_FILE
    if not card_path.is_file():
        raise ModelError(f"{card_path}: model card not found (a model is a directory with {MODEL_FILE} and {CARD_FILE})")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{card_path}: not valid JSON ({exc})") from exc
    for key in REQUIRED_CARD_KEYS:
        if key not in card:
            raise ModelError(f"{card_path}: required key '{key}' is missing")
    return card


def read_card_of_kind(directory: str | Path, expect_kind: str | None = None) -> dict:
    """The model card, checked to be of ``expect_kind`` (when given)."""
    card = read_card(directory)
    if expect_kind and card["kind"] != expect_kind:
        raise ModelError(f"{directory}: is a '{card['kind']}' model, expected '{expect_kind}'")
    return card


def load_model(directory: str | Path, expect_kind: str | None = None, runtime: str = "tensorflow") -> LoadedModel:
    """The model in ``directory``: card and network. ``runtime`` 'onnxruntime' / 'openvino': the network is
    read without Keras and run by ONNX Runtime / OpenVINO (:mod:`minescan.models.onnx_net`; raises its ``Unsupported`` when the
    network cannot be converted)."""
    directory = Path(directory)
    card = read_card_of_kind(directory, expect_kind)
    weights = directory / MODEL_FILE
    if not weights.is_file():
        raise ModelError(f"{weights}: model weights not found")
    if runtime in ("onnxruntime", "openvino"):
        from minescan.models.onnx_net import load_network

        network = load_network(weights, str(card.get("name") or directory.name), runtime=runtime)
    else:
        from minescan.models.networks import _keras

        keras = _keras()
        try:
            network = keras.models.load_model(weights, compile=False)
        except Exception as exc:  # keras raises many types for a corrupt file
            raise ModelError(f"{weights}: cannot be loaded as a Keras model ({exc})") from exc
    n_in = network.input_shape[-1]
    if n_in != len(card["bands"]):
        raise ModelError(f"{directory}: card lists {len(card['bands'])} bands but the network takes {n_in}")
    return LoadedModel(directory, card, network)
