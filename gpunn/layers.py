"""Dense layers and activations, forward and backward, on any Array API namespace.

Parameters are a flat list ``[W1, b1, W2, b2, ...]`` with ``W`` of shape (out, in); a layer computes
``a @ W.T + b``. Derivatives of the activations are taken from their saved outputs, as scikit-learn does, so
the forward pass keeps one array per layer and nothing is recomputed.
"""

from __future__ import annotations

from typing import Any

from . import _backend

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")


def sigmoid(z: Any, xp: Any) -> Any:
    """Logistic function in its tanh form: one transcendental and no overflow for any z."""
    return 0.5 * xp.tanh(0.5 * z) + 0.5


def activate(name: str, z: Any, xp: Any, fast: bool = False) -> Any:
    """Apply a hidden-layer activation. With ``fast`` (NumPy), ``z`` is a temporary and is overwritten."""
    if name == "identity":
        return z
    if fast:
        if name == "relu":
            return xp.maximum(z, 0, out=z)
        if name == "tanh":
            return xp.tanh(z, out=z)
        z *= 0.5
        xp.tanh(z, out=z)
        z *= 0.5
        z += 0.5
        return z
    if name == "relu":
        return xp.maximum(z, 0)
    if name == "tanh":
        return xp.tanh(z)
    return sigmoid(z, xp)


def activation_backward(name: str, da: Any, a: Any, xp: Any, fast: bool = False) -> Any:
    """dL/dz from dL/da and the activation's output a. With ``fast`` (NumPy), ``da`` is overwritten."""
    if name == "identity":
        return da
    if fast:
        if name == "relu":
            # A float times a bool mask: 10x faster than where() in NumPy, not guaranteed by the standard.
            return xp.multiply(da, a > 0, out=da)
        slope = a * a if name == "tanh" else a - 1.0
        if name == "tanh":
            xp.subtract(1.0, slope, out=slope)
        else:
            slope *= -a  # a (1 - a)
        da *= slope
        return da
    if name == "relu":
        return xp.where(a > 0, da, 0)  # a > 0 exactly where z > 0
    if name == "tanh":
        return da * (1 - a * a)
    return da * (a * (1 - a))


def dense_forward(a: Any, w: Any, b: Any, fast: bool = False) -> Any:
    """One dense layer: ``a @ W.T + b``."""
    if fast:
        z = a @ w.T
        z += b  # z is a fresh product: adding in place saves an allocation and a pass over it
        return z
    return a @ w.T + b


def forward(params: list[Any], x: Any, activation: str, xp: Any) -> tuple[Any, list[Any]]:
    """Return the output logits and the inputs of every layer (what backward needs)."""
    fast = _backend.numpy_fast_path(xp)
    inputs = [x]
    a = x
    n_layers = len(params) // 2
    for i in range(n_layers - 1):
        a = activate(activation, dense_forward(a, params[2 * i], params[2 * i + 1], fast), xp, fast)
        inputs.append(a)
    return dense_forward(a, params[-2], params[-1], fast), inputs


def backward(params: list[Any], inputs: list[Any], d_logits: Any, activation: str, xp: Any) -> list[Any]:
    """Chain rule from the output back to the input: ``[dW1, db1, ...]`` for the loss behind ``d_logits``.

    ``d_logits`` already carries the 1/m of the mean loss, so dW = delta^T . A_prev and db = sum(delta).
    """
    fast = _backend.numpy_fast_path(xp)
    grads: list[Any] = [None] * len(params)
    delta = d_logits
    ones = xp.ones(delta.shape[0], dtype=delta.dtype) if fast else None
    for i in reversed(range(len(params) // 2)):
        grads[2 * i] = delta.T @ inputs[i]
        # NumPy sums a tall array over its rows several times slower than it multiplies it by a vector of ones.
        grads[2 * i + 1] = ones @ delta if fast else xp.sum(delta, axis=0)
        if i:
            delta = activation_backward(activation, delta @ params[2 * i], inputs[i], xp, fast)
    return grads
