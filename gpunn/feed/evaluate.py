"""Loss and correct counts of placed data, a block of rows at a time (validation, ``evaluate``)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .. import _backend, layers, losses
from ..data.moments import row_blocks
from .sparse import Placed
from .spec import Spec

EVAL_ROWS = 4096  # rows per forward pass when evaluating: bounds the activations held at once


def block_sums(
    spec: Spec, params: Any, x: Any, target: Any, compiled: bool = False, rows: int | None = None
) -> tuple[list[Any], list[Any]]:
    """Summed loss and correct count of every block of EVAL_ROWS rows (0-d arrays on the device), so that a large
    validation set never holds all its activations at once. ``compiled``: each block as one compiled program
    where the namespace has a compiler gpunn uses by default (JAX, where every eager operation would compile
    a program of its own for each new shape); ``rows``: only the first ``rows`` rows of ``x`` and ``target``
    are data, the rest padding (then compiled, one program for every ``rows`` padded to the same size)."""
    xp, n = spec.xp, x.shape[0]
    jit = _backend.compiler(xp) if compiled else None
    one = functools.partial(_block, spec.sizes, spec.activation, spec.output, spec.loss, xp)
    if jit is not None:
        one = _compiled_block(spec.sizes, spec.activation, spec.output, spec.loss, xp, jit)
    zero = _backend.from_numpy(np.zeros((), dtype=spec.dtype), xp, spec.device)
    if rows is not None and jit is not None:
        masked = _compiled_masked(spec.sizes, spec.activation, spec.output, spec.loss, xp, jit, min(n, EVAL_ROWS))
        sums = [masked(params, x, target, start, float(min(EVAL_ROWS, rows - start)), zero)
                for start in range(0, rows, EVAL_ROWS)]  # fmt: skip
        return [s[0] for s in sums], [s[1] for s in sums if s[1] is not None]
    loss_sums, corrects = [], []
    for block in row_blocks(n, EVAL_ROWS):
        xb, tb = block_of(x, target, block)
        loss_sum, correct = one(params, xb, tb, zero)
        loss_sums.append(loss_sum)
        if correct is not None:
            corrects.append(correct)
    return loss_sums, corrects


def block_of(x: Any, target: Any, block: slice) -> tuple[Any, Any]:
    """The rows ``block`` of placed data and its targets: the arrays themselves when they hold no more than
    EVAL_ROWS rows, else slices; a sparse X's rows densified."""
    whole = x.shape[0] <= EVAL_ROWS
    tb = target if whole else target[block, ...]
    if isinstance(x, Placed):
        return x.rows(block), tb
    return (x if whole else x[block, ...]), tb


def _block(sizes: Any, activation: Any, output: str, loss: str, xp: Any, params: Any, x: Any, target: Any,
           zero: Any) -> tuple[Any, Any]:  # fmt: skip
    z = layers.logits(layers.unflatten(params, sizes, xp), x, activation, xp)
    loss_sum, _, correct = losses.head(output, loss, z, target, zero, xp)
    return loss_sum, correct


def _masked(sizes: Any, activation: Any, output: str, loss: str, xp: Any, size: int, params: Any, x: Any, target: Any,
            start: Any, valid: Any, zero: Any) -> tuple[Any, Any]:  # fmt: skip
    """:func:`_block` on the ``size`` rows of padded data from ``start``, the first ``valid`` of them counted."""
    if size != x.shape[0]:
        idx = xp.minimum(xp.arange(size) + start, x.shape[0] - 1)
        x, target = _backend.take_rows(x, idx, xp), _backend.take_rows(target, idx, xp)
    mask = xp.reshape(xp.astype(xp.arange(size) < valid, x.dtype), (-1, 1))
    z = layers.logits(layers.unflatten(params, sizes, xp), x, activation, xp)
    loss_sum, _, correct = losses.head(output, loss, z, target, zero, xp, mask=mask)
    return loss_sum, correct


@functools.lru_cache(maxsize=16)
def _compiled_masked(sizes: Any, activation: Any, output: str, loss: str, xp: Any, jit: Any, size: int) -> Any:
    return jit(functools.partial(_masked, sizes, activation, output, loss, xp, size))


@functools.lru_cache(maxsize=16)
def _compiled_block(sizes: Any, activation: Any, output: str, loss: str, xp: Any, jit: Any) -> Any:
    return jit(functools.partial(_block, sizes, activation, output, loss, xp))
