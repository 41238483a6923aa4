"""Output activations fused with their losses.

Why the output delta is a residual: for each output paired with its canonical loss, the derivative of the
loss with respect to the logits z collapses to prediction minus target.

- sigmoid + binary cross-entropy: L = softplus(z) - y z, so dL/dz = sigmoid(z) - y.
- softmax + categorical cross-entropy: L = logsumexp(z) - sum(t z) with t one-hot, so dL/dz = softmax(z) - t.
- identity + mean squared error: L = (z - y)^2, so dL/dz = 2 (z - y).
- exp + Poisson deviance (log link, mean mu = e^z, counts y >= 0): L = 2 (y log(y / mu) - y + mu)
  = 2 (e^z - y z + y log y - y), so dL/dz = 2 (mu - y). The terms y log y - y depend on y alone: they change no
  gradient, and they make L the deviance (0 for a perfect prediction, the metric scikit-learn's
  ``mean_poisson_deviance`` reports, and twice scikit-learn's ``MLPRegressor(loss="poisson")`` loss).

The pair sigmoid + mse, the classic tutorial pairing, has no such collapse and goes through the chain rule.

Inside a training step a loss is the *sum* over the batch, and ``delta`` is dL/dz of that sum up to a constant
factor. The 1/m of the mean and that factor meet in one Python float, ``grad_scale`` (:func:`scales`), that the
optimizer folds into its step size: no array operation is spent on them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _backend

DEFAULT_LOSS = {
    "sigmoid": "binary_crossentropy", "softmax": "categorical_crossentropy", "identity": "mse", "exp": "poisson",
}  # fmt: skip
OUTPUTS = tuple(DEFAULT_LOSS)
REGRESSION = ("identity", "exp")  # outputs that give values, not classes
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
    """Probabilities (sigmoid, softmax) or values (identity; exp: the Poisson mean) from the logits, accurate in
    their tails."""
    if output == "exp":
        return xp.exp(z)
    if output == "sigmoid":
        return probability(z, xp)
    if output == "softmax":  # over the last axis: (n, k), or (K, n, k) for K stacked networks
        e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
        return e / xp.sum(e, axis=-1, keepdims=True)
    return z


def encode_targets(output: str, loss: str, t: Any) -> Any:
    """Targets ``t`` (0/1, one-hot rows or values, in the model's dtype) in the form :func:`head` takes.

    For sigmoid + binary cross-entropy that is ``s = 1 - 2t`` (+1 for a negative, -1 for a positive): the
    loss is then softplus(s z) and the residual 2 (sigmoid(z) - t) = tanh(z / 2) + s, one operation each.
    """
    return 1.0 - 2.0 * t if (output, loss) == ("sigmoid", "binary_crossentropy") else t


def smooth_targets(output: str, loss: str, t: Any, smoothing: float) -> Any:
    """Encoded targets ``t`` (:func:`encode_targets`) with label smoothing: each 0/1 target ``y`` becomes
    ``(1 - smoothing) y + smoothing / k``, k the classes (one per softmax output, two for a sigmoid output).
    Encoded as sigmoid + binary cross-entropy takes them, ``s = 1 - 2t`` becomes ``(1 - smoothing) s``; a
    regression's targets stay as they are."""
    if not smoothing or output in REGRESSION:
        return t
    if output == "softmax":
        return (1.0 - smoothing) * t + smoothing / t.shape[-1]
    if loss == "binary_crossentropy":
        return (1.0 - smoothing) * t
    return (1.0 - smoothing) * t + 0.5 * smoothing


def scales(output: str, loss: str, rows: Any, n_outputs: int) -> tuple[Any, Any]:
    """``(loss_scale, grad_scale)`` for a batch of ``rows``: the mean loss is ``loss_scale * loss_sum`` and its
    gradient is ``grad_scale`` times the gradient that ``delta`` of :func:`head` backpropagates to (``rows`` an int,
    or an array of every member's rows)."""
    elements = rows if output == "softmax" else rows * n_outputs
    factor = {"binary_crossentropy": 0.5, "categorical_crossentropy": 1.0, "mse": 2.0, "poisson": 2.0}[loss]
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


def head(
    output: str, loss: str, z: Any, target: Any, zero: Any, xp: Any, weight: Any = None, members: bool = False,
    mask: Any = None, smoothed: bool = False, fast: bool = False,
) -> tuple[Any, Any, Any]:  # fmt: skip
    """``(loss_sum, delta, correct)`` for the logits ``z`` of a batch and its encoded ``target``.

    ``loss_sum`` is the batch's summed loss (0-d), ``delta`` is proportional to its derivative dL/dz (see
    :func:`scales`), ``correct`` the number of correct predictions (0-d integer, None for regression). ``zero``
    is a 0-d zero of z's dtype, made once by the caller. With per-row sample weights ``weight`` (rows, 1),
    ``loss_sum`` is the pair [sum of the losses, sum of the weighted losses] and ``delta`` stays unweighted.
    Nothing here reads a value back to the host.

    With ``members`` (K stacked networks), ``z`` is (K, rows, outputs), ``target`` and ``weight`` are shared
    (rows, ...) or per member (K, rows, ...), and the sums and counts are per member: ``loss_sum`` (K,) or (K, 2),
    ``correct`` (K,). ``mask`` (K, rows, 1), 1 for the rows that count and 0 for padding (or how many times a
    member takes the row), weighs the unweighted sum and the count (then a float), and a weight must already
    include it; ``delta`` stays unmasked. One network's ``mask`` (rows, 1) is 0 or 1 (padding rows of a
    compiled step), and its count stays an integer.

    ``smoothed`` says that the targets may lie between the classes (label smoothing, :func:`smooth_targets`):
    softmax's loss and every delta hold for any target row, but sigmoid's one-operation loss softplus(s z) holds
    only for s = +-1, so a smoothed sigmoid takes the general form softplus(z) - t z = softplus(z) + (s - 1) z / 2.

    With ``fast`` (NumPy's fast path: ``z`` is a temporary and is overwritten), one network's softmax works in
    place; it gives what the general form gives, to the bit.
    """
    ax = -1 if members else 1
    if fast and output == "softmax" and not members and mask is None:
        return _softmax_numpy(z, target, weight)
    if output == "softmax":
        shifted = z - xp.max(z, axis=ax, keepdims=True)
        e = xp.exp(shifted)
        total = xp.sum(e, axis=ax, keepdims=True)
        loss_sum = _sums(target * (xp.log(total) - shifted), weight, xp, members, mask)
        hits = xp.argmax(z, axis=ax) == xp.argmax(target, axis=ax)
        correct = _count(hits, xp, members, None if mask is None else mask[..., 0])
        return loss_sum, e / total - target, correct
    if output == "identity":
        diff = z - target
        return _sums(diff * diff, weight, xp, members, mask), diff, None
    if output == "exp":  # half the deviance, mu - y (z - log y + 1), with 0 log 0 = 0 (log 1 where y is 0)
        mu = xp.exp(z)
        half = mu - target * (z - xp.log(xp.where(target > 0, target, 1.0)) + 1.0)
        return 2.0 * _sums(half, weight, xp, members, mask), mu - target, None  # the 2 on the sums, not each element
    if loss == "mse":
        p = probability(z, xp)
        diff = p - target
        correct = _count((z > 0) == (target > 0.5), xp, members, mask)
        return _sums(diff * diff, weight, xp, members, mask), diff * (p - p * p), correct
    # target is s = 1 - 2t: -[t log p + (1 - t) log(1 - p)] = softplus(s z), finite for any logit.
    elementwise = softplus(z, zero, xp) + 0.5 * (target - 1.0) * z if smoothed else softplus(target * z, zero, xp)
    loss_sum = _sums(elementwise, weight, xp, members, mask)
    correct = _count((z > 0) == (target < 0), xp, members, mask)  # p > 0.5 exactly when z > 0
    return loss_sum, xp.tanh(0.5 * z) + target, correct


def _softmax_numpy(z: Any, target: Any, weight: Any) -> tuple[Any, Any, Any]:
    """:func:`head`'s softmax for one network on NumPy, ``z`` overwritten: two arrays of the batch's shape made
    where the general form makes six, and every value computed as there, in the same memory order (the sums'
    order depends on it)."""
    hits = z.argmax(axis=1) == target.argmax(axis=1)  # methods: NumPy's functions add a dispatch to each
    np.subtract(z, z.max(axis=1, keepdims=True), out=z)  # shifted
    e = np.exp(z)
    total = e.sum(axis=1, keepdims=True)
    np.subtract(np.log(total), z, out=z)
    elementwise = np.multiply(target, z)
    plain = elementwise.sum()
    loss_sum = plain if weight is None else np.stack([plain, np.multiply(elementwise, weight, out=elementwise).sum()])
    delta = np.divide(e, total, out=elementwise)
    delta -= target
    return loss_sum, delta, np.asarray(np.count_nonzero(hits))


def _sums(elementwise: Any, weight: Any, xp: Any, members: bool = False, mask: Any = None) -> Any:
    if members:  # per member: over every axis but the first
        axes = tuple(range(1, elementwise.ndim))
        plain = xp.sum(elementwise if mask is None else elementwise * mask, axis=axes)
        return plain if weight is None else xp.stack([plain, xp.sum(elementwise * weight, axis=axes)], axis=-1)
    plain = xp.sum(elementwise if mask is None else elementwise * mask)
    if weight is None:
        return plain
    return xp.stack([plain, xp.sum(elementwise * weight)])


def _count(hits: Any, xp: Any, members: bool, mask: Any) -> Any:
    if not members:
        return xp.count_nonzero(hits if mask is None else xp.logical_and(hits, mask > 0))
    axes = tuple(range(1, hits.ndim))
    if mask is not None:  # a row counts as often as its mask says (a member's rows may repeat): a float count
        return xp.sum(xp.where(hits, mask, 0.0), axis=axes)
    return xp.count_nonzero(hits, axis=axes)
