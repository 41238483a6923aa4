"""Initial weights, drawn on the host so every namespace and device starts from the same numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _backend
from .errors import OutOfMemoryError
from .layers import HE_INIT, n_params


def init_params(
    sizes: list[int], activation: str | Sequence[str], rng: np.random.Generator, dtype: str
) -> list[np.ndarray]:
    """He-normal weights for ReLU-like activations, Glorot-uniform otherwise; zero biases. Returns
    ``[W1, b1, W2, b2, ...]``.

    A layer's rule follows the activation applied to its output; the output layer follows the last hidden
    layer's. ``W`` has shape (out, in): a layer's nodes by the previous layer's. Values are drawn in float64 and
    then cast, so float32 and float64 models start from the same numbers up to rounding.
    """
    names = [activation] * (len(sizes) - 1) if isinstance(activation, str) else [*activation, activation[-1]]
    need = n_params(sizes) * np.dtype(dtype).itemsize
    # a typo such as 10**9 units: refused with the figure before the draw, rather than NumPy's MemoryError (or the
    # kernel's OOM killer, where memory is overcommitted) from inside it; small networks skip reading /proc
    free = _backend.host_memory_available() if need > 2**26 else None
    if free is not None and need > free:
        raise _too_large(sizes, need, free)
    params = []
    try:
        for (fan_in, fan_out), name in zip(zip(sizes[:-1], sizes[1:]), names):
            if name in HE_INIT:
                w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_out, fan_in))
            else:
                limit = np.sqrt(6.0 / (fan_in + fan_out))
                w = rng.uniform(-limit, limit, size=(fan_out, fan_in))
            params += [w.astype(dtype), np.zeros(fan_out, dtype=dtype)]
    except MemoryError:
        raise _too_large(sizes, need, _backend.host_memory_available()) from None
    return params


def _too_large(sizes: list[int], need: int, free: int | None) -> OutOfMemoryError:
    have = "" if free is None else f", and this machine has {free / 2**30:.2f} GiB available"
    return OutOfMemoryError(
        f"a network of sizes {sizes} needs {need / 2**30:.2f} GiB for its weights alone{have}: use smaller layers"
    )
