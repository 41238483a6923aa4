"""The epoch loop: batches, shuffling, the step (compiled where asked), metrics read back once an epoch, the
commit that makes interrupts and divergence safe, and callbacks.

An epoch runs the pure step of :mod:`gpunn.step` over the batches on local variables. Only when the whole epoch
has run and its loss is finite are the new parameters, optimizer state and epoch count committed to the model,
in one statement; an interrupt or a divergence before that leaves the model as the last completed epoch left
it, shuffling generator included.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _backend, layers, losses, stream
from .errors import ConfigError, InputError, NonFiniteError
from .history import Reporter
from .step import Hyper, Step

EVAL_ROWS = 4096  # rows per forward pass when evaluating: bounds the activations held at once


def row_blocks(n: int, size: int) -> list[slice]:
    """Consecutive slices of ``size`` rows covering ``range(n)``, each end in bounds (the Array API standard
    leaves out-of-bounds slice ends unspecified)."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def check_compile(value: Any, xp: Any) -> Any:
    """``compile=`` validated: "auto", True or False; True needs a namespace gpunn can compile for."""
    if not (value is True or value is False or (isinstance(value, str) and value == "auto")):
        raise ConfigError(f"compile must be 'auto', True or False; got {value!r}")
    if value is True and _backend.compiler(xp, required=True) is None:
        raise ConfigError(
            f"compile=True, but gpunn has no compiler for {_backend.namespace_name(xp)} (it compiles the step "
            "with jax.jit on JAX and torch.compile on PyTorch); use compile='auto' or False"
        )
    return value


@functools.lru_cache(maxsize=16)
def _compiled(hyper: Hyper, xp: Any, device: Any, dtype: str, required: bool) -> tuple[Step, Any, Any, Any]:
    """A step and its compiled forms, kept across ``fit`` calls so that a second ``fit`` does not compile again
    (the compiler's own cache is keyed by the function object)."""
    step = Step(hyper, xp, device, dtype)
    jit = _backend.compiler(xp, required)
    return step, jit(step), jit(step.gradients), jit(step.apply, static_argnums=4)


class Runner:
    """Runs a :class:`Step` on one batch at a time, through the namespace's compiler when asked.

    Under ``compile="auto"`` a compiler that fails on the step falls back to the eager step with one warning;
    under ``compile=True`` its error is raised.
    """

    def __init__(self, hyper: Hyper, xp: Any, device: Any, dtype: str, compile: Any, comm: Any = None):
        self.comm, self.mode, self.device = comm, compile, device
        required = compile is True
        self.compiled = compile is not False and _backend.compiler(xp, required) is not None
        if self.compiled:
            self.step, self._step, self._gradients, self._apply = _compiled(hyper, xp, device, dtype, required)
        else:
            self.step = Step(hyper, xp, device, dtype)

    def rate(self, lr: float) -> Any:
        """An epoch's learning rate as the step takes it: a Python float eagerly, a 0-d array (made once an
        epoch) for a compiled step, so that a new rate never means a new compilation."""
        if not self.compiled:
            return lr
        xp = self.step.xp
        return xp.asarray(lr, dtype=self.step.zero.dtype, device=self.device)

    weight: Any = None  # sample weights on the device, (n, 1), when fit has them in memory
    weight_host: Any = None  # the same on the host, (n,) float64, to check every batch's total before an epoch
    weight_total: float | None = None  # the training rows' weight total (in memory or streamed); None: unweighted

    def __call__(self, params: Any, state: Any, batch: tuple, lr: Any):
        """One step on ``batch`` = ``(x, t, rows, shard_rows, w, offset, weight_total)``, as the epoch's batches
        come: this rank's ``shard_rows`` rows ``(x, t)`` (sample weights ``w`` or None) of a global batch of
        ``rows``, starting at its row ``offset``; ``weight_total`` is the global batch's weight total."""
        if self.compiled:
            if isinstance(state["step"], int):  # the compiled step returns it as an array: compile once, not twice
                xp = self.step.xp
                state = {**state, "step": xp.asarray(state["step"], dtype=xp.int32, device=self.device)}
            try:
                step, gradients, apply = self._step, self._gradients, self._apply
                return self._run(params, state, batch, lr, step, gradients, apply)
            except Exception as exc:
                if self.mode is True or isinstance(exc, (NonFiniteError, MemoryError)):
                    raise
                warnings.warn(
                    f"gpunn: compiling the step on {_backend.namespace_name(self.step.xp)} failed "
                    f"({type(exc).__name__}: {exc}); training eagerly instead",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.compiled = False
                lr = float(_backend.to_numpy(lr))
        step = self.step
        return self._run(params, state, batch, lr, step, step.gradients, step.apply)

    def _run(self, params, state, batch, lr, step, gradients, apply):
        xb, tb, rows, shard_rows, wb, offset, weight_total = batch
        if self.comm is None:
            return step(params, state, xb, tb, lr, wb)
        if shard_rows:
            grads, loss_sum, correct = gradients(params, xb, tb, wb, state["step"], offset)
        else:  # more ranks than samples in this batch: this rank contributes nothing
            grads, loss_sum, correct = self._nothing(params, wb is not None)
        grads = self.comm.allreduce_sum(grads, self.step.xp, self.device)
        params, state, penalized = apply(params, state, grads, loss_sum, rows, lr, weight_total)
        # Every rank's loss sum is added up for the epoch's record: the L2 penalty, which each rank adds to its
        # own, counts once, on rank 0.
        return params, state, penalized if self.comm.rank == 0 else loss_sum, correct

    def _nothing(self, params: Any, weighted: bool) -> tuple[Any, Any, Any]:
        xp, zero = self.step.xp, self.step.zero
        if weighted:  # the pair [loss, weighted loss]
            zero = xp.stack([zero, zero])
        count = None
        if self.step.hyper.output != "identity":
            count = xp.zeros((), dtype=_backend.index_dtype(xp, self.device), device=self.device)
        return xp.zeros_like(params), zero, count


def run(
    model: Any,
    x: Any,
    target: Any,
    val: tuple[Any, Any] | None,
    hyper: Hyper,
    *,
    epochs: int,
    batch_size: int | None,
    shuffle: bool,
    verbose: int,
    callbacks: Sequence[Callable[[Any, dict[str, float]], Any]] | None,
    comm: Any,
    compile: Any,
    weight: tuple[Any, Any] | None = None,
) -> None:
    """Train ``model`` for ``epochs`` epochs on the placed data ``(x, target)`` (and sample weights ``weight``:
    (device array (n, 1), host array (n,))), or on a :class:`gpunn.stream.Streamed` ``x`` (whose batches bring
    their weights, if any); every epoch is committed whole."""
    runner = Runner(hyper, model.xp, model.device, model.dtype, compile, comm)
    if weight is not None:
        runner.weight, runner.weight_host = weight
        runner.weight_total = float(np.sum(runner.weight_host))
    elif isinstance(x, stream.Streamed):
        runner.weight_total = x.weight_total
    reporter = Reporter(verbose, model.epoch, model.epoch + epochs)
    try:
        with _backend.memory_guard(model.device, batch_size):
            for _ in range(epochs):
                record = run_epoch(model, runner, x, target, val, batch_size, shuffle, comm)
                reporter.epoch(model.epoch, record)
                if [callback(model, record) for callback in callbacks or ()].count(False):
                    break
    finally:
        reporter.close()


def run_epoch(model, runner, x, target, val, batch_size, shuffle, comm=None) -> dict[str, float]:
    """One pass over the data, committed to ``model`` only if it completes with a finite loss."""
    rng_state, epoch = model.rng.bit_generator.state, model.epoch
    lr = model.schedule.rate(epoch, model.schedule_state)
    if not (math.isfinite(lr) and lr >= 0):
        raise ConfigError(f"the learning-rate schedule gave {lr!r} for epoch {epoch + 1}; a rate is finite and >= 0")
    try:
        return _epoch(model, runner, x, target, val, batch_size, shuffle, rng_state, comm, lr)
    except BaseException as exc:
        if model.epoch != epoch:
            raise  # interrupted after the epoch was committed: it stands, generator included
        # Diverged or interrupted: the permutation drawn for this epoch is put back and a half-recorded
        # epoch is dropped, so the model is exactly as the last completed epoch left it.
        model.rng.bit_generator.state = rng_state
        if isinstance(exc, NonFiniteError):
            _step_back_if_not_finite(model)
        model.history.truncate(model.epoch)
        raise


def _step_back_if_not_finite(model: Any) -> None:
    """After a non-finite loss: if the last epoch's final update itself overflowed (its loss, computed
    before that update, was finite), return to the epoch before it. Runs only on this failure path."""
    xp = model.xp
    if model._previous is None or bool(xp.all(xp.isfinite(model._params))):
        return
    model._params, model.optimizer_state, rng_state, model.schedule_state = model._previous
    model.rng.bit_generator.state = rng_state
    model.epoch -= 1
    model._previous = None


def _epoch(model, runner, x, target, val, batch_size, shuffle, rng_state, comm, lr):
    xp, rate = model.xp, runner.rate(lr)
    params, state = model._params, model.optimizer_state
    if isinstance(x, stream.Streamed):
        n = x.n_rows
        batches = x.batches(batch_size, model.rng if shuffle else None, comm)
    else:
        n = x.shape[0]
        batches = _memory_batches(model, runner, x, target, batch_size, shuffle, comm)
    loss_sums, corrects = [], []
    try:
        for batch in batches:
            params, state, loss_sum, correct = runner(params, state, batch, rate)
            loss_sums.append(loss_sum)
            corrects.append(correct)
    finally:
        batches.close()  # a generator, or a Prefetcher whose thread stops
    has_correct = corrects[0] is not None
    floats, counts = loss_sums, corrects if has_correct else []
    if val is not None:
        if isinstance(val, stream.Streamed):
            val_loss, val_correct = val.evaluate_sums(params)
        else:
            val_loss, val_correct = evaluate_sums(model, params, *val)
        floats, counts = [*floats, *val_loss], [*counts, *val_correct]
    # The epoch's read-back: per-batch sums, added up on the host in float64.
    host_floats, host_counts = read_back(floats, xp), read_back(counts, xp)
    width = 1 if runner.weight_total is None else 2  # with sample weights each batch gives [loss, weighted loss]
    batch_sums = host_floats[: width * len(loss_sums)].reshape(-1, width)
    batch_losses = batch_sums[:, 0]
    sums = [float(np.sum(batch_losses)), float(np.sum(batch_sums[:, -1]))]
    if has_correct:
        sums.append(float(np.sum(host_counts[: len(corrects)])))
    if comm is not None:
        sums = comm.sum_scalars(sums)
    record = {"loss": sums[0] * _loss_scale(model, n)}
    if runner.weight_total is not None:  # the weighted mean over the rows: sum(w l) / sum(w), per output
        record["weighted_loss"] = sums[1] * _loss_scale(model, n) * n / runner.weight_total
    if not math.isfinite(record["loss"]):
        raise _divergence(model, batch_losses, record["loss"])
    if has_correct:
        record["accuracy"] = sums[2] / (n * _labels_per_row(model))
    if val is not None:
        n_val = val.n_rows if isinstance(val, stream.Streamed) else val[0].shape[0]
        record["val_loss"] = float(np.sum(host_floats[width * len(loss_sums) :])) * _loss_scale(model, n_val)
        if has_correct:
            record["val_accuracy"] = float(np.sum(host_counts[len(corrects) :])) / (n_val * _labels_per_row(model))
    record["lr"] = lr
    schedule_state = model.schedule.update(model.schedule_state, record)
    model.history.append(record)
    # References, not copies: updates are pure.
    previous = (model._params, model.optimizer_state, rng_state, model.schedule_state)
    # One statement, no calls: an interrupt lands before or after it, never half way.
    model._params, model.optimizer_state, model.epoch, model._previous, model.schedule_state = (
        params, state, model.epoch + 1, previous, schedule_state
    )  # fmt: skip
    return record


def _memory_batches(model, runner, x, target, batch_size, shuffle, comm):
    """One epoch's batches of placed data ``(x, t, rows, shard_rows, w, row_offset, weight_total)``: gathers of
    a shuffled order (drawn here, on the host) or slices."""
    xp, n = model.xp, x.shape[0]
    bs = n if batch_size is None else min(batch_size, n)
    order = host_order = None
    if bs < n and shuffle:
        host_order = model.rng.permutation(n)
        order = _backend.from_numpy(host_order, xp, model.device)
    if runner.weight_host is not None:
        _check_batch_weights(runner.weight_host, host_order, bs, model.epoch)
    for start in range(0, n, bs):
        stop = min(start + bs, n)  # the standard leaves out-of-bounds slice ends unspecified
        lo, hi = (start, stop) if comm is None else comm.shard(start, stop)
        w, wb, total = runner.weight, None, None
        if comm is None and bs == n:
            xb, tb, wb = x, target, w
        elif order is not None:
            idx = order[lo:hi]
            xb, tb = _backend.take_rows(x, idx, xp), _backend.take_rows(target, idx, xp)
            wb = None if w is None else _backend.take_rows(w, idx, xp)
            if w is not None and comm is not None:  # the global batch's total, which every rank can sum
                total = xp.sum(_backend.take_rows(w, order[start:stop], xp))
        else:
            xb, tb = x[lo:hi, ...], target[lo:hi, ...]
            wb = None if w is None else w[lo:hi, ...]
            if w is not None and comm is not None:
                total = xp.sum(w[start:stop, ...])
        yield xb, tb, stop - start, hi - lo, wb, lo - start, total


def _check_batch_weights(weight: np.ndarray, order: np.ndarray | None, bs: int, epoch: int) -> None:
    """Every batch of the coming epoch must have sample weights that do not sum to zero (checked on the host,
    before the epoch runs, so the model stays as it was)."""
    w = weight if order is None else weight[order]
    totals = np.add.reduceat(w, np.arange(0, len(w), bs))
    if (totals <= 0).any():
        b = int(np.flatnonzero(totals <= 0)[0])
        raise InputError(
            f"sample_weight sums to 0 over batch {b + 1} of epoch {epoch + 1} (rows {b * bs} to "
            f"{min((b + 1) * bs, len(w)) - 1} of its order): every batch needs some weight; use larger batches"
        )


def read_back(arrays: list[Any], xp: Any) -> np.ndarray:
    """0-d (or 1-d) arrays of one dtype copied to the host together, flat, as float64 (one transfer)."""
    if not arrays:
        return np.zeros(0)
    if any(a.ndim for a in arrays):
        stacked = xp.concat([xp.reshape(a, (-1,)) for a in arrays])
    else:
        stacked = arrays[0] if len(arrays) == 1 else xp.stack(arrays)
    return np.asarray(_backend.to_numpy(stacked), dtype=np.float64).reshape(-1)


def _loss_scale(model: Any, rows: int) -> float:
    return losses.scales(model.output, model.loss, rows, model.n_outputs)[0]


def _labels_per_row(model: Any) -> int:
    return model.n_outputs if model.output == "sigmoid" else 1


def _divergence(model: Any, batch_losses: np.ndarray, loss: float) -> NonFiniteError:
    bad = np.flatnonzero(~np.isfinite(batch_losses))
    where = f"batch {bad[0] + 1} of {batch_losses.size}" if bad.size else "the weight update"
    return NonFiniteError(
        f"training diverged in epoch {model.epoch + 1}, {where}: loss is {loss}. The model keeps the weights "
        "of the last finite epoch; try a smaller lr, clip_norm=, or standardized features"
    )


def evaluate_sums(model: Any, params: Any, x: Any, target: Any) -> tuple[list[Any], list[Any]]:
    """Summed loss and correct count of every block of EVAL_ROWS rows (0-d arrays on the device), so that a large
    validation set never holds all its activations at once."""
    xp, n = model.xp, x.shape[0]
    weights = layers.unflatten(params, model.sizes, xp)
    zero = xp.zeros((), dtype=x.dtype, device=model.device)
    loss_sums, corrects = [], []
    for block in row_blocks(n, EVAL_ROWS):
        xb, tb = (x, target) if n <= EVAL_ROWS else (x[block, ...], target[block, ...])
        z = layers.logits(weights, xb, model.activation, xp)
        loss_sum, _, correct = losses.head(model.output, model.loss, z, tb, zero, xp)
        loss_sums.append(loss_sum)
        if correct is not None:
            corrects.append(correct)
    return loss_sums, corrects


def evaluate(model: Any, x: Any, target: Any) -> dict[str, float]:
    """Mean loss and (for classifiers) accuracy of ``model`` on placed data, as Python floats."""
    loss_sums, corrects = evaluate_sums(model, model._params, x, target)
    return summarize(model, loss_sums, corrects, x.shape[0])


def summarize(model: Any, loss_sums: list[Any], corrects: list[Any], n: int) -> dict[str, float]:
    """The mean loss and accuracy of ``n`` rows from their blocks' sums."""
    out = {"loss": float(np.sum(read_back(loss_sums, model.xp))) * _loss_scale(model, n)}
    if corrects:
        out["accuracy"] = float(np.sum(read_back(corrects, model.xp))) / (n * _labels_per_row(model))
    return out
