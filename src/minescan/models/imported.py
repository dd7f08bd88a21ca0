"""Imported patch classifiers: published Keras ``.h5`` mine detectors as minescan model directories.

Amazon Mining Watch (earthrise-media/mining-detector; code MIT, data CC BY 4.0, Earth Genome) publishes its
detectors as Keras ``.h5`` files: small CNNs that score one ``window`` x ``window`` px Sentinel-2 patch
(Sequential Conv2D / MaxPooling2D / BatchNormalization / Flatten / Dense / Dropout, sigmoid or softmax head).
What the file cannot say (band order, input scaling, centre crop, which output is "mine", thresholds,
licence) comes from a preset or from options; :func:`import_h5` writes a model directory of kind
``discovery`` that the scan runs patch by patch (:mod:`minescan.scan.patches`).

The saved network (``model.keras``) takes the full ``window`` px patch, already normalised as the card says:

    patch (window x window x B) -> [Cropping2D to the crop] -> member_i (the .h5 networks, unchanged)
    -> [Dense one-hot: pick the "mine" output] -> [Average over members] -> [1 - p, p]

so that its output is ``(background, mine)`` as for every discovery model (``classes``), and chip scoring
(``evaluate-chips``) works unchanged. The card's ``patch`` entry says how the scan finds the members again.

Normalisation: the network input is ``DN * input_scale`` (2024+ models: DN / 10000) or the per-band z-score
``(DN - mean_b) / std_b`` (2021 models). Cards hold normalisation on *reflectance* (tile value x the
source's ``reflectance_scale``); with Sentinel-2's ``DN = 10000 x reflectance`` (:data:`DN_PER_REFLECTANCE`)
both are written in those terms, and the DN constants are kept in ``card["import"]`` as given.

Loading never runs code from the file: the model configuration is read from the HDF5 attributes with h5py
and every layer (nested ones too) must be in :data:`ALLOWED_LAYERS` with a plain activation before Keras
builds anything (Keras' ``safe_mode`` does not cover legacy ``.h5``; a Lambda layer would carry Python
bytecode).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minescan.errors import ModelError

log = logging.getLogger(__name__)

DN_PER_REFLECTANCE = 10000.0  # Sentinel-2 L1C/L2A digital numbers: DN = 10000 x reflectance
L1C_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")

#: layer classes an imported network may hold (anything else, Lambda above all, is refused before loading)
ALLOWED_LAYERS = frozenset({
    "Sequential", "Functional", "Model", "InputLayer", "Conv2D", "MaxPooling2D", "AveragePooling2D",
    "BatchNormalization", "Flatten", "Dense", "Dropout", "SpatialDropout2D", "Activation", "ReLU", "LeakyReLU",
    "Softmax", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ZeroPadding2D", "Cropping2D",
})
ALLOWED_ACTIVATIONS = frozenset({"linear", "relu", "sigmoid", "softmax", "tanh", "elu", "selu", "softplus",
                                 "softsign", "swish", "silu", "gelu", "leaky_relu", "relu6", "hard_sigmoid",
                                 "exponential"})

CITATION_AMW = ("Earth Genome, Amazon Mining Watch: earthrise-media/mining-detector "
                "(https://github.com/earthrise-media/mining-detector), models/ folder")


@dataclass(frozen=True)
class ImportSpec:
    """What the ``.h5`` file cannot say. ``zscore`` = (means, stds) per band in DN, else ``input_scale``."""

    bands: tuple[str, ...]
    window: int = 48
    crop: int | None = None  # centre crop fed to the network (None: the whole window)
    stride: int | None = None  # scan positions in px (None: half the window)
    input_scale: float | None = 1.0 / DN_PER_REFLECTANCE
    zscore: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    mine_output: int | None = None  # softmax head: index of the "mine" output (None: 1; sigmoid: 0)
    threshold: float = 0.5
    isolated_threshold: float | None = None
    isolation_k: int = 5
    isolation_km: float = 3.0
    name: str | None = None
    licence: str = ""
    citation: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict)


PRESETS: dict[str, dict] = {
    # 2024+ models (48px_v3.x, v4.x): 13 L1C bands, DN / 10000, no crop, sigmoid; the recommended
    # single-period product: main threshold 0.43, 0.75 for a patch whose 5th-nearest other candidate is
    # more than 3 km away.
    "amw-2024": dict(bands=L1C_BANDS, window=48, crop=None, input_scale=1e-4, zscore=None, threshold=0.43,
                     isolated_threshold=0.75, isolation_k=5, isolation_km=3.0,
                     licence="code MIT; data CC BY 4.0", citation=CITATION_AMW,
                     notes="Sentinel-2 L1C (COPERNICUS/S2_HARMONIZED) 13-band composites, DN / 10000"),
    # 2021 RGB model (44px_v2.6_rgb): R, G, B z-scored with the repository's per-band constants, 44 px centre
    # crop of the 48 px patch, two softmax outputs (No Mine, Mine); its config reports precision/recall
    # at 0.8.
    "amw-2021-rgb": dict(bands=("B4", "B3", "B2"), window=48, crop=44, input_scale=None,
                         zscore=((1091.9574, 1172.4902, 1175.9235), (748.6153, 504.557, 398.5558)),
                         mine_output=1, threshold=0.8, licence="code MIT; data CC BY 4.0", citation=CITATION_AMW,
                         notes="Sentinel-2 L1C R, G, B (B4, B3, B2) DN, per-band z-score, 44 px centre crop"),
}


def spec_from_preset(preset: str | None, /, **overrides) -> ImportSpec:
    """A preset's settings with every non-None override applied (options win over the preset)."""
    base: dict = {}
    if preset:
        if preset not in PRESETS:
            raise ModelError(f"unknown preset '{preset}' (known: {', '.join(sorted(PRESETS))})")
        base = dict(PRESETS[preset])
    if overrides.get("input_scale") is not None and overrides.get("zscore") is None:
        base["zscore"] = None  # an explicit scale replaces a preset's z-score
    base.update({k: v for k, v in overrides.items() if v is not None})
    if "bands" not in base:
        raise ModelError("import-model: --bands is required without a --preset (band names in input order)")
    if base.get("zscore") is not None:
        base["input_scale"] = None
    base["bands"] = tuple(base["bands"])
    return ImportSpec(**base)


# -------------------------------------------------------------------------------------------- safe loading
def read_h5_config(path: str | Path) -> dict:
    """The Keras model configuration stored in an ``.h5`` file, read with h5py (nothing is built)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: file not found")
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as exc:
        raise ModelError(f"{path}: not an HDF5 file ({exc})") from exc
    if raw is None:
        raise ModelError(f"{path}: holds no model configuration (weights-only .h5 files cannot be imported)")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: model configuration is not valid JSON ({exc})") from exc


def check_safe(config: dict, source: str) -> None:
    """Refuse any layer outside :data:`ALLOWED_LAYERS` (nested models included), activations that are not
    plain built-in names, and any entry that names Python code (a module outside Keras, a function)."""

    def layer(node: dict) -> None:
        cls = node.get("class_name")
        cfg = node.get("config") if isinstance(node.get("config"), dict) else {}
        name = cfg.get("name", node.get("name", "?"))
        if cls not in ALLOWED_LAYERS:
            why = " (it would run Python code stored in the file)" if "Lambda" in str(cls) else ""
            raise ModelError(f"{source}: layer '{name}' of class {cls} is not allowed{why}; "
                             f"allowed: {', '.join(sorted(ALLOWED_LAYERS))}")
        act = cfg.get("activation")
        if act is not None and not (isinstance(act, str) and act in ALLOWED_ACTIVATIONS):
            raise ModelError(f"{source}: layer '{name}' has activation {act!r}, which is not a built-in "
                             "Keras activation")
        # nested layers: config["layers"], or (Keras < 2.3 Sequential) the config is the list itself
        subs = node.get("config") if isinstance(node.get("config"), list) else cfg.get("layers", [])
        for sub in subs or []:
            if isinstance(sub, dict):
                layer(sub)

    def code(node) -> None:
        if isinstance(node, dict):
            if "Lambda" in str(node.get("class_name", "")):  # wherever it sits
                raise ModelError(f"{source}: the model configuration holds a {node['class_name']} layer "
                                 "(it would run Python code stored in the file)")
            for key, value in node.items():
                if key in ("function", "output_shape_module", "function_type") and value not in (None, ""):
                    raise ModelError(f"{source}: the model configuration holds code ({key})")
                if key == "module" and value and not str(value).startswith("keras"):
                    raise ModelError(f"{source}: the model configuration names module {str(value)[:60]!r}")
                if key == "registered_name" and value and ">" in str(value):
                    raise ModelError(f"{source}: the model configuration names custom object {value!r}")
                code(value)
        elif isinstance(node, list):
            for item in node:
                code(item)

    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelError(f"{source}: the stored model configuration has no class_name")
    layer(config)
    code(config)


def load_h5(path: str | Path):
    """The Keras network of an ``.h5`` file, after :func:`check_safe` on its stored configuration."""
    path = Path(path)
    check_safe(read_h5_config(path), str(path))
    from minescan.models.networks import _keras

    keras = _keras()
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # keras raises many types for a file it cannot read
        raise ModelError(f"{path}: cannot be loaded as a Keras model ({exc})") from exc


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ the wrapper
def head_of(network, source: str, mine_output: int | None) -> dict:
    """How to read P(mine) from a member's output: ``{"kind": "sigmoid"|"softmax", "units", "mine"}``."""
    shape = network.output_shape
    if len(shape) != 2:
        raise ModelError(f"{source}: output shape {shape} is not (batch, units): not a patch classifier")
    units = int(shape[-1])
    if units == 1:
        if mine_output not in (None, 0):
            raise ModelError(f"{source}: one output unit, so --mine-output must be 0, not {mine_output}")
        return {"kind": "sigmoid", "units": 1, "mine": 0}
    mine = 1 if mine_output is None else int(mine_output)
    if not 0 <= mine < units:
        raise ModelError(f"{source}: --mine-output {mine} is not one of its {units} outputs")
    return {"kind": "softmax", "units": units, "mine": mine}


def _renamed(network, name: str):
    """A copy of ``network`` (same layers, same weights) under ``name``, so members have stable names."""
    from minescan.models.networks import _keras

    keras = _keras()
    cfg = network.get_config()
    cfg["name"] = name
    copy = type(network).from_config(cfg)
    copy.set_weights(network.get_weights())
    return copy if isinstance(copy, keras.Model) else network


def build_wrapper(members: list, spec: ImportSpec, sources: list[str]):
    """The saved network: full patch in, ``(background, mine)`` out (see the module docstring)."""
    from minescan.models.networks import _keras

    keras = _keras()
    L = keras.layers
    n_bands, crop = len(spec.bands), spec.crop or spec.window
    inp = keras.Input((spec.window, spec.window, n_bands), name="patch")
    margin = (spec.window - crop) // 2
    x = L.Cropping2D(((margin, spec.window - crop - margin),) * 2, name="centre_crop")(inp) if margin else inp
    probs, heads = [], []
    for i, (net, src) in enumerate(zip(members, sources, strict=True)):
        want = (crop, crop, n_bands)
        got = tuple(net.input_shape[1:])
        if got != want:
            raise ModelError(f"{src}: the network takes {got} but the import settings give {want} "
                             f"(window {spec.window}, crop {crop}, {n_bands} bands: {', '.join(spec.bands)})")
        head = head_of(net, src, spec.mine_output)
        member = _renamed(net, f"member_{i}")
        y = member(x)
        if head["kind"] == "softmax":
            pick = L.Dense(1, use_bias=False, trainable=False, name=f"mine_output_{i}")
            y = pick(y)
            onehot = np.zeros((head["units"], 1), np.float32)
            onehot[head["mine"], 0] = 1.0
            pick.set_weights([onehot])
        probs.append(y)
        heads.append(head)
    p = L.Average(name="ensemble_mean")(probs) if len(probs) > 1 else probs[0]
    flip = L.Dense(1, trainable=False, name="background")
    q = flip(p)
    flip.set_weights([np.full((1, 1), -1.0, np.float32), np.ones(1, np.float32)])
    out = L.Concatenate(name="background_mine")([q, p])
    return keras.Model(inp, out, name=spec.name or "imported_patch_classifier"), heads


def card_normalisation(spec: ImportSpec) -> dict:
    """The card's reflectance normalisation equal to the network's DN input scaling (see module docstring)."""
    n = len(spec.bands)
    if spec.zscore is not None:
        means, stds = spec.zscore
        if len(means) != n or len(stds) != n:
            raise ModelError(f"z-score constants: {len(means)} means and {len(stds)} stds for {n} bands "
                             f"({', '.join(spec.bands)})")
        if any(s <= 0 for s in stds):
            raise ModelError("z-score constants: every std must be > 0")
        return {"clip_max": None, "mean": [float(m) / DN_PER_REFLECTANCE for m in means],
                "std": [float(s) / DN_PER_REFLECTANCE for s in stds]}
    if not spec.input_scale or spec.input_scale <= 0:
        raise ModelError("input scaling: give --input-scale > 0 or --zscore-mean/--zscore-std")
    return {"clip_max": None, "mean": [0.0] * n, "std": [1.0 / (DN_PER_REFLECTANCE * spec.input_scale)] * n}


def import_h5(h5_paths: list[str | Path], out_dir: str | Path, spec: ImportSpec) -> dict:
    """Load one ``.h5`` or several (an ensemble, averaged), check them, write the model directory."""
    from minescan.models.store import save_model

    if not h5_paths:
        raise ModelError("import-model: give at least one --h5 file")
    if spec.window < 1 or (spec.crop is not None and not 0 < spec.crop <= spec.window):
        raise ModelError(f"import-model: crop {spec.crop} must be between 1 and the window {spec.window}")
    if spec.crop is not None and (spec.window - spec.crop) % 2:
        raise ModelError(f"import-model: window {spec.window} minus crop {spec.crop} must be even (centre crop)")
    stride = spec.stride or max(1, spec.window // 2)
    if not 0 < stride <= spec.window:
        raise ModelError(f"import-model: stride {stride} must be between 1 and the window {spec.window}")
    for t in (spec.threshold, spec.isolated_threshold):
        if t is not None and not 0 <= t <= 1:
            raise ModelError(f"import-model: threshold {t} is not in [0, 1]")
    if len(set(spec.bands)) != len(spec.bands):
        raise ModelError(f"import-model: band names repeat ({', '.join(spec.bands)})")
    paths = [Path(p) for p in h5_paths]
    members = [load_h5(p) for p in paths]
    network, heads = build_wrapper(members, spec, [str(p) for p in paths])
    norm = card_normalisation(spec)
    crop = spec.crop or spec.window
    card = {
        "kind": "discovery", "name": spec.name or paths[0].stem,
        "architecture": f"imported patch classifier ({len(members)} member{'s' if len(members) > 1 else ''}, "
                        f"{crop} px input of a {spec.window} px patch)",
        "bands": list(spec.bands), "window": spec.window, "stride": stride,
        "classes": ["background", "mine"], "positive_class": "mine", "threshold": float(spec.threshold),
        "normalisation": norm,
        "patch": {"crop": crop, "members": [f"member_{i}" for i in range(len(members))], "heads": heads},
        "import": {
            "files": [{"name": p.name, "sha256": sha256(p)} for p in paths],
            "input": ({"zscore_dn": {"mean": list(spec.zscore[0]), "std": list(spec.zscore[1])}}
                      if spec.zscore is not None else {"scale_dn": spec.input_scale}),
            "dn_per_reflectance": DN_PER_REFLECTANCE,
            "parameters": int(sum(m.count_params() for m in members)),
        },
        "licence": spec.licence, "citation": spec.citation, "notes": spec.notes,
        "metrics": {}, "training_data": {"note": "imported; see citation"},
    }
    if spec.isolated_threshold is not None:
        card["spatial_prior"] = {"isolated_threshold": float(spec.isolated_threshold),
                                 "isolation_k": int(spec.isolation_k), "isolation_km": float(spec.isolation_km)}
    card.update(spec.extra)
    save_model(out_dir, network, card)
    log.info("imported %d network(s) into %s (%d parameters)", len(members), out_dir,
             card["import"]["parameters"])
    return card


def is_patch_model(card: dict) -> bool:
    """True for a card written by :func:`import_h5` (the scan runs it patch by patch)."""
    return isinstance(card.get("patch"), dict)
