"""Applying the discovery FCN to a rectangle of output cells: exact, with bounded memory.

The probability of every cell is computed from an input span that starts one cell early and ends
``valid_kernel`` cells late (see :class:`minescan.models.networks.FcnGeometry`). :func:`predict_cells` computes
the network on that span *exactly as one whole-array forward pass would* (identical up to float
round-off), in one of two ways:

``stream`` (the default whenever the network has the shape of the published FCN: ``[Conv 'same' ->
Pool]`` stages followed by 'valid'/pointwise layers). The span is streamed through the network in
full-width strips of rows, stage by stage, and nothing is computed twice:

    input rows --(conv1 + pool1)--> level-1 rows --(conv2 + pool2)--> level-2 rows --> ... --> cells

Each stage is a small Keras model built from the loaded network's own weights (a 'valid' copy of the
convolution and the pool), or, for a network loaded for ONNX Runtime (:mod:`minescan.models.onnx_net`,
``detect.runtime``), an ONNX Runtime session computing the same. Level ``i`` row ``r`` needs level
``i-1`` rows ``[p r - h, p r + p + h)`` (pool ``p``, conv half-width ``h``: 3 and 1 here), i.e. a 1-row margin, and 'same' padding is applied only at
the true edges of the span, so the strip-wise result equals the whole-array result. Every level keeps the
rows its consumer may ask for again (the margin), so no convolution is recomputed; the tail (7 x 7 valid
conv, dropout, 1 x 1 softmax) streams the same way. Input strips are read from the tile (uint16) one strip
ahead in a background thread, while the network computes the current one. Normalisation is folded into
the first convolution: the strip is only centred (``DN - mean/scale``, one pass that also converts
uint16 to float32, nodata set to 0) and the first kernel is scaled by ``scale/std`` per band. Cells are
handed to an ``on_rows`` callback as soon as they are final, with the tile values around them still in
memory (the impact CNN rates candidates from them: the tile is read once).

Memory is bounded by the strip height, chosen from ``max_block_mb`` (or fixed by ``block_cells`` =
output-cell rows per strip) and the span width, not by the span height: roughly
``27 * rows * width * (24 * bands + 8 * conv1_width)`` bytes (~70 MB per cell row for a quadrant),
independent of how much area is scanned.

For a network loaded for OpenVINO (``detect.runtime: openvino``) the stream runs the *whole* FCN on each
full-width strip instead (:class:`WholeNet`): each strip's exact input rows (its cells' span, overlapping
the previous strip's by ``(1 + valid_kernel) * 27`` rows) go through one call. The overlap is computed
twice (~16 % at the 40-cell strips it uses), but OpenVINO keeps its bfloat16, blocked layouts within the
call, where per-stage calls convert and reorder at every boundary (measured: whole strips 1.1-1.4 s per
quadrant in bfloat16, per-stage calls 1.8-1.9 s). The tile is still read once (the overlap is kept in
memory), cells are final strip by strip, and ``on_rows`` works the same.

``blocks`` (fallback for other architectures, and a reference). Square blocks of ``n`` x ``n`` cells, each
computed from its own input span: exact too, but every block recomputes a margin of ``1 + valid_kernel``
cells, so compute is ``(n + 8)^2 / n^2`` times the necessary (1.36x at n = 48). Blocks of equal shape are
batched (up to the memory budget) so an accelerator is kept busy.

Nothing here is CPU-specific: the stage models are ordinary Keras models, placed on a GPU by TensorFlow
when one is visible. On a GPU the detect command sizes strips from the free GPU memory
(:func:`minescan.scan.device.block_budget_mb`), so a quadrant streams in one or a few tall strips.
``precision`` ('float32', or 'bfloat16'/'float16' mixed precision: float32 weights, reduced-precision
compute, float32 outputs) applies to the stream; its bound is ``minescan.scan.device.PRECISION_TOLERANCE``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from minescan.models.networks import STRIDE, FcnGeometry

log = logging.getLogger(__name__)

# read(col0, row0, col1, row1) -> tile values (H, W, B) of the model's bands (uint16), global pixels
RawReader = Callable[[int, int, int, int], np.ndarray]

MIN_VALID_FRACTION = 0.5  # a cell with less valid (non-nodata) footprint is reported as no data
DEFAULT_MAX_BLOCK_MB = 384  # working memory of one strip (see predict_cells); a detect job adds ~0.7 GB
METHODS = ("auto", "stream", "blocks")
PRECISIONS = ("float32", "bfloat16", "float16")


# ------------------------------------------------------------------------------------------- normalisation
@dataclass(frozen=True)
class Normalisation:
    """Tile value (DN) -> network input, as in :func:`minescan.models.store.normalise`:
    ``z = (min(DN * scale, clip_max) - mean) / std``, and 0 where any band equals ``nodata``."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    clip_max: float | None = None
    nodata: float = 0

    @classmethod
    def from_card(cls, norm: dict, scale: float, nodata: float = 0) -> Normalisation:
        return cls(float(scale), tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"]),
                   None if norm.get("clip_max") is None else float(norm["clip_max"]), nodata)

    @property
    def card(self) -> dict:
        return {"clip_max": self.clip_max, "mean": list(self.mean), "std": list(self.std)}

    def valid(self, raw: np.ndarray) -> np.ndarray:
        return np.all(raw != self.nodata, axis=-1)

    def apply(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z float32, valid) exactly as the model card defines it (the plain, unfolded path)."""
        from minescan.models.store import normalise

        valid = self.valid(raw)
        refl = raw.astype(np.float32)
        refl *= np.float32(self.scale)
        return normalise(refl, self.card, valid), valid

    @property
    def gain(self) -> np.ndarray:
        """Per-band factor folded into the first convolution: z = gain * (DN - offset)."""
        return (np.float32(self.scale) / np.asarray(self.std, dtype=np.float32)).astype(np.float32)

    @property
    def offset(self) -> np.ndarray:
        """Per-band mean in tile units (DN)."""
        return (np.asarray(self.mean, dtype=np.float64) / self.scale).astype(np.float32)

    def centre(self, raw: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``z / gain`` as float32: ``min(DN, clip_max / scale) - offset``, 0 at nodata pixels (into ``out``
        when given).

        Returns (x, valid); valid is None when every pixel is valid (the usual case, checked cheaply)."""
        x = np.empty(raw.shape, dtype=np.float32) if out is None else out
        src, dst = _pixel_rows(raw), _pixel_rows(x)
        if src is not None and dst is not None:  # long rows: 3 x faster than 12-band ones (measured)
            offset = _tiled(self.offset, raw.shape[1])
        else:
            src, dst, offset = raw, x, self.offset
        if self.clip_max is None:
            dst[...] = src  # uint16 -> float32, exact
        else:
            np.minimum(src, np.float32(self.clip_max / self.scale), out=dst, dtype=np.float32)
        dst -= offset
        valid = self.valid_or_none(raw)
        if valid is not None:
            x *= valid[..., None]
        return x, valid

    def valid_or_none(self, raw: np.ndarray) -> np.ndarray | None:
        """:meth:`valid`, or None when every pixel is valid (the usual case, checked cheaply)."""
        if raw.size == 0 or not self._may_hold_nodata(raw):
            return None
        valid = self.valid(raw)
        return None if valid.all() else valid

    def _may_hold_nodata(self, raw: np.ndarray) -> bool:
        if np.issubdtype(raw.dtype, np.integer):
            info = np.iinfo(raw.dtype)
            if self.nodata == info.min:
                return bool(raw.min() == self.nodata)  # one fast SIMD pass
            if self.nodata == info.max:
                return bool(raw.max() == self.nodata)
        return True


def _pixel_rows(a: np.ndarray) -> np.ndarray | None:
    """An (H, W, B) array whose rows are contiguous (a C-contiguous array, or rows of a wider buffer) as an
    (H, W * B) view, else None. NumPy's loops run over the last axis: over rows of W * B values instead of
    the B bands of each pixel they convert and subtract 3 x faster (4.5 vs 13.8 ms per 135-row piece of a
    quadrant, benchmarks/bench_floor.py's tile)."""
    if a.ndim != 3 or a.shape[0] == 0 or a.strides[2] != a.itemsize or a.strides[1] != a.shape[2] * a.itemsize:
        return None
    return np.lib.stride_tricks.as_strided(a, (a.shape[0], a.shape[1] * a.shape[2]), (a.strides[0], a.itemsize))


@functools.lru_cache(maxsize=8)
def _tiled_cached(values: bytes, width: int) -> np.ndarray:
    row = np.tile(np.frombuffer(values, np.float32), width)
    row.flags.writeable = False
    return row


def _tiled(per_band: np.ndarray, width: int) -> np.ndarray:
    """``per_band`` repeated for ``width`` pixels: one row of an (H, W * B) view."""
    return _tiled_cached(np.ascontiguousarray(per_band, np.float32).tobytes(), width)


# ------------------------------------------------------------------------------- the network as a stream
# Optional packages Keras/TensorFlow import at start-up only for features inference never uses (Keras'
# scikit-learn wrappers and plotting helpers, TensorFlow's Google-Cloud TPU/GCE cluster resolvers). Each
# import is guarded there ("try: import x / except ImportError"); skipping them saves ~1.5 CPU-s and 60 MB
# per job.
LEAN_SKIPPED = ("sklearn", "matplotlib", "googleapiclient")


def import_keras_lean() -> None:
    """Import Keras with the packages in ``LEAN_SKIPPED`` hidden; they are importable again afterwards
    (only the Keras/TensorFlow features that need them are off in this process). Call it first thing in a
    detect/classify process, before anything imports Keras; later calls do nothing."""
    import sys

    if "keras" in sys.modules:
        return
    with hidden_modules(LEAN_SKIPPED):
        _keras()


class hidden_modules:  # noqa: N801 - used like a function: ``with hidden_modules(("x",)): import y``
    """Within the block, importing any of ``names`` (not yet imported) raises ImportError, which the
    optional imports of the packages imported meanwhile tolerate; afterwards they are importable again."""

    def __init__(self, names):
        self.names = names

    def __enter__(self):
        import sys

        self.hidden = [m for m in self.names if m not in sys.modules]
        for m in self.hidden:
            sys.modules[m] = None  # 'import m' now raises ImportError
        return self

    def __exit__(self, *exc):
        import sys

        for m in self.hidden:
            if m in sys.modules and sys.modules[m] is None:
                del sys.modules[m]
        return False


def _keras():
    from minescan.models.networks import _keras as k

    return k()


def _chain_layers(network) -> list | None:
    """The network's layers (input excluded) if they form a simple chain input -> ... -> output."""
    from minescan.models.onnx_net import config_is_chain

    keras = _keras()
    layers = [la for la in network.layers if not isinstance(la, keras.layers.InputLayer)]
    if isinstance(network, keras.Sequential):
        return layers
    try:
        conf = network.get_config()
    except Exception:  # a subclassed model: we cannot see its topology
        return None
    names = [c["name"] for c in conf.get("layers", []) if c.get("class_name") != "InputLayer"]
    if names != [la.name for la in layers] or len(network.inputs) != 1 or len(network.outputs) != 1:
        return None
    return layers if config_is_chain(conf) else None


def as_pair(v) -> tuple[int, ...]:
    """A Keras size setting (``3`` or ``[3, 3]``) as a tuple of ints."""
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(a) for a in v)


def is_same_conv_config(kind: str, cfg: dict) -> bool:
    """A Conv2D (Keras class name and config) the stream can split into row strips: 'same', stride 1, odd
    kernel, channels last."""
    return (kind == "Conv2D" and cfg.get("padding") == "same" and as_pair(cfg.get("strides", 1)) == (1, 1)
            and as_pair(cfg.get("dilation_rate", 1)) == (1, 1) and cfg.get("data_format", "channels_last") == "channels_last"
            and all(k % 2 == 1 for k in as_pair(cfg["kernel_size"])) and cfg.get("groups", 1) == 1)


def is_pool_config(kind: str, cfg: dict) -> bool:
    """A square, non-overlapping 'valid' pool."""
    pool = as_pair(cfg.get("pool_size", 2))
    return (kind in ("MaxPooling2D", "AveragePooling2D") and cfg.get("padding", "valid") == "valid"
            and as_pair(cfg.get("strides") or pool) == pool and pool[0] == pool[1]
            and cfg.get("data_format", "channels_last") == "channels_last")


TAIL_POINTWISE = ("Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "ReLU", "LeakyReLU",
                  "BatchNormalization", "Activation", "Softmax")


def tail_reach_config(kind: str, cfg: dict) -> int | None:
    """Rows a tail layer removes (kernel - 1 for a 'valid' conv, 0 for pointwise layers); None: unsupported."""
    if kind == "Conv2D":
        kernel = as_pair(cfg["kernel_size"])
        ok = ((cfg.get("padding") == "valid" or kernel == (1, 1)) and as_pair(cfg.get("strides", 1)) == (1, 1)
              and as_pair(cfg.get("dilation_rate", 1)) == (1, 1)
              and cfg.get("data_format", "channels_last") == "channels_last")
        return kernel[0] - 1 if ok else None
    return 0 if kind in TAIL_POINTWISE else None


def layer_configs(network) -> list[tuple[str, dict]]:
    """(class name, config) of each layer but the input, of a Keras network or an ONNX Runtime one."""
    chain = getattr(network, "chain", None)
    if chain is not None:  # minescan.models.onnx_net.OrtNetwork
        return [(la.kind, la.config) for la in chain.layers]
    return [(type(la).__name__, la.get_config()) for la in network.layers if type(la).__name__ != "InputLayer"]


def _is_same_conv(la) -> bool:
    return is_same_conv_config(type(la).__name__, la.get_config())


def _is_pool(la) -> bool:
    return is_pool_config(type(la).__name__, la.get_config())


def _tail_reach(la) -> int | None:
    return tail_reach_config(type(la).__name__, la.get_config())


def compiled(model) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` as a function of one batch, traced once for any height and width.

    With the TensorFlow backend this is a ``tf.function`` with a shape-free signature (graph mode: fused
    conv + bias + ReLU, no per-shape retracing, less per-call overhead than ``predict_on_batch``); with
    other backends it is ``predict_on_batch``."""
    keras = _keras()
    if keras.backend.backend() != "tensorflow":
        return lambda x: np.asarray(model.predict_on_batch(x))
    import tensorflow as tf

    spec = tf.TensorSpec((None, None, None, int(model.input_shape[-1])), tf.float32)
    # float32 out whatever the compute precision (identity for float32 models)
    fn = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32), input_signature=[spec],
                     jit_compile=False)
    return lambda x: fn(tf.convert_to_tensor(x)).numpy()


@dataclass
class StreamStage:
    run: Callable[[np.ndarray], np.ndarray] = field(repr=False)  # (1, rows, width, C) -> pooled rows
    half: int  # conv rows beyond the pooled footprint on each side (kernel // 2)
    pool: int  # pool factor along rows
    channels: int  # output channels


@dataclass
class StreamNet:
    """A network cut into row-streamable stages; see the module docstring. Each stage runs 'conv padded
    along columns only -> pool' (a Keras model, or an ONNX Runtime session for an OrtNetwork)."""

    stages: list[StreamStage]
    run_tail: Callable[[np.ndarray], np.ndarray] = field(repr=False)  # last pooled level -> output
    reach: int  # rows the tail's 'valid' layers remove
    in_channels: int
    conv1_channels: int

    @classmethod
    def build(cls, network, gain: np.ndarray | None = None, precision: str = "float32") -> StreamNet | WholeNet | None:
        """Stage models for ``network`` (weights copied, first kernel scaled by ``gain``); None if the
        network is not ``[Conv 'same' -> Pool]+`` followed by 'valid'/pointwise layers. ``precision``
        other than float32: every layer but the last computes in it (Keras mixed precision). An OpenVINO
        network becomes a :class:`WholeNet`."""
        if getattr(network, "runtime", None) == "openvino":
            from minescan.models.onnx_net import Unsupported

            try:
                return WholeNet.build(network, gain, precision)
            except Unsupported as exc:  # e.g. a first layer the normalisation cannot fold into: blocks
                log.info("network %s: no whole strips on OpenVINO (%s)", network.name, exc)
                return None
        if getattr(network, "runtime", None) == "onnxruntime":
            return cls._build_ort(network, gain, precision)
        keras = _keras()
        mixed = None if precision == "float32" else f"mixed_{precision}"
        L = keras.layers
        layers = _chain_layers(network)
        if not layers:
            return None
        stages: list[StreamStage] = []
        i = 0
        channels = int(network.input_shape[-1])
        in_channels = channels
        while i + 1 < len(layers) and _is_same_conv(layers[i]) and _is_pool(layers[i + 1]):
            conv, pool = layers[i], layers[i + 1]
            kh, kw = conv.kernel_size
            cfg = conv.get_config()
            cfg.update(padding="valid", name=f"{conv.name}_rows")
            if mixed:
                cfg["dtype"] = mixed
            inp = keras.Input((None, None, channels), name=f"{conv.name}_in")
            x = L.ZeroPadding2D(((0, 0), (kw // 2, kw // 2)))(inp) if kw > 1 else inp
            rows_conv = type(conv).from_config(cfg)
            x = rows_conv(x)
            weights = conv.get_weights()
            if not stages and gain is not None:
                weights[0] = (weights[0] * np.asarray(gain, np.float32)[None, None, :, None]).astype(weights[0].dtype)
            rows_conv.set_weights(weights)
            pcfg = pool.get_config()
            pcfg["name"] = f"{pool.name}_rows"
            if mixed:
                pcfg["dtype"] = mixed
            x = type(pool).from_config(pcfg)(x)
            stages.append(StreamStage(compiled(keras.Model(inp, x, name=f"stage{len(stages) + 1}")), kh // 2,
                                      pool.pool_size[0], conv.filters))
            channels = conv.filters
            i += 2
        if not stages:
            return None
        reach = 0
        for la in layers[i:]:
            r = _tail_reach(la)
            if r is None:
                return None
            reach += r
        inp = keras.Input((None, None, channels), name="tail_in")
        x = inp
        for j, la in enumerate(layers[i:], start=i):
            if mixed:  # a copy computing in reduced precision; the output layer stays float32
                copy = type(la).from_config({**la.get_config(), "name": f"{la.name}_{precision}",
                                             "dtype": mixed if j < len(layers) - 1 else "float32"})
                x = copy(x)
                copy.set_weights(la.get_weights())
            else:
                x = la(x)
        return cls(stages, compiled(keras.Model(inp, x, name="tail")), reach, in_channels, stages[0].channels)

    @classmethod
    def _build_ort(cls, network, gain, precision: str) -> StreamNet | None:
        from minescan.models.onnx_net import ort_stream_parts

        if precision != "float32":
            raise ValueError(f"precision {precision} needs the TensorFlow runtime (detect.runtime: tensorflow)")
        parts = ort_stream_parts(network, gain, network.threads)
        if parts is None:
            return None
        stages, tail, reach, _ = parts
        return cls([StreamStage(*s) for s in stages], tail, reach, network.in_channels, stages[0][3])

    def bytes_per_input_row(self, width: int) -> float:
        """Working memory per input row of a strip (calibrated on the published FCN, TF CPU, with the tile
        values kept for in-stream impact rating)."""
        return width * (24.0 * self.in_channels + 8.0 * self.conv1_channels)

    @property
    def factor(self) -> int:
        return math.prod(s.pool for s in self.stages)


@dataclass
class WholeNet:
    """The whole FCN as one call per full-width strip (OpenVINO; see the module docstring): ``run`` takes
    (1, rows, width, C) centred rows (the normalisation gain is folded into its first convolution) and
    returns the network's output."""

    run: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    in_channels: int
    conv1_channels: int
    precision: str
    # strips shorter than this recompute more overlap than they save memory (measured, bfloat16:
    # 10 cells 1.50 s per quadrant, 20 cells 1.26-1.39 s, 40 cells 1.08-1.36 s, 80 cells 1.11 s)
    min_cells: int = 40

    @classmethod
    def build(cls, network, gain: np.ndarray | None, precision: str) -> WholeNet:
        from minescan.models.onnx_net import ov_whole_net

        run, conv1 = ov_whole_net(network, gain, precision, network.threads)
        return cls(run, network.in_channels, conv1, precision)

    def bytes_per_input_row(self, width: int) -> float:
        """Working memory per input row (measured with OpenVINO on the published FCN: ~135 B per px in
        bfloat16, at 0.6-1.0 GB peak RSS for 20-40-cell strips of a quadrant): the centred input and the
        first convolution's output, at most in float32."""
        return width * (8.0 * self.in_channels + 4.0 * self.conv1_channels)

    factor = 1
    _buffers: list = field(default_factory=list, repr=False, compare=False)

    def buffers(self, count: int, shape: tuple[int, ...]) -> list[np.ndarray]:
        """``count`` float32 input buffers of ``shape``, kept for the next quadrant of the process (one
        shape at a time): new buffers cost page faults, ~0.3 s of system time per quadrant."""
        if len(self._buffers) != count or self._buffers[0].shape != shape:
            self._buffers[:] = []  # the old ones go before the new ones are allocated
            self._buffers[:] = [np.empty(shape, np.float32) for _ in range(count)]
        return list(self._buffers)


_STREAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def stream_net(network, gain: np.ndarray | None = None, precision: str | None = None) -> StreamNet | WholeNet | None:
    """:meth:`StreamNet.build`, cached per network, gain, precision and weights (building and tracing costs
    ~1 s). ``precision`` None: the one set by :func:`compute_precision` (float32 unless set)."""
    import hashlib

    precision = precision or _PRECISION[0]
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    h = hashlib.sha1(precision.encode() + (b"" if gain is None else np.asarray(gain, np.float32).tobytes()))
    for w in network.get_weights():  # the stages hold copies: changed weights need new stages
        h.update(np.ascontiguousarray(w).tobytes())
    key = h.hexdigest()
    per_net = _STREAMS.setdefault(network, {})
    if key not in per_net:
        if len(per_net) >= 4:  # e.g. weights changing under training: keep the cache small
            per_net.clear()
        per_net[key] = StreamNet.build(network, gain, precision)
    return per_net[key]


_PRECISION = ["float32"]


class compute_precision:  # noqa: N801 - used like a function: ``with compute_precision("bfloat16"):``
    """Within the block, streamed inference computes in ``precision`` (detect.precision); the detect
    command sets it around a job so the scan code needs no extra argument."""

    def __init__(self, precision: str):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.precision = precision

    def __enter__(self):
        self._before = _PRECISION[0]
        _PRECISION[0] = self.precision
        return self

    def __exit__(self, *exc):
        _PRECISION[0] = self._before
        return False


class _Level:
    """Rows of one level of the network, produced on demand in non-decreasing order.

    ``rows(a, b)`` returns rows [a, b) with zero rows beyond [0, height) (the 'same' padding). The rows of
    the last request are kept, so the overlap of the next request (the margin) is not computed again."""

    def __init__(self, height: int, width: int, channels: int):
        self.height, self.width, self.channels = height, width, channels
        self._start = 0
        self._held: np.ndarray | None = None

    def _zeros(self, n: int) -> np.ndarray:
        return np.zeros((n, self.width, self.channels), dtype=np.float32)

    def _compute(self, a: int, b: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _real(self, lo: int, hi: int) -> np.ndarray:
        held_end = self._start + (0 if self._held is None else len(self._held))
        if self._held is not None and lo < self._start:
            raise AssertionError(f"rows requested out of order ({lo} < {self._start})")
        keep = self._held[lo - self._start : hi - self._start] if self._held is not None and lo < held_end else None
        new_from = lo if keep is None else held_end
        parts = [p for p in (keep, self._compute(new_from, hi) if hi > new_from else None) if p is not None]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self._held, self._start = out, lo
        return out

    def rows(self, a: int, b: int) -> np.ndarray:
        lo, hi = min(max(a, 0), self.height), max(min(b, self.height), 0)
        real = self._real(lo, hi) if hi > lo else None
        top, bottom = max(0, min(b, 0) - a), max(0, b - max(a, self.height))
        if not top and not bottom and real is not None:
            return real
        parts = [self._zeros(top)] if top else []
        parts += [real] if real is not None else []
        parts += [self._zeros(bottom)] if bottom else []
        return np.concatenate(parts)


class _Stage(_Level):
    """Level i from level i-1, at most ``step`` rows per call (the first request of the tail asks for its
    reach on top of one strip; computing it in steps keeps every strip within the budget)."""

    def __init__(self, stage: StreamStage, up: _Level, width: int, step: int, clock: dict):
        super().__init__(up.height // stage.pool, width, stage.channels)
        self.stage, self.up, self.step, self.clock = stage, up, step, clock

    def _compute(self, a, b):
        s = self.stage
        out = []
        for c in range(a, b, self.step):
            d = min(c + self.step, b)
            x = self.up.rows(s.pool * c - s.half, s.pool * d + s.half)
            t = time.perf_counter()
            out.append(s.run(x[None])[0])
            self.clock["compute_s"] += time.perf_counter() - t
        return out[0] if len(out) == 1 else np.concatenate(out)


class _Tail(_Level):
    def __init__(self, net: StreamNet, up: _Level, width: int, channels: int, clock: dict):
        super().__init__(up.height - net.reach, width, channels)
        self.net, self.up, self.clock = net, up, clock

    def _compute(self, a, b):
        x = self.up.rows(a, b + self.net.reach)
        t = time.perf_counter()
        y = self.net.run_tail(x[None])[0]
        self.clock["compute_s"] += time.perf_counter() - t
        return y


ALL = slice(None)


class _KeptRaw:
    """Tile values (uint16) of span rows read, kept for the impact rating of the cells streamed: pieces of
    rows are added as they are read and dropped once they end before the first row still needed."""

    def __init__(self):
        self._parts: list[tuple[int, np.ndarray]] = []  # (first span row, rows)

    def keep(self, keep_from: int, new: list[tuple[int, np.ndarray]]) -> None:
        """Drop the pieces ending at or before span row ``keep_from``; add the ``new`` (first row, rows)."""
        self._parts = [(s, r) for s, r in self._parts if s + len(r) > keep_from] + new

    def rows(self, a: int, b: int, cols: slice = ALL) -> np.ndarray:
        """Tile values of span rows [a, b) and columns ``cols`` (must have been read and not dropped): a view
        when they lie in one piece, else a copy of just these columns."""
        parts = [r[max(a - s, 0) : b - s, cols] for s, r in self._parts if s < b and s + len(r) > a]
        got = sum(len(p) for p in parts)
        if not parts or got != b - a or self._parts[0][0] > a:
            raise AssertionError(f"span rows {a}:{b} are no longer (or not yet) in memory")
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class _Source(_Level):
    """Level 0: the span's rows read from the tile and centred, the next strip read ahead in a thread.

    With ``keep_raw`` the tile values (uint16) of the rows handed out stay available through ``raw_rows``
    from row ``keep_from`` on (the driver advances it), so cells can be looked at again without re-reading."""

    def __init__(self, read: Callable[[int, int], np.ndarray], norm: Normalisation, height: int, width: int,
                 channels: int, counter: Callable, clock: dict, prefetch: bool = True, keep_raw: bool = False):
        super().__init__(height, width, channels)
        self.read, self.norm, self.counter, self.clock = read, norm, counter, clock
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="minescan-read") if prefetch else None
        self._future = None  # (first row, future) of the read-ahead
        self._pieces: list[np.ndarray] = []  # rows read but not yet handed out, from self._ready_from on
        self._ready_from: int | None = None
        self.keep_raw, self.keep_from = keep_raw, 0
        self._raw = _KeptRaw()  # tile values of the rows read, from keep_from on
        self.served = 0  # span rows handed to the first stage so far

    def close(self) -> None:
        if self._pool is not None:
            if self._future is not None:
                self._future[1].cancel()
            self._pool.shutdown(wait=True)

    def _load(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray | None]:
        # loads never overlap (one read-ahead at a time), so counting here needs no lock
        t = time.perf_counter()
        raw = self.read(a, b)
        x, valid = self.norm.centre(raw)
        self.counter(a, b, valid)
        self.clock["read_s"] += time.perf_counter() - t
        return x, (raw if self.keep_raw else None)

    def _compute(self, a, b):
        if self._ready_from is None:
            self._ready_from = a
        if a != self._ready_from:
            raise AssertionError(f"source rows requested out of order ({a} != {self._ready_from})")
        got = sum(len(p) for p in self._pieces)
        while a + got < b:
            start = a + got
            if self._future is not None and self._future[0] == start:
                x, raw = self._future[1].result()
                self._future = None
            else:  # nothing read ahead yet (first strip)
                x, raw = self._load(start, b)
            self._pieces.append(x)
            if raw is not None:
                self._raw.keep(self.keep_from, [(start, raw)])
            got += len(x)
        loaded = a + got
        if self._pool is not None and self._future is None and loaded < self.height:
            # read ahead as many rows as this request took: strips are equal but for the last one
            nxt = min(self.height, loaded + max(b - a, 1))
            self._future = (loaded, self._pool.submit(self._load, loaded, nxt))
        rows = self._pieces[0] if len(self._pieces) == 1 else np.concatenate(self._pieces)
        rest = rows[b - a :]
        self._pieces = [rest] if len(rest) else []
        self._ready_from = b
        self.served = b
        return rows[: b - a]

    def raw_rows(self, a: int, b: int, cols: slice = ALL) -> np.ndarray:
        """Tile values of span rows [a, b) and columns ``cols`` (must have been read and not dropped)."""
        return self._raw.rows(a, b, cols)


@dataclass
class CellRows:
    """Cell rows just computed by the stream, with the tile values around them still in memory.

    ``prob`` holds the final probabilities (NaN = no data) of cell rows ``ky[first : first + len(prob)]`` and
    all of ``kx``; ``raw(row0, row1[, cols])`` returns tile values (uint16, the network's bands) of global
    pixel rows [row0, row1) and columns [col0, col0 + width) (or the slice ``cols`` of them): any rows within
    ``keep_px`` of these cells' centres. ``width``: the span's columns."""

    first: int
    prob: np.ndarray
    col0: int
    raw: Callable[..., np.ndarray]
    width: int


# ----------------------------------------------------------------------------------------------- driver
@dataclass
class InferenceStats:
    method: str = ""
    chunk_cells: int = 0  # output-cell rows per strip (stream) or cells per block side (blocks)
    strips: int = 0
    span_px: tuple[int, int] = (0, 0)
    flops: float = 0.0
    read_s: float = 0.0  # reading + centring the input (in the read-ahead thread when streaming)
    compute_s: float = 0.0  # network time
    wall_s: float = 0.0
    fallback: str = ""  # why a faster method could not run (e.g. a patch model not fully convolutional)
    build_s: float = 0.0  # building the stage models (0 when cached from an earlier quadrant of the process)
    strip_compute_s: list = field(default_factory=list)  # network time of each strip (stream)
    strip_rows: list = field(default_factory=list)  # input rows each strip consumed (stream)

    @property
    def first_call_s(self) -> float:
        """One-time cost of the first strip (TensorFlow's first call of each stage: tracing, graph and oneDNN
        set-up): its network time minus what its input rows take at the median rate of the later strips
        (0 with fewer than 3 strips)."""
        t, r = self.strip_compute_s, self.strip_rows
        if len(t) < 3 or len(r) != len(t) or not all(r):
            return 0.0
        per_row = float(np.median([a / b for a, b in zip(t[1:], r[1:], strict=True)]))
        return max(0.0, t[0] - per_row * r[0])


def _output_size(h: int, w: int, kernel, strides, padding: str) -> tuple[int, int]:
    """Height and width after a Keras convolution or pooling window with these settings."""
    (kh, kw), (sh, sw) = kernel, strides
    if padding == "same":
        return -(-h // sh), -(-w // sw)
    return (h - kh) // sh + 1, (w - kw) // sw + 1


def fcn_flops(network, height: int, width: int) -> float:
    """Analytical FLOPs (2 x multiply-adds of the convolutions and dense layers) of one forward pass of
    ``network`` (Keras or ONNX Runtime) on a ``height`` x ``width`` input; pools, activations and softmax
    are not counted."""
    h, w = height, width
    c = int(network.input_shape[-1])
    total = 0.0
    for kind, cfg in layer_configs(network):
        if kind == "Conv2D":
            kh, kw = as_pair(cfg["kernel_size"])
            h, w = _output_size(h, w, (kh, kw), as_pair(cfg.get("strides", 1)), cfg.get("padding", "valid"))
            total += 2.0 * kh * kw * c * cfg["filters"] * h * w
            c = int(cfg["filters"])
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            pool = as_pair(cfg.get("pool_size", 2))
            h, w = _output_size(h, w, pool, as_pair(cfg.get("strides") or pool), cfg.get("padding", "valid"))
        elif kind == "Flatten":
            c, h, w = c * h * w, 1, 1
        elif kind == "Dense":
            total += 2.0 * c * cfg["units"] * h * w
            c = int(cfg["units"])
    return total


def stream_chunk_cells(net: StreamNet | WholeNet, width: int, max_block_mb: float) -> int:
    """Output-cell rows per strip such that one strip's working memory stays under ``max_block_mb``
    (a :class:`WholeNet` takes at least its ``min_cells``)."""
    if isinstance(net, WholeNet):
        return max(net.min_cells, int(max_block_mb * 2**20 // (net.bytes_per_input_row(width) * STRIDE)))
    per_cell_row = net.bytes_per_input_row(width) * net.factor
    return max(1, int(max_block_mb * 2**20 // per_cell_row))


def _block_bytes_per_px(bands: int) -> float:
    """Working memory of the block method per input pixel: ~12 B per band (input and its copies) + 160 B
    (the first stages' activations)."""
    return 12.0 * bands + 160.0


def block_side_cells(window_cells: int, max_block_mb: float, bands: int = 12) -> int:
    """Block side (cells) for the block method: (27 (n + 1 + k))^2 px x bytes per px <= budget."""
    px = max_block_mb * 2**20 / _block_bytes_per_px(bands)
    return max(1, int(math.sqrt(px) // STRIDE) - 1 - window_cells)


def predict_cells(network, geometry: FcnGeometry, read: RawReader, norm: Normalisation, kx: range, ky: range,
                  *, max_block_mb: float = DEFAULT_MAX_BLOCK_MB, block_cells: int | None = None,
                  method: str = "auto", progress: Callable[[int, int], None] | None = None,
                  stats: InferenceStats | None = None, prefetch: bool = True,
                  on_rows: Callable[[CellRows], None] | None = None, keep_px: int = 0) -> np.ndarray:
    """Mine probability for cells ``kx`` x ``ky`` as float32 (len(ky), len(kx)); NaN where no data.

    ``read`` returns tile values (uint16) for global pixel windows; ``norm`` turns them into network input.
    ``method``: 'stream' (see module docstring), 'blocks', or 'auto' (stream when the network allows it).
    Strip/block size: ``block_cells`` output cells if given, else the largest that fits ``max_block_mb``.
    ``on_rows`` (stream only; ignored by 'blocks'): called with each :class:`CellRows` as soon as it is
    final, while the tile rows within ``keep_px`` of its cell centres are still in memory (the impact CNN
    rates candidates this way without reading the tile again). ``stats.method`` tells which method ran.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    stats = stats if stats is not None else InferenceStats()
    t0 = time.perf_counter()
    if len(kx) == 0 or len(ky) == 0:
        return np.full((len(ky), len(kx)), np.nan, dtype=np.float32)
    net = None
    if method in ("auto", "stream"):
        t = time.perf_counter()
        net = stream_net(network, norm.gain)
        stats.build_s = time.perf_counter() - t
        if net is None and method == "stream":
            raise ValueError(f"network {network.name} cannot be streamed (not [Conv same -> Pool]+ -> valid layers)")
    if isinstance(net, WholeNet):
        out = _predict_whole(net, geometry, read, norm, kx, ky, max_block_mb, block_cells, progress, stats,
                             prefetch, on_rows, keep_px)
        stats.flops = fcn_flops(network, *stats.span_px[::-1])
    elif net is not None:
        out = _predict_stream(net, network, geometry, read, norm, kx, ky, max_block_mb, block_cells,
                              progress, stats, prefetch, on_rows, keep_px)
    else:
        if _PRECISION[0] != "float32":
            log.warning("precision %s applies to the streamed FCN only: network %s runs in float32 (blocks)",
                        _PRECISION[0], network.name)
        out = _predict_blocks(network, geometry, read, norm, kx, ky, max_block_mb, block_cells, progress, stats)
    stats.wall_s = time.perf_counter() - t0
    rate = stats.flops / stats.wall_s / 1e9 if stats.wall_s else 0.0
    log.info("FCN (%s, %d-cell %s x %d): %d x %d cells from %d x %d px in %.2f s "
             "(%.1f GFLOP, %.1f GFLOP/s; read+normalise %.2f s, network %.2f s)", stats.method,
             stats.chunk_cells, "blocks" if stats.method == "blocks" else "strips", stats.strips, len(kx), len(ky), stats.span_px[0], stats.span_px[1], stats.wall_s,
             stats.flops / 1e9, rate, stats.read_s, stats.compute_s)
    return out


def _valid_counter(geometry: FcnGeometry, nx: int, ny: int):
    """counts[j, i]: valid pixels in the 27 x 27 px footprint of cell (i, j), accumulated strip by strip."""
    counts = np.zeros((ny, nx), dtype=np.int32)
    f0 = STRIDE + geometry.offset  # span pixel where the first cell's footprint starts

    def add(a: int, b: int, valid: np.ndarray | None) -> None:
        ya, yb = max(a, f0), min(b, f0 + STRIDE * ny)
        if yb <= ya:
            return
        # the cell rows these pixel rows fall in (ascending; a 135-row piece spans at most 6): each updated
        # once with the sum of its pixel rows (np.add.at per pixel row took 2.8 ms a piece, 0.4 CPU-s a tile)
        rows, per = np.unique((np.arange(ya, yb) - f0) // STRIDE, return_counts=True)
        if valid is None:
            counts[rows] += (STRIDE * per.astype(np.int32))[:, None]
        else:
            fp = valid[ya - a : yb - a, f0 : f0 + STRIDE * nx].reshape(yb - ya, nx, STRIDE).sum(axis=2, dtype=np.int32)
            counts[rows] += np.add.reduceat(fp, np.concatenate(([0], np.cumsum(per)[:-1])), axis=0)

    return counts, add


def _predict_stream(net: StreamNet, network, geometry, read, norm, kx, ky, max_block_mb, block_cells, progress,
                    stats, prefetch, on_rows=None, keep_px=0):
    nx, ny = len(kx), len(ky)
    c0, c1 = geometry.input_span(kx.start, nx)
    r0, r1 = geometry.input_span(ky.start, ny)
    h0, w0 = r1 - r0, c1 - c0
    n = block_cells or stream_chunk_cells(net, w0, max_block_mb)
    counts, counter = _valid_counter(geometry, nx, ny)
    clock = {"read_s": 0.0, "compute_s": 0.0}
    source = _Source(lambda a, b: read(c0, r0 + a, c1, r0 + b), norm, h0, w0, net.in_channels,
                     counter, clock, prefetch, keep_raw=on_rows is not None)
    level: _Level = source
    width = w0
    step = n * net.factor
    for stage in net.stages:
        width //= stage.pool
        step //= stage.pool
        level = _Stage(stage, level, width, step, clock)
    tail = _Tail(net, level, width - net.reach, int(network.output_shape[-1]), clock)
    if tail.height != ny + 2:  # pragma: no cover - geometry and network disagree
        raise AssertionError(f"stream yields {tail.height} rows for {ny} cells")
    out = np.empty((ny, nx), dtype=np.float32)
    starts = list(range(1, ny + 1, n))
    served = 0  # span rows the first stage had consumed before this strip
    try:
        for i, a in enumerate(starts):
            b = min(a + n, ny + 1)
            # span row of the centre of output row j is f0 + 27 (j - 1) + 13
            source.keep_from = max(0, STRIDE * a + geometry.offset + STRIDE // 2 - keep_px)
            before = clock["compute_s"]
            rows = tail.rows(a, b)[:, 1 : 1 + nx, 1]
            stats.strip_compute_s.append(clock["compute_s"] - before)
            stats.strip_rows.append(source.served - served)
            served = source.served
            # the valid-pixel counts of these cells are final: their footprints have been read
            frac = counts[a - 1 : b - 1] / np.float32(STRIDE * STRIDE)
            out[a - 1 : b - 1] = np.where(frac >= MIN_VALID_FRACTION, rows, np.float32(np.nan))
            if on_rows is not None:
                on_rows(CellRows(a - 1, out[a - 1 : b - 1], c0,
                                 lambda g0, g1, cols=ALL: source.raw_rows(g0 - r0, g1 - r0, cols), c1 - c0))
            if progress:
                progress(i + 1, len(starts))
    finally:
        source.close()
    stats.method, stats.chunk_cells, stats.strips = "stream", n, len(starts)
    stats.span_px = (w0, h0)
    stats.flops = fcn_flops(network, h0, w0)
    stats.read_s, stats.compute_s = clock["read_s"], clock["compute_s"]
    return out


READ_ROWS = 135  # rows per tile read within a whole strip (taller reads measured slower, docs/performance.md)


def _predict_whole(net: WholeNet, geometry, read, norm, kx, ky, max_block_mb, block_cells, progress, stats,
                   prefetch, on_rows=None, keep_px=0):
    """The whole network on full-width strips of ``n`` cell rows, each from its exact input rows (module
    docstring). Two input buffers of one fixed shape (the last strip padded), reused: while the network
    computes one strip, a thread fills the other with the overlap (copied) and the new rows (read in
    pieces of :data:`READ_ROWS` and centred in place), so the tile is read once and no large array is
    allocated per strip. Padded rows and columns are zeros (the centred mean): they reach no cell."""
    nx, ny = len(kx), len(ky)
    c0, c1 = geometry.input_span(kx.start, nx)
    r0, r1 = geometry.input_span(ky.start, ny)
    h0, w0 = r1 - r0, c1 - c0
    n = min(block_cells or stream_chunk_cells(net, w0, max_block_mb), ny)
    width = w0
    if not block_cells:
        # One strip shape for all the quadrants of a tile (the network is compiled per shape, ~0.4 s and
        # ~0.5 GB each): strips of nearly equal height rounded up to 4 cells (170 and 171 cell rows both
        # give 5 x 36), columns padded to a multiple of 64 px (4806 and 4833 both give 4864). The padding
        # (the last strip's rows, the columns) reaches no cell: each cell's exact span lies within.
        strips = math.ceil(ny / n)
        n = math.ceil(math.ceil(ny / strips) / 4) * 4
        width = -(-w0 // 64) * 64
    span_rows = STRIDE * (n + 1 + geometry.valid_kernel)  # input rows of a strip of n cells
    counts, counter = _valid_counter(geometry, nx, ny)
    bufs = net.buffers(2 if prefetch else 1, (1, span_rows, width, net.in_channels))
    for b in bufs:
        b[:, :, w0:] = 0
    starts = list(range(0, ny, n))
    read_s = [0.0]

    def fill(i: int, buf: np.ndarray, prev: tuple | None) -> tuple[int, int, list]:
        """Strip i's input rows [lo, hi) of the span into ``buf``; returns (lo, hi, raw pieces read)."""
        t = time.perf_counter()
        lo = STRIDE * starts[i]
        hi = lo + STRIDE * (min(n, ny - starts[i]) + 1 + geometry.valid_kernel)
        new_from, pieces = lo, []
        if prev is not None and prev[2] > lo:  # the overlap with the previous strip
            pbuf, plo, phi = prev
            buf[0, : phi - lo, :w0] = pbuf[0, lo - plo : phi - plo, :w0]
            new_from = phi
        for a in range(new_from, hi, READ_ROWS):
            b = min(a + READ_ROWS, hi)
            raw = read(c0, r0 + a, c1, r0 + b)
            _, valid = norm.centre(raw, out=buf[0, a - lo : b - lo, :w0])
            counter(a, b, valid)
            if on_rows is not None:
                pieces.append((a, raw))
        if hi - lo < span_rows:  # the last strip: one shape for the network (the rows below reach no cell)
            buf[0, hi - lo :, :w0] = 0
        read_s[0] += time.perf_counter() - t
        return lo, hi, pieces

    out = np.empty((ny, nx), dtype=np.float32)
    kept = _KeptRaw()  # tile values still needed by on_rows

    pool = ThreadPoolExecutor(1, thread_name_prefix="minescan-read") if prefetch else None
    compute_s = 0.0
    try:
        prepare = getattr(net.run, "prepare", None)  # OpenVINO compiles for the strips' shape meanwhile
        compiling = pool.submit(prepare, bufs[0].shape) if pool is not None and prepare is not None else None
        filled = fill(0, bufs[0], None)
        if compiling is not None:
            compiling.result()
        for i, k0 in enumerate(starts):
            h = min(n, ny - k0)
            buf = bufs[i % len(bufs)]
            lo, hi, pieces = filled
            nxt = None
            if i + 1 < len(starts):
                args = (i + 1, bufs[(i + 1) % len(bufs)], (buf, lo, hi))
                if pool is not None:  # reads the overlap from this strip's buffer, which the network only reads
                    nxt = pool.submit(fill, *args)
            t = time.perf_counter()
            y = net.run(buf)[0, 1 : 1 + h, 1 : 1 + nx, 1]
            dt = time.perf_counter() - t
            compute_s += dt
            stats.strip_compute_s.append(dt)
            stats.strip_rows.append(span_rows)  # what the network computed (the last strip padded)
            frac = counts[k0 : k0 + h] / np.float32(STRIDE * STRIDE)
            out[k0 : k0 + h] = np.where(frac >= MIN_VALID_FRACTION, y, np.float32(np.nan))
            if on_rows is not None:
                kept.keep(max(0, STRIDE * (k0 + 1) + geometry.offset + STRIDE // 2 - keep_px), pieces)
                on_rows(CellRows(k0, out[k0 : k0 + h], c0, lambda g0, g1, cols=ALL: kept.rows(g0 - r0, g1 - r0, cols),
                                 w0))
            if progress:
                progress(i + 1, len(starts))
            if i + 1 < len(starts):
                filled = nxt.result() if nxt is not None else fill(*args)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    stats.method, stats.chunk_cells, stats.strips = "whole", n, len(starts)
    stats.span_px = (w0, h0)
    stats.read_s, stats.compute_s = read_s[0], compute_s
    return out


def _chunks(r: range, size: int):
    for start in range(r.start, r.stop, size):
        yield start, min(size, r.stop - start)


def _predict_blocks(network, geometry, read, norm, kx, ky, max_block_mb, block_cells, progress, stats):
    """Square blocks, each from its own exact span; blocks of equal shape batched up to the budget."""
    bands = int(network.input_shape[-1])
    n = block_cells or block_side_cells(geometry.valid_kernel, max_block_mb, bands)
    out = np.full((len(ky), len(kx)), np.nan, dtype=np.float32)
    blocks = [(y0, h, x0, w) for y0, h in _chunks(ky, n) for x0, w in _chunks(kx, n)]
    off = geometry.offset

    def per_block(h: int, w: int) -> float:
        (a, b), (c, d) = geometry.input_span(0, h), geometry.input_span(0, w)
        return (b - a) * (d - c) * _block_bytes_per_px(bands)

    t_read = t_net = 0.0
    flops = 0.0
    done = 0
    i = 0
    while i < len(blocks):
        y0, h, x0, w = blocks[i]
        batch_n = max(1, int(max_block_mb * 2**20 // per_block(h, w)))
        group = []
        while i < len(blocks) and len(group) < batch_n and blocks[i][1] == h and blocks[i][3] == w:
            group.append(blocks[i])
            i += 1
        xs, keep = [], []
        t = time.perf_counter()
        for y0, h, x0, w in group:
            bc0, bc1 = geometry.input_span(x0, w)
            br0, br1 = geometry.input_span(y0, h)
            z, valid = norm.apply(read(bc0, br0, bc1, br1))
            if valid.any():
                f0 = STRIDE + off
                fp = valid[f0 : f0 + STRIDE * h, f0 : f0 + STRIDE * w]
                xs.append(z)
                keep.append((y0, h, x0, w, fp.reshape(h, STRIDE, w, STRIDE).mean(axis=(1, 3))))
        t_read += time.perf_counter() - t
        if xs:
            t = time.perf_counter()
            prob = np.asarray(network.predict_on_batch(np.stack(xs)))[:, 1 : 1 + h, 1 : 1 + w, 1]
            t_net += time.perf_counter() - t
            flops += len(xs) * fcn_flops(network, xs[0].shape[0], xs[0].shape[1])
            for p, (y0, h, x0, w, frac) in zip(prob, keep, strict=True):
                out[y0 - ky.start : y0 - ky.start + h, x0 - kx.start : x0 - kx.start + w] = np.where(
                    frac >= MIN_VALID_FRACTION, p, np.nan)
        done += len(group)
        if progress:
            progress(done, len(blocks))
    c0, c1 = geometry.input_span(kx.start, len(kx))
    r0, r1 = geometry.input_span(ky.start, len(ky))
    stats.method, stats.chunk_cells, stats.strips = "blocks", n, len(blocks)
    stats.span_px = (c1 - c0, r1 - r0)
    stats.flops, stats.read_s, stats.compute_s = flops, t_read, t_net
    return out


def log_progress(what: str, every_s: float = 10.0) -> Callable[[int, int], None]:
    """A progress callback that logs 'what: i/n strips (p %), eta' at most every ``every_s`` seconds."""
    start = time.monotonic()
    last = [start]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            rate = (now - start) / done
            log.info("%s: %d/%d strips (%.0f %%), %.0f s elapsed, ~%.0f s left", what, done, total,
                     100 * done / total, now - start, rate * (total - done))

    return report
