"""The in-memory feed: placed arrays, batched by slices or by gathers of a shuffled order."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from .. import _backend
from .. import _validation as check
from .batch import Batch
from .evaluate import block_sums
from .sparse import Placed
from .spec import Spec


class Memory:
    """A feed of data already on the model's device: ``x`` (scaled), ``target`` (encoded) and, with sample
    weights, ``weight`` (the device column (n, 1)) and ``weight_host`` (the same on the host, (n,) float64, to
    check every batch's total before an epoch)."""

    def __init__(self, spec: Spec, x: Any, target: Any, weight: Any = None, weight_host: np.ndarray | None = None):
        self.spec, self.x, self.target, self.weight, self.weight_host = spec, x, target, weight, weight_host
        self.n_rows = x.shape[0]
        self.weight_total = None if weight_host is None else float(np.sum(weight_host))
        self._padded: tuple[Any, Any, Any] | None = None

    def padded(self) -> tuple[Any, Any, Any]:
        """``(x, target, weight)`` with rows of zeros appended up to :func:`gpunn._backend.bucket` rows, made once."""
        if self._padded is None:
            rows, spec = _backend.bucket(self.n_rows), self.spec
            arrays = (self.x, self.target, self.weight)
            self._padded = tuple(  # type: ignore[assignment]
                None if a is None else _backend.pad_rows(a, rows, spec.xp, spec.device) for a in arrays
            )
        assert self._padded is not None
        return self._padded

    def batches(
        self, batch_size: int | None, rng: np.random.Generator | None, comm: Any = None, epoch: int = 0,
        padded: bool = False,
    ) -> Generator[Batch, None, None]:  # fmt: skip
        """One epoch's :class:`Batch` es: the rows of an order drawn from ``rng`` on the host (given by index, for
        the step to gather), or slices without it; a sparse X's rows densified batch by batch. ``padded`` (a
        compiled step that masks padding rows, without ``comm``): the arrays :meth:`padded`, and every minibatch by
        index, in an order padded alike."""
        xp, device, x, target, w = self.spec.xp, self.spec.device, self.x, self.target, self.weight
        n = self.n_rows
        bs = n if batch_size is None else min(batch_size, n)
        host_order = rng.permutation(n) if bs < n and rng is not None else None
        if self.weight_host is not None:
            _check_batch_weights(self.weight_host, host_order, bs, epoch)
        sparse = isinstance(x, Placed)
        if padded and comm is None and not sparse:
            yield from self._padded_batches(bs, host_order)
            return
        order = None if host_order is None else _backend.from_numpy(host_order, xp, device)
        for start in range(0, n, bs):
            stop = min(start + bs, n)  # the standard leaves out-of-bounds slice ends unspecified
            lo, hi = (start, stop) if comm is None else comm.shard(start, stop)
            total = rows_of = None
            if w is not None and comm is not None:  # the global batch's total, which every rank can sum
                total = xp.sum(w[start:stop, ...] if order is None else _backend.take_rows(w, order[start:stop], xp))
            if sparse:  # a sparse X: this batch's rows densified and placed now, handed to the step whole
                if order is None:
                    rows: Any = slice(lo, hi)
                    tb, wb = target[lo:hi, ...], None if w is None else w[lo:hi, ...]
                else:
                    rows, idx = host_order[lo:hi], order[lo:hi]  # type: ignore[index]
                    tb, wb = _backend.take_rows(target, idx, xp), None if w is None else _backend.take_rows(w, idx, xp)
                yield Batch(x.rows(rows), tb, stop - start, hi - lo, wb, lo - start, total)
                continue
            if comm is None and bs == n:
                xb, tb, wb = x, target, w
            elif order is not None:
                xb, tb, wb, rows_of = x, target, w, order
            else:
                xb, tb = x[lo:hi, ...], target[lo:hi, ...]
                wb = None if w is None else w[lo:hi, ...]
            yield Batch(xb, tb, stop - start, hi - lo, wb, lo - start, total, rows_of, lo)

    def _padded_batches(self, bs: int, host_order: np.ndarray | None) -> Generator[Batch, None, None]:
        n, (x, target, w) = self.n_rows, self.padded()
        if bs == n:
            yield Batch(x, target, n, n, w, 0, None, real_rows=n)
            return
        full = np.zeros(x.shape[0], dtype=np.int64)
        full[:n] = np.arange(n) if host_order is None else host_order
        order = _backend.from_numpy(full, self.spec.xp, self.spec.device)
        for start in range(0, n, bs):
            rows = min(start + bs, n) - start
            yield Batch(x, target, rows, rows, w, 0, None, order, start, real_rows=n)

    def evaluate_sums(self, params: Any, compiled: bool = False) -> tuple[list[Any], list[Any]]:
        """Summed loss and correct count of every block (0-d arrays on the device); ``compiled``: see
        :func:`gpunn.feed.evaluate.block_sums`, on the rows :meth:`padded` where the namespace compiles."""
        if compiled and _backend.compiler(self.spec.xp) is not None and not isinstance(self.x, Placed):
            x, target, _ = self.padded()
            return block_sums(self.spec, params, x, target, compiled, self.n_rows)
        return block_sums(self.spec, params, self.x, self.target, compiled)


def _check_batch_weights(weight: np.ndarray, order: np.ndarray | None, bs: int, epoch: int) -> None:
    """Every batch of the coming epoch must have sample weights that do not sum to zero (checked on the host,
    before the epoch runs, so the model stays as it was)."""
    w = weight if order is None else weight[order]
    check.batch_weights(
        np.add.reduceat(w, np.arange(0, len(w), bs)),
        lambda b: (
            f"sample_weight sums to 0 over batch {b + 1} of epoch {epoch + 1} (rows {b * bs} to "
            f"{min((b + 1) * bs, len(w)) - 1} of its order): every batch needs some weight; use larger batches"
        ),
    )
