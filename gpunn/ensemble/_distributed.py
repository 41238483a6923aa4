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
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .. import _backend, dropout, layers, losses
from ..step import StackedHyper, StackedStep, clip_by_global_norm


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


class ShardRunner:
    """Runs the stacked step on this rank's shard of each global batch, the members' gradients summed over the
    ranks in one allreduce (eager: the split step is not compiled)."""

    def __init__(self, hyper: StackedHyper, xp: Any, device: Any, dtype: str, comm: Any):
        self.step = StackedStep(hyper, xp, device, dtype)
        self.xp, self.device, self.comm, self.hyper = xp, device, comm, hyper
        self.compiled = False
        self.dtype = self.step.zero.dtype

    def rate(self, lrs: list[float]) -> Any:
        from ..step import member_values

        return member_values(tuple(lrs), self.xp, self.device, self.dtype)

    def __call__(self, params: Any, state: Any, batch: tuple, lr: Any):
        x, t, weight, mask, rows, active = batch
        xp, h, step = self.xp, self.hyper, self.step
        width = x.shape[-2]  # the global batch's rows (padded to the longest member's, with a mask)
        m = width if rows is None else rows  # (K, 1) with a mask: each member's rows
        total = None
        if weight is not None:  # the global batch's weight totals, (K, 1) or one for every member
            total = xp.reshape(xp.sum(weight, axis=(1, 2)), (-1, 1)) if weight.ndim == 3 else xp.sum(weight)
        lo, hi = self.comm.shard(0, width)

        def part(a: Any) -> Any:
            if a is None:
                return None
            return a[lo:hi, ...] if a.ndim == 2 else a[:, lo:hi, :]

        layer_params = layers.unflatten_stacked(params, h.sizes, xp)
        if hi > lo:
            masks = None
            if step.drop is not None:  # this rank's rows of every member's global mask table
                counter = state["step"]
                if not isinstance(counter, int):
                    counter = xp.reshape(counter, (-1, 1, 1))
                units = list(h.sizes[1:-1])
                masks = dropout.masks_stacked(*step.drop, counter, hi - lo, units, x.dtype, xp, self.device, lo)
            z, inputs, backprops = layers.forward_stacked(layer_params, part(x), h.activation, xp, masks)
            mine = part(mask)
            loss_sum, delta, correct = losses.head(
                h.output, h.loss, z, part(t), step.zero, xp, part(weight), True, mine
            )  # fmt: skip
            if weight is not None:
                delta = delta * part(weight)
            elif mine is not None:
                delta = delta * mine
            grads = layers.backward_stacked(layer_params, inputs, backprops, delta, xp)
        else:  # more ranks than rows in this batch: this rank adds nothing
            k = params.shape[0]
            grads = xp.zeros_like(params)
            loss_sum = xp.zeros((k, 2) if weight is not None else (k,), dtype=self.dtype, device=self.device)
            correct = None
            if h.output != "identity":  # a masked batch counts in floats
                kind = self.dtype if mask is not None else _backend.index_dtype(xp, self.device)
                correct = xp.zeros((k,), dtype=kind, device=self.device)
        grads = self.comm.allreduce_sum(xp.reshape(grads, (-1,)), xp, self.device)
        grads = xp.reshape(grads, params.shape)
        # from here on, StackedStep.__call__ with the global batch's rows and weight totals
        _, grad_scale = losses.scales(h.output, h.loss, m, h.sizes[-1])
        if step.l2 is not None:
            weights = params * step.mask
            grads = grads + (step.l2 / (m * grad_scale)) * weights
            if self.comm.rank == 0:  # the penalty counts once in the epoch's summed loss
                penalty = (0.5 * step.l2 * h.loss_outputs) * xp.sum(weights * weights, axis=1, keepdims=True)
                loss_sum = loss_sum + (penalty if weight is not None else penalty[:, 0])
        if total is not None:
            grad_scale = (grad_scale * m) / total
        if h.clip_norm is not None:
            grads = clip_by_global_norm(grads, h.clip_norm, xp, scale=grad_scale, members=True)
        old = params
        if step.decay is not None:
            params = (1.0 - lr * step.decay) * params
        new, new_state = step.optimizer.update(params, grads, state, lr, xp, scale=grad_scale, donate=False)
        if active is not None:
            new = xp.where(active, new, old)
            new_state = {k: v if k == "step" else xp.where(active, v, state[k]) for k, v in new_state.items()}
            new_state["step"] = state["step"] + xp.astype(active, xp.int32)
        return new, new_state, loss_sum, correct
