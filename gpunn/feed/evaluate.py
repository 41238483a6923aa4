"""Loss and correct counts of placed data, a block of rows at a time (validation, ``evaluate``)."""

from __future__ import annotations

from typing import Any

from .. import layers, losses
from ..data.moments import row_blocks
from .sparse import Placed
from .spec import Spec

EVAL_ROWS = 4096  # rows per forward pass when evaluating: bounds the activations held at once


def block_sums(spec: Spec, params: Any, x: Any, target: Any) -> tuple[list[Any], list[Any]]:
    """Summed loss and correct count of every block of EVAL_ROWS rows (0-d arrays on the device), so that a large
    validation set never holds all its activations at once."""
    xp, n = spec.xp, x.shape[0]
    weights = layers.unflatten(params, spec.sizes, xp)
    zero = xp.zeros((), dtype=x.dtype, device=spec.device)
    loss_sums, corrects = [], []
    for block in row_blocks(n, EVAL_ROWS):
        xb, tb = block_of(x, target, block)
        z = layers.logits(weights, xb, spec.activation, xp)
        loss_sum, _, correct = losses.head(spec.output, spec.loss, z, tb, zero, xp)
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
