"""The training step: one pure function from (parameters, optimizer state, batch) to their next values.

It composes the three modules below it and nothing else:

- :mod:`gpunn.layers`: the forward pass (dense layers, activations) and backpropagation into one flat buffer;
- :mod:`gpunn.losses`: the output activation fused with its loss, giving the batch's loss and dL/dz;
- :mod:`gpunn.optim`: the update of the flat parameter buffer.

Between the gradients and the update sit the L2 penalty and clipping by global norm. The step's structure (which
of them are on, the optimizer's kind) is bound when the step is made; their numbers (:meth:`Hyper.values`) come
as Python floats eagerly, where a float costs no array operation, and as 0-d arrays to a compiled step, so that a
new learning rate or penalty compiles nothing (:func:`structure` is what a compiled program depends on). The
step reads nothing back to the host and writes into no array it was given (NumPy's fast path writes only into
temporaries it made), so JAX can compile it and a caller can keep the old parameters.

Losses are summed over the batch inside the step and the 1/m of the mean is folded into the optimizer's step
size (see :func:`gpunn.losses.scales`): the step returns the batch's *summed* loss.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

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
    label_smoothing: float = 0.0  # the targets come smoothed (gpunn.losses.smooth_targets); only "is it on" is used
    # The fields whose numbers a compiled step takes as arguments (see structure): values, and switches (0: off)
    VALUES: ClassVar[tuple[str, ...]] = ("lr", "clip_norm")
    SWITCHES: ClassVar[tuple[str, ...]] = ("l2", "dropout")
    KEYS: ClassVar[tuple[str, ...]] = ("dropout_key",)

    @property
    def loss_outputs(self) -> int:
        """Outputs a loss value is averaged over besides the rows (1 for softmax, whose loss is per row)."""
        return 1 if self.output == "softmax" else self.sizes[-1]

    def values(self) -> dict[str, Any]:
        """The numbers the step takes besides its structure, by name: what a compiled step takes as 0-d arrays
        (the learning rate comes apart, as each epoch's). Integers (the dropout threshold and key) stay ints."""
        out: dict[str, Any] = self.optimizer.values()
        if self.l2:
            out["l2"] = float(self.l2)
        if self.clip_norm is not None:
            out["clip_norm"] = float(self.clip_norm)
        if self.dropout:
            out.update(dropout.values(self.dropout, self.dropout_key))
        return out


# What a value of a compiled step's Hyper is replaced with: NaN, so that a value read from it instead of from the
# step's arguments shows as a non-finite loss. One object, which equals itself in the cache's keys.
UNSET = float("nan")


def structure(h: Any) -> Any:
    """``h`` (a :class:`Hyper` or a :class:`StackedHyper`: one network is the one-member case) with every number
    that its step takes as an argument replaced by :data:`UNSET`, keeping only which features are on: what a
    compiled step's program depends on (which features are on, the optimizer's kind), so that it is compiled
    once per structure. ``VALUES`` are unset wherever present (None: the feature off), ``SWITCHES`` where on
    (for every member where any member has it on: which member has it on is a value too) and stay 0 where off;
    the dropout ``KEYS`` become 0, and label smoothing only says whether it is on."""

    def unset(value: Any, switch: bool) -> Any:
        if isinstance(value, tuple):
            return (unset(any(value), switch),) * len(value)
        return None if value is None else UNSET if value or not switch else 0.0

    changes = {name: unset(getattr(h, name), False) for name in h.VALUES}
    changes |= {name: unset(getattr(h, name), True) for name in h.SWITCHES}
    changes |= {name: 0 if isinstance(getattr(h, name), int) else (0,) * len(getattr(h, name)) for name in h.KEYS}
    return replace(h, optimizer=h.optimizer.structure(), label_smoothing=1.0 if h.label_smoothing else 0.0,
                   **changes)  # fmt: skip


def is_structure(h: Any) -> bool:
    """True for a :func:`structure` with a number unset: its step's numbers can only come as arguments."""

    def unset(value: Any) -> bool:
        return any(v is UNSET for v in value) if isinstance(value, tuple) else value is UNSET

    return any(unset(getattr(h, name)) for name in (*h.VALUES, *h.SWITCHES))


class Step:
    """A training step bound to its hyper-parameters, namespace and device; call it as a pure function.

    ``step(params, state, x, target, lr=None, weight=None, values=None) -> (params, state, loss_sum, correct)``,
    where ``params`` is the flat
    parameter buffer, ``state`` the optimizer's, ``target`` the batch's targets as
    :func:`gpunn.losses.encode_targets` gives them, ``loss_sum`` the batch's summed loss (L2 penalty
    included) and ``correct`` the number of correct predictions (None for regression), both 0-d arrays.

    For data-parallel training the step is also available in its two halves, :meth:`gradients` and
    :meth:`apply`, with the allreduce of the gradients between them. ``values`` are the numbers of
    :meth:`Hyper.values` (0-d arrays for a compiled step), by default the step's own hyper-parameters'.
    """

    def __init__(self, hyper: Hyper, xp: Any, device: Any, dtype: str):
        self.hyper, self.xp, self.device = hyper, xp, device
        self.zero = _backend.from_numpy(np.zeros((), dtype=dtype), xp, device)  # moved: no program compiled
        self.mask = layers.weight_mask(hyper.sizes, dtype, xp, device) if hyper.l2 else None
        self.segment_mask = layers.weight_mask(hyper.sizes, dtype, xp, device, segmented=True)
        self.donate = _backend.numpy_fast_path(xp)  # NumPy's gradients are fresh: the update may reuse them
        # A compiled step's numbers come as arguments (its Hyper is a structure): none of its own to fall back on.
        self.values = {} if hyper.lr is UNSET else hyper.values()

    def __call__(
        self, params: Any, state: dict[str, Any], x: Any, target: Any, lr: Any = None, weight: Any = None,
        values: Any = None,
    ):  # fmt: skip
        grads, loss_sum, correct = self.gradients(params, x, target, weight, state["step"], values=values)
        weight_total = None if weight is None else self.xp.sum(weight)
        params, state, loss_sum = self.apply(params, state, grads, loss_sum, x.shape[0], lr, weight_total, values)
        return params, state, loss_sum, correct

    def rows(
        self, params: Any, state: dict[str, Any], x: Any, target: Any, order: Any, start: Any, size: int,
        lr: Any = None, weight: Any = None, values: Any = None, valid: Any = None,
    ):  # fmt: skip
        """The step on the rows ``order[start : start + size]`` of ``x``, ``target`` and ``weight``, gathered
        inside the step: compiled, with ``start`` traced and ``size`` static, one call makes the batch and trains
        on it, with no separate slice or gather launched and no batch copied out between calls. With ``valid``
        (traced), only the first ``valid`` of the ``size`` rows count (:meth:`masked`): a shorter last batch
        then runs in the same program; positions past the order's end read its last row."""
        xp = self.xp
        position = xp.arange(size, dtype=order.dtype, device=self.device) + start
        if valid is not None:
            position = xp.minimum(position, order.shape[0] - 1)
        idx = xp.take(order, position)
        x, target = _backend.take_rows(x, idx, xp), _backend.take_rows(target, idx, xp)
        weight = None if weight is None else _backend.take_rows(weight, idx, xp)
        if valid is not None:
            return self.masked(params, state, x, target, valid, lr, weight, values)
        return self(params, state, x, target, lr, weight, values)

    def masked(
        self, params: Any, state: dict[str, Any], x: Any, target: Any, rows: Any, lr: Any = None, weight: Any = None,
        values: Any = None,
    ):  # fmt: skip
        """The step on the first ``rows`` rows of ``x`` (a 0-d array of the parameters' dtype when compiled); the
        rest are padding, which adds nothing to the loss, the count or the gradients: what the step gives on the
        first ``rows`` rows alone, to float rounding, from a program compiled once for every ``rows`` that fits
        (dropout's masks too: a row's mask does not depend on how many rows follow it)."""
        xp = self.xp
        mask = xp.reshape(xp.astype(xp.arange(x.shape[0], device=self.device) < rows, x.dtype), (-1, 1))
        weight = None if weight is None else weight * mask
        grads, loss_sum, correct = self.gradients(params, x, target, weight, state["step"], values=values, mask=mask)
        weight_total = None if weight is None else xp.sum(weight)
        params, state, loss_sum = self.apply(params, state, grads, loss_sum, rows, lr, weight_total, values)
        return params, state, loss_sum, correct

    def gradients(
        self, params: Any, x: Any, target: Any, weight: Any = None, counter: Any = 0, row_offset: Any = 0,
        values: Any = None, mask: Any = None,
    ) -> tuple[Any, Any, Any]:  # fmt: skip
        """``(grads, loss_sum, correct)``: forward, loss and backprop on one batch (or one rank's shard).

        With per-row sample weights ``weight`` (shape (rows, 1)), the gradients are those of the weighted sum
        of the rows' losses, ``loss_sum`` is the pair [summed loss, summed weighted loss] (History reports
        both), and ``correct`` stays unweighted.
        With dropout, ``counter`` (the optimizer's step count) and ``row_offset`` (the shard's first row in the
        global batch) pick the masks. ``mask`` (rows, 1), 0 at padding rows, leaves them out (:meth:`masked`)."""
        h, xp = self.hyper, self.xp
        layer_params = layers.unflatten(params, h.sizes, xp)
        masks = None
        if h.dropout:
            units = list(h.sizes[1:-1])
            v = self.values if values is None else values
            masks = dropout.masks_of(v, counter, x.shape[0], units, x.dtype, xp, self.device, row_offset)
        z, inputs, backprops = layers.forward(layer_params, x, h.activation, xp, masks)
        smoothed = h.label_smoothing > 0
        loss_sum, delta, correct = losses.head(h.output, h.loss, z, target, self.zero, xp, weight, mask=mask,
                                               smoothed=smoothed, fast=self.donate)  # fmt: skip
        if weight is not None:
            delta = delta * weight
        elif mask is not None:
            delta = delta * mask
        grads = layers.backward(layer_params, inputs, backprops, delta, h.sizes, xp, isinstance(params, tuple))
        return grads, loss_sum, correct

    def apply(
        self, params: Any, state: dict[str, Any], grads: Any, loss_sum: Any, rows: int, lr: Any = None,
        weight_total: Any = None, values: Any = None,
    ):  # fmt: skip
        """``(params, state, loss_sum)`` after the L2 penalty, clipping and the update, for a batch of ``rows``;
        ``lr`` (this epoch's rate from a schedule: a Python float, or a 0-d array when compiled) defaults to
        ``hyper.lr``. With sample weights, ``weight_total`` (their sum over the batch, 0-d) turns the weighted
        sum into the weighted mean sum(w l) / sum(w)."""
        h, xp = self.hyper, self.xp
        v = self.values if values is None else values
        _, grad_scale = losses.scales(h.output, h.loss, rows, h.sizes[-1])
        if h.l2:
            # The mean loss gains l2 / (2 m) * sum(W**2), as in scikit-learn, m being the batch's rows or, with
            # sample weights, its weight total: in the units of the summed loss and of ``grads``, that is the
            # penalty and the gradient below (whose factor does not depend on m).
            mask = self.segment_mask if isinstance(params, tuple) else self.mask
            weights = layers.each(lambda p, m: p * m, params, mask)
            decay = v["l2"] / (rows * grad_scale)
            grads = layers.each(lambda g, w: g + decay * w, grads, weights)
            loss_sum = loss_sum + (0.5 * v["l2"] * h.loss_outputs) * layers.total(lambda w: xp.sum(w * w), weights)
        if weight_total is not None:
            grad_scale = (grad_scale * rows) / weight_total
        if h.clip_norm is not None:
            grads = clip_by_global_norm(grads, v["clip_norm"], xp, scale=grad_scale)
        rate = h.lr if lr is None else lr
        params, state = h.optimizer.update(params, grads, state, rate, xp, grad_scale, self.donate, v)
        return params, state, loss_sum


def clip_by_global_norm(grads: Any, max_norm: float, xp: Any, scale: Any = 1.0, members: bool = False) -> Any:
    """``grads`` (a flat buffer or its segments) times min(1, max_norm / ||scale * grads||), the norm taken over
    every parameter together (over each row of a stacked (K, P) buffer with ``members``, ``scale`` then a float
    or (K, 1))."""
    if members:
        norm = xp.sqrt(xp.sum(grads * grads, axis=1, keepdims=True))
    else:
        norm = xp.sqrt(layers.total(lambda g: xp.sum(g * g), grads))
    factor = (max_norm / scale) / (norm + 1e-12 / scale)
    factor = xp.where(factor < 1.0, factor, 1.0)
    return layers.each(lambda g: g * factor, grads)


def hyper(
    sizes: Any, activation: Any, output: str, loss: str, optimizer: optim.Optimizer, lr: float, l2: float,
    clip_norm: float | None, dropout_rate: float = 0.0, seed: int = 0, label_smoothing: float = 0.0,
) -> Hyper:  # fmt: skip
    """The :class:`Hyper` of a network (its widths, activations, output, loss, dropout rate, seed and label
    smoothing) trained with these settings."""
    activation = activation if isinstance(activation, str) else tuple(activation)
    key = dropout.seed_key(seed) if dropout_rate else 0
    return Hyper(tuple(sizes), activation, output, loss, optimizer, lr, l2, clip_norm, dropout_rate, key,
                 label_smoothing)  # fmt: skip


# ------------------------------------------------------------------------------------ K networks in one step
@dataclass(frozen=True)
class StackedHyper:
    """A :class:`Hyper` for K networks of the same widths trained together; the per-member settings are tuples of
    K values (the members' lone :class:`Hyper` would hold one each)."""

    sizes: tuple[int, ...]
    activation: str | tuple[str, ...]
    output: str
    loss: str
    optimizer: optim.Optimizer  # AdamW's weight decay is taken out into ``weight_decay``
    members: int
    l2: tuple[float, ...]
    clip_norm: float | None
    dropout: tuple[float, ...]
    dropout_keys: tuple[int, ...]
    weight_decay: tuple[float, ...] | None = None  # AdamW's decoupled decay per member
    label_smoothing: float = 0.0  # as in Hyper: the members' targets come smoothed
    VALUES: ClassVar[tuple[str, ...]] = ("clip_norm", "weight_decay")  # as in Hyper
    SWITCHES: ClassVar[tuple[str, ...]] = ("l2", "dropout")
    KEYS: ClassVar[tuple[str, ...]] = ("dropout_keys",)

    @property
    def loss_outputs(self) -> int:
        return 1 if self.output == "softmax" else self.sizes[-1]

    def values(self) -> dict[str, Any]:
        """:meth:`Hyper.values` of the K members side by side, by the same names: a tuple of K numbers, one per
        member, for every feature any member has on (l2, AdamW's ``weight_decay``, dropout's numbers by
        :func:`gpunn.dropout.values`); the optimizer's numbers and the clip norm, which the members share, one
        each."""
        out: dict[str, Any] = self.optimizer.values()
        if any(self.l2):
            out["l2"] = tuple(float(v) for v in self.l2)
        if self.weight_decay is not None:
            out["weight_decay"] = tuple(float(v) for v in self.weight_decay)
        if self.clip_norm is not None:
            out["clip_norm"] = float(self.clip_norm)
        if any(self.dropout):
            lone = [dropout.values(r, key) for r, key in zip(self.dropout, self.dropout_keys)]
            out.update({name: tuple(v[name] for v in lone) for name in lone[0]})
        return out

    def structure(self) -> StackedHyper:
        """:func:`structure`: what a compiled stacked step's program depends on. Its values
        (:meth:`StackedStep.values`) enter as arrays, so that a new rate, penalty, decay, clip norm, dropout rate
        or seed compiles nothing."""
        return structure(self)


def member_values(values: tuple[Any, ...], xp: Any, device: Any, dtype: Any, arrays: bool = False) -> Any:
    """One Python float when every member has the same value (no array operation spent on it), else (or with
    ``arrays``, for a compiled step, where a float would be compiled in) a (K, 1) array, which broadcasts against
    a stacked (K, P) buffer, moved from the host (on JAX, ``asarray`` would compile a program of its own)."""
    if not arrays and all(v == values[0] for v in values):
        return values[0]
    return _backend.from_numpy(np.asarray(values, dtype=host_dtype(dtype)).reshape(-1, 1), xp, device)


def host_dtype(dtype: Any) -> np.dtype:
    """The NumPy dtype of a namespace's dtype (or of its name)."""
    try:
        return np.dtype(dtype)
    except TypeError:  # torch.float32 and the like
        return np.dtype(str(dtype).rsplit(".", 1)[-1])


class StackedStep:
    """K networks' training steps as one pure function, member k computing what :class:`Step` computes for it.

    ``step(params, state, x, target, lr, weight=None, mask=None, rows=None, active=None)
    -> (params, state, loss_sums, corrects)``: ``params`` and the optimizer's slots are (K, P) buffers, row k
    laid out as a lone network's; ``state["step"]`` is one Python int for all members or a (K, 1) int array.
    ``x`` and ``target`` are (rows, ...), shared by every member (a full batch: never copied K times), or
    (K, rows, ...), each member's own rows. ``lr`` is a float or (K, 1). ``weight`` are sample weights, (rows, 1)
    or (K, rows, 1). ``mask`` (K, rows, 1) marks with 0 the padding rows of members whose batch is shorter than
    the others' (with weights, ``weight`` must be 0 there too), and ``rows`` (K, 1) then gives each member's
    batch rows. Members where ``active`` (K, 1) is False keep their parameters, slots and step count.
    ``loss_sums`` is (K,), or (K, 2) with weights; ``corrects`` (K,) or None.
    """

    def __init__(self, hyper: StackedHyper, xp: Any, device: Any, dtype: str):
        self.hyper, self.xp, self.device = hyper, xp, device
        self.fdtype = _backend.float_dtype(xp, dtype)
        self.zero = _backend.from_numpy(np.zeros((), dtype=dtype), xp, device)  # moved: no program compiled
        self.mask = layers.weight_mask(hyper.sizes, dtype, xp, device) if any(hyper.l2) else None
        # AdamW's decay is applied here, with a rate per member, as optim's AdamW applies it
        self.optimizer = hyper.optimizer
        # A compiled step's numbers come as arguments (its hyper is a structure): none of its own to fall back on.
        self.own = {} if is_structure(hyper) else self.values(hyper)
        self.donate = _backend.numpy_fast_path(xp)

    def values(self, hyper: StackedHyper, arrays: bool = False) -> dict[str, Any]:
        """The members' values of ``hyper`` (:meth:`StackedHyper.values`) as the step takes them (its
        ``values=``): ``l2``, AdamW's ``decay``, ``clip`` and the dropout ``drop`` (keys, thresholds, scales),
        None where the feature is off; Python numbers where every member shares one, or (``arrays``, for a
        compiled step) arrays always, moved from the host (no operation of the namespace: on JAX each would
        compile a program)."""
        xp, device, fdtype, k = self.xp, self.device, self.fdtype, hyper.members
        v = hyper.values()

        host = host_dtype(fdtype)

        def put(value: Any, dtype: Any = None) -> Any:
            return _backend.from_numpy(np.asarray(value, dtype=dtype or host), xp, device)

        def members(name: str, dtype: Any = None) -> Any:  # (K, 1, 1), or one number where all share it
            each = v[name]
            return each[0] if not arrays and len(set(each)) == 1 else put(np.reshape(each, (k, 1, 1)), dtype)

        clip = v.get("clip_norm")
        out: dict[str, Any] = {"l2": None, "decay": None, "drop": None}
        out["clip"] = put(clip) if arrays and clip is not None else clip
        # the optimizer's numbers (momentum, betas, eps), shared by the members: 0-d arrays for a compiled step
        out["optimizer"] = {name: put(v[name]) if arrays else v[name] for name in hyper.optimizer.values()}
        if "l2" in v:
            out["l2"] = member_values(v["l2"], xp, device, fdtype, arrays)
        if "weight_decay" in v:
            out["decay"] = member_values(v["weight_decay"], xp, device, fdtype, arrays)
        if "dropout_key" in v:
            keys = put(np.reshape(v["dropout_key"], (k, 1, 1)), np.int32)
            out["drop"] = (keys, members("dropout_threshold", np.int32), members("dropout_scale"))
        return out

    def __call__(
        self, params: Any, state: dict[str, Any], x: Any, target: Any, lr: Any, weight: Any = None, mask: Any = None,
        rows: Any = None, active: Any = None, values: dict[str, Any] | None = None,
    ):  # fmt: skip
        grads, loss_sum, correct = self.gradients(params, state, x, target, weight, mask, 0, values)
        m = x.shape[-2] if rows is None else rows
        new, new_state, loss_sum = self.apply(params, state, grads, loss_sum, m, lr, weight_totals(weight, self.xp),
                                              active, values)  # fmt: skip
        return new, new_state, loss_sum, correct

    def gradients(
        self, params: Any, state: dict[str, Any], x: Any, target: Any, weight: Any = None, mask: Any = None,
        row_offset: Any = 0, values: dict[str, Any] | None = None,
    ) -> tuple[Any, Any, Any]:  # fmt: skip
        """``(grads, loss_sums, corrects)`` of every member on a batch (or a rank's shard of it, its first row at
        ``row_offset`` of the global batch, which picks the dropout masks): :meth:`Step.gradients` stacked.
        ``values`` (:meth:`values`) default to the step's own hyper's."""
        h, xp = self.hyper, self.xp
        drop = (self.own if values is None else values)["drop"]
        layer_params = layers.unflatten_stacked(params, h.sizes, xp)
        masks = None
        if drop is not None:
            counter = state["step"]
            if not isinstance(counter, int):
                counter = xp.reshape(counter, (-1, 1, 1))
            units = list(h.sizes[1:-1])
            keys, thresholds, scales = drop
            masks = dropout.masks_stacked(
                keys, thresholds, scales, counter, x.shape[-2], units, x.dtype, xp, self.device, row_offset
            )
        z, inputs, backprops = layers.forward_stacked(layer_params, x, h.activation, xp, masks)
        smoothed = h.label_smoothing > 0
        loss_sum, delta, correct = losses.head(h.output, h.loss, z, target, self.zero, xp, weight, True, mask, smoothed)
        if weight is not None:
            delta = delta * weight
        elif mask is not None:
            delta = delta * mask
        return layers.backward_stacked(layer_params, inputs, backprops, delta, xp), loss_sum, correct

    def apply(
        self, params: Any, state: dict[str, Any], grads: Any, loss_sum: Any, rows: Any, lr: Any,
        weight_total: Any = None, active: Any = None, values: dict[str, Any] | None = None,
    ):  # fmt: skip
        """``(params, state, loss_sums)`` after every member's L2 penalty, clipping and update for a batch of
        ``rows`` (an int, or (K, 1)), as :meth:`Step.apply`; ``weight_total`` is the batch's weight sum, one for
        every member or (K, 1). Members where ``active`` is False keep their parameters, slots and step count."""
        h, xp = self.hyper, self.xp
        v = self.own if values is None else values
        l2, decay = v["l2"], v["decay"]
        _, grad_scale = losses.scales(h.output, h.loss, rows, h.sizes[-1])
        if l2 is not None:  # as in Step.apply, with an l2 per member
            weights = params * self.mask
            grads = grads + (l2 / (rows * grad_scale)) * weights
            penalty = (0.5 * l2 * h.loss_outputs) * xp.sum(weights * weights, axis=1, keepdims=True)
            loss_sum = loss_sum + (penalty if weight_total is not None else penalty[:, 0])
        if weight_total is not None:
            grad_scale = (grad_scale * rows) / weight_total
        if v["clip"] is not None:
            grads = clip_by_global_norm(grads, v["clip"], xp, scale=grad_scale, members=True)
        old = params
        if decay is not None:
            params = (1.0 - lr * decay) * params
        new, new_state = self.optimizer.update(params, grads, state, lr, xp, scale=grad_scale, donate=self.donate,
                                               values=v["optimizer"])  # fmt: skip
        if active is not None:
            new = xp.where(active, new, old)
            new_state = {k: v if k == "step" else xp.where(active, v, state[k]) for k, v in new_state.items()}
            new_state["step"] = state["step"] + xp.astype(active, xp.int32)
        return new, new_state, loss_sum


def weight_totals(weight: Any, xp: Any) -> Any:
    """A stacked batch's sample-weight sums: one for every member ((rows, 1) weights), (K, 1) for each member's own
    ((K, rows, 1)), or None without weights."""
    if weight is None:
        return None
    return xp.reshape(xp.sum(weight, axis=(1, 2)), (-1, 1)) if weight.ndim == 3 else xp.sum(weight)


def stacked_hyper(
    sizes: Any, activation: Any, output: str, loss: str, optimizer: optim.Optimizer, l2: tuple[float, ...],
    clip_norm: float | None, dropout_rates: tuple[float, ...], seeds: tuple[int, ...],
    weight_decay: tuple[float, ...] | None = None, label_smoothing: float = 0.0,
) -> StackedHyper:  # fmt: skip
    """The :class:`StackedHyper` of K networks of one shape (member k with ``dropout_rates[k]`` and ``seeds[k]``)
    trained together with these settings."""
    activation = activation if isinstance(activation, str) else tuple(activation)
    keys = tuple(dropout.seed_key(s) if d else 0 for s, d in zip(seeds, dropout_rates))
    if optimizer.name == "adamw":
        weight_decay = weight_decay or (optimizer.hyper["weight_decay"],) * len(seeds)
        optimizer = optim.Optimizer("adam", {k: v for k, v in optimizer.hyper.items() if k != "weight_decay"})
    return StackedHyper(
        tuple(sizes), activation, output, loss, optimizer, len(seeds), tuple(l2), clip_norm, tuple(dropout_rates),
        keys, None if weight_decay is None else tuple(weight_decay), label_smoothing,
    )  # fmt: skip
