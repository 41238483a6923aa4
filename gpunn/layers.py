"""Dense layers and activations, forward and backward, on any Array API namespace.

All parameters of a network live in one flat buffer ``[W1, b1, W2, b2, ...]`` (each ``W`` of shape (out, in),
row-major); :func:`unflatten` gives the layers' ``(W, b)`` as views of it where the namespace has views. A layer
computes ``a @ W.T + b``. The backward pass writes its gradients into one flat buffer of the same layout, so an
optimizer updates every parameter with a few operations on one array.

An activation's forward returns its output and a closure that maps dL/da to dL/dz, keeping exactly what it
needs (ReLU keeps its mask, tanh and sigmoid their outputs, as scikit-learn does): nothing is recomputed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _backend

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity", "leaky_relu", "elu", "gelu", "silu", "softplus")
HE_INIT = ("relu", "leaky_relu", "elu", "gelu", "silu")  # rectifier-like: He-normal weights, Glorot otherwise
LEAKY_SLOPE = 0.01
_GELU_C = (2.0 / np.pi) ** 0.5  # the tanh approximation of GELU (the standard has no erf)

Backprop = Callable[[Any], Any]


# ------------------------------------------------------------------------------------------------ layout
def layer_slices(sizes: Sequence[int]) -> tuple[tuple[slice, slice, tuple[int, int]], ...]:
    """Per layer: the slices of ``W`` and ``b`` in the flat buffer and ``W``'s shape (out, in)."""
    return _layer_slices(tuple(sizes))


@functools.cache
def _layer_slices(sizes: tuple[int, ...]) -> tuple[tuple[slice, slice, tuple[int, int]], ...]:
    out, offset = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = slice(offset, offset + fan_out * fan_in)
        b = slice(w.stop, w.stop + fan_out)
        out.append((w, b, (fan_out, fan_in)))
        offset = b.stop
    return tuple(out)


def n_params(sizes: Sequence[int]) -> int:
    """Length of the flat parameter buffer of a network with these layer widths."""
    return sum(o * i + o for i, o in zip(sizes[:-1], sizes[1:]))


def unflatten(flat: Any, sizes: Sequence[int], xp: Any) -> list[tuple[Any, Any]]:
    """``[(W, b), ...]`` of a flat buffer: views on NumPy, CuPy and PyTorch, slices elsewhere; or of the same
    parameters in :func:`segments` (a tuple), where it only reshapes."""
    if isinstance(flat, tuple):
        return [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)]
    return [(xp.reshape(flat[w], shape), flat[b]) for w, b, shape in layer_slices(sizes)]


# A compiler (XLA) copies every slice of a flat buffer that a product reads, and assembles the flat gradient
# buffer by copies too: on the CPU that is about a quarter of a mid-sized step. A compiled run of several steps
# therefore carries the parameters (and the optimizer's slots) as their segments, ``(W1, b1, W2, b2, ...)``, each
# W of shape (out, in) (XLA's products on the CPU run slower on a 1-D buffer reshaped), and joins them back after
# the last step. Every pure function below and in gpunn.step and gpunn.optim takes either form and returns the
# form it was given.
def segments(flat: Any, sizes: Sequence[int], xp: Any) -> tuple[Any, ...]:
    """The flat buffer's segments ``(W1, b1, W2, b2, ...)``, each W (out, in) (undone by :func:`join`)."""
    return tuple(part for w, b, shape in layer_slices(sizes) for part in (xp.reshape(flat[w], shape), flat[b]))


def join(parts: tuple[Any, ...], xp: Any) -> Any:
    """The flat buffer of :func:`segments`."""
    return _backend.concat_into([xp.reshape(part, (-1,)) for part in parts], xp)


def each(f: Callable[..., Any], *buffers: Any) -> Any:
    """``f`` applied to a flat buffer, or to every segment of :func:`segments` (the others' matching segments
    passed along), in the form it was given."""
    if isinstance(buffers[0], tuple):
        return tuple(f(*parts) for parts in zip(*buffers))
    return f(*buffers)


def total(f: Callable[[Any], Any], buffer: Any) -> Any:
    """``f`` (a sum over a buffer) of a flat buffer, or summed over its segments."""
    if isinstance(buffer, tuple):
        out = f(buffer[0])
        for part in buffer[1:]:
            out = out + f(part)
        return out
    return f(buffer)


def unflatten_stacked(flat: Any, sizes: Sequence[int], xp: Any) -> list[tuple[Any, Any]]:
    """``[(W, b), ...]`` of the stacked buffer (K, P) of K networks: ``W`` of shape (K, out, in), ``b`` (K, out)."""
    k = flat.shape[0]
    return [(xp.reshape(flat[:, w], (k, *shape)), flat[:, b]) for w, b, shape in layer_slices(sizes)]


def weight_mask(sizes: Sequence[int], dtype: str, xp: Any, device: Any, segmented: bool = False) -> Any:
    """A flat buffer that is 1 at the weights and 0 at the biases (the L2 penalty spares biases); ``segmented``:
    the same as one Python number per segment of :func:`segments`."""
    if segmented:
        return tuple(float(i % 2 == 0) for i in range(2 * (len(sizes) - 1)))
    mask = np.zeros(n_params(sizes), dtype=dtype)
    for w, _, _ in layer_slices(sizes):
        mask[w] = 1
    return _backend.from_numpy(mask, xp, device)


# ------------------------------------------------------------------------------------------- activations
def sigmoid(z: Any, xp: Any) -> Any:
    """Logistic function in its tanh form: one transcendental and no overflow for any z."""
    return 0.5 * xp.tanh(0.5 * z) + 0.5


def per_layer(activation: str | Sequence[str], n_hidden: int) -> tuple[str, ...]:
    """One activation name per hidden layer, from one name or a list of them."""
    return (activation,) * n_hidden if isinstance(activation, str) else tuple(activation)


def activate(name: str, z: Any, xp: Any, fast: bool = False) -> tuple[Any, Backprop]:
    """A hidden layer's activation of ``z`` and the closure ``dL/da -> dL/dz``, which keeps exactly what the
    derivative needs (a mask, the output, or the input).

    With ``fast`` (NumPy), ``z`` and the closure's argument are temporaries and are overwritten.
    """
    if name == "identity":
        return z, _identity
    if fast and name in ("relu", "tanh", "sigmoid"):
        return _activate_numpy(name, z)
    if name == "relu":
        own = _backend.relu_form(xp)  # a namespace's own kernels where the standard's form is slow (PyTorch)
        if own is not None:
            return own(z)
        mask = z > 0
        # where() rather than maximum(z, 0): some namespaces turn the Python 0 into an array on every call.
        return xp.where(mask, z, 0.0), lambda da: xp.where(mask, da, 0.0)
    if name == "tanh":
        t = xp.tanh(z)
        return t, lambda da: da * (1.0 - t * t)
    if name == "sigmoid":
        s = sigmoid(z, xp)
        return s, lambda da: da * (s - s * s)
    if name == "leaky_relu":
        mask = z > 0
        return xp.where(mask, z, LEAKY_SLOPE * z), lambda da: xp.where(mask, da, LEAKY_SLOPE * da)
    if name == "elu":  # alpha = 1: z for z > 0, exp(z) - 1 below, whose derivative is the output plus one
        mask = z > 0
        a = xp.where(mask, z, xp.expm1(xp.where(mask, 0.0, z)))  # expm1 never sees a large z: no overflow
        return a, lambda da: xp.where(mask, da, da * (a + 1.0))
    if name == "gelu":
        t = xp.tanh(_GELU_C * (z + 0.044715 * (z * z * z)))
        slope = 0.5 * (1.0 + t) + (0.5 * _GELU_C) * z * (1.0 - t * t) * (1.0 + 0.134145 * (z * z))
        return 0.5 * z * (1.0 + t), lambda da: da * slope
    if name == "silu":
        s = sigmoid(z, xp)
        return z * s, lambda da: da * (s + z * (s - s * s))
    # softplus: log(1 + exp(z)) without overflow; its derivative is the sigmoid.
    a = xp.where(z > 0, z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))
    return a, lambda da: da * sigmoid(z, xp)


def _activate_numpy(name: str, z: Any) -> tuple[Any, Backprop]:
    if name == "relu":
        a = np.maximum(z, 0, out=z)
        # A float times a bool mask: 10x faster than where() in NumPy, not guaranteed by the standard.
        return a, lambda da: np.multiply(da, a > 0, out=da)
    if name == "tanh":
        a = np.tanh(z, out=z)
        return a, lambda da: da * (1.0 - a * a)
    z *= 0.5
    np.tanh(z, out=z)
    z *= 0.5
    z += 0.5
    return z, lambda da: da * (z - z * z)


def _identity(da: Any) -> Any:
    return da


# --------------------------------------------------------------------------------------- forward/backward
def dense(a: Any, w: Any, b: Any) -> Any:
    """One dense layer: ``a @ W.T + b``."""
    return a @ w.T + b


def forward(
    layers: list[tuple[Any, Any]], x: Any, activation: str | Sequence[str], xp: Any, masks: list[Any] | None = None
) -> tuple[Any, list[Any], list[Backprop]]:
    """The output logits, what backward needs of every layer's input, and every hidden activation's backprop.

    ``masks`` (training with dropout) holds one multiplier per hidden layer, shaped (rows, units), applied to
    the layer's output; its backprop multiplies by the same mask."""
    names = per_layer(activation, len(layers) - 1)
    if _backend.numpy_fast_path(xp):
        return _forward_numpy(layers, x, names, masks)
    inputs, backprops = [x], []
    a = x
    for i, ((w, b), name) in enumerate(zip(layers[:-1], names)):
        a, backprop = activate(name, dense(a, w, b), xp)
        if masks is not None:
            a, backprop = a * masks[i], _masked(backprop, masks[i])
        inputs.append(a)
        backprops.append(backprop)
    w, b = layers[-1]
    return dense(a, w, b), inputs, backprops


def _masked(backprop: Backprop, mask: Any) -> Backprop:
    """The backprop of ``mask * activation(z)``."""
    return lambda da: backprop(da * mask)


def logits(layers: list[tuple[Any, Any]], x: Any, activation: str | Sequence[str], xp: Any) -> Any:
    """The output logits alone (inference)."""
    return forward(layers, x, activation, xp)[0]


def backward(
    layers: list[tuple[Any, Any]],
    inputs: list[Any],
    backprops: list[Backprop],
    delta: Any,
    sizes: Sequence[int],
    xp: Any,
    segmented: bool = False,
) -> Any:
    """Chain rule from the output back to the input: the flat gradient buffer of the loss behind ``delta`` (its
    :func:`segments` with ``segmented``).

    ``delta`` is dL/dz of the output layer; then dW = delta^T . a_prev, db = sum(delta) over the rows, and the
    delta of the layer below is the activation's backprop of delta . W.
    """
    if _backend.numpy_fast_path(xp) and not segmented:
        return _backward_numpy(layers, inputs, backprops, delta, sizes)
    parts: list[Any] = []
    for i in reversed(range(len(layers))):
        dw = delta.T @ inputs[i]
        parts[:0] = [dw if segmented else xp.reshape(dw, (-1,)), xp.sum(delta, axis=0)]
        if i:
            delta = backprops[i - 1](delta @ layers[i][0])
    return tuple(parts) if segmented else _backend.concat_into(parts, xp)


# NumPy fast path: activations in place on temporaries, gradients written straight into one flat buffer. With
# narrow layers NumPy spends most of a step broadcasting biases over short rows, and OpenBLAS multiplies by a
# transposed small weight matrix at half speed; so narrow hidden layers run transposed, one row per unit
# (z^T = W a^T + b), where every bias add and activation walks long contiguous rows. Wide layers keep rows per
# sample, where OpenBLAS's kernels are faster for these shapes.
NARROW = 64  # widest layer that runs transposed


def _transposed(layers: list[tuple[Any, Any]]) -> bool:
    return max(w.shape[0] for w, _ in layers) <= NARROW


def _forward_numpy(
    layers: list[tuple[Any, Any]], x: Any, names: tuple[str, ...], masks: list[Any] | None
) -> tuple[Any, list[Any], list[Backprop]]:
    transposed = _transposed(layers)
    inputs: list[Any] = [x]
    backprops: list[Backprop] = []
    a = x.T if transposed else x
    for i, (w, b) in enumerate(layers):
        if transposed:
            z = w @ a
            z += b[:, None]
        else:
            z = a @ w.T
            z += b
        if i == len(layers) - 1:
            return z.T if transposed else z, inputs, backprops
        a, backprop = activate(names[i], z, np, fast=True)
        if masks is not None:
            mask = masks[i].T if transposed else masks[i]
            a, backprop = a * mask, _masked(backprop, mask)  # a new array: backprop may still read a
        inputs.append(a)  # transposed or not, as _backward_numpy knows
        backprops.append(backprop)
    raise AssertionError("unreachable")


def _backward_numpy(
    layers: list[tuple[Any, Any]], inputs: list[Any], backprops: list[Backprop], delta: Any, sizes: Sequence[int]
) -> Any:
    transposed = _transposed(layers)
    slices = layer_slices(sizes)
    grads = np.empty(slices[-1][1].stop, dtype=delta.dtype)
    ones = np.ones(delta.shape[0], dtype=delta.dtype)  # a product with ones sums rows faster than np.sum
    d = delta.T if transposed else delta
    for i in reversed(range(len(layers))):
        w_slice, b_slice, shape = slices[i]
        if transposed:
            np.matmul(d, inputs[i] if i == 0 else inputs[i].T, out=grads[w_slice].reshape(shape))
            np.matmul(d, ones, out=grads[b_slice])
        else:
            np.matmul(d.T, inputs[i], out=grads[w_slice].reshape(shape))
            np.matmul(ones, d, out=grads[b_slice])
        if i:
            w = layers[i][0]
            if w.shape[0] == 1:  # one unit: an outer product, several times faster as a broadcast than through
                da = np.multiply(w.T, d) if transposed else np.multiply(d, w)  # gemm (the same single products)
            else:
                da = w.T @ d if transposed else d @ w
            d = backprops[i - 1](da)
    return grads


# ---------------------------------------------------------------------------------- stacked networks (K members)
# K networks of the same widths train as one: W of shape (K, out, in), b (K, out), activations (K, rows, units).
# A batch shared by every member stays (rows, in): ``matmul`` broadcasts it against the K weight matrices, so X is
# never copied K times. Members' gradients land in one (K, P) buffer, row k laid out as a lone network's.
def dense_stacked(a: Any, w: Any, b: Any, xp: Any) -> Any:
    """K dense layers at once: ``a`` (rows, in) shared by every member or (K, rows, in) its own, ``w`` (K, out, in),
    ``b`` (K, out); returns (K, rows, out)."""
    return xp.matmul(a, xp.matrix_transpose(w)) + b[:, None, :]


def forward_stacked(
    layers: list[tuple[Any, Any]], x: Any, activation: str | Sequence[str], xp: Any, masks: list[Any] | None = None
) -> tuple[Any, list[Any], list[Backprop]]:
    """:func:`forward` of K stacked networks (weights from :func:`unflatten_stacked`): logits (K, rows, outputs).

    ``masks`` (dropout) holds one multiplier per hidden layer, shaped (K, rows, units)."""
    names = per_layer(activation, len(layers) - 1)
    fast = _backend.numpy_fast_path(xp)  # the activations' inputs are temporaries: NumPy works in place
    inputs, backprops = [x], []
    a = x
    for i, ((w, b), name) in enumerate(zip(layers[:-1], names)):
        a, backprop = activate(name, dense_stacked(a, w, b, xp), xp, fast)
        if masks is not None:
            a, backprop = a * masks[i], _masked(backprop, masks[i])
        inputs.append(a)
        backprops.append(backprop)
    w, b = layers[-1]
    return dense_stacked(a, w, b, xp), inputs, backprops


def backward_stacked(
    layers: list[tuple[Any, Any]], inputs: list[Any], backprops: list[Backprop], delta: Any, xp: Any
) -> Any:
    """:func:`backward` of K stacked networks: ``delta`` (K, rows, outputs) in, the (K, P) gradient buffer out."""
    k = delta.shape[0]
    fast = _backend.numpy_fast_path(xp)
    # NumPy sums over the middle axis ten times slower than a product with ones, which BLAS does
    ones: Any = np.ones(delta.shape[1], dtype=delta.dtype) if fast else None
    parts: list[Any] = []
    for i in reversed(range(len(layers))):
        dw = xp.matmul(xp.matrix_transpose(delta), inputs[i])  # (K, out, rows) @ (rows, in) or (K, rows, in)
        parts[:0] = [xp.reshape(dw, (k, -1)), np.matmul(ones, delta) if fast else xp.sum(delta, axis=1)]
        if i:
            delta = backprops[i - 1](xp.matmul(delta, layers[i][0]))
    return xp.concat(parts, axis=1)
