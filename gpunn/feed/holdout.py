"""Rows of a fit's data held out for validation (``MLP(preset="tabular")``), from arrays or data frames."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _backend
from ..data import Dataset
from .checks import _frame_kind


def take_rows(a: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of a host array, a list, a pandas / polars frame or Series, or a pyarrow Table."""
    kind = _frame_kind(a)
    if kind == "pyarrow":
        return a.take(idx)
    if kind == "pandas" or type(a).__module__.startswith("pandas"):
        return a.iloc[idx]
    if kind == "polars" or type(a).__module__.startswith("polars"):
        return a[idx]
    return np.asarray(a)[idx]


def hold_out(X: Any, y: Any, sample_weight: Any, fraction: float, seed: int) -> tuple[Any, Any, Any, Any] | None:
    """``(X, y, sample_weight, (X_val, y_val))``: ``fraction`` of the rows, drawn with ``seed``, held out; None
    where the data cannot be split here (arrays on a device, a streamed Dataset, too few rows), which then trains
    on every row as given."""
    if isinstance(X, Dataset) or y is None or not (_backend.is_host_data(X) and _backend.is_host_data(y)):
        return None
    if not (hasattr(X, "__len__") and hasattr(y, "__len__")):
        return None  # fit refuses it with its own message
    n = len(X)
    n_val = int(round(n * fraction))
    if n_val < 2 or n - n_val < 2 or len(y) != n:  # len mismatch: fit reports it on the data as given
        return None
    order = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    w = None if sample_weight is None else take_rows(sample_weight, train)
    return take_rows(X, train), take_rows(y, train), w, (take_rows(X, val), take_rows(y, val))
