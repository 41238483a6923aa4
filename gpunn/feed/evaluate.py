"""Loss and correct counts of placed data, a block of rows at a time (validation, ``evaluate``)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .. import _backend, layers, losses
from ..data.moments import row_blocks
from .spec import Spec

EVAL_ROWS = 4096  # rows per forward pass when evaluating: bounds the activations held at once


def block_sums(spec: Spec, params: Any, x: Any, target: Any, compiled: bool = False) -> tuple[list[Any], list[Any]]:
    """Summed loss and correct count of every block of EVAL_ROWS rows (0-d arrays on the device), so that a large
    validation set never holds all its activations at once. ``compiled``: each block as one compiled program
    where the namespace has a compiler gpunn uses by default (JAX, where every eager operation would compile
    a program of its own for each new shape)."""
    xp, n = spec.xp, x.shape[0]
    jit = _backend.compiler(xp) if compiled else None
    one = functools.partial(_block, spec.sizes, spec.activation, spec.output, spec.loss, xp)
    if jit is not None:
        one = _compiled_block(spec.sizes, spec.activation, spec.output, spec.loss, xp, jit)
    zero = _backend.from_numpy(np.zeros((), dtype=spec.dtype), xp, spec.device)
    loss_sums, corrects = [], []
    for block in row_blocks(n, EVAL_ROWS):
        xb, tb = (x, target) if n <= EVAL_ROWS else (x[block, ...], target[block, ...])
        loss_sum, correct = one(params, xb, tb, zero)
        loss_sums.append(loss_sum)
        if correct is not None:
            corrects.append(correct)
    return loss_sums, corrects


def _block(sizes: Any, activation: Any, output: str, loss: str, xp: Any, params: Any, x: Any, target: Any,
           zero: Any) -> tuple[Any, Any]:  # fmt: skip
    z = layers.logits(layers.unflatten(params, sizes, xp), x, activation, xp)
    loss_sum, _, correct = losses.head(output, loss, z, target, zero, xp)
    return loss_sum, correct


@functools.lru_cache(maxsize=16)
def _compiled_block(sizes: Any, activation: Any, output: str, loss: str, xp: Any, jit: Any) -> Any:
    return jit(functools.partial(_block, sizes, activation, output, loss, xp))
