"""Rows a block at a time on the host: block boundaries, per-feature moments and scaling.

:func:`moments` is the one place gpunn computes standardization statistics: of an array in memory (its blocks of
rows) and of a streamed file (its row groups) alike.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def row_blocks(n: int, size: int) -> list[slice]:
    """Consecutive slices of ``size`` rows covering ``range(n)``, each end in bounds (the Array API standard
    leaves out-of-bounds slice ends unspecified)."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def rows_per_block(a: np.ndarray) -> int:
    """Rows of ``a`` per block of host-side work: about a million values, so temporaries stay small."""
    return max(1, (1 << 20) // max(1, a.shape[1]))


def moments(blocks: Iterable[np.ndarray], n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (a zero deviation becomes 1) over row blocks, in float64.

    Blocks are combined with Chan's parallel update, and each block's values are divided by the block's largest
    magnitude per column before they are squared, so that values near the float64 limits (1e300, or 1e-310)
    neither overflow nor underflow: the moments of ``c * X`` are ``c`` times those of ``X`` for any ``c`` that
    keeps ``X`` finite."""
    n, mean, m2 = 0, np.zeros(n_features), np.zeros(n_features)
    peak = np.zeros(n_features)  # the largest magnitude seen per column: m2 is kept in units of peak**2
    with np.errstate(all="ignore"):
        for x in blocks:
            k = len(x)
            if not k:
                continue
            x = np.asarray(x, dtype=np.float64)
            block_peak = np.max(np.abs(x), axis=0)
            new_peak = np.maximum(peak, block_peak)
            unit = np.where(new_peak > 0, new_peak, 1.0)
            m2 = m2 * np.square(np.where(new_peak > 0, peak / unit, 0.0))  # earlier blocks in the new units
            peak = new_peak
            scaled = x / unit
            block_mean = np.mean(scaled, axis=0)
            block_m2 = np.sum(np.square(scaled - block_mean), axis=0)
            total = n + k
            delta = block_mean - mean / unit
            mean_scaled = mean / unit + delta * (k / total)
            m2 = m2 + block_m2 + np.square(delta) * (n * k / total)
            mean = mean_scaled * unit
            n = total
        std = np.sqrt(m2 / max(n, 1)) * np.where(peak > 0, peak, 1.0)
    return mean, np.where(std > 0, std, 1.0)


def scale_rows(a: np.ndarray, scaling: tuple[np.ndarray, np.ndarray], out: np.ndarray) -> np.ndarray:
    """``out[:] = (a - mean) / scale``, computed in float64 a block of rows at a time (``out`` may be ``a``).

    Where ``a - mean`` overflows (a value and a mean of opposite signs both near the float64 limit, 1.7e308),
    that block is computed as ``a / scale - mean / scale`` instead: the standardized value itself is finite, as
    ``|a - mean| / scale`` is at most the square root of the rows counted."""
    mean, scale = scaling
    for block in row_blocks(len(a), rows_per_block(a)):
        with np.errstate(over="ignore", invalid="ignore"):
            z = (a[block] - mean) / scale
            if not np.isfinite(z).all() and np.isfinite(a[block]).all():
                z = a[block] / scale - mean / scale
        out[block] = z
    return out
