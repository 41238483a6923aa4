"""The training step: one pure function from (parameters, optimizer state, batch) to their next values.

It composes the three modules below it and nothing else:

- :mod:`gpunn.layers`: the forward pass (dense layers, activations) and backpropagation into one flat buffer;
- :mod:`gpunn.losses`: the output activation fused with its loss, giving the batch's loss and dL/dz;
- :mod:`gpunn.optim`: the update of the flat parameter buffer.

Between the gradients and the update sit the L2 penalty and clipping by global norm. The hyper-parameters are
bound once, when the step is made (so a compiler treats them as constants); what changes from step to step is
only arrays. The step reads nothing back to the host and writes into no array it was given (NumPy's fast path
writes only into temporaries it made), so JAX can compile it and a caller can keep the old parameters.

Losses are summed over the batch inside the step and the 1/m of the mean is folded into the optimizer's step
size (see :func:`gpunn.losses.scales`): the step returns the batch's *summed* loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import _backend, dropout, layers, losses, optim


@dataclass(frozen=True)
class Hyper:
    """Everything a step needs besides arrays, as Python values."""

    sizes: tuple[int, ...]
    activation: str | tuple[str, ...]
    output: str
    loss: str
    optimizer: optim.Optimizer
    lr: float  # the rate when a call passes none (a schedule passes each epoch's)
    l2: float = 0.0
    clip_norm: float | None = None
    dropout: float = 0.0  # the fraction of every hidden layer's outputs dropped while training
    dropout_key: int = 0  # the key of the model's seed (see gpunn.dropout.seed_key)

    @property
    def loss_outputs(self) -> int:
        """Outputs a loss value is averaged over besides the rows (1 for softmax, whose loss is per row)."""
        return 1 if self.output == "softmax" else self.sizes[-1]


class Step:
    """A training step bound to its hyper-parameters, namespace and device; call it as a pure function.

    ``step(params, state, x, target, lr=None) -> (params, state, loss_sum, correct)``, where ``params`` is the flat
    parameter buffer, ``state`` the optimizer's, ``target`` the batch's targets as
    :func:`gpunn.losses.encode_targets` gives them, ``loss_sum`` the batch's summed loss (L2 penalty
    included) and ``correct`` the number of correct predictions (None for regression), both 0-d arrays.

    For data-parallel training the step is also available in its two halves, :meth:`gradients` and
    :meth:`apply`, with the allreduce of the gradients between them.
    """

    def __init__(self, hyper: Hyper, xp: Any, device: Any, dtype: str):
        self.hyper, self.xp, self.device = hyper, xp, device
        self.zero = xp.zeros((), dtype=_backend.float_dtype(xp, dtype), device=device)
        self.mask = layers.weight_mask(hyper.sizes, dtype, xp, device) if hyper.l2 else None
        self.donate = _backend.numpy_fast_path(xp)  # NumPy's gradients are fresh: the update may reuse them

    def __call__(self, params: Any, state: dict[str, Any], x: Any, target: Any, lr: Any = None, weight: Any = None):
        grads, loss_sum, correct = self.gradients(params, x, target, weight, state["step"])
        weight_total = None if weight is None else self.xp.sum(weight)
        params, state, loss_sum = self.apply(params, state, grads, loss_sum, x.shape[0], lr, weight_total)
        return params, state, loss_sum, correct

    def gradients(
        self, params: Any, x: Any, target: Any, weight: Any = None, counter: Any = 0, row_offset: Any = 0
    ) -> tuple[Any, Any, Any]:
        """``(grads, loss_sum, correct)``: forward, loss and backprop on one batch (or one rank's shard).

        With per-row sample weights ``weight`` (shape (rows, 1)), the gradients are those of the weighted sum
        of the rows' losses, ``loss_sum`` is the pair [summed loss, summed weighted loss] (History reports
        both), and ``correct`` stays unweighted.
        With dropout, ``counter`` (the optimizer's step count) and ``row_offset`` (the shard's first row in the
        global batch) pick the masks."""
        h, xp = self.hyper, self.xp
        layer_params = layers.unflatten(params, h.sizes, xp)
        masks = None
        if h.dropout:
            units = list(h.sizes[1:-1])
            masks = dropout.masks(
                h.dropout, h.dropout_key, counter, x.shape[0], units, x.dtype, xp, self.device, row_offset
            )
        z, inputs, backprops = layers.forward(layer_params, x, h.activation, xp, masks)
        loss_sum, delta, correct = losses.head(h.output, h.loss, z, target, self.zero, xp, weight)
        if weight is not None:
            delta = delta * weight
        return layers.backward(layer_params, inputs, backprops, delta, h.sizes, xp), loss_sum, correct

    def apply(
        self, params: Any, state: dict[str, Any], grads: Any, loss_sum: Any, rows: int, lr: Any = None,
        weight_total: Any = None,
    ):  # fmt: skip
        """``(params, state, loss_sum)`` after the L2 penalty, clipping and the update, for a batch of ``rows``;
        ``lr`` (this epoch's rate from a schedule: a Python float, or a 0-d array when compiled) defaults to
        ``hyper.lr``. With sample weights, ``weight_total`` (their sum over the batch, 0-d) turns the weighted
        sum into the weighted mean sum(w l) / sum(w)."""
        h, xp = self.hyper, self.xp
        _, grad_scale = losses.scales(h.output, h.loss, rows, h.sizes[-1])
        if h.l2:
            # The mean loss gains l2 / (2 m) * sum(W**2), as in scikit-learn, m being the batch's rows or, with
            # sample weights, its weight total: in the units of the summed loss and of ``grads``, that is the
            # penalty and the gradient below (whose factor does not depend on m).
            weights = params * self.mask
            grads = grads + (h.l2 / (rows * grad_scale)) * weights
            loss_sum = loss_sum + (0.5 * h.l2 * h.loss_outputs) * xp.sum(weights * weights)
        if weight_total is not None:
            grad_scale = (grad_scale * rows) / weight_total
        if h.clip_norm is not None:
            grads = clip_by_global_norm(grads, h.clip_norm, xp, scale=grad_scale)
        rate = h.lr if lr is None else lr
        params, state = h.optimizer.update(params, grads, state, rate, xp, scale=grad_scale, donate=self.donate)
        return params, state, loss_sum


def clip_by_global_norm(grads: Any, max_norm: float, xp: Any, scale: float = 1.0) -> Any:
    """``grads`` times min(1, max_norm / ||scale * grads||), the norm taken over every parameter together."""
    factor = (max_norm / scale) / (xp.sqrt(xp.sum(grads * grads)) + 1e-12 / scale)
    return grads * xp.where(factor < 1.0, factor, 1.0)


def hyper(model: Any, optimizer: optim.Optimizer, lr: float, l2: float, clip_norm: float | None) -> Hyper:
    """The :class:`Hyper` of a model trained with these settings."""
    activation = model.activation if isinstance(model.activation, str) else tuple(model.activation)
    key = dropout.seed_key(model.seed) if model.dropout else 0
    return Hyper(
        tuple(model.sizes), activation, model.output, model.loss, optimizer, lr, l2, clip_norm, model.dropout, key
    )
