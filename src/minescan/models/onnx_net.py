"""A saved Keras network run without TensorFlow: read as data, converted to ONNX, run by ONNX Runtime.

A detect job that imports TensorFlow and Keras pays ~2.5-3 s before it computes anything (and ~0.3 s for
the first call of each traced graph); for one quadrant that is more than the network's own work
(docs/performance.md). The published networks are plain chains of a few layer types, so on a CPU the
detect and classify jobs can run them with ONNX Runtime instead (``detect.runtime``), whose import takes
~0.2 s:

* :func:`read_chain` reads ``model.keras`` as data: ``config.json`` (the layer list, JSON) and
  ``model.weights.h5`` (HDF5, read with h5py) from the zip archive. No Keras, no TensorFlow, and nothing
  from the file is executed. Keras stores each layer's variables under ``layers/<class>[_<n>]/vars/<i>``,
  numbered per class in layer order; every kernel's shape is checked against the layer's config, so a file
  laid out otherwise is refused (the caller then uses TensorFlow), never misread.
* :func:`onnx_graph` turns a chain of supported layers into an ONNX graph (built with ``onnx.helper``),
  NHWC in and out like the Keras network: Conv2D (stride 1, no dilation or groups; 'same' as ONNX
  ``SAME_UPPER``, TensorFlow's convention), MaxPooling2D / AveragePooling2D, Flatten (in Keras' NHWC
  order), Dense on flat input, activations relu / linear / softmax / sigmoid / tanh, and the layers that
  are the identity at inference (Dropout and kin); an ensemble ``input -> [chains] -> Average`` becomes
  the members' chains and an ONNX ``Mean``. Anything else: :class:`Unsupported`.
* :class:`OrtNetwork` runs a graph in an ONNX Runtime CPU session (``predict_on_batch`` like a Keras
  model, so the impact CNN's callers need no change), :func:`ort_stream_net` builds the row-streamed
  stages of the discovery FCN (:mod:`minescan.scan.inference`) from the same layers.

The same graphs also run on OpenVINO (``detect.runtime: openvino``, :class:`OvNetwork`): on CPUs with
bfloat16 units (AVX512_BF16 / AMX) it computes the FCN in bfloat16 (``detect.precision: bfloat16``) at about
half the float32 time. It runs the whole FCN on full-width row strips (:func:`ov_whole_net`): split into
per-stage calls, OpenVINO spends what bfloat16 saves on reordering and converting at every call boundary.

The results equal TensorFlow's to float round-off in float32 (tests: <= 1e-5 on the published FCN and
impact CNN). GPUs and float16 stay with TensorFlow.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minescan.scan.inference import (
    as_pair,
    hidden_modules,
    is_pool_config,
    is_same_conv_config,
    tail_reach_config,
)

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "tensorflow", "onnxruntime", "openvino")
# the precisions OpenVINO runs here (float16 on CPUs is for the few with AMX-FP16; GPUs use TensorFlow)
OV_PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}
# layers that are the identity at inference
IDENTITY_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
                   "AlphaDropout")
POOL_LAYERS = {"MaxPooling2D": "MaxPool", "AveragePooling2D": "AveragePool"}
ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax", "linear": None}
# Keras' weight-group name of each layer class that has weights (snake case of the class name)
WEIGHT_GROUPS = {"Conv2D": "conv2d", "Dense": "dense"}


class Unsupported(Exception):
    """The network holds something this module does not convert; run it with TensorFlow."""


@dataclass
class Layer:
    """One layer of a saved network: its Keras class name, its config and its variables (kernel, bias)."""

    kind: str
    config: dict
    weights: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        return str(self.config.get("name", self.kind))


@dataclass
class Chain:
    """A chain of layers, or (``members`` set, ``layers`` empty) the average of several chains on the same
    input: the ensembles ``minescan train-chips`` writes (``Average`` of member FCNs)."""

    in_channels: int
    layers: list[Layer]
    members: list[Chain] = field(default_factory=list)

    def all_layers(self) -> list[Layer]:
        return [la for m in self.members for la in m.layers] if self.members else self.layers


def available(runtime: str = "onnxruntime") -> bool:
    """Whether ``runtime`` (onnxruntime or openvino) and onnx are installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in (runtime, "onnx"))


#: what ``import openvino`` imports only for its model conversion tool (``openvino.convert_model``, with absl
#: and more); minescan hands OpenVINO the ONNX models it builds. Hidden at that import (a guarded import
#: there): ``import openvino`` took 0.06 s instead of 0.14 s in a detect process (``python -X importtime``).
OV_SKIPPED = ("openvino.tools.ovc",)


def _openvino():
    """``import openvino`` without :data:`OV_SKIPPED` (importable again afterwards)."""
    import sys

    if "openvino" not in sys.modules:
        with hidden_modules(OV_SKIPPED):
            import openvino  # noqa: F401
    return sys.modules["openvino"]


def ov_cpu_bf16() -> bool:
    """Whether OpenVINO computes bfloat16 natively on this CPU (AVX512_BF16 or AMX)."""
    ov = _openvino()

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _inbound(node) -> list[str]:
    """Names of the layers a Keras config node takes its input from."""
    found = []
    if isinstance(node, dict):
        if "keras_history" in node:
            found.append(node["keras_history"][0])
        for v in node.values():
            found += _inbound(v)
    elif isinstance(node, list | tuple):
        for v in node:
            found += _inbound(v)
    return found


def config_is_chain(conf: dict) -> bool:
    """Whether a Functional/Sequential model config is one chain: input -> layer -> ... -> output."""
    layers = conf.get("layers") or []
    if not layers or layers[0].get("class_name") != "InputLayer":
        return False
    if any(la.get("class_name") == "InputLayer" for la in layers[1:]):
        return False
    if "inbound_nodes" not in layers[-1]:  # Sequential: the order is the chain
        return True
    prev = None
    for la in layers:
        if la.get("class_name") != "InputLayer" and _inbound(la.get("inbound_nodes", [])) != [prev]:
            return False
        prev = la.get("name", la.get("config", {}).get("name"))
    return True


def read_chain(model_file: str | Path) -> Chain:
    """The layers and weights of a chain network saved as ``model.keras`` (see the module docstring)."""
    import h5py

    model_file = Path(model_file)
    try:
        with zipfile.ZipFile(model_file) as z:
            config = json.loads(z.read("config.json"))
            weights = z.read("model.weights.h5")
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as exc:
        raise Unsupported(f"{model_file}: not a readable .keras archive ({exc})") from exc
    if config.get("class_name") not in ("Functional", "Sequential"):
        raise Unsupported(f"{model_file}: a {config.get('class_name')} model, not a Functional/Sequential chain")
    conf = config.get("config", {})
    members = [] if config_is_chain(conf) else _ensemble_members(conf)
    if members is None:
        raise Unsupported(f"{model_file}: the layers do not form a single chain (nor an average of chains)")
    first = conf["layers"][0].get("config") or {}
    shape = first.get("batch_shape") or first.get("batch_input_shape")
    if not shape or shape[-1] is None:
        raise Unsupported(f"{model_file}: input channels unknown")
    try:
        with h5py.File(io.BytesIO(weights), "r") as h5:
            if not members:
                chain = Chain(int(shape[-1]), _layers_with_weights(conf["layers"][1:], h5, "", model_file))
            else:
                chain = Chain(int(shape[-1]), [], [Chain(int(shape[-1]), _layers_with_weights(
                    sub["layers"][1:], h5, prefix, model_file)) for prefix, sub in members])
        for c in chain.members or [chain]:
            _check_weights(c, model_file)
    except (OSError, KeyError, ValueError, TypeError) as exc:  # h5py/json surprises: a file we cannot read
        raise Unsupported(f"{model_file}: weights not readable as Keras' layout ({exc})") from exc
    return chain


def _ensemble_members(conf: dict) -> list[tuple[str, dict]] | None:
    """(weights prefix, config) of each member if the model is input -> [chain models] -> Average, else None."""
    layers = conf.get("layers") or []
    if len(layers) < 3 or layers[0].get("class_name") != "InputLayer" or layers[-1].get("class_name") != "Average":
        return None
    inner = layers[1:-1]
    if _inbound(layers[-1].get("inbound_nodes", [])) != [la.get("name") for la in inner]:
        return None
    seen: dict[str, int] = {}
    out = []
    for la in inner:
        group = {"Functional": "functional", "Sequential": "sequential"}.get(la.get("class_name"))
        if group is None or _inbound(la.get("inbound_nodes", [])) != [layers[0].get("name")]:
            return None
        if not config_is_chain(la.get("config", {})):
            return None
        n = seen.get(group, -1) + 1
        seen[group] = n
        out.append((f"layers/{group}{'' if n == 0 else f'_{n}'}/", la["config"]))
    return out


def _layers_with_weights(entries: list[dict], h5, prefix: str, model_file) -> list[Layer]:
    """The layers of a saved chain, each with its variables from the weights file ``h5`` (under ``prefix``
    for an ensemble's member)."""
    seen: dict[str, int] = {}
    layers: list[Layer] = []
    for entry in entries:
        layer = Layer(entry["class_name"], entry.get("config", {}))
        group = WEIGHT_GROUPS.get(layer.kind)
        if group is not None:
            n = seen.get(group, -1) + 1
            seen[group] = n
            key = f"{prefix}layers/{group}{'' if n == 0 else f'_{n}'}/vars"
            if key not in h5:
                raise Unsupported(f"{model_file}: no weights {key} for layer {layer.name}")
            layer.weights = [np.asarray(h5[key][str(i)], dtype=np.float32) for i in range(len(h5[key]))]
        layers.append(layer)
    return layers


def _check_weights(chain: Chain, source) -> None:
    """Every kernel and bias has the shape its layer's config implies (else the file is not read right).
    A Dense kernel's input size is checked where it follows another Dense layer (after a Flatten it depends
    on the input's size; ONNX Runtime refuses a mismatch there)."""
    c = chain.in_channels
    for la in chain.layers:
        cfg = la.config
        if la.kind == "Conv2D":
            kh, kw = as_pair(cfg["kernel_size"])
            expect = [(kh, kw, c, int(cfg["filters"]))]
            c = int(cfg["filters"])
        elif la.kind == "Dense":
            expect = [(la.weights[0].shape[0] if c is None else c, int(cfg["units"]))]
            c = int(cfg["units"])
        else:
            if la.kind == "Flatten":
                c = None
            continue
        if cfg.get("use_bias", True):
            expect.append((expect[0][-1],))
        got = [tuple(w.shape) for w in la.weights]
        if got != expect:
            raise Unsupported(f"{source}: layer {la.name} has weights {got}, its config implies {expect}")


# ------------------------------------------------------------------------------------------ graphs
class _Graph:
    """ONNX nodes of a network, input ``x`` NHWC float32; tracks the layout (NHWC, NCHW or flat)."""

    def __init__(self, in_channels: int):
        self.nodes: list = []
        self.inits: list = []
        self.in_channels = in_channels
        self.layout = "NHWC"
        self.last = "x"
        self.n = 0

    def add(self, op: str, *inputs: str, **attrs) -> str:
        from onnx import helper

        out = f"{op.lower()}{self.n}"
        self.n += 1
        self.nodes.append(helper.make_node(op, [self.last, *inputs], [out], **attrs))
        self.last = out
        return out

    def const(self, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = f"w{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def to(self, layout: str) -> None:
        if self.layout == layout:
            return
        if {self.layout, layout} != {"NHWC", "NCHW"}:
            raise Unsupported(f"layout {self.layout} -> {layout}")
        self.add("Transpose", perm=[0, 3, 1, 2] if layout == "NCHW" else [0, 2, 3, 1])
        self.layout = layout

    def activation(self, name, where: str) -> None:
        name = name or "linear"
        if not isinstance(name, str) or name not in ACTIVATIONS:
            raise Unsupported(f"activation {name!r} of {where}")
        if ACTIVATIONS[name] == "Softmax":
            self.add("Softmax", axis=1 if self.layout in ("NCHW", "flat") else -1)
        elif ACTIVATIONS[name]:
            self.add(ACTIVATIONS[name])

    def model(self, name: str) -> bytes:
        from onnx import TensorProto, helper

        if self.layout == "NCHW":
            self.to("NHWC")
        rank = 2 if self.layout == "flat" else 4
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, None, self.in_channels])],
            [helper.make_tensor_value_info(self.last, TensorProto.FLOAT, [None] * rank)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="minescan")
        model.ir_version = 8  # understood by every ONNX Runtime >= 1.10
        return model.SerializeToString()


def _conv(g: _Graph, la: Layer, pads: list[int] | None = None, gain: np.ndarray | None = None) -> None:
    if la.kind != "Conv2D":
        raise Unsupported(f"layer {la.name}: the normalisation folds into a first Conv2D only, not {la.kind}")
    cfg = la.config
    if (as_pair(cfg.get("strides", 1)) != (1, 1) or as_pair(cfg.get("dilation_rate", 1)) != (1, 1)
            or cfg.get("groups", 1) != 1 or cfg.get("data_format", "channels_last") != "channels_last"):
        raise Unsupported(f"layer {la.name}: strides, dilation, groups or data format")
    kernel = la.weights[0]
    if gain is not None:  # normalisation folded into the first convolution
        kernel = kernel * np.asarray(gain, np.float32)[None, None, :, None]
    g.to("NCHW")
    inputs = [g.const(kernel.transpose(3, 2, 0, 1))]
    if cfg.get("use_bias", True):
        inputs.append(g.const(la.weights[1]))
    kh, kw = kernel.shape[:2]
    if pads is not None:
        attrs = {"pads": pads}
    elif cfg.get("padding") == "same":
        attrs = {"auto_pad": "SAME_UPPER"}
    elif cfg.get("padding") == "valid":
        attrs = {"pads": [0, 0, 0, 0]}
    else:
        raise Unsupported(f"layer {la.name}: padding {cfg.get('padding')!r}")
    g.add("Conv", *inputs, kernel_shape=[int(kh), int(kw)], **attrs)
    g.activation(cfg.get("activation"), la.name)


def _layer(g: _Graph, la: Layer, gain: np.ndarray | None = None) -> None:
    """Append one layer (a Conv2D gets the config's own padding; ``gain`` is folded into its kernel)."""
    cfg = la.config
    if gain is not None or la.kind == "Conv2D":
        _conv(g, la, gain=gain)
    elif la.kind in POOL_LAYERS:
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise Unsupported(f"layer {la.name}: data format")
        g.to("NCHW")
        pool = as_pair(cfg["pool_size"])
        strides = as_pair(cfg.get("strides") or pool)
        attrs: dict = {"kernel_shape": list(pool), "strides": list(strides)}
        if cfg.get("padding") == "same":
            attrs["auto_pad"] = "SAME_UPPER"
        if la.kind == "AveragePooling2D":
            attrs["count_include_pad"] = 0  # TensorFlow averages the real pixels only
        g.add(POOL_LAYERS[la.kind], **attrs)
    elif la.kind in IDENTITY_LAYERS:
        return
    elif la.kind == "Activation":
        g.activation(cfg.get("activation"), la.name)
    elif la.kind == "ReLU":
        if cfg.get("max_value") is not None or cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
            raise Unsupported(f"layer {la.name}: ReLU with a cap, slope or threshold")
        g.add("Relu")
    elif la.kind == "Softmax":
        if cfg.get("axis", -1) != -1:
            raise Unsupported(f"layer {la.name}: softmax over axis {cfg.get('axis')}")
        g.activation("softmax", la.name)
    elif la.kind == "Flatten":
        g.to("NHWC")  # Keras flattens in NHWC order; Dense kernels expect it
        g.add("Flatten", axis=1)
        g.layout = "flat"
    elif la.kind == "Dense":
        if g.layout != "flat":
            raise Unsupported(f"layer {la.name}: Dense on a spatial input")
        inputs = [g.const(la.weights[0])]
        if cfg.get("use_bias", True):
            inputs.append(g.const(la.weights[1]))
        g.add("Gemm", *inputs)
        g.activation(cfg.get("activation"), la.name)
    else:
        raise Unsupported(f"layer {la.name} ({la.kind})")


def onnx_graph(layers: list[Layer], in_channels: int, name: str = "network", members: list[Chain] | None = None,
               gain: np.ndarray | None = None) -> bytes:
    """A serialized ONNX model computing ``layers`` (NHWC in, NHWC or flat out), or the mean of the
    ``members`` chains. ``gain``: per-band factor folded into the (each member's) first convolution."""
    g = _Graph(in_channels)
    if not members:
        for i, la in enumerate(layers):
            _layer(g, la, gain if i == 0 else None)
        return g.model(name)
    outs, layout = [], None
    for m in members:
        g.last, g.layout = "x", "NHWC"
        for i, la in enumerate(m.layers):
            _layer(g, la, gain if i == 0 else None)
        if g.layout == "NCHW":
            g.to("NHWC")
        if layout not in (None, g.layout):
            raise Unsupported("ensemble members with different output layouts")
        layout = g.layout
        outs.append(g.last)
    g.last = outs[0]
    g.add("Mean", *outs[1:])
    return g.model(name)


# ------------------------------------------------------------------------------------------ running
def session(model: bytes, threads: int | None = None):
    """An ONNX Runtime CPU session. Its threads do not spin between calls, so the tile's read-ahead thread
    gets the cores while the network waits for the next strip."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    from minescan.scan.device import cpu_threads

    opts.intra_op_num_threads = threads or cpu_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


class OrtNetwork:
    """A chain network as an ONNX Runtime session, used like a Keras model (``predict_on_batch``).

    It also carries what :mod:`minescan.scan.inference` asks of a discovery network: ``name``,
    ``input_shape``/``output_shape`` (channels last) and the layers (:func:`ort_stream_net`, FLOPs)."""

    runtime = "onnxruntime"

    def __init__(self, chain: Chain, name: str, threads: int | None = None):
        self.chain, self.name, self.threads = chain, name, threads
        # built here, so a layer that does not convert is found at load, not mid-scan (Unsupported)
        self.graph = onnx_graph(chain.layers, chain.in_channels, name, chain.members)
        self._session = None
        out = self.in_channels
        for la in (chain.members[0].layers if chain.members else chain.layers):
            out = la.config.get("filters") or la.config.get("units") or out
        self.input_shape = (None, None, None, chain.in_channels)
        self.output_shape = (None, None, None, int(out))

    @property
    def in_channels(self) -> int:
        return self.chain.in_channels

    def get_weights(self) -> list[np.ndarray]:
        return [w for la in self.chain.all_layers() for w in la.weights]

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        if self._session is None:
            self._session = session(self.graph, self.threads)
        return self._session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]

    def __call__(self, x, training: bool = False) -> np.ndarray:
        return self.predict_on_batch(np.asarray(x))


def ov_compile(model: bytes, precision: str = "float32", threads: int | None = None, shape=None):
    """An OpenVINO CPU model compiled from the ONNX ``model``, computing in ``precision``; for inputs of
    one ``shape`` only when given (static shapes: OpenVINO plans its memory and kernels once, measured
    0.37 s per 40-cell strip of a quadrant in float32 against 0.51-0.69 s with the shape left open).

    The precision is always set: on CPUs with AMX OpenVINO would otherwise compute in bfloat16 by default.
    Its threads are not pinned to cores, so the tile's read-ahead thread shares them."""
    from minescan.scan.device import cpu_threads

    ov = _openvino()
    core = ov.Core()
    net = core.read_model(model, b"")
    if shape is not None:
        net.reshape({0: list(shape)})
    return core.compile_model(net, "CPU", {
        "INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision], "INFERENCE_NUM_THREADS": threads or cpu_threads(),
        "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False})


def _ov_runner(model: bytes, precision: str, threads: int | None, static: bool = False):
    """run(x) -> the output of ``model`` on ``x``, compiled at the first call (per input shape if ``static``;
    the last two shapes are kept, each with its own working memory: the strips of a tile's quadrants have
    one shape, see :func:`minescan.scan.inference._predict_whole`)."""
    if precision not in OV_PRECISIONS:  # found at load, not at the first strip
        raise Unsupported(f"precision {precision} on OpenVINO (it runs {', '.join(OV_PRECISIONS)})")
    return _OvRunner(model, precision, threads, static)


class _OvRunner:
    """:func:`_ov_runner`'s run; ``prepare(shape)`` compiles for a shape ahead of the first call (from another
    thread: a call for that shape waits for it)."""

    def __init__(self, model: bytes, precision: str, threads: int | None, static: bool):
        self.model, self.precision, self.threads, self.static = model, precision, threads, static
        self.compiled: dict = {}
        self.lock = threading.Lock()

    def prepare(self, shape) -> object:
        key = tuple(shape) if self.static else None
        with self.lock:
            if key not in self.compiled:
                if len(self.compiled) >= 2:
                    del self.compiled[next(iter(self.compiled))]
                self.compiled[key] = ov_compile(self.model, self.precision, self.threads, key).create_infer_request()
            return self.compiled[key]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        # the output is a copy (share_outputs off): the request reuses its memory at the next call
        return self.prepare(x.shape).infer({0: x}, share_inputs=True)[0]


class OvNetwork(OrtNetwork):
    """:class:`OrtNetwork` on OpenVINO: the same graph, compiled for the CPU in float32 for
    ``predict_on_batch``; :func:`ov_whole_net` compiles the FCN in the job's precision."""

    runtime = "openvino"

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        if self._session is None:
            self._session = _ov_runner(self.graph, "float32", self.threads)
        return self._session(x)


def load_network(model_file: str | Path, name: str, threads: int | None = None,
                 runtime: str = "onnxruntime") -> OrtNetwork:
    """The network in ``model_file`` for ONNX Runtime (or OpenVINO); :class:`Unsupported` if it cannot be
    converted (the graph is built and checked here, so an unsupported layer is found before any work)."""
    return (OvNetwork if runtime == "openvino" else OrtNetwork)(read_chain(model_file), name, threads)


def ov_whole_net(net: OvNetwork, gain: np.ndarray | None, precision: str, threads: int | None = None):
    """The whole FCN (normalisation gain folded into its first convolution) as one OpenVINO call in
    ``precision``, compiled for each strip shape (the strips of a span have one), for
    :class:`minescan.scan.inference.WholeNet`; returns (run, first conv's filters)."""
    graph = onnx_graph(net.chain.layers, net.in_channels, net.name, net.chain.members, gain=gain)
    first = (net.chain.members[0].layers if net.chain.members else net.chain.layers)[0]
    return _ov_runner(graph, precision, threads, static=True), int(first.config.get("filters") or net.in_channels)


# ------------------------------------------------------------------------------------------ the stream
def stream_stage_graph(conv: Layer, pool: Layer, in_channels: int, gain: np.ndarray | None = None) -> bytes:
    """One streamed stage: the 'same' convolution padded along columns only (rows come with their margin,
    see :mod:`minescan.scan.inference`), then the pool."""
    kw = int(conv.weights[0].shape[1])
    g = _Graph(in_channels)
    _conv(g, conv, pads=[0, kw // 2, 0, kw // 2], gain=gain)
    _layer(g, pool)
    return g.model(f"{conv.name}_rows")


def ort_stream_parts(net: OrtNetwork, gain: np.ndarray | None, threads: int | None = None):
    """(stage runs, tail run) for the streamed FCN, or None if its layers are not [same conv -> pool]+
    followed by 'valid'/pointwise layers; the structure rules are :mod:`minescan.scan.inference`'s."""
    layers = net.chain.layers
    stages = []
    i, channels = 0, net.in_channels
    while (i + 1 < len(layers) and is_same_conv_config(layers[i].kind, layers[i].config)
           and is_pool_config(layers[i + 1].kind, layers[i + 1].config)):
        conv, pool = layers[i], layers[i + 1]
        sess = session(stream_stage_graph(conv, pool, channels, gain if not stages else None), threads)
        stages.append((_runner(sess), int(conv.config["kernel_size"][0]) // 2, as_pair(pool.config["pool_size"])[0],
                       int(conv.config["filters"])))
        channels = int(conv.config["filters"])
        i += 2
    if not stages:
        return None
    reach = 0
    for la in layers[i:]:
        r = tail_reach_config(la.kind, la.config)
        if r is None:  # every layer converts: load_network built the whole graph
            return None
        reach += r
    tail = session(onnx_graph(layers[i:], channels, "tail"), threads)
    return stages, _runner(tail), reach, channels


def _runner(sess):
    def run(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]

    return run
