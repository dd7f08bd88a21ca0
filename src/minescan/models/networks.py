"""The two networks of Balaniuk, Isupova & Reece (2020), generic in band count and window.

Discovery FCN (mine/dam vs background), trained on ``window`` x ``window`` chips and applied to whole
images, where it yields one probability per 27 x 27 px output cell:

    Conv(w0, 3x3, same) -> MaxPool3 -> Conv(w1, 3x3, same) -> MaxPool3 -> Conv(w2, 3x3, same) -> MaxPool3
    -> Conv(w3, k x k, valid) -> Dropout 0.5 -> Conv(2, 1x1) softmax

with ``k = window // 27`` (7 for the published 201 px window, 1 for a 48 px window) and widths
(32, 64, 64, 64) as published: 259,810 parameters for 12 bands.

Impact CNN (high impact / low impact / no ore) on 21 x 21 patches:

    Conv32 2x2 same -> MaxPool2 same -> Conv64 2x2 same -> MaxPool2 same -> Dense 1024 -> Dropout 0.5
    -> Dense 3 softmax

2,373,219 parameters for 12 bands (the published count; it implies 'same' padding throughout).

Keras is imported lazily so that commands that do not need a network start fast.
"""

from __future__ import annotations

from dataclasses import dataclass

POOLS = 3  # three MaxPool3 layers
POOL = 3
STRIDE = POOL**POOLS  # 27 px between output cells
# Influence of the 'same' 3x3 convolutions beyond the pooled footprint: 1 + 3 + 9 px.
SAME_CONV_REACH = sum(POOL**i for i in range(POOLS))

DISCOVERY_CLASSES = ("background", "mine")
IMPACT_CLASSES = ("high", "low", "no_ore")
PUBLISHED_WIDTHS = (32, 64, 64, 64)


@dataclass(frozen=True)
class FcnGeometry:
    """Where the discovery FCN's output cells sit relative to its input pixels.

    Output cell ``j`` of an input array is computed from the ``window`` px chip that starts at array pixel
    ``STRIDE * j``; we georeference it as the 27 x 27 px square centred on that chip, i.e. array pixels
    ``[STRIDE*j + offset, STRIDE*j + offset + STRIDE)`` with ``offset = (window - STRIDE) // 2``.

    With 'same' padding the convolutions see zeros beyond the array edge, so the first and last output
    cell of any array are contaminated by the padding; every other cell depends only on real pixels. An
    array that starts one cell early and ends ``valid_kernel`` cells late therefore yields exact values for
    the cells in between, whatever else lies outside it. That is what makes block-wise, quadrant-wise and
    whole-tile inference agree.
    """

    window: int

    def __post_init__(self):
        if self.window < STRIDE:
            raise ValueError(f"window {self.window} px is smaller than the FCN stride {STRIDE} px")
        if SAME_CONV_REACH > STRIDE:  # pragma: no cover - architectural invariant
            raise AssertionError("margin of one cell no longer covers the same-padding reach")

    @property
    def stride(self) -> int:
        return STRIDE

    @property
    def valid_kernel(self) -> int:
        return self.window // STRIDE

    @property
    def offset(self) -> int:
        return (self.window - STRIDE) // 2

    def input_span(self, first_cell: int, n_cells: int) -> tuple[int, int]:
        """Pixel range [start, stop) (in the cell grid's pixel frame) to compute cells first..first+n-1."""
        start = STRIDE * (first_cell - 1) - self.offset
        return start, start + STRIDE * (n_cells + 1 + self.valid_kernel)

    @property
    def halo_px(self) -> int:
        """Pixels needed beyond a core so that every cell whose centre lies in the core can be computed."""
        # A cell belongs to the core holding its centre, so its footprint may start up to half a cell
        # before the core; its input span starts a further (STRIDE + offset) px before that.
        # Cell k (footprint [27k, 27k+27)) belongs to core [a, b) iff a - 13 <= 27k <= b - 14.
        before = STRIDE // 2 + STRIDE + self.offset
        after = STRIDE * (1 + self.valid_kernel) - self.offset - (STRIDE // 2 + 1)
        return max(before, after)


def _keras():
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def build_discovery_fcn(n_bands: int, window: int = 201, widths=PUBLISHED_WIDTHS, dropout: float = 0.5,
                        name: str = "discovery_fcn"):
    """The published discovery FCN; input size is free, so the same model runs on chips and tiles."""
    keras = _keras()
    layers = keras.layers
    geometry = FcnGeometry(window)
    w0, w1, w2, w3 = widths
    inputs = keras.Input(shape=(None, None, n_bands), name="bands")
    x = layers.Conv2D(w0, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(POOL, name="pool1")(x)
    x = layers.Conv2D(w1, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(POOL, name="pool2")(x)
    x = layers.Conv2D(w2, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.MaxPooling2D(POOL, name="pool3")(x)
    x = layers.Conv2D(w3, geometry.valid_kernel, padding="valid", activation="relu", name="conv4")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Conv2D(len(DISCOVERY_CLASSES), 1, activation="softmax", name="softmax")(x)
    return keras.Model(inputs, outputs, name=name)


def build_impact_cnn(n_bands: int, window: int = 21, dropout: float = 0.5, name: str = "impact_cnn"):
    """The published 21 x 21 impact classifier (high impact / low impact / no ore)."""
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input(shape=(window, window, n_bands), name="bands")
    x = layers.Conv2D(32, 2, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, padding="same", name="pool1")(x)
    x = layers.Conv2D(64, 2, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, padding="same", name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1024, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(len(IMPACT_CLASSES), activation="softmax", name="softmax")(x)
    return keras.Model(inputs, outputs, name=name)
