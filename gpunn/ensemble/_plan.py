"""How each step's batch is laid out for K members (see :mod:`gpunn.ensemble._loop`), and what stays on the
device for a whole fit: X, the targets, the weights and, for members on their own rows, their masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _backend
from ..errors import InputError
from ..feed.sparse import Placed

if TYPE_CHECKING:
    from . import Ensemble


@dataclass(frozen=True)
class Run:
    """Consecutive steps of an epoch that a compiler runs as one loop: each step's batch is gathered from ``x``,
    ``t`` and ``w`` (as the fit holds them on the device) by the step's row of ``xs``, ``(idx, widx, mask, rows,
    active)`` stacked over the steps (None where absent; see :func:`gather`); ``active`` is the epoch's."""

    x: Any
    t: Any
    w: Any
    xs: tuple[Any, Any, Any, Any, Any]
    active: Any
    steps: int


def gather(x: Any, t: Any, w: Any, idx: Any, widx: Any, mask: Any, rows: Any, step_active: Any, active: Any,
           xp: Any) -> tuple:  # fmt: skip
    """A step's batch ``(x, t, weight, mask, rows, active)`` as the stacked step takes it, from its row indices:
    ``idx`` (rows,) shared by every member, or (K, rows) each member's own (``widx`` the same rows of the
    weights, where each member has its own, laid out (K * n, 1)); ``mask`` and ``rows`` those of members on their
    own rows; ``step_active`` (K, 1) which members take this step, else the epoch's ``active``. Pure, so a
    compiled loop gathers inside itself."""
    active = active if step_active is None else step_active
    if idx.ndim == 1:  # (with a mask (K, rows, 1): a padded step's, the same for every member)
        wb = None
        if w is not None:
            wb = _backend.take_rows(w, idx, xp) if w.ndim == 2 else xp.take(w, idx, axis=1)
            wb = wb if mask is None else wb * mask
        return _backend.take_rows(x, idx, xp), _backend.take_rows(t, idx, xp), wb, mask, rows, active
    k, r = idx.shape
    flat = xp.reshape(idx, (-1,))
    xb = None if x is None else xp.reshape(_backend.take_rows(x, flat, xp), (k, r, x.shape[1]))  # None: sparse
    tb = xp.reshape(_backend.take_rows(t, flat, xp), (k, r, t.shape[1]))
    wb = None
    if w is not None:
        source = flat if widx is None else xp.reshape(widx, (-1,))
        wb = xp.reshape(_backend.take_rows(w, source, xp), (k, r, 1))
        if mask is not None:
            wb = wb * mask
    return xb, tb, wb, mask, rows, active


class Plan:
    """How this fit lays out every step's batch (see the module's docstring), and what stays on the device for
    the whole fit: X, the targets, the weights and, for members on their own rows, their masks."""

    def __init__(self, ens: Ensemble, x: Any, t: Any, w_host: np.ndarray | None, rows: list[np.ndarray] | None,
                 batch_size: int | None, shuffle: bool, pad: bool = False):  # fmt: skip
        xp, device, k = ens.xp, ens.device, len(ens.members)
        self.xp, self.device, self.k, self.x, self.t, self.n = xp, device, k, x, t, x.shape[0]
        self.shuffle, self.rows = shuffle, rows
        self.dtype = ens.members[0].dtype
        n = self.n
        # Padded (a compiled step on a namespace whose eager operations compile, without ranks or a sparse X):
        # the data get rows of zeros up to a power of two (_backend.bucket), which count for nothing, and an
        # epoch's minibatches, the short last one masked, are one Run of as many steps as the padded rows make
        # (those past the last batch skipped): the programs depend on the bucket and the batch size, not on n.
        self.pad = pad and ens.compile is not False and _backend.compiles_eagerly(xp) and not isinstance(x, Placed)
        if self.pad:
            self.x, self.t = (_backend.pad_rows(a, _backend.bucket(n), xp, device) for a in (x, t))
        self.n_rows = [n] * k if rows is None else [len(r) for r in rows]
        self.bs = [nk if batch_size is None else min(batch_size, nk) for nk in self.n_rows]
        self.w_host = w_host  # (n,), (K, n) or None
        if w_host is None:
            self.weight_totals = None
        else:
            per = np.broadcast_to(w_host, (k, n))
            self.weight_totals = [float(np.sum(per[i] if rows is None else per[i][rows[i]])) for i in range(k)]
        dropout = any(m.dropout for m in ens.members)
        if rows is None:
            self.mode = "full" if self.bs[0] == n else ("gather" if shuffle else "slices")
        else:
            self.mode = "counts" if batch_size is None and not dropout else "padded"
        # the rows the device holds (n, or padded); the weights there: (rows, 1) shared, (K, rows, 1) per member,
        # or (K * rows, 1) to gather; padding rows weigh 0
        held = self.x.shape[0]
        w_held = None if w_host is None else np.zeros((*w_host.shape[:-1], held))
        if w_held is not None:
            w_held[..., :n] = w_host
        self.w_dev = None
        self.mask = self.rows_dev = None
        if self.mode == "counts":
            counts = np.zeros((k, held))
            for i, r in enumerate(rows or []):
                np.add.at(counts[i], r, 1.0)
            self.mask = self.up(counts.reshape(k, held, 1))
            self.rows_dev = self.up(np.asarray(self.n_rows, dtype=np.float64).reshape(k, 1))
            if w_held is not None:
                self.w_dev = self.up((counts * w_held).reshape(k, held, 1))
        elif self.mode == "full" and self.pad:  # every member on the real rows, the padding masked out
            self.mask = self.up((np.arange(held) < n).astype(np.float64).reshape(held, 1))
            self.rows_dev = self.up(np.asarray(float(n)))
        if self.mode != "counts" and w_held is not None:
            if w_held.ndim == 1:
                self.w_dev = self.up(w_held.reshape(held, 1))
            elif self.mode in ("gather", "padded"):
                self.w_dev = self.up(w_held.reshape(k * held, 1))
            else:
                self.w_dev = self.up(w_held.reshape(k, held, 1))

    def up(self, a: np.ndarray, dtype: Any = None) -> Any:
        return _backend.from_numpy(a.astype(dtype or self.dtype), self.xp, self.device)

    def steps(self) -> int:
        """Steps of the coming epoch: the most any member takes."""
        return max(-(-nk // b) for nk, b in zip(self.n_rows, self.bs))

    def epoch(self, members: list[Any], active: list[bool], active_dev: Any, loops: bool = False
              ) -> tuple[list[Any], np.ndarray]:  # fmt: skip
        """The coming epoch's batches (each ``(x, t, weight, mask, rows, active)``, as the stacked step takes
        them, or with ``loops`` (a compiler that loops) a :class:`Run` for consecutive steps of one shape) and
        which member takes part in which step, (steps, K) bool. Draws the active members' shuffling orders from
        their generators, as ``MLP.fit`` would."""
        k, n = self.k, self.n
        loops = loops and not isinstance(self.x, Placed)  # a sparse X's rows are densified on the host, per step
        if self.mode in ("full", "counts"):
            x = self.x.later() if isinstance(self.x, Placed) else self.x
            batch = (x, self.t, self.w_dev, self.mask, self.rows_dev, active_dev)
            return [batch], np.array([active])
        if self.pad and self.mode == "slices":
            for i in range(k):
                if active[i]:
                    self._check_weights(i, np.arange(n), members[i].epoch)
            return self._bucketed([np.arange(n)] * k, active, shared=True)
        if self.mode == "slices":
            bs = self.bs[0]
            for i in range(k):
                if active[i]:
                    self._check_weights(i, np.arange(n), members[i].epoch)
            batches: list[Any] = []
            full = n // bs
            if loops and full > 1:  # the full batches as one loop, gathered by index inside it
                idx = self.up(np.arange(full * bs).reshape(full, bs), np.int64)
                batches.append(Run(self.x, self.t, self.w_dev, (idx, None, None, None, None), active_dev, full))
            for lo in range(full * bs if batches else 0, n, bs):
                hi = min(lo + bs, n)
                w = self.w_dev
                if w is not None:
                    w = w[lo:hi, ...] if w.ndim == 2 else w[:, lo:hi, :]
                x = self.x.later(slice(lo, hi)) if isinstance(self.x, Placed) else self.x[lo:hi, ...]
                batches.append((x, self.t[lo:hi, ...], w, None, None, active_dev))
            return batches, np.array([active] * self.steps())
        orders = []
        for i in range(k):
            local = np.arange(self.n_rows[i])
            if active[i] and self.shuffle and self.bs[i] < self.n_rows[i]:
                local = members[i].rng.permutation(self.n_rows[i])
            if active[i]:
                self._check_weights(i, local, members[i].epoch)
            orders.append(local if self.rows is None else self.rows[i][local])
        if self.pad:
            return self._bucketed(orders, active)
        if self.mode == "gather":
            return self._gathered(np.stack(orders), active_dev, loops), np.array([active] * self.steps())
        return self._padded(orders, active, loops)

    def _check_weights(self, i: int, local: np.ndarray, epoch: int) -> None:
        """As MLP.fit: every batch of member i's coming epoch needs weights that do not sum to zero."""
        if self.w_host is None:
            return
        w = self.w_host if self.w_host.ndim == 1 else self.w_host[i]
        w = w[local] if self.rows is None else w[self.rows[i]][local]
        bs = self.bs[i]
        totals = np.add.reduceat(w, np.arange(0, len(w), bs))
        if (totals <= 0).any():
            b = int(np.flatnonzero(totals <= 0)[0])
            raise InputError(
                f"member {i}: sample_weight sums to 0 over batch {b + 1} of epoch {epoch + 1} (rows {b * bs} to "
                f"{min((b + 1) * bs, len(w)) - 1} of its order): every batch needs some weight; use larger batches"
            )

    def _gathered(self, orders: np.ndarray, active_dev: Any, loops: bool) -> list[Any]:
        """Every member's rows in its own order, the same number per step: gathers of (K, rows, ...)."""
        k, n, bs = self.k, self.n, self.bs[0]
        own_weights = self.w_dev is not None and self.w_host is not None and self.w_host.ndim == 2
        full = n // bs
        batches: list[Any] = []
        if loops and full > 1:  # the full batches as one loop: (steps, K, rows) indices, gathered inside it
            per_step = orders[:, : full * bs].reshape(k, full, bs).transpose(1, 0, 2)
            idx = self.up(np.ascontiguousarray(per_step), np.int64)
            widx = self.up(per_step + (np.arange(k) * n)[None, :, None], np.int64) if own_weights else None
            batches.append(Run(self.x, self.t, self.w_dev, (idx, widx, None, None, None), active_dev, full))
            if full * bs == n:
                return batches
            orders = orders[:, full * bs :]
        order = self.up(orders, np.int64)
        worder = None
        if own_weights:
            worder = self.up(orders + (np.arange(k) * n)[:, None], np.int64)
        for lo in range(0, orders.shape[1], bs):
            hi = min(lo + bs, n)
            batches.append(self._gather(order[:, lo:hi], None if worder is None else worder[:, lo:hi], None, None,
                                        active_dev, orders[:, lo:hi]))  # fmt: skip
        return batches

    def _gather(self, idx: Any, widx: Any, mask: Any, rows: Any, active: Any, host_idx: np.ndarray) -> tuple:
        if isinstance(self.x, Placed):  # a sparse X: these rows densified when the step takes them
            k, r = idx.shape
            dense = self.x.later(host_idx.reshape(-1), (k, r, self.x.shape[1]))
            return (dense, *gather(None, self.t, self.w_dev, idx, widx, mask, rows, active, None, self.xp)[1:])
        return gather(self.x, self.t, self.w_dev, idx, widx, mask, rows, active, None, self.xp)

    def _laid_out(self, orders: list[np.ndarray], active: list[bool], steps: int, width: int):
        """Each active member's batches in its order, (steps, K, width) slots: the rows' indices, a mask of the
        slots that hold a row, whether the member takes the step, and each step's row count (1 where it sits out)."""
        k = self.k
        idx = np.zeros((steps, k, width), dtype=np.int64)
        mask = np.zeros((steps, k, width, 1))
        took = np.zeros((steps, k), dtype=bool)
        rows = np.ones((steps, k, 1))
        for i in range(k):
            if not active[i]:
                continue
            bs = self.bs[i]
            for s, lo in enumerate(range(0, self.n_rows[i], bs)):
                part = orders[i][lo : lo + bs]
                idx[s, i, : len(part)] = part
                mask[s, i, : len(part)] = 1.0
                rows[s, i, 0] = len(part)
                took[s, i] = True
        return idx, mask, took, rows

    def _padded(self, orders: list[np.ndarray], active: list[bool], loops: bool) -> tuple[list[Any], np.ndarray]:
        """Members on their own rows: each step's batches padded to the widest, with masks; a member whose
        epoch has fewer steps sits the rest out."""
        k, n = self.k, self.n
        steps = self.steps()
        width = max(self.bs)
        idx, mask, took, rows = self._laid_out(orders, active, steps, width)
        widx = idx + (np.arange(k) * n)[None, :, None] if self.w_host is not None and self.w_host.ndim == 2 else None
        idx_dev, mask_dev, rows_dev = self.up(idx, np.int64), self.up(mask), self.up(rows)
        widx_dev = None if widx is None else self.up(widx, np.int64)
        if loops and steps > 1:  # (which members sit out given as an array always: the members' row counts
            # are values, and a None here would be another program)
            took_dev = self.up(took.reshape(steps, k, 1), bool)
            return [Run(self.x, self.t, self.w_dev, (idx_dev, widx_dev, mask_dev, rows_dev, took_dev), None, steps)
                    ], took  # fmt: skip
        active_dev = self.up(took.reshape(steps, k, 1), bool) if not took.all() else None
        batches = []
        for s in range(steps):  # (masked even where no member pads, so that every step counts in floats)
            batches.append(self._gather(
                idx_dev[s, ...], None if widx_dev is None else widx_dev[s, ...], mask_dev[s, ...], rows_dev[s, ...],
                None if active_dev is None else active_dev[s, ...], idx[s],
            ))  # fmt: skip
        return batches, took

    def _bucketed(self, orders: list[np.ndarray], active: list[bool], shared: bool = False
                  ) -> tuple[list[Any], np.ndarray]:  # fmt: skip
        """A padded plan's minibatch epoch as one :class:`Run`: each active member's batches in its order, the
        short last one masked, over as many steps as the padded rows make at the widest batch (a member whose
        epoch has fewer steps, and every member past the last batch, sits those steps out), so that the Run's
        shapes depend on the bucket and the batch size only. ``shared``: every member on the same rows in the
        same order (minibatches in order), gathered once for all."""
        k, held = self.k, self.x.shape[0]
        width = min(max(self.bs), held)
        steps = -(-held // width)
        idx, mask, took, rows = self._laid_out(orders, active, steps, width)
        if shared:  # the same rows for every member: each step's first active member's
            idx = idx[:, int(np.argmax(active)), :]
        own_weights = self.w_host is not None and self.w_host.ndim == 2
        widx = None
        if own_weights and not shared:
            widx = self.up(idx + (np.arange(k) * held)[None, :, None], np.int64)
        xs = (self.up(idx, np.int64), widx, self.up(mask), self.up(rows), self.up(took.reshape(steps, k, 1), bool))
        return [Run(self.x, self.t, self.w_dev, xs, None, steps)], took
