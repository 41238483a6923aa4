"""``Ensemble.fit(comm=)``: the stacked step data-parallel over MPI ranks, as :class:`gpunn.train.Runner` runs a
lone MLP's.

Every rank holds all the rows and lays out each step's global batch as one process would (the same shuffling
orders, drawn from the members' own generators, and for members on their own rows the same padding masks); it
then takes its shard of the batch's rows (for gathered or padded batches, the same columns lo:hi of every
member's rows, the padding mask and the weights sharded alike), computes the members' summed gradients there,
and one allreduce of the (K, P) buffer per step gives every rank the global batch's sums. With dropout, each
rank draws its rows' part of every member's global mask table (:func:`gpunn.dropout.masks_stacked` with the
shard's ``row_offset``), as a lone MLP's ranks do. The update follows with the global batch's rows (per member,
for members on their own rows) and weight totals, so that two ranks give the weights of one process, up to
float summation order. The L2 penalty, added once after the allreduce, counts in rank 0's recorded loss only.
With ``compile``, the shard's gradients and the update are each compiled, and the allreduce runs between them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .. import _backend, losses
from ..step import StackedStep, weight_totals


def rows_digest(rows: Any) -> str | None:
    """A digest of the members' rows (``rows=``), for :meth:`Communicator.check_agreement`."""
    if rows is None:
        return None
    h = hashlib.sha256()
    for r in rows:
        h.update(np.ascontiguousarray(r, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()[:16]


def generators(members: list[Any]) -> str:
    """A digest of every member's shuffling generator, for :meth:`Communicator.check_agreement`."""
    states = repr([m.rng.bit_generator.state for m in members]).encode()
    return hashlib.sha256(states).hexdigest()[:16]


def shard_step(step: StackedStep, forms: tuple[Any, Any], comm: Any, params: Any, state: Any, batch: tuple,
               lr: Any, values: Any = None) -> tuple[Any, Any, Any, Any]:  # fmt: skip
    """The stacked step on this rank's shard of the global batch: ``forms`` are the step's ``gradients`` and
    ``apply`` (compiled or not), the members' gradients summed over the ranks in one allreduce between them."""
    x, t, weight, mask, rows, active = batch
    gradients, apply = forms
    xp, device = step.xp, step.device
    width = x.shape[-2]  # the global batch's rows (padded to the longest member's, with a mask)
    lo, hi = comm.shard(0, width)

    def part(a: Any) -> Any:
        if a is None:
            return None
        return a[lo:hi, ...] if a.ndim == 2 else a[:, lo:hi, :]

    if hi > lo:
        grads, loss_sum, correct = gradients(params, state, part(x), part(t), part(weight), part(mask), lo, values)
    else:  # more ranks than rows in this batch: this rank adds nothing
        k = params.shape[0]
        grads = xp.zeros_like(params)
        loss_sum = xp.zeros((k, 2) if weight is not None else (k,), dtype=step.zero.dtype, device=device)
        correct = None
        if step.hyper.output not in losses.REGRESSION:  # a masked batch counts in floats
            kind = step.zero.dtype if mask is not None else _backend.index_dtype(xp, device)
            correct = xp.zeros((k,), dtype=kind, device=device)
    grads = xp.reshape(comm.allreduce_sum(xp.reshape(grads, (-1,)), xp, device), params.shape)
    # the update with the global batch's rows and weight totals; the L2 penalty counts once, on rank 0
    m = width if rows is None else rows
    params, state, penalized = apply(params, state, grads, loss_sum, m, lr, weight_totals(weight, xp), active, values)
    return params, state, penalized if comm.rank == 0 else loss_sum, correct
