"""A SegFormer (Xie et al. 2021): mix-transformer (MiT) encoder + all-MLP decoder, in the project's own Keras.

Why not keras-hub: keras-hub 0.32 has SegFormer and its MiT backbone, but it requires ``tensorflow-text``,
whose wheel requires the full ``tensorflow`` package (``tensorflow>=2.21,<2.22``; the ``tensorflow-cpu``
variant is only an extra). Installing it would put a second, CUDA-enabled TensorFlow beside the project's
``tensorflow-cpu`` pin (several hundred MB more per environment). The network is small, so it is written
here from the paper's description; no weights are ever downloaded.

Encoder: four stages at 1/4, 1/8, 1/16, 1/32 of the input. Each stage = an overlapping patch embedding
(convolution 7x7 stride 4, then 3x3 stride 2) + ``depth`` transformer blocks (efficient self-attention
with keys/values spatially reduced by ``sr`` + Mix-FFN: dense, 3x3 depthwise convolution, GELU, dense) +
layer norm. Decoder: each stage's features projected to ``decoder_dim`` channels, up-sampled to 1/4,
concatenated, fused by a 1x1 convolution and classified into one logit per pixel, up-sampled to the input.

The input is ``(H, W, n_bands)`` with H and W multiples of 32 (any size: windows of a scan may differ from
the training patches). The output is a logit per pixel (``sigmoid`` gives the disturbed-area probability).

Variants (:data:`VARIANTS`): ``small`` (about 0.3 M weights; trains on 2 CPU cores) and ``b3`` (MiT-B3
widths and depths [3, 4, 18, 3]; MineSegSAT used a B3-sized encoder with 4 instead of 3 blocks in stage 2,
which ``depths`` / ``stage2_depth`` select).
"""

from __future__ import annotations

from minescan.errors import ConfigError
from minescan.models.networks import _keras

ALIGN = 32  # input sizes must be multiples of this (total stride of the encoder)

VARIANTS = {
    "small": {"dims": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 4], "sr": [8, 4, 2, 1],
              "mlp_ratio": 2, "decoder_dim": 64},
    "b3": {"dims": [64, 128, 320, 512], "depths": [3, 4, 18, 3], "heads": [1, 2, 5, 8], "sr": [8, 4, 2, 1],
           "mlp_ratio": 4, "decoder_dim": 768},
}


def variant_config(variant: str, stage2_depth: int | None = None) -> dict:
    """The architecture of a named variant, with the depth of encoder stage 2 optionally changed."""
    if variant not in VARIANTS:
        raise ConfigError(f"segment.train.variant: unknown variant '{variant}' (expected {', '.join(VARIANTS)})")
    cfg = {k: list(v) if isinstance(v, list) else v for k, v in VARIANTS[variant].items()}
    if stage2_depth is not None:
        if stage2_depth < 1:
            raise ConfigError(f"segment.train.stage2_depth: must be >= 1, got {stage2_depth}")
        cfg["depths"][1] = int(stage2_depth)
    cfg["variant"] = variant
    return cfg


def _layer_classes():
    """The custom layers, defined once Keras is imported and registered for loading ``model.keras``."""
    if "MixBlock" in _CLASSES:
        return _CLASSES
    keras = _keras()
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="minescan")
    class MixBlock(keras.layers.Layer):
        """One transformer block on (B, H, W, C) maps: efficient self-attention + Mix-FFN, pre-norm,
        residual connections."""

        def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: int, **kwargs):
            super().__init__(**kwargs)
            self.dim, self.heads, self.sr, self.mlp_ratio = dim, heads, sr, mlp_ratio
            self.norm1 = keras.layers.LayerNormalization(epsilon=1e-6)
            self.attn = keras.layers.MultiHeadAttention(heads, dim // heads)
            self.reduce = keras.layers.Conv2D(dim, sr, strides=sr) if sr > 1 else None
            self.norm_kv = keras.layers.LayerNormalization(epsilon=1e-6) if sr > 1 else None
            self.norm2 = keras.layers.LayerNormalization(epsilon=1e-6)
            self.fc1 = keras.layers.Dense(dim * mlp_ratio)
            self.dw = keras.layers.DepthwiseConv2D(3, padding="same")
            self.fc2 = keras.layers.Dense(dim)

        def build(self, input_shape):
            b, h, w, c = input_shape
            seq = (b, None, c)
            self.norm1.build(input_shape)
            if self.reduce is not None:
                self.reduce.build(input_shape)
                self.norm_kv.build((b, None, None, c))
            self.attn.build(seq, seq)
            self.norm2.build(input_shape)
            self.fc1.build(input_shape)
            self.dw.build((b, h, w, c * self.mlp_ratio))
            self.fc2.build((b, h, w, c * self.mlp_ratio))

        def call(self, x):
            shape = ops.shape(x)
            b, h, w = shape[0], shape[1], shape[2]
            y = self.norm1(x)
            q = ops.reshape(y, (b, h * w, self.dim))
            kv = self.norm_kv(self.reduce(y)) if self.reduce is not None else y
            kv = ops.reshape(kv, (b, -1, self.dim))
            x = x + ops.reshape(self.attn(q, kv), (b, h, w, self.dim))
            y = self.fc1(self.norm2(x))
            y = self.fc2(keras.activations.gelu(self.dw(y)))
            return x + y

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "dim": self.dim, "heads": self.heads, "sr": self.sr,
                    "mlp_ratio": self.mlp_ratio}

    @keras.saving.register_keras_serializable(package="minescan")
    class BilinearUp(keras.layers.Layer):
        """Bilinear up-sampling by an integer factor for inputs of any size. (Keras' UpSampling2D fails when
        a traced function is re-traced for a new input size, as a scan's windows and training patches do.)"""

        def __init__(self, factor: int, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            shape = ops.shape(x)
            size = (shape[1] * self.factor, shape[2] * self.factor)
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                return tf.image.resize(x, size, method="bilinear")
            return ops.image.resize(x, size, interpolation="bilinear")

        def compute_output_shape(self, s):
            return (s[0], None if s[1] is None else s[1] * self.factor,
                    None if s[2] is None else s[2] * self.factor, s[3])

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    _CLASSES["MixBlock"] = MixBlock
    _CLASSES["BilinearUp"] = BilinearUp
    return _CLASSES


_CLASSES: dict = {}


def build_segformer(n_bands: int, arch: dict, name: str = "segformer"):
    """The network for ``n_bands`` input bands and an architecture from :func:`variant_config`."""
    keras = _keras()
    classes = _layer_classes()
    MixBlock, BilinearUp = classes["MixBlock"], classes["BilinearUp"]
    layers = keras.layers
    inputs = keras.Input((None, None, n_bands), name="bands")
    x = inputs
    features = []
    for i, (dim, depth, heads, sr) in enumerate(zip(arch["dims"], arch["depths"], arch["heads"], arch["sr"],
                                                    strict=True)):
        kernel, stride = (7, 4) if i == 0 else (3, 2)
        x = layers.Conv2D(dim, kernel, strides=stride, padding="same", name=f"embed{i + 1}")(x)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"embed{i + 1}_norm")(x)
        for j in range(depth):
            x = MixBlock(dim, heads, sr, arch["mlp_ratio"], name=f"stage{i + 1}_block{j + 1}")(x)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"stage{i + 1}_norm")(x)
        features.append(x)
    decoded = []
    for i, f in enumerate(features):
        y = layers.Dense(arch["decoder_dim"], name=f"decode{i + 1}")(f)
        if i:
            y = BilinearUp(2**i, name=f"decode{i + 1}_up")(y)
        decoded.append(y)
    y = layers.Concatenate(name="decode_concat")(decoded[::-1])
    y = layers.Conv2D(arch["decoder_dim"], 1, use_bias=False, name="fuse")(y)
    y = layers.BatchNormalization(name="fuse_bn")(y)
    y = layers.Activation("relu", name="fuse_relu")(y)
    y = layers.Dropout(0.1, name="dropout")(y)
    y = layers.Conv2D(1, 1, name="classify")(y)
    y = BilinearUp(4, name="logits")(y)
    return keras.Model(inputs, y, name=name)


def load_segmenter_network(path):
    """``model.keras`` of a segmentation model (the custom layer registered first; no code from the file)."""
    keras = _keras()
    _layer_classes()
    return keras.models.load_model(path, compile=False)
