"""The epoch loop: batches from any feed, the step (compiled where asked), metrics read back once an epoch, and
the new training state handed back whole.

:func:`epochs` runs the pure step of :mod:`gpunn.step` over one feed's batches (in memory or streamed: it never
asks which) on local variables, and yields a new :class:`State` for every epoch that completed with a finite
loss. It writes into nothing it was given: the caller commits each state in one statement, so an interrupt or
a divergence leaves the model as the last completed epoch left it, shuffling generator included.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backend, losses
from .errors import ConfigError, NonFiniteError
from .step import Hyper, Step


@dataclass(frozen=True)
class State:
    """Everything an epoch changes: the flat parameters, the optimizer's state, the epochs done, the shuffling
    generator's state and the schedule's."""

    params: Any
    optimizer_state: Any
    epoch: int
    rng_state: dict[str, Any]
    schedule_state: dict[str, Any]


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


def epochs(
    state: State, feed: Any, val: Any, runner: Runner, schedule: Any, *, count: int, batch_size: int | None,
    shuffle: bool, comm: Any = None,
) -> Iterator[tuple[State, dict[str, float]]]:  # fmt: skip
    """Train for ``count`` epochs from ``state`` on ``feed`` (validated on the feed ``val``, if any), yielding
    ``(new state, record)`` after every epoch; ``record`` holds the epoch's metrics as Python floats."""
    hyper = runner.step.hyper
    for _ in range(count):
        state, record = run_epoch(state, feed, val, runner, schedule, hyper, batch_size, shuffle, comm)
        yield state, record


def run_epoch(state, feed, val, runner, schedule, hyper, batch_size, shuffle, comm=None):
    """One pass over ``feed``: ``(new state, record)``, or a :class:`NonFiniteError` if its loss is not finite."""
    epoch = state.epoch
    lr = schedule.rate(epoch, state.schedule_state)
    if not (math.isfinite(lr) and lr >= 0):
        raise ConfigError(f"the learning-rate schedule gave {lr!r} for epoch {epoch + 1}; a rate is finite and >= 0")
    rng = Shuffler(state.rng_state) if shuffle else None
    xp, rate = runner.step.xp, runner.rate(lr)
    params, opt_state = state.params, state.optimizer_state
    batches = feed.batches(batch_size, rng, comm, epoch)
    loss_sums, corrects = [], []
    try:
        for batch in batches:
            params, opt_state, loss_sum, correct = runner(params, opt_state, batch, rate)
            loss_sums.append(loss_sum)
            corrects.append(correct)
    finally:
        batches.close()  # a generator, or a Prefetcher whose thread stops
    has_correct = corrects[0] is not None
    floats, counts = loss_sums, corrects if has_correct else []
    if val is not None:
        val_loss, val_correct = val.evaluate_sums(params)
        floats, counts = [*floats, *val_loss], [*counts, *val_correct]
    # The epoch's read-back: per-batch sums, added up on the host in float64.
    host_floats, host_counts = read_back(floats, xp), read_back(counts, xp)
    width = 1 if feed.weight_total is None else 2  # with sample weights each batch gives [loss, weighted loss]
    batch_sums = host_floats[: width * len(loss_sums)].reshape(-1, width)
    batch_losses = batch_sums[:, 0]
    sums = [float(np.sum(batch_losses)), float(np.sum(batch_sums[:, -1]))]
    if has_correct:
        sums.append(float(np.sum(host_counts[: len(corrects)])))
    if comm is not None:
        sums = comm.sum_scalars(sums)
    n = feed.n_rows
    record = {"loss": sums[0] * loss_scale(hyper, n)}
    if feed.weight_total is not None:  # the weighted mean over the rows: sum(w l) / sum(w), per output
        record["weighted_loss"] = sums[1] * loss_scale(hyper, n) * n / feed.weight_total
    if not math.isfinite(record["loss"]):
        raise _divergence(epoch, batch_losses, record["loss"])
    if has_correct:
        record["accuracy"] = sums[2] / (n * labels_per_row(hyper))
    if val is not None:
        n_val = val.n_rows
        record["val_loss"] = float(np.sum(host_floats[width * len(loss_sums) :])) * loss_scale(hyper, n_val)
        if has_correct:
            record["val_accuracy"] = float(np.sum(host_counts[len(corrects) :])) / (n_val * labels_per_row(hyper))
    record["lr"] = lr
    rng_state = state.rng_state if rng is None else rng.state
    new = State(params, opt_state, epoch + 1, rng_state, schedule.update(state.schedule_state, record))
    return new, record


class Shuffler:
    """The shuffling generator of one epoch, made from its state only when the epoch draws an order (a full batch
    draws none): a generator costs tens of microseconds to make, a step on a small network not many more."""

    def __init__(self, state: dict[str, Any]):
        self._state = state
        self._rng: np.random.Generator | None = None

    def permutation(self, n: int) -> np.ndarray:
        rng = self._rng
        if rng is None:
            rng = self._rng = np.random.Generator(np.random.PCG64(0))
            rng.bit_generator.state = self._state
        return rng.permutation(n)

    @property
    def state(self) -> dict[str, Any]:
        """The state after the epoch's draws: the same object as before when nothing was drawn."""
        return self._state if self._rng is None else dict(self._rng.bit_generator.state)


def read_back(arrays: list[Any], xp: Any) -> np.ndarray:
    """0-d (or 1-d) arrays of one dtype copied to the host together, flat, as float64 (one transfer)."""
    if not arrays:
        return np.zeros(0)
    if any(a.ndim for a in arrays):
        stacked = xp.concat([xp.reshape(a, (-1,)) for a in arrays])
    else:
        stacked = arrays[0] if len(arrays) == 1 else xp.stack(arrays)
    return np.asarray(_backend.to_numpy(stacked), dtype=np.float64).reshape(-1)


def loss_scale(spec: Any, rows: int) -> float:
    """The factor that turns a loss summed over ``rows`` rows into the mean loss (``spec``: a Hyper or Spec)."""
    return losses.scales(spec.output, spec.loss, rows, spec.sizes[-1])[0]


def labels_per_row(spec: Any) -> int:
    return spec.sizes[-1] if spec.output == "sigmoid" else 1


def _divergence(epoch: int, batch_losses: np.ndarray, loss: float) -> NonFiniteError:
    bad = np.flatnonzero(~np.isfinite(batch_losses))
    where = f"batch {bad[0] + 1} of {batch_losses.size}" if bad.size else "the weight update"
    return NonFiniteError(
        f"training diverged in epoch {epoch + 1}, {where}: loss is {loss}. The model keeps the weights "
        "of the last finite epoch; try a smaller lr, clip_norm=, or standardized features"
    )


def summarize(spec: Any, loss_sums: list[Any], corrects: list[Any], n: int) -> dict[str, float]:
    """The mean loss and accuracy of ``n`` rows from their blocks' sums."""
    out = {"loss": float(np.sum(read_back(loss_sums, spec.xp))) * loss_scale(spec, n)}
    if corrects:
        out["accuracy"] = float(np.sum(read_back(corrects, spec.xp))) / (n * labels_per_row(spec))
    return out
