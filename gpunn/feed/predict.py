"""What predictions share, for one network and for the mean of many: class indices from scores, labels from
indices, and a score of probabilities or values against targets."""

from __future__ import annotations

import functools
from typing import Any

import array_api_compat as aac
import numpy as np

from .. import _backend, layers
from ..data.moments import row_blocks
from .checks import are_indices, check_x, place_x
from .evaluate import EVAL_ROWS
from .sparse import is_sparse
from .spec import Spec


def logits(spec: Spec, params: Any, X: Any, scaling: Any) -> Any:
    """The output layer's logits of ``X`` (checked here), EVAL_ROWS rows at a time (scaled and moved to the
    device a block at a time for host data, so a large X holds one block's activations): (n, outputs) for one
    network's flat parameters (P,), (K, n, outputs) for K stacked networks' (K, P) or for a tuple of K networks'
    own (P,) buffers (stacked inside the compiled program, where an eager stack would compile one of its own)."""
    z, n = padded_logits(spec, params, X, scaling)
    return unpad(z, n, spec.xp, spec.device)


def padded_logits(spec: Spec, params: Any, X: Any, scaling: Any) -> tuple[Any, int]:
    """:func:`logits` and the real row count ``n``; on JAX (dense X, weights not traced) the rows run padded with
    zeros to the power-of-two bucket of the last EVAL_ROWS block, so that a new row count in the same bucket
    compiles nothing (the forward pass is row-independent: the padding never touches a real row). Eager work on
    the result is then done on the padded rows too, and :func:`unpad` drops them last."""
    xp = spec.xp
    first = params[0] if isinstance(params, tuple) else params
    # (an X or weights traced by the user's own jit or vmap run as they are: a tracer has no host copy)
    padded = (
        _backend.compiles_eagerly(xp)
        and not _backend.is_traced(first)
        and not _backend.is_traced(X)
        and not is_sparse(X)
    )
    x = check_x(spec, X, "X", host=padded)
    on_device = padded and not _backend.is_host_data(X)
    stacked = isinstance(params, tuple) or params.ndim == 2
    activation = spec.activation if isinstance(spec.activation, str) else tuple(spec.activation)
    forward = functools.partial(_forward, tuple(spec.sizes), activation, xp, stacked)
    if _backend.compiles_eagerly(xp) and not _backend.is_traced(first):  # one program, not one per operation
        forward = _compiled_forward(tuple(spec.sizes), activation, xp, stacked)
    elif isinstance(params, tuple):  # stacked once, not once a block
        params = xp.stack(params)
    blocks = []
    for block in row_blocks(x.shape[0], EVAL_ROWS):
        rows = x[block, ...]
        if padded:
            rows = _backend.pad_host(rows, _backend.bucket(rows.shape[0]))
            # rows given on the device are scaled there, as unpadded ones are
            rows = _backend.from_numpy(rows, xp, spec.device) if on_device else rows
        blocks.append(forward(params, place_x(spec, rows, scaling)))
    z = blocks[0] if len(blocks) == 1 else xp.concat(blocks, axis=1 if stacked else 0)
    return z, x.shape[0]


def unpad(a: Any, n: int, xp: Any, device: Any) -> Any:
    """``a`` (a result of :func:`padded_logits`, rows on its first axis, or on the second for (K, rows, ...)
    stacked results when ``a`` has three axes) with only its first ``n`` rows: sliced on the host, where a slice
    on the device would compile a program for each ``n`` (JAX), and moved back; ``a`` itself when unpadded."""
    axis = 1 if a.ndim == 3 else 0
    if a.shape[axis] == n:
        return a
    host = np.asarray(_backend.to_numpy(a))
    return _backend.from_numpy(np.ascontiguousarray(host[:, :n] if axis else host[:n]), xp, device)


def _forward(sizes: tuple[int, ...], activation: Any, xp: Any, stacked: bool, params: Any, x: Any) -> Any:
    if stacked:
        params = xp.stack(params) if isinstance(params, tuple) else params
        return layers.forward_stacked(layers.unflatten_stacked(params, sizes, xp), x, activation, xp)[0]
    return layers.logits(layers.unflatten(params, sizes, xp), x, activation, xp)


@functools.lru_cache(maxsize=16)
def _compiled_forward(sizes: tuple[int, ...], activation: Any, xp: Any, stacked: bool) -> Any:
    return _backend.compiler(xp)(functools.partial(_forward, sizes, activation, xp, stacked))


def indices(output: str, scores: Any, threshold: float, xp: Any, device: Any) -> Any:
    """Each row's class index (softmax: the largest score), or for sigmoid outputs 1 where a score exceeds
    ``threshold`` (0 for logits, 0.5 for probabilities): (n,) for one output, (n, k) for several."""
    if output == "softmax":
        return xp.argmax(scores, axis=1)
    index = xp.astype(scores > threshold, _backend.index_dtype(xp, device))
    return index[:, 0] if scores.shape[1] == 1 else index


def labels(classes: np.ndarray | None, index: Any, n: int | None = None) -> Any:
    """The labels of class indices (of their first ``n`` rows, where ``index`` is padded): the indices themselves
    (on the device) when the classes are 0..k-1 or the model takes several labels per row, else a NumPy array of
    the classes."""
    if are_indices(classes) or index.ndim != 1:
        return index if n is None else unpad(index, n, aac.array_namespace(index), aac.device(index))
    assert classes is not None
    return classes[_backend.to_numpy(index)[:n]]


def score(output: str, loss: str, p: np.ndarray, t: np.ndarray, eps: float) -> dict[str, float]:
    """Mean loss (and accuracy, for classifiers) of probabilities or values ``p`` (n, k) against 0/1 targets,
    one-hot rows or values ``t`` (n, k), on the host in float64, each averaged as a network's own loss is
    (cross-entropy per label for sigmoid, per row for softmax, squares or Poisson deviance per value); probabilities
    are kept ``eps`` away from 0 and 1 (the logarithm of a rounded 0)."""
    p, t = np.asarray(p, dtype=np.float64), np.asarray(t, dtype=np.float64)
    if loss == "poisson":  # the mean deviance, 2 (t log(t / p) - t + p), with 0 log 0 = 0
        with np.errstate(divide="ignore"):
            ratio = np.log(np.where(t > 0, t, 1.0) / p)
        out = {"loss": float(np.mean(2.0 * (t * ratio - t + p)))}
    elif loss == "mse":
        out = {"loss": float(np.mean((p - t) ** 2))}
    else:
        q = np.clip(p, eps, 1.0 - eps)
        if output == "softmax":
            out = {"loss": float(-np.mean(np.sum(t * np.log(q), axis=1)))}
        else:
            out = {"loss": float(-np.mean(t * np.log(q) + (1.0 - t) * np.log1p(-q)))}
    if output == "softmax":
        out["accuracy"] = float(np.mean(np.argmax(p, axis=1) == np.argmax(t, axis=1)))
    elif output == "sigmoid":
        out["accuracy"] = float(np.mean((p > 0.5) == (t > 0.5)))
    return out
