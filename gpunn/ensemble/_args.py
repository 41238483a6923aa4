"""The ensemble's fit arguments checked at the boundary: one value or one per member, rows, sample weights."""

from __future__ import annotations

import copy
import functools
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _backend, feed, losses
from .. import _validation as check
from ..errors import ConfigError, InputError


def member_callbacks(callbacks: Any, k: int) -> list[list[Any]]:
    """Each member's own callbacks: a list of K lists as given, or copies of one list (a stateful callback such
    as EarlyStopping is copied per member; a plain function is shared)."""
    if callbacks is None:
        return [[] for _ in range(k)]
    if not isinstance(callbacks, Sequence) or isinstance(callbacks, str):
        raise ConfigError(
            "callbacks must be a sequence of callables callback(model, record), or one such list per member"
        )
    if len(callbacks) == k and all(isinstance(c, Sequence) and not callable(c) for c in callbacks):
        lists = [list(c) for c in callbacks]
    else:
        lists = [[c if _is_function(c) else copy.deepcopy(c) for c in callbacks] for _ in range(k)]
    if not all(callable(c) for cs in lists for c in cs):
        raise ConfigError(
            "callbacks must be a sequence of callables callback(model, record), or one such list per member"
        )
    return lists


def _is_function(c: Any) -> bool:
    return isinstance(c, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, functools.partial))


def check_rows(rows: Any, k: int, n: int) -> list[np.ndarray] | None:
    if rows is None:
        return None
    if not isinstance(rows, (list, tuple)) or len(rows) != k:
        got = len(rows) if isinstance(rows, (list, tuple)) else type(rows).__name__
        raise InputError(f"rows must be a list of {k} index arrays (one per member); got {got}")
    out = []
    for i, r in enumerate(rows):
        a = np.asarray(_backend.to_numpy(r) if not _backend.is_host_data(r) else r)
        if a.ndim != 1 or a.size == 0 or a.dtype.kind not in "iu":
            raise InputError(f"rows[{i}] must be a non-empty 1-D array of row indices; got shape {a.shape}, {a.dtype}")
        if a.min() < 0 or a.max() >= n:
            raise InputError(f"rows[{i}] holds row {int(a.min() if a.min() < 0 else a.max())}; X has rows 0..{n - 1}")
        out.append(a.astype(np.int64))
    return out


def weights(spec: feed.Spec, sample_weight: Any, class_weight: Any, y: Any, n: int, k: int,
             rows: list[np.ndarray] | None) -> np.ndarray | None:  # fmt: skip
    """The members' sample weights over the rows of X, float64: (n,) shared, (K, n) per member, or None."""
    if sample_weight is None and class_weight is None:
        return None
    sw = feed.column(sample_weight, "sample_weight")
    if sw is not None:
        sw = check.host_array(sw if _backend.is_host_data(sw) else _backend.to_numpy(sw), "sample_weight")
        if sw.shape not in ((n,), (k, n)):
            raise InputError(
                f"sample_weight has shape {sw.shape}; give one weight per row of X, shape ({n},), or one row of "
                f"weights per member, shape ({k}, {n})"
            )
    if rows is None and (sw is None or sw.ndim == 1):
        return feed.sample_weights(spec, sw, class_weight, y, n)
    y_host = feed.column(y, "y")
    y_host = np.asarray(y_host if _backend.is_host_data(y_host) else _backend.to_numpy(y_host))
    out = np.zeros((k, n))
    for i in range(k):
        r = np.arange(n) if rows is None else rows[i]
        w_i = None if sw is None else (sw if sw.ndim == 1 else sw[i])[r]
        try:
            out[i, r] = feed.sample_weights(spec, w_i, class_weight, y_host[r], len(r))
        except InputError as exc:
            raise InputError(f"member {i}: {exc}") from None
    return out


def check_member_classes(spec: feed.Spec, y: Any, rows: list[np.ndarray]) -> None:
    """A lone classifier refuses targets of a single class: so does each member on its own rows."""
    if spec.output in losses.REGRESSION:
        return
    y_host = feed.column(y, "y")
    a = np.asarray(y_host if _backend.is_host_data(y_host) else _backend.to_numpy(y_host))
    if a.ndim == 2 and a.shape[1] != 1:
        return
    for i, r in enumerate(rows):
        classes = np.unique(a.reshape(len(a))[r])
        if classes.size < 2:
            raise InputError(f"member {i}'s rows hold a single class ({classes[0]}); a classifier needs at least two")
