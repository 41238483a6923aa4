"""SciPy sparse input (CSR, CSC, COO; matrices and arrays): kept sparse on the host, densified a batch of rows at a
time and moved to the device, so that memory holds the sparse matrix and one dense batch, never the dense matrix.

A sparse X trains, predicts and evaluates exactly as the same X dense does: a batch's rows are densified, cast and
standardized by the same functions, elementwise, so they are the dense rows bit for bit; the epoch's order is the
same permutation of the same generator. SciPy is imported by none of this: a sparse matrix is recognized by its
type's module, and used through its own methods.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _backend
from .. import _validation as check
from ..data.moments import scale_rows
from ..errors import InputError
from .spec import Spec


def is_sparse(X: Any) -> bool:
    """Whether ``X`` is a SciPy sparse matrix or array (without importing SciPy)."""
    return type(X).__module__.startswith("scipy.sparse") and hasattr(X, "tocsr")


class SparseRows:
    """A checked sparse X on the host, in CSR form: indexed by rows (a slice or an index array, optionally with
    ``...``), it gives those rows dense, as a NumPy array of its own dtype, as a dense X would give them."""

    ndim = 2

    def __init__(self, matrix: Any):
        self.matrix = matrix
        self.shape: tuple[int, int] = (int(matrix.shape[0]), int(matrix.shape[1]))
        self.dtype = np.dtype(matrix.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = key[0] if isinstance(key, tuple) else key
        return np.asarray(self.matrix[rows].toarray(order="C"))


def check_sparse(spec: Spec, X: Any, name: str) -> SparseRows:
    """A sparse ``X`` checked as a dense one is (2-D, the model's feature count, numbers, finite and fitting the
    model's dtype), with the same messages, the first bad value named by its row and column; the values are looked
    at where they are stored, never densified."""
    check.check_features(X, spec.n_features, name)
    csr = X.tocsr()
    if not csr.has_canonical_format:  # sorted column indices, no duplicates: the first bad value in row order
        csr = csr.copy()
        csr.sum_duplicates()
    if csr.dtype.kind not in "fiub":
        raise check._kind_error(name, csr.dtype)
    data = np.asarray(csr.data)
    if data.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            cast = data.astype(spec.dtype, copy=False)
        for values, tail in ((data, "; gpunn needs finite values"), (cast, f", too large for {spec.dtype}")):
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                i = int(bad[0])  # stored in row order, columns sorted: the first in the dense X's order
                row = int(np.searchsorted(csr.indptr, i, side="right")) - 1
                raise InputError(f"{name} holds {data[i]} at row {row}, column {int(csr.indices[i])}{tail}")
    return SparseRows(csr)


class Placed:
    """A checked sparse X as the model takes it: each request for rows (:meth:`rows`) densifies them, scales them
    with ``scaling`` (when given) and moves them to the model's device, as a dense X is placed whole."""

    def __init__(self, spec: Spec, host: SparseRows, scaling: tuple[np.ndarray, np.ndarray] | None):
        self.spec, self.host, self.scaling = spec, host, scaling
        self.shape = host.shape
        self.dtype = spec.float_dtype

    def rows(self, key: Any = slice(None)) -> Any:
        """The rows ``key`` (a slice or a host index array) dense, scaled and on the device, as
        :func:`gpunn.feed.place_x` places a dense X's."""
        spec, a = self.spec, self.host[key]
        if self.scaling is not None:
            a = scale_rows(a, self.scaling, np.empty(a.shape, spec.dtype))
        return _backend.from_numpy(a.astype(spec.dtype, copy=False), spec.xp, spec.device)

    def later(self, key: Any = slice(None), shape: tuple[int, ...] | None = None) -> Later:
        """The rows ``key`` to be placed when a step takes them (reshaped to ``shape``): a list of an epoch's
        batches then holds one dense batch at a time."""
        return Later(self, key, shape)


class Later:
    """Rows of a :class:`Placed` X, placed by :meth:`load` (see :meth:`Placed.later`)."""

    def __init__(self, placed: Placed, key: Any, shape: tuple[int, ...] | None):
        self.placed, self.key, self.shape = placed, key, shape

    def load(self) -> Any:
        x = self.placed.rows(self.key)
        return x if self.shape is None else self.placed.spec.xp.reshape(x, self.shape)


def placed(x: Any) -> Any:
    """``x`` itself, or the rows a :class:`Later` stands for, placed; a :class:`Placed` X whole."""
    if isinstance(x, Later):
        return x.load()
    return x.rows() if isinstance(x, Placed) else x
