"""The epoch loop: batches from any feed, the step (compiled where asked), metrics read back once an epoch, and
the new training state handed back whole.

:func:`epochs` runs the pure step of :mod:`gpunn.step` over one feed's batches (in memory or streamed: it never
asks which) on local variables, and yields a new :class:`State` for every epoch that completed with a finite
loss. It writes into nothing it was given: the caller commits each state in one statement, so an interrupt or
a divergence leaves the model as the last completed epoch left it, shuffling generator included.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backend, layers, losses, settings
from .errors import ConfigError, DivergenceError, NonFiniteError
from .feed.batch import Batch
from .step import Hyper, Step, structure

# Whether an epoch's counts join its losses' read-back (one transfer instead of two): None (the default) merges
# on an accelerator, where a transfer costs a wait for the device, and not on the CPU. A test forces it on the
# CPU, holding the merged records to the plain ones.
MERGE_READS: bool | None = None


@dataclass(frozen=True)
class State:
    """Everything an epoch changes: the flat parameters, the optimizer's state, the epochs done, the shuffling
    generator's state and the schedule's."""

    params: Any
    optimizer_state: Any
    epoch: int
    rng_state: dict[str, Any]
    schedule_state: dict[str, Any]


def compile_cache(path: str | os.PathLike[str]) -> None:
    """Keep JAX's compiled programs in the folder ``path`` (made when missing), so that another process training
    the same network on data of the same shapes loads them instead of compiling (JAX's persistent compilation
    cache). The environment variable ``GPUNN_COMPILE_CACHE`` does the same from the first compilation on."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ConfigError(f"compile_cache takes a folder's path; got {path!r}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"compile_cache takes a folder's path; {os.fspath(path)!r} is a file")
    if importlib.util.find_spec("jax") is None:
        raise ConfigError("compile_cache keeps JAX's compiled programs, but JAX is not installed (pip install jax)")
    _backend.compile_cache(os.fspath(path))


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
def _compiled(hyper: Hyper, xp: Any, device: Any, dtype: str, required: bool) -> tuple[Step, Compiled]:
    """A step and its compiled forms, kept across ``fit`` calls so that a second ``fit`` does not compile again
    (the compiler's own cache is keyed by the function object). A form is compiled on its first call. ``hyper``
    is a :func:`gpunn.step.structure`: the numbers come as arguments, so a new rate or penalty finds this entry."""
    step = Step(hyper, xp, device, dtype)
    jit = _backend.compiler(xp, required)
    scan, cond = _backend.scan(xp), _backend.cond(xp)
    epoch = None
    if scan is not None and cond is not None:
        epoch = jit(functools.partial(_epoch, step, scan, cond), static_argnums=(3, 4))
    return step, Compiled(jit(step), jit(step.rows, static_argnums=6), jit(step.gradients),
                          jit(step.apply, static_argnums=4), epoch, jit(step.masked))  # fmt: skip


@dataclass(frozen=True)
class Compiled:
    """A step's compiled forms (or its eager ones): the whole step, the step on gathered rows, its two
    data-parallel halves, (where the compiler has a loop) a minibatch epoch's every batch as one program, and
    the step on padded rows."""

    step: Any
    rows: Any
    gradients: Any
    apply: Any
    epoch: Any = None
    masked: Any = None


def _epoch(
    step: Step, scan: Any, cond: Any, params: Any, state: Any, x: Any, length: int, size: int, target: Any,
    order: Any, rows: Any, lr: Any, weight: Any, values: Any,
) -> tuple[Any, Any, Any, Any]:  # fmt: skip
    """A minibatch epoch as one program, on data padded to a bucket (``rows`` of them real, a 0-d array): batch i
    is ``order[i * size : (i + 1) * size]``, its rows past ``rows`` masked (the last batch's); of the ``length``
    iterations, those past the last batch do nothing and give zero sums. So the program depends on the bucket and
    the batch size, not on ``rows``. ``(params, state, loss sums, correct counts)``, the metrics stacked in batch
    order. The loop carries the parameters and optimizer slots as their segments (XLA copies every slice of a
    flat buffer it reads), split and joined back inside the program."""
    xp = step.xp
    carry = _split(step.hyper.sizes, xp, params, state)

    def body(carry: Any, i: Any) -> tuple[Any, Any]:
        start = i * size
        valid = xp.minimum(rows - start, float(size))

        def run(carry: Any) -> Any:
            p, s = carry
            p, s, loss_sum, correct = step.rows(p, s, x, target, order, start, size, lr, weight, values, valid)
            return (p, s), (loss_sum, correct)

        def skip(carry: Any) -> Any:
            return carry, _backend.zeros_of(run, carry)[1]  # zero sums of run's shapes and dtypes

        return cond(valid > 0, run, skip, carry)

    carry, (loss_sums, corrects) = scan(body, carry, xp.arange(length, dtype=xp.int32))
    params, state = _join(xp, *carry)
    return params, state, loss_sums, corrects


def _split(sizes: tuple[int, ...], xp: Any, params: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The flat parameters and optimizer slots as their segments (gpunn.layers.segments)."""
    slots = {k: v if k == "step" else layers.segments(v, sizes, xp) for k, v in state.items()}
    return layers.segments(params, sizes, xp), slots


def _join(xp: Any, params: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """:func:`_split` undone."""
    return layers.join(params, xp), {k: v if k == "step" else layers.join(v, xp) for k, v in state.items()}


def cached_rate(cache: dict[Any, Any], key: Any, make: Callable[[], Any]) -> Any:
    """The rate array kept in ``cache`` under ``key``, made by ``make()`` the first time: making one costs about
    as much as a small compiled step. A schedule that changes the rate every epoch would fill the cache: it is
    emptied when it holds 64."""
    rate = cache.get(key)
    if rate is None:
        if len(cache) >= 64:
            cache.clear()
        rate = cache[key] = make()
    return rate


def compiles_since(before: tuple[int, float]) -> tuple[int, float]:
    """``(programs, seconds)`` compiled since :func:`gpunn._backend.compiles` gave ``before``."""
    (programs, seconds), (before_programs, before_seconds) = _backend.compiles(), before
    return programs - before_programs, seconds - before_seconds


def fall_back(exc: Exception, mode: Any, xp: Any, what: str) -> None:
    """After compiled code raised ``exc``: raise it again under ``compile=True`` or where it is the training's own
    error (not finite, out of memory), else warn once that training goes on eagerly."""
    if mode is True or isinstance(exc, (NonFiniteError, MemoryError)):
        raise exc
    warnings.warn(
        f"gpunn: compiling {what} on {_backend.namespace_name(xp)} failed ({type(exc).__name__}: {exc}); "
        "training eagerly instead",
        RuntimeWarning,
        stacklevel=4,
    )


def _continues(run: list[Batch], batch: Batch) -> bool:
    """True if ``batch`` is the next batch after ``run`` (whose batches are of one size, and which starts at the
    order's first row), gathered from the same arrays; the last batch may be shorter."""
    first, last = run[0], run[-1]
    return (
        batch.order is first.order and batch.x is first.x and batch.target is first.target
        and batch.weight is first.weight and first.start == 0 and last.shard_rows == first.shard_rows
        and batch.shard_rows <= first.shard_rows and batch.start == last.start + first.shard_rows
    )  # fmt: skip


class Runner:
    """Runs a :class:`Step` on one batch at a time, through the namespace's compiler when asked.

    Under ``compile="auto"`` a compiler that fails on the step falls back to the eager step with one warning;
    under ``compile=True`` its error is raised.
    """

    def __init__(self, hyper: Hyper, xp: Any, device: Any, dtype: str, compile: Any, comm: Any = None):
        self.comm, self.mode, self.device, self.dtype = comm, compile, device, dtype
        required = compile is True
        self.compiled = compile is not False and _backend.compiler(xp, required) is not None
        if self.compiled:
            self.step, self.forms = _compiled(structure(hyper), xp, device, dtype, required)
        else:
            self.step = Step(hyper, xp, device, dtype)
        # The hyper-parameters' numbers: Python floats for an eager step, 0-d arrays for a compiled one (made
        # when first asked for: a namespace without a compiler never makes them).
        self.values = hyper.values()
        self._data: dict[str, Any] | None = None
        step = self.step
        self.eager = Compiled(step, step.rows, step.gradients, step.apply)
        # Where the compiled step copies what it slices (XLA), a shuffled epoch runs as one program on the
        # parameters' segments, each batch sliced from the order and gathered inside the step (an eager slice
        # costs a dispatch and, on JAX, a program for each new shape).
        self.segments = self.compiled and comm is None and _backend.slices_copy(xp)
        # Where every eager operation is a dispatch (JAX), metrics are copied to the host one array at a time
        # (one wait for the device, no operation); elsewhere stacked first, and on an accelerator the counts
        # join the losses, so that a read-back is one transfer.
        self.stack_reads = _backend.compiler(xp) is None
        self.merge_reads = _backend.on_accelerator(xp, device) if MERGE_READS is None else MERGE_READS
        self._rates: dict[float, Any] = {}
        self._row_counts: dict[int, Any] = {}
        self._compiles_before = _backend.compiles()

    def compiles(self) -> tuple[int, float]:
        """``(programs, seconds)`` compiled since this runner was made (see :func:`gpunn._backend.compiles`)."""
        return compiles_since(self._compiles_before)

    def _values(self, forms: Compiled) -> dict[str, Any]:
        """The hyper-parameters' numbers as ``forms`` take them."""
        if forms is self.eager:
            return self.values
        if self._data is None:
            self._data = {k: self._scalar(v) for k, v in self.values.items()}
        return self._data

    def _scalar(self, value: float | int) -> Any:
        """A number as a 0-d array on the device, moved from the host (no operation of the namespace: on JAX,
        making it with ``asarray`` would compile a program for each dtype)."""
        xp = self.step.xp
        dtype = np.int32 if isinstance(value, int) else np.dtype(self.dtype)
        return _backend.from_numpy(np.asarray(value, dtype=dtype), xp, self.device)

    def rate(self, lr: float) -> Any:
        """An epoch's learning rate as the step takes it: a Python float eagerly, a 0-d array for a compiled step
        (so that a new rate never means a new compilation), made once per distinct rate: making one costs as
        much as a small step on JAX."""
        if not self.compiled:
            return lr
        return cached_rate(self._rates, lr, lambda: self._scalar(float(lr)))

    def run(self, params: Any, state: Any, batches: Any, lr: Any) -> tuple[Any, Any, list[Any], list[Any], int]:
        """Every batch of an epoch: ``(params, state, loss sums, correct counts, batches)``. Where the compiled
        step gathers its rows (XLA), a minibatch epoch's batches run as one compiled program (where a Python loop
        makes a call, and on an accelerator a launch, for each); their metrics then come stacked, one array,
        zero past the last batch."""
        loss_sums: list[Any] = []
        corrects: list[Any] = []
        count, run = 0, list[Batch]()
        for batch in batches:
            count += 1
            if self.segments and batch.order is not None and (not run or _continues(run, batch)):
                run.append(batch)
                continue
            if run:
                params, state = self._steps(params, state, run, lr, loss_sums, corrects)
                run = []
            params, state = self._steps(params, state, [batch], lr, loss_sums, corrects)
        if run:
            params, state = self._steps(params, state, run, lr, loss_sums, corrects)
        if corrects and corrects[0] is None:
            corrects = []
        return params, state, loss_sums, corrects, count

    def _steps(self, params: Any, state: Any, run: list[Batch], lr: Any, loss_sums: list, corrects: list):
        b = run[0]
        if b.order is not None and b.real_rows is not None and self.compiled and self.forms.epoch is not None:
            size, real_rows = b.shard_rows, b.real_rows
            length = -(-b.x.shape[0] // size)

            def epoch(forms: Compiled, rate: Any) -> Any:
                if forms is self.eager:  # the compiler failed: one eager step a batch
                    return None
                return forms.epoch(params, self._counted(state, forms), b.x, length, size, b.target, b.order,
                                   self._rows(real_rows), rate, b.weight, self._values(forms))  # fmt: skip

            out = self._through(epoch, lr)
            if out is not None:
                params, state, loss_sum, correct = out
                loss_sums.append(loss_sum)
                corrects.append(correct)
                return params, state
        for batch in run:
            params, state, loss_sum, correct = self(params, state, batch, lr)
            loss_sums.append(loss_sum)
            corrects.append(correct)
        return params, state

    def __call__(self, params: Any, state: Any, batch: Batch, lr: Any):
        """One step on ``batch``, as the epoch's batches come from a feed."""
        return self._through(lambda forms, lr: self._run(params, self._counted(state, forms), batch, lr, forms), lr)

    def _through(self, run: Any, lr: Any = None) -> Any:
        """``run(forms, lr)`` with the compiled forms, or the eager ones: from the start without a compiler, and
        after one failed (with one warning; under ``compile=True`` its error is raised)."""
        if self.compiled:
            try:
                return run(self.forms, lr)
            except Exception as exc:
                fall_back(exc, self.mode, self.step.xp, "the step")
                self.compiled = False
        if lr is not None and not isinstance(lr, (int, float)):
            lr = float(_backend.to_numpy(lr))  # a rate made for the compiled step
        return run(self.eager, lr)

    def _rows(self, rows: int) -> Any:
        """A count of rows as a compiled step takes it: a 0-d array of the parameters' dtype, made once."""
        made = self._row_counts.get(rows)
        if made is None:
            if len(self._row_counts) >= 64:
                self._row_counts.clear()
            made = self._row_counts[rows] = self._scalar(float(rows))
        return made

    def _counted(self, state: Any, forms: Compiled) -> Any:
        """``state`` with its step count as an array for a compiled form: it returns the count as one, and would
        compile a second time for the Python int it starts as."""
        if forms is self.eager or not isinstance(state["step"], int):
            return state
        return {**state, "step": self._scalar(int(state["step"]))}

    def _run(self, params: Any, state: Any, batch: Batch, lr: Any, forms: Compiled):
        xb, tb, rows, shard_rows, wb, offset, weight_total, order, start, real_rows = batch
        values = self._values(forms)
        if order is None and real_rows is not None:  # a full batch of padded rows
            if forms is not self.eager:
                return forms.masked(params, state, xb, tb, self._rows(real_rows), lr, wb, values)
            xb, tb, wb = xb[:real_rows, ...], tb[:real_rows, ...], None if wb is None else wb[:real_rows, ...]
        if order is not None and forms is not self.eager and self.segments:
            return forms.rows(params, state, xb, tb, order, start, shard_rows, lr, wb, values)
        if order is not None:  # gathered here, eagerly: a slice and a gather are cheap, and not compiled
            xp, idx = self.step.xp, order[start : start + shard_rows]
            xb, tb = _backend.take_rows(xb, idx, xp), _backend.take_rows(tb, idx, xp)
            wb = None if wb is None else _backend.take_rows(wb, idx, xp)
        if self.comm is None:
            return forms.step(params, state, xb, tb, lr, wb, values)
        if shard_rows:
            grads, loss_sum, correct = forms.gradients(params, xb, tb, wb, state["step"], offset, values)
        else:  # more ranks than samples in this batch: this rank contributes nothing
            grads, loss_sum, correct = self._nothing(params, wb is not None)
        grads = self.comm.allreduce_sum(grads, self.step.xp, self.device)
        params, state, penalized = forms.apply(params, state, grads, loss_sum, rows, lr, weight_total, values)
        # Every rank's loss sum is added up for the epoch's record: the L2 penalty, which each rank adds to its
        # own, counts once, on rank 0.
        return params, state, penalized if self.comm.rank == 0 else loss_sum, correct

    def _nothing(self, params: Any, weighted: bool) -> tuple[Any, Any, Any]:
        xp, zero = self.step.xp, self.step.zero
        if weighted:  # the pair [loss, weighted loss]
            zero = xp.stack([zero, zero])
        count = None
        if self.step.hyper.output not in losses.REGRESSION:
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


@dataclass(frozen=True)
class Ran:
    """An epoch that ran on the device and whose metrics are not read back yet: the state it started from, the
    state it left (its ``schedule_state`` still the old one: a record updates it), its rate, its number of
    batches, and its sums on the device (the batches', then the validation blocks')."""

    old: State
    new: State
    lr: float
    batches: int
    loss_sums: list[Any]  # a 0-d array a batch (a pair with sample weights), or one array for a run of batches
    corrects: list[Any]  # the same, as counts; empty for regression
    val_loss: list[Any]
    val_correct: list[Any]


def run_epoch(state, feed, val, runner, schedule, hyper, batch_size, shuffle, comm=None):
    """One pass over ``feed``: ``(new state, record)``, or a :class:`NonFiniteError` if its loss is not finite."""
    ran = start_epoch(state, feed, val, runner, schedule, batch_size, shuffle, comm)
    return next(finish_epochs([ran], feed, val, runner, schedule, comm))


def start_epoch(state, feed, val, runner, schedule, batch_size, shuffle, comm=None) -> Ran:
    """One pass over ``feed`` queued on the device: nothing is read back (see :func:`finish_epochs`)."""
    epoch = state.epoch
    lr = schedule.rate(epoch, state.schedule_state)
    if not (math.isfinite(lr) and lr >= 0):
        raise ConfigError(f"the learning-rate schedule gave {lr!r} for epoch {epoch + 1}; a rate is finite and >= 0")
    rng = _Shuffler(state.rng_state) if shuffle else None
    rate = runner.rate(lr)
    batches = feed.batches(batch_size, rng, comm, epoch, padded=runner.segments)
    try:
        params, opt_state, loss_sums, corrects, count = runner.run(state.params, state.optimizer_state, batches, rate)
    finally:
        batches.close()  # a generator, or a Prefetcher whose thread stops
    val_loss: list[Any] = []
    val_correct: list[Any] = []
    if val is not None:
        val_loss, val_correct = val.evaluate_sums(params, runner.compiled)
    rng_state = state.rng_state if rng is None else rng.state()
    new = State(params, opt_state, epoch + 1, rng_state, state.schedule_state)
    return Ran(state, new, lr, count, loss_sums, corrects, list(val_loss), list(val_correct))


class _Shuffler:
    """An epoch's shuffling generator, made from its state only when a feed draws from it: making one costs more
    than a small compiled step, and a full batch draws nothing (its state then stays the same object)."""

    def __init__(self, state: dict[str, Any]):
        self.start = state
        self.rng: np.random.Generator | None = None

    def __getattr__(self, name: str) -> Any:  # permutation, ...: the generator's own methods
        if self.rng is None:
            rng = np.random.Generator(np.random.PCG64(0))
            rng.bit_generator.state = self.start
            self.rng = rng
        return getattr(self.rng, name)

    def state(self) -> dict[str, Any]:
        return self.start if self.rng is None else dict(self.rng.bit_generator.state)


def finish_epochs(
    ran: list[Ran], feed: Any, val: Any, runner: Runner, schedule: Any, comm: Any = None
) -> Iterator[tuple[State, dict[str, float]]]:
    """The epochs ``ran``, in order, as ``(new state, record)``, their metrics read back together (one
    :func:`read_back`); raises :class:`NonFiniteError` on reaching an epoch whose loss is not finite."""
    hyper, xp = runner.step.hyper, runner.step.xp
    floats = [a for r in ran for a in (*r.loss_sums, *r.val_loss)]
    counts = [a for r in ran for a in (*r.corrects, *r.val_correct)]
    # Counts join the losses' transfer only where they stay exact in the float dtype (below 2**24 each).
    rows = max(feed.n_rows, 0 if val is None else val.n_rows) * labels_per_row(hyper)
    merge = runner.merge_reads and rows < 2**24
    host_floats, host_counts = read_back(floats, xp, counts, stack=runner.stack_reads, merge=merge)
    width = 1 if feed.weight_total is None else 2  # with sample weights each batch gives [loss, weighted loss]
    f = c = 0
    for r in ran:
        nf, nv = sum(math.prod(a.shape) for a in r.loss_sums), len(r.val_loss)
        batch_sums = host_floats[f : f + nf].reshape(-1, width)
        val_floats, f = host_floats[f + nf : f + nf + nv], f + nf + nv
        nc, nvc = sum(math.prod(a.shape) for a in r.corrects), len(r.val_correct)
        batch_counts, val_counts, c = host_counts[c : c + nc], host_counts[c + nc : c + nc + nvc], c + nc + nvc
        yield _record(r, feed, val, hyper, schedule, comm, batch_sums, val_floats, batch_counts, val_counts)


def _record(r, feed, val, hyper, schedule, comm, batch_sums, val_floats, batch_counts, val_counts):
    batch_losses = batch_sums[:, 0]
    has_correct = bool(r.corrects)
    sums = [float(np.sum(batch_losses)), float(np.sum(batch_sums[:, -1]))]
    if has_correct:
        sums.append(float(np.sum(batch_counts)))
    if comm is not None:
        sums = comm.sum_scalars(sums)
    n = feed.n_rows
    record = {"loss": sums[0] * loss_scale(hyper, n)}
    if feed.weight_total is not None:  # the weighted mean over the rows: sum(w l) / sum(w), per output
        record["weighted_loss"] = sums[1] * loss_scale(hyper, n) * n / feed.weight_total
    if not math.isfinite(record["loss"]):
        raise non_finite(r.old.epoch, batch_losses, record["loss"], r.batches)
    if has_correct:
        record["accuracy"] = sums[2] / (n * labels_per_row(hyper))
    if val is not None:
        n_val = val.n_rows
        record["val_loss"] = float(np.sum(val_floats)) * loss_scale(hyper, n_val)
        if has_correct:
            record["val_accuracy"] = float(np.sum(val_counts)) / (n_val * labels_per_row(hyper))
    record["lr"] = r.lr
    new = State(r.new.params, r.new.optimizer_state, r.new.epoch, r.new.rng_state,
                schedule.update(r.old.schedule_state, record))  # fmt: skip
    return new, record


def read_back(
    arrays: list[Any], xp: Any, counts: list[Any] | None = None, stack: bool = True, merge: bool = False
) -> Any:
    """0-d (or 1-d) arrays of one dtype copied to the host together, flat, as float64 (one transfer).

    With ``counts`` (integer arrays), ``(floats, counts)`` come back; with ``merge`` from one transfer still,
    the counts cast to the floats' dtype on the device (exact only below 2**24 each: the caller knows). With
    ``stack=False`` (a namespace whose every eager operation is a dispatch: JAX) the arrays are copied one by
    one, which waits for the device once and costs no operation."""
    if counts is None:
        return _host(arrays, xp, stack)
    if not (merge and stack and arrays and counts):
        return _host(arrays, xp, stack), _host(counts, xp, stack)
    floats = _flat(arrays, xp)
    both = xp.concat([floats, xp.astype(_flat(counts, xp), floats.dtype)])
    host = np.asarray(_backend.to_numpy(both), dtype=np.float64)
    return host[: floats.shape[0]], host[floats.shape[0] :]


def _flat(arrays: list[Any], xp: Any) -> Any:
    if any(a.ndim for a in arrays):
        return xp.concat([xp.reshape(a, (-1,)) for a in arrays])
    return xp.reshape(arrays[0], (1,)) if len(arrays) == 1 else xp.stack(arrays)


def _host(arrays: list[Any], xp: Any, stack: bool = True) -> np.ndarray:
    if not arrays:
        return np.zeros(0)
    if not stack:
        return np.concatenate([np.asarray(_backend.to_numpy(a), dtype=np.float64).reshape(-1) for a in arrays])
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


def non_finite(epoch: int, batch_losses: np.ndarray, loss: float, batches: int | None = None) -> NonFiniteError:
    """The error of an epoch whose loss is not finite, naming the first batch that was not (or the update);
    ``batches`` is the epoch's count where ``batch_losses`` has more entries (zeros past the last batch)."""
    bad = np.flatnonzero(~np.isfinite(batch_losses))
    total = batch_losses.size if batches is None else batches
    where = f"batch {bad[0] + 1} of {total}" if bad.size else "the weight update"
    return NonFiniteError(
        f"training diverged in epoch {epoch + 1}, {where}: loss is {loss}. The model keeps the weights "
        "of the last finite epoch; try a smaller lr, clip_norm=, or standardized features"
    )


def overflowed(epoch: int) -> NonFiniteError:
    """The error of an epoch whose loss was finite but whose final update left weights that are not finite."""
    return NonFiniteError(
        f"training diverged in epoch {epoch + 1}: its last weight update left weights that are not finite. The "
        "model keeps the weights of the last finite epoch; try a smaller lr, clip_norm=, or standardized features"
    )


def learns(schedule: Any) -> bool:
    """True for a schedule whose next rate depends on the last epoch's record (plateau)."""
    return schedule.name == "plateau"


# The divergence check's default factor, and the loss below which it measures growth from a floor instead (for
# the cross-entropies, in nats: a classifier that guesses has a loss of about ln k).
DIVERGE_FACTOR = settings.DIVERGE_FACTOR
CROSS_ENTROPY_FLOOR = 1.0


class DivergenceGuard:
    """Stops a fit whose loss explodes while staying finite.

    An epoch diverges when its loss exceeds ``factor`` times the reference of this fit: the first epoch's loss
    (the loss of the weights the fit started from), or, for the cross-entropy losses, 1 nat when that is larger
    (so a warm start at a tiny loss does not turn normal noise into a "divergence"). ``factor=None`` turns the
    check off."""

    def __init__(self, factor: float | None, loss: str):
        self.factor = factor
        self.floor = 0.0 if loss == "mse" else CROSS_ENTROPY_FLOOR
        self.reference: float | None = None

    def check(self, epoch: int, record: dict[str, float]) -> None:
        """Raise :class:`DivergenceError` if the record of epoch ``epoch`` (0-based) diverged."""
        if self.factor is None:
            return
        loss = record["loss"]
        if self.reference is None:
            self.reference = max(loss, self.floor)
        elif loss > self.factor * self.reference:
            floor = ", or 1 nat if larger" if self.floor else ""
            raise DivergenceError(
                f"training diverged in epoch {epoch + 1}: the loss grew to {loss:.4g}, more than "
                f"diverge_factor={self.factor:g} times {self.reference:.4g} (the loss this fit started from{floor}). "
                f"The model keeps the weights from before epoch {epoch} (whose updates exploded); try a smaller lr, "
                "clip_norm=, or standardized features, or pass diverge_factor=None to train on"
            )


def summarize(spec: Any, loss_sums: list[Any], corrects: list[Any], n: int) -> dict[str, float]:
    """The mean loss and accuracy of ``n`` rows from their blocks' sums."""
    out = {"loss": float(np.sum(read_back(loss_sums, spec.xp))) * loss_scale(spec, n)}
    if corrects:
        out["accuracy"] = float(np.sum(read_back(corrects, spec.xp))) / (n * labels_per_row(spec))
    return out
