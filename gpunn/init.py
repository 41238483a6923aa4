"""Initial weights, drawn on the host so every namespace and device starts from the same numbers."""

from __future__ import annotations

import numpy as np


def init_params(sizes: list[int], activation: str, rng: np.random.Generator, dtype: str) -> list[np.ndarray]:
    """He-normal weights for ReLU, Glorot-uniform otherwise; zero biases. Returns ``[W1, b1, W2, b2, ...]``.

    ``W`` has shape (out, in): a layer's nodes by the previous layer's. Values are drawn in float64 and then
    cast, so float32 and float64 models start from the same numbers up to rounding.
    """
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        if activation == "relu":
            w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_out, fan_in))
        else:
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-limit, limit, size=(fan_out, fan_in))
        params += [w.astype(dtype), np.zeros(fan_out, dtype=dtype)]
    return params
