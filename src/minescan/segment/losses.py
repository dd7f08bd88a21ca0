"""Losses for binary segmentation, written with ``keras.ops`` so they run on any Keras backend.

Every loss takes ``y_true`` (0/1 mask, shape ``(batch, H, W, 1)``) and ``logits`` (the network's raw output,
same shape) and returns a scalar. Region losses (Tversky, Dice) and Lovasz-hinge pool every pixel of the
batch (an image without disturbed pixels then still contributes its false positives); cross-entropy is the
mean over pixels.

- Tversky (Salehi et al. 2017): ``T = sum(y p) / (sum(y p) + alpha sum((1-y) p) + beta sum(y (1-p)) + delta)``,
  loss ``1 - T`` with ``p = sigmoid(logits)``; alpha weighs false positives, beta false negatives.
  alpha = beta = 0.5 is Dice, alpha = beta = 1 the Jaccard index.
- Dice: ``1 - 2 sum(y p) / (sum(y) + sum(p) + 2 delta)``, i.e. exactly Tversky(0.5, 0.5, delta).
- Lovasz-hinge (Berman et al. 2018): the Lovasz extension of the Jaccard loss applied to hinge errors
  ``1 - logit * (2y - 1)`` sorted in decreasing order.
- Cross-entropy: binary cross-entropy from logits.
"""

from __future__ import annotations

from minescan.errors import ConfigError

LOSSES = ("tversky", "dice", "lovasz_hinge", "cross_entropy")
DEFAULT_PARAMS = {"alpha": 0.5, "beta": 0.5, "delta": 1.0}


def _ops():
    from minescan.models.networks import _keras

    return _keras().ops


def _flat(y_true, logits):
    ops = _ops()
    y = ops.reshape(ops.cast(y_true, "float32"), (-1,))
    z = ops.reshape(ops.cast(logits, "float32"), (-1,))
    return y, z


def tversky_index(y_true, logits, alpha: float = 0.5, beta: float = 0.5, delta: float = 1.0):
    ops = _ops()
    y, z = _flat(y_true, logits)
    p = ops.sigmoid(z)
    tp = ops.sum(y * p)
    fp = ops.sum((1.0 - y) * p)
    fn = ops.sum(y * (1.0 - p))
    return tp / (tp + alpha * fp + beta * fn + delta)


def tversky_loss(y_true, logits, alpha: float = 0.5, beta: float = 0.5, delta: float = 1.0):
    return 1.0 - tversky_index(y_true, logits, alpha, beta, delta)


def dice_loss(y_true, logits, delta: float = 1.0):
    ops = _ops()
    y, z = _flat(y_true, logits)
    p = ops.sigmoid(z)
    return 1.0 - 2.0 * ops.sum(y * p) / (ops.sum(y) + ops.sum(p) + 2.0 * delta)


def lovasz_hinge_loss(y_true, logits):
    """Binary Lovasz-hinge over every pixel of the batch (one flattened ranking)."""
    ops = _ops()
    y, z = _flat(y_true, logits)
    signs = 2.0 * y - 1.0
    errors = 1.0 - z * signs
    n = ops.shape(errors)[0]
    errors_sorted, order = ops.top_k(errors, k=n, sorted=True)
    gt_sorted = ops.take(y, order)
    gts = ops.sum(gt_sorted)
    intersection = gts - ops.cumsum(gt_sorted)
    union = gts + ops.cumsum(1.0 - gt_sorted)
    jaccard = 1.0 - intersection / union
    grad = ops.concatenate([jaccard[:1], jaccard[1:] - jaccard[:-1]], axis=0)
    return ops.sum(ops.relu(errors_sorted) * grad)


def cross_entropy_loss(y_true, logits):
    ops = _ops()
    y, z = _flat(y_true, logits)
    return ops.mean(ops.binary_crossentropy(y, z, from_logits=True))


def make_loss(name: str, alpha: float = 0.5, beta: float = 0.5, delta: float = 1.0):
    """The loss called ``name`` (one of :data:`LOSSES`) with its parameters, as ``f(y_true, logits)``."""
    if name == "tversky":
        def loss(y_true, logits):
            return tversky_loss(y_true, logits, alpha, beta, delta)
    elif name == "dice":
        def loss(y_true, logits):
            return dice_loss(y_true, logits, delta)
    elif name == "lovasz_hinge":
        loss = lovasz_hinge_loss
    elif name == "cross_entropy":
        loss = cross_entropy_loss
    else:
        raise ConfigError(f"segment.train.loss: unknown loss '{name}' (expected one of {', '.join(LOSSES)})")
    return loss


def loss_card(name: str, alpha: float, beta: float, delta: float) -> dict:
    """The loss and the parameters it uses, as recorded on the model card."""
    params = {"tversky": {"alpha": alpha, "beta": beta, "delta": delta}, "dice": {"delta": delta}}
    return {"name": name, **params.get(name, {})}
