"""Output activations fused with their losses.

Why the output delta is a residual: for each output paired with its canonical loss, the derivative of the
loss with respect to the logits z collapses to prediction minus target.

- sigmoid + binary cross-entropy: L = softplus(z) - y z, so dL/dz = sigmoid(z) - y.
- softmax + categorical cross-entropy: L = logsumexp(z) - sum(t z) with t one-hot, so dL/dz = softmax(z) - t.
- identity + mean squared error: L = (z - y)^2, so dL/dz = 2 (z - y).

Every loss is a mean, so the delta carries the 1/m (m = samples, or elements for element-wise losses) and the
backward pass needs no further scaling. The pair sigmoid + mse, the classic tutorial pairing, has no such
collapse and goes through the chain rule explicitly.
"""

from __future__ import annotations

from typing import Any

from .layers import sigmoid

DEFAULT_LOSS = {"sigmoid": "binary_crossentropy", "softmax": "categorical_crossentropy", "identity": "mse"}
OUTPUTS = tuple(DEFAULT_LOSS)
LOSSES = tuple(DEFAULT_LOSS.values())
PAIRS = (*DEFAULT_LOSS.items(), ("sigmoid", "mse"))


def output_activation(output: str, z: Any, xp: Any) -> Any:
    """Probabilities (sigmoid, softmax) or values (identity) from the logits."""
    if output == "sigmoid":
        return sigmoid(z, xp)
    if output == "softmax":
        e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
        return e / xp.sum(e, axis=1, keepdims=True)
    return z


def loss_and_delta(output: str, loss: str, z: Any, t: Any, xp: Any) -> tuple[Any, Any, Any]:
    """Return (mean loss as a 0-d array, dL/dz, number of correct predictions as a 0-d array or None).

    ``t`` has the shape of ``z`` and the model's dtype: 0/1 targets for sigmoid, one-hot rows for softmax,
    values for identity. Nothing here reads a value back to the host.
    """
    if output == "softmax":
        shifted = z - xp.max(z, axis=1, keepdims=True)
        e = xp.exp(shifted)
        total = xp.sum(e, axis=1, keepdims=True)
        log_p = shifted - xp.log(total)
        scale = 1.0 / z.shape[0]
        value = -xp.sum(t * log_p) * scale
        correct = xp.count_nonzero(xp.argmax(z, axis=1) == xp.argmax(t, axis=1))
        return value, (e / total - t) * scale, correct

    scale = 1.0 / (z.shape[0] * z.shape[1])
    if output == "identity":
        diff = z - t
        return xp.sum(diff * diff) * scale, diff * (2.0 * scale), None

    correct = xp.count_nonzero((z > 0) == (t > 0.5))
    p = sigmoid(z, xp)
    if loss == "mse":
        diff = p - t
        return xp.sum(diff * diff) * scale, diff * (p * (1 - p)) * (2.0 * scale), correct
    # -[t log p + (1 - t) log(1 - p)] = softplus(z) - t z, finite for any logit.
    value = xp.sum(xp.logaddexp(0.0, z) - t * z) * scale
    return value, (p - t) * scale, correct
