"""Output activations fused with their losses.

Why the output delta is a residual: for each output paired with its canonical loss, the derivative of the
loss with respect to the logits z collapses to prediction minus target.

- sigmoid + binary cross-entropy: L = softplus(z) - y z, so dL/dz = sigmoid(z) - y.
- softmax + categorical cross-entropy: L = logsumexp(z) - sum(t z) with t one-hot, so dL/dz = softmax(z) - t.
- identity + mean squared error: L = (z - y)^2, so dL/dz = 2 (z - y).

The pair sigmoid + mse, the classic tutorial pairing, has no such collapse and goes through the chain rule.

Inside a training step a loss is the *sum* over the batch, and ``delta`` is dL/dz of that sum up to a constant
factor. The 1/m of the mean and that factor meet in one Python float, ``grad_scale`` (:func:`scales`), that the
optimizer folds into its step size: no array operation is spent on them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _backend

DEFAULT_LOSS = {"sigmoid": "binary_crossentropy", "softmax": "categorical_crossentropy", "identity": "mse"}
OUTPUTS = tuple(DEFAULT_LOSS)
LOSSES = tuple(DEFAULT_LOSS.values())
PAIRS = (*DEFAULT_LOSS.items(), ("sigmoid", "mse"))


def probability(z: Any, xp: Any) -> Any:
    """The logistic function with accurate tails: 1 / (1 + e^-z) for z >= 0 and e^z / (1 + e^z) below, both
    from e = exp(-|z|), which never overflows. (The tanh form that hidden layers use, one operation cheaper,
    rounds sigmoid(-20) to 0 in float32.)"""
    e = xp.exp(-xp.abs(z))
    d = 1.0 + e
    return xp.where(z >= 0, 1.0 / d, e / d)


def output_activation(output: str, z: Any, xp: Any) -> Any:
    """Probabilities (sigmoid, softmax) or values (identity) from the logits, accurate in their tails."""
    if output == "sigmoid":
        return probability(z, xp)
    if output == "softmax":
        e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
        return e / xp.sum(e, axis=1, keepdims=True)
    return z


def encode_targets(output: str, loss: str, t: Any) -> Any:
    """Targets ``t`` (0/1, one-hot rows or values, in the model's dtype) in the form :func:`head` takes.

    For sigmoid + binary cross-entropy that is ``s = 1 - 2t`` (+1 for a negative, -1 for a positive): the
    loss is then softplus(s z) and the residual 2 (sigmoid(z) - t) = tanh(z / 2) + s, one operation each.
    """
    return 1.0 - 2.0 * t if (output, loss) == ("sigmoid", "binary_crossentropy") else t


def scales(output: str, loss: str, rows: int, n_outputs: int) -> tuple[float, float]:
    """``(loss_scale, grad_scale)`` for a batch of ``rows``: the mean loss is ``loss_scale * loss_sum`` and its
    gradient is ``grad_scale`` times the gradient that ``delta`` of :func:`head` backpropagates to."""
    elements = rows if output == "softmax" else rows * n_outputs
    factor = {"binary_crossentropy": 0.5, "categorical_crossentropy": 1.0, "mse": 2.0}[loss]
    return 1.0 / elements, factor / elements


def softplus(w: Any, zero: Any, xp: Any) -> Any:
    """log(1 + exp(w)) without overflow. ``zero`` is a 0-d zero of w's dtype."""
    if _backend.numpy_fast_path(xp):
        # NumPy's logaddexp is twice as slow as the textbook form, computed in place on a temporary.
        t = np.abs(w)
        np.negative(t, out=t)
        np.exp(t, out=t)
        np.log1p(t, out=t)
        t += np.maximum(w, 0)
        return t
    return xp.logaddexp(w, zero)


def head(output: str, loss: str, z: Any, target: Any, zero: Any, xp: Any, weight: Any = None) -> tuple[Any, Any, Any]:
    """``(loss_sum, delta, correct)`` for the logits ``z`` of a batch and its encoded ``target``.

    ``loss_sum`` is the batch's summed loss (0-d), ``delta`` is proportional to its derivative dL/dz (see
    :func:`scales`), ``correct`` the number of correct predictions (0-d integer, None for regression). ``zero``
    is a 0-d zero of z's dtype, made once by the caller. With per-row sample weights ``weight`` (rows, 1),
    ``loss_sum`` is the pair [sum of the losses, sum of the weighted losses] and ``delta`` stays unweighted.
    Nothing here reads a value back to the host.
    """
    if output == "softmax":
        shifted = z - xp.max(z, axis=1, keepdims=True)
        e = xp.exp(shifted)
        total = xp.sum(e, axis=1, keepdims=True)
        loss_sum = _sums(target * (xp.log(total) - shifted), weight, xp)
        correct = xp.count_nonzero(xp.argmax(z, axis=1) == xp.argmax(target, axis=1))
        return loss_sum, e / total - target, correct
    if output == "identity":
        diff = z - target
        return _sums(diff * diff, weight, xp), diff, None
    if loss == "mse":
        p = probability(z, xp)
        diff = p - target
        correct = xp.count_nonzero((z > 0) == (target > 0.5))
        return _sums(diff * diff, weight, xp), diff * (p - p * p), correct
    # target is s = 1 - 2t: -[t log p + (1 - t) log(1 - p)] = softplus(s z), finite for any logit.
    loss_sum = _sums(softplus(target * z, zero, xp), weight, xp)
    correct = xp.count_nonzero((z > 0) == (target < 0))  # p > 0.5 exactly when z > 0
    return loss_sum, xp.tanh(0.5 * z) + target, correct


def _sums(elementwise: Any, weight: Any, xp: Any) -> Any:
    if weight is None:
        return xp.sum(elementwise)
    return xp.stack([xp.sum(elementwise), xp.sum(elementwise * weight)])
