"""Scanning a quadrant with an imported patch classifier (:mod:`minescan.models.imported`), exactly.

Positions and cells. A patch model scores one ``window`` px patch; the scan evaluates it every ``stride`` px
(default half a patch). Position ``k`` (per axis) is the cell of global pixels ``[s k, s k + s)``; its patch
is centred on the cell: it starts at pixel ``s k + s // 2 - window // 2``. The cells form a global grid, so a
position belongs to the quadrant whose core holds its centre (:func:`minescan.grid.cells_in_core` with
``stride=s``) and quadrant, tile and zone seams are exact as for the FCN's 27 px cells; candidates, impact
rating, merge, sites, spatial prior and layers then work on these cells unchanged.

Every position's score equals evaluating its patch alone: the patch's tile values are normalised as the
card says (a per-pixel operation, so normalising a strip and cutting patches from it is the same), centre
cropped and put through the network. Two ways, both in strips of position rows (bounded memory, sized from
``max_block_mb``; the next strip is read and normalised in a background thread meanwhile):

``fcn`` (when the network allows it). Every 'valid' convolution and 'valid' pooling of a member network is
applied to the whole strip at once, and ``Flatten -> Dense`` becomes a convolution whose kernel is the
feature map (``Dense`` weights reshaped to ``fh x fw x C x units``; later ``Dense`` layers become 1 x 1
convolutions). Pixel ``(i, j)`` of the last pooled map is the patch that starts ``P (i, j)`` px from the
strip's origin, ``P`` the product of the pooling (and convolution) strides, so when ``P`` divides the
stride, the scan positions are every ``stride / P``-th map pixel: the convolutions before the flattening
are shared by overlapping patches, and the head (the former ``Dense`` layers) runs only at the positions
(its first convolution has stride ``stride / P``). Not allowed: 'same' padding (the patch alone sees
zeros at its border, the strip sees its neighbours), padding/cropping layers, or ``P`` not dividing the
stride; then

``patches``: batched patch evaluation, the saved network on batches of patches cut from the strip.

``auto`` takes ``fcn`` when allowed and says in the log why not otherwise. ``single`` (the reference the
benchmark compares with, as AMW's pipeline evaluates every patch with its full convolutions) puts one patch
at a time through the network.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from minescan.errors import ModelError
from minescan.scan.inference import MIN_VALID_FRACTION, InferenceStats, Normalisation, compiled

log = logging.getLogger(__name__)

PATCH_METHODS = ("auto", "fcn", "patches", "single")
MAX_BATCH = 2048


@dataclass(frozen=True)
class PatchGeometry:
    """Where the patch of position (cell) ``k`` lies: global pixels ``[start(k), start(k) + window)``."""

    window: int
    stride: int

    def __post_init__(self):
        if not 0 < self.stride <= self.window:
            raise ModelError(f"patch stride {self.stride} px must be between 1 and the patch size {self.window} px")

    def start(self, k: int) -> int:
        return self.stride * k + self.stride // 2 - self.window // 2

    @property
    def halo_px(self) -> int:
        """Pixels beyond a core that the patches of its positions reach (centre pixel in the core)."""
        return max(self.window // 2, self.window - self.window // 2 - 1)


# ------------------------------------------------------------------------------- fully convolutional form
def _keras():
    from minescan.models.networks import _keras as k

    return k()


def _member_layers(member) -> list:
    from minescan.scan.inference import _chain_layers

    layers = _chain_layers(member)
    if layers is None:
        raise ModelError(f"member network {member.name} is not a simple chain of layers")
    return layers


def fully_convolutional(member, stride: int) -> tuple[object | None, int, str]:
    """(model, P, '') : ``member`` as a fully convolutional Keras model whose output pixel (i, j) is the
    member's output for the patch at input offset (stride i, stride j); or (None, P, reason) when not
    allowed. P is the product of the pooling/convolution strides; the layers after the flattening run
    only at the scan positions (a convolution of stride ``stride / P``)."""
    keras = _keras()
    L = keras.layers
    layers = _member_layers(member)
    n_in = int(member.input_shape[-1])
    inp = keras.Input((None, None, n_in), name="strip")
    x = inp
    factor = 1
    flat: tuple[int, int, int] | None = None  # feature map (h, w, c) a Flatten has turned into a vector
    collapsed = False
    weights: list[tuple[object, list]] = []
    for la in layers:
        kind = type(la).__name__
        if isinstance(la, L.Dropout | L.SpatialDropout2D | L.GaussianNoise | L.GaussianDropout):
            continue
        if kind == "Conv2D":
            if la.padding != "valid" and tuple(la.kernel_size) != (1, 1):
                return None, factor, f"layer {la.name} has '{la.padding}' padding, which sees zeros at patch borders"
            if tuple(la.dilation_rate) != (1, 1) or la.strides[0] != la.strides[1] or getattr(la, "groups", 1) != 1:
                return None, factor, f"layer {la.name}: dilated, grouped or non-square strides"
            if collapsed:
                return None, factor, f"layer {la.name}: convolution after the patch was flattened"
            new = type(la).from_config({**la.get_config(), "name": f"{la.name}_fcn", "padding": "valid"})
            x = new(x)
            weights.append((new, la.get_weights()))
            factor *= int(la.strides[0])
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            if la.padding != "valid":
                return None, factor, f"layer {la.name} has '{la.padding}' padding"
            if la.strides[0] != la.strides[1] or collapsed:
                return None, factor, f"layer {la.name}: non-square strides or pooling after flattening"
            x = type(la).from_config({**la.get_config(), "name": f"{la.name}_fcn"})(x)
            factor *= int(la.strides[0])
        elif kind in ("Flatten", "GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            if collapsed:
                return None, factor, f"layer {la.name}: a second flattening"
            if stride % factor:
                return None, factor, (f"its pooling/stride factor {factor} px does not divide the scan stride "
                                      f"{stride} px")
            step = stride // factor  # map pixels between scan positions: the head runs only there
            shape = tuple(int(v) for v in la.input.shape[1:])
            if kind == "Flatten":
                flat = shape
            else:
                pool = L.AveragePooling2D if kind == "GlobalAveragePooling2D" else L.MaxPooling2D
                x = pool(shape[:2], strides=step, name=f"{la.name}_fcn")(x)
            collapsed = True
        elif kind == "Dense":
            cfg = la.get_config()
            kernel, *rest = la.get_weights()
            strides = 1
            if flat is not None:  # Dense on a flattened (fh, fw, C) map: a convolution of that size,
                fh, fw, c = flat  # evaluated at the scan positions only (every ``step`` map pixels)
                size, kernel, strides = (fh, fw), kernel.reshape(fh, fw, c, la.units), step
                flat = None
            else:
                size, kernel = (1, 1), kernel.reshape(1, 1, -1, la.units)
            conv = L.Conv2D(la.units, size, strides=strides, padding="valid", activation=cfg["activation"],
                            use_bias=cfg["use_bias"], name=f"{la.name}_fcn")
            x = conv(x)
            weights.append((conv, [kernel, *rest]))
        elif kind == "BatchNormalization":
            if la.axis not in (-1, 3, [3], [-1]):
                return None, factor, f"layer {la.name} normalises axis {la.axis}"
            new = type(la).from_config({**la.get_config(), "name": f"{la.name}_fcn"})
            x = new(x)
            weights.append((new, la.get_weights()))
        elif kind in ("Activation", "ReLU", "LeakyReLU", "Softmax"):
            x = type(la).from_config({**la.get_config(), "name": f"{la.name}_fcn"})(x)
        else:
            return None, factor, f"layer {la.name} ({kind}) has no fully convolutional form here"
    if not collapsed:
        return None, factor, "the network never reduces a patch to one vector"
    model = keras.Model(inp, x, name=f"{member.name}_fcn")
    for layer, w in weights:
        layer.set_weights(w)
    return model, factor, ""


# ----------------------------------------------------------------------------------------------- the model
@dataclass
class PatchNet:
    """A loaded patch model ready to scan: the saved network, its members and (if allowed) their FCN forms."""

    network: object
    window: int
    crop: int
    stride: int
    heads: list[dict]
    members: list
    fcn: list | None = None
    factor: int = 1
    reason: str = ""
    _run: Callable | None = field(default=None, repr=False)
    _fcn_runs: list | None = field(default=None, repr=False)

    @classmethod
    def from_model(cls, model, stride: int | None = None) -> PatchNet:
        card = model.card
        patch = card.get("patch") or {}
        stride = int(stride or card.get("stride") or model.window // 2)
        try:
            members = [model.network.get_layer(name) for name in patch["members"]]
        except (KeyError, ValueError) as exc:
            raise ModelError(f"{model.path}: card 'patch' does not match the network ({exc})") from exc
        net = cls(model.network, model.window, int(patch.get("crop", model.window)), stride,
                  list(patch["heads"]), members)
        PatchGeometry(net.window, stride)
        forms, reasons = [], []
        for m in members:
            f, factor, why = fully_convolutional(m, stride)
            forms.append(f)
            net.factor = factor
            if why:
                reasons.append(f"{m.name}: {why}")
        if reasons:
            net.reason = "; ".join(reasons)
        else:
            net.fcn = forms
        return net

    @property
    def margin(self) -> int:
        return (self.window - self.crop) // 2

    def run(self, patches: np.ndarray) -> np.ndarray:
        """P(mine) of normalised full patches (N, window, window, B): the saved network, as imported."""
        if self._run is None:
            self._run = compiled(self.network)
        return self._run(np.ascontiguousarray(patches, dtype=np.float32))[:, 1]

    def run_fcn(self, z: np.ndarray, ny: int, nx: int) -> np.ndarray:
        """P(mine) (ny, nx) of the positions of a normalised strip ``z`` whose first patch starts at (0, 0)."""
        if self._fcn_runs is None:
            self._fcn_runs = [compiled(m) for m in self.fcn]
        m = self.margin
        x = np.ascontiguousarray(z[None, m:, m:], dtype=np.float32)
        total = None
        for run, head in zip(self._fcn_runs, self.heads, strict=True):
            out = run(x)[0, :ny, :nx]
            if out.shape[:2] != (ny, nx):  # pragma: no cover - geometry invariant
                raise AssertionError(f"FCN form gives {out.shape[:2]} positions for {(ny, nx)}")
            p = out[..., head["mine"]]
            total = p if total is None else total + p
        return total / np.float32(len(self.heads))

    def bytes_per_patch(self) -> float:
        """Working memory of one patch in a batch: input plus the members' activations (float32), x 2."""
        total = self.window * self.window * int(self.network.input_shape[-1])
        for member in self.members:
            for la in _member_layers(member):
                try:
                    total += math.prod(int(v) for v in la.output.shape[1:])
                except (AttributeError, TypeError, ValueError):
                    pass
        return 8.0 * total

    def bytes_per_input_px(self) -> float:
        """Working memory per strip pixel of the FCN form (float32): tile values, input and every map of
        the layers before the flattening at its resolution (an upper bound: maps are freed as the graph
        runs); the head, at the scan positions only, is negligible."""
        total = 3.0 * int(self.network.input_shape[-1])
        for member in self.members:
            f = 1
            for la in _member_layers(member):
                kind = type(la).__name__
                if kind in ("Flatten", "GlobalAveragePooling2D", "GlobalMaxPooling2D"):
                    break
                if kind in ("Conv2D", "MaxPooling2D", "AveragePooling2D"):
                    f *= int(la.strides[0])
                try:
                    total += int(la.output.shape[-1]) / (f * f)
                except (AttributeError, TypeError, ValueError):
                    continue
        return 4.0 * total


# ----------------------------------------------------------------------------------------------- driver
def choose_method(net: PatchNet, method: str) -> str:
    if method not in PATCH_METHODS:
        raise ValueError(f"patch method must be one of {PATCH_METHODS}, not {method!r}")
    if method == "fcn" and net.fcn is None:
        raise ModelError(f"the patch model cannot run fully convolutionally ({net.reason})")
    if method == "auto":
        return "fcn" if net.fcn is not None else "patches"
    return method


def strip_rows(net: PatchNet, method: str, width_px: int, max_block_mb: float) -> int:
    """Position rows per strip so that the strip's working memory stays under ``max_block_mb``."""
    bands = int(net.network.input_shape[-1])
    # the FCN form's maps; for 'patches' the strip (tile values, z) and one batch of patches (sized apart)
    per_px = net.bytes_per_input_px() if method == "fcn" else 10.0 * bands
    rows_px = max_block_mb * 2**20 / (per_px * width_px)  # input rows that fit
    return max(1, int((rows_px - net.window) // net.stride) + 1)


def patch_probabilities(net: PatchNet, read, norm: Normalisation, kx: range, ky: range, *,
                        method: str = "auto", max_block_mb: float = 384, block_rows: int | None = None,
                        stats: InferenceStats | None = None,
                        progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """P(mine) (len(ky), len(kx)) float32 of the positions (cells) ``kx`` x ``ky``; NaN where less than half
    of a cell's ``stride`` x ``stride`` footprint holds data. ``read(c0, r0, c1, r1)`` returns tile values of
    global pixels. Exact whatever the strip size: every position is its patch alone (module docstring)."""
    stats = stats if stats is not None else InferenceStats()
    t0 = time.perf_counter()
    method = choose_method(net, method)
    geo = PatchGeometry(net.window, net.stride)
    s, w = net.stride, net.window
    nx, ny = len(kx), len(ky)
    out = np.full((ny, nx), np.nan, dtype=np.float32)
    if nx == 0 or ny == 0:
        return out
    c0 = geo.start(kx.start)
    c1 = geo.start(kx.stop - 1) + w
    n = block_rows or strip_rows(net, method, c1 - c0, max_block_mb)
    batch = max(1, min(MAX_BATCH, int(max_block_mb * 2**20 // net.bytes_per_patch())))
    clock = {"read_s": 0.0, "compute_s": 0.0}
    starts = list(range(0, ny, n))
    fp0 = s // 2 - w // 2  # a cell's footprint starts -fp0 px into its patch
    def load(a: int):
        """Strip of position rows [a, a + n): normalised input and each cell's valid fraction."""
        b = min(a + n, ny)
        t = time.perf_counter()
        raw = read(c0, geo.start(ky.start + a), c1, geo.start(ky.start + b - 1) + w)
        z, valid = norm.apply(raw)
        fp = valid[-fp0 : -fp0 + s * (b - a), -fp0 : -fp0 + s * nx]
        frac = fp.reshape(b - a, s, nx, s).mean(axis=(1, 3))
        clock["read_s"] += time.perf_counter() - t  # loads never overlap: no lock needed
        return b, z, frac

    # the next strip is read and normalised in a background thread while the network computes this one
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(load, starts[0])
        for i, a in enumerate(starts):
            b, z, frac = ahead.result()
            if i + 1 < len(starts):
                ahead = pool.submit(load, starts[i + 1])
            t = time.perf_counter()
            if method == "fcn":
                p = net.run_fcn(z, b - a, nx)
            else:
                views = np.lib.stride_tricks.sliding_window_view(z, (w, w), axis=(0, 1))[::s, ::s][: b - a, :nx]
                flat = views.reshape(-1, *views.shape[2:])  # (N, B, w, w) views
                p = np.empty(len(flat), dtype=np.float32)
                step = 1 if method == "single" else batch
                for j in range(0, len(flat), step):
                    p[j : j + step] = net.run(np.moveaxis(flat[j : j + step], 1, -1))
                p = p.reshape(b - a, nx)
            clock["compute_s"] += time.perf_counter() - t
            out[a:b] = np.where(frac >= MIN_VALID_FRACTION, p, np.float32(np.nan))
            if progress:
                progress(i + 1, len(starts))
    stats.method, stats.chunk_cells, stats.strips = method, n, len(starts)
    stats.span_px = (c1 - c0, geo.start(ky.stop - 1) + w - geo.start(ky.start))
    stats.flops = patch_flops(net, method, nx, ny)
    stats.read_s, stats.compute_s = clock["read_s"], clock["compute_s"]
    stats.wall_s = time.perf_counter() - t0
    stats.fallback = net.reason or ""
    log.info("patch model (%s, stride %d px, %d-row strips x %d): %d x %d positions in %.2f s "
             "(%.1f GFLOP; read+normalise %.2f s, network %.2f s)%s", method, s, n, len(starts), nx, ny,
             stats.wall_s, stats.flops / 1e9, stats.read_s, stats.compute_s,
             f"; not fully convolutional: {net.reason}, so batched patch evaluation"
             if net.reason and method == "patches" else "")
    return out


def patch_flops(net: PatchNet, method: str, nx: int, ny: int) -> float:
    """Analytical FLOPs (2 x multiply-adds) of scanning nx x ny positions: per patch for 'patches'/'single',
    on the shared maps of the strip-sized input for 'fcn' (strip overlap not counted)."""
    from minescan.scan.inference import fcn_flops

    if method == "fcn":
        h = (ny - 1) * net.stride + net.crop
        w = (nx - 1) * net.stride + net.crop
        return float(sum(fcn_flops(f, h, w) for f in net.fcn))
    return float(nx * ny * sum(fcn_flops(m, net.crop, net.crop) for m in net.members))


def check_patch_halo(grid, geo: PatchGeometry, what: str) -> None:
    from minescan.grid import check_halo

    check_halo(grid, geo.halo_px, what)


_NETS: dict = {}


def patch_net(model, stride: int | None = None) -> PatchNet:
    """:meth:`PatchNet.from_model`, kept for the model last used (building the FCN forms costs ~1 s)."""
    key = (id(model.network), stride)
    entry = _NETS.get(key)
    if entry is None or entry[0] is not model.network:
        _NETS.clear()
        entry = (model.network, PatchNet.from_model(model, stride))
        _NETS[key] = entry
    return entry[1]


def quadrant_patch_probabilities(raster, tile, quadrant: str, model, scale: float, *, stride: int | None = None,
                                 method: str = "auto", max_block_mb: float = 384, block_rows: int | None = None,
                                 stats: InferenceStats | None = None, core_px=None):
    """(prob, kx, ky, cell_px) of the positions whose centre lies in one quadrant core (or ``core_px``)."""
    from minescan.grid import cells_in_core
    from minescan.scan.inference import log_progress

    net = patch_net(model, stride)
    geo = PatchGeometry(net.window, net.stride)
    check_patch_halo(tile.grid, geo, f"the {net.window} px patch model {model.path}")
    bands = model.band_indices(raster.band_names, str(raster.path))
    norm = Normalisation.from_card(model.card["normalisation"], scale, raster.nodata)
    kx, ky = cells_in_core(core_px or tile.quadrant_core_px(quadrant), net.stride)
    prob = patch_probabilities(net, lambda c0, r0, c1, r1: raster.read_px(c0, r0, c1, r1, bands), norm, kx, ky,
                               method=method, max_block_mb=max_block_mb, block_rows=block_rows, stats=stats,
                               progress=log_progress(f"{tile.name} {quadrant}"))
    return prob, kx, ky, net.stride
