"""The ensemble's epoch loop: K members' batches, one stacked step for all, per-member records and callbacks.

It mirrors :mod:`gpunn.train` member by member (each member draws its shuffling order from its own generator,
records its own History, follows its own schedule and stops on its own callbacks), so that member k ends where
``MLP.fit`` would have taken it alone (the same computation; summed in another order, see docs/ensembles.md).
Between epochs the members' host state (generator, epoch, history, schedule state) is committed on the members
themselves; their arrays are the rows of the stacked buffers,
handed to the member models after every epoch when callbacks need them, else once at the end of ``fit``.

How a step's batch is laid out depends on the rows the members train on:

- every member on all rows, full batch: X (n, in) itself, shared (never copied K times);
- every member on all rows, minibatches in order: the same slice of X for every member;
- every member on all rows, shuffled minibatches: each member's rows gathered in its own order, (K, rows, in);
- members on their own rows (``rows=``), full batch without dropout: X shared, with each member's multiplicity
  of every row as a mask (K, n, 1);
- members on their own rows otherwise: gathered in each member's order and padded to the longest batch, with a
  mask that keeps the padding out (a member whose epoch has fewer batches sits out its last steps).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .. import _backend, feed, lbfgs, losses, optim, settings, train
from ..data import Dataset
from ..data.moments import row_blocks
from ..errors import ConfigError, DivergenceError, InputError
from ..feed.sparse import Placed
from ..history import History, Reporter
from ..layers import forward_stacked, unflatten_stacked
from ..step import StackedHyper, StackedStep, member_values, stacked_hyper
from . import _args, _distributed, _lbfgs
from ._plan import Plan, Run, gather

if TYPE_CHECKING:
    from . import Ensemble


# ----------------------------------------------------------------------------------------------- fit
def fit(ens: Ensemble, X: Any, y: Any, *, epochs: int, lr: Any, batch_size: int | None, optimizer: Any,
        shuffle: bool, validation_data: Any, verbose: int, clip_norm: float | None, callbacks: Any, l2: Any,
        convert: bool, copy: bool, weight_decay: Any, sample_weight: Any, class_weight: Any,
        rows: Any, on_epoch: Any = None, comm: Any = None,
        diverge_factor: float | None = settings.DIVERGE_FACTOR, split: Any = None) -> list[History]:  # fmt: skip
    """:meth:`Ensemble.fit`: every argument checked before anything changes, then one stacked run (or, with
    ``split``, :func:`gpunn.ensemble._members.run`'s: the members split over the ranks)."""
    members, k, m0 = ens.members, len(ens.members), ens.members[0]
    s = settings.fit_settings(
        k, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, weight_decay=weight_decay, l2=l2,
        clip_norm=clip_norm, verbose=verbose, shuffle=shuffle, diverge_factor=diverge_factor, convert=convert,
        copy=copy,
    )  # fmt: skip
    lbfgs.check(s, [m.dropout for m in members], comm, False)
    member_callbacks = _args.member_callbacks(callbacks, k)
    if on_epoch is not None and not callable(on_epoch):
        raise ConfigError(f"on_epoch must be a callable on_epoch(ensemble, records); got {type(on_epoch).__name__}")
    distinct = {id(c): c for cs in member_callbacks for c in cs}.values()
    weighted = sample_weight is not None or class_weight is not None
    settings.check_callbacks(distinct, m0.output, validation_data is not None, weighted)
    if any(not same_scaling(m.scaling, m0.scaling) for m in members):
        raise ConfigError("the members standardize their inputs differently; an ensemble trains on one scaling")
    if isinstance(X, Dataset) or isinstance(validation_data, Dataset):
        raise InputError("Ensemble.fit takes arrays in memory; a streamed gpunn.data.Dataset trains one MLP at a time")
    if convert:
        X, y, validation_data = feed.adopt_fit(m0.spec_for((1, 1)), X, y, validation_data)
    with _backend.device_scope(ens.xp, ens.device):
        encoding = feed.learn.encoding(m0.encoding, X, not m0.fitted)  # one for every member
        sizes = m0.sizes or feed.learn.sizes(m0.hidden or [], m0.spec_for((1, 1), encoding), X, y)
        p, member_rows = _prepare(ens, sizes, X, y, validation_data, rows, sample_weight, class_weight, copy, encoding)
        # Everything is valid: from here on the call changes the members (and, with copy=False, X).
        for m in members:
            m.build(sizes)
        if comm is not None:  # every rank must train the same members on the same data, from the same weights
            _agree(ens, comm, p, s, member_rows)
        for m, opt, schedule in zip(members, s.optimizers, s.schedules):
            m.learned = p.learned
            m.begin(opt, schedule)
        first, before = [m.history.epochs for m in members], _backend.compiles()
        verbose = s.verbose if comm is None or comm.rank == 0 else 0
        if split is not None:
            split(ens, p, s, member_rows, sizes, verbose, member_callbacks, on_epoch)
        else:
            # (L-BFGS's solver pads its own full batch: lbfgs._pad)
            plan = Plan(ens, p.x, p.target, p.weight_host, member_rows, s.batch_size, s.shuffle,
                        pad=comm is None and s.optimizers[0].name != "lbfgs")  # fmt: skip
            _run(ens, plan, validation(p), _hyper(ens, sizes, s), s, verbose, member_callbacks, on_epoch, comm)
    return _compiled_since(before, [m.history.since(f) for m, f in zip(members, first)], verbose)


def _compiled_since(before: tuple[int, float], histories: list[History], verbose: int) -> list[History]:
    """``histories``, each reporting the programs the fit compiled since ``before`` (shared by every member), as
    MLP.fit's does; printed with ``verbose=2``, where a user looks at every epoch and sees a recompilation."""
    programs, seconds = train.compiles_since(before)
    if programs and verbose >= 2:
        print(f"compiled {programs} program(s) in {seconds:.2f} s", flush=True)
    for h in histories:
        h.compiles, h.compile_seconds = programs, seconds
    return histories


def _prepare(ens: Ensemble, sizes: list[int], X: Any, y: Any, validation_data: Any, rows: Any, sample_weight: Any,
             class_weight: Any, copy: bool, encoding: Any) -> tuple[feed.Prepared, Any]:  # fmt: skip
    """:func:`gpunn.feed.prepare` with the members' rows (``rows=``) and sample weights (one row per member)."""
    k, m0 = len(ens.members), ens.members[0]
    chosen: list[Any] = [None]

    def weights(spec: feed.Spec, y: Any, n: int) -> np.ndarray | None:
        chosen[0] = member_rows = _args.check_rows(rows, k, n)
        if member_rows is not None:
            _args.check_member_classes(spec, y, member_rows)
            if m0.standardize and m0.scaling is None:
                raise ConfigError("rows= with standardize=True: each member would learn its own scaling; "
                                  "standardize X beforehand (or fit the ensemble once on all rows)")  # fmt: skip
        return _args.weights(spec, sample_weight, class_weight, y, n, k, member_rows)

    p = feed.prepare(m0.spec_for(sizes, encoding), m0.learned, X, y, validation_data, first=not m0.fitted, copy=copy,
                     weights=weights)  # fmt: skip
    return p, chosen[0]


def validation(p: feed.Prepared) -> feed.Memory | None:
    """The fit's validation data as a lone network's (:class:`gpunn.feed.Memory`): its rows padded once, where the
    namespace compiles, to the power of two a lone network pads them to (:func:`evaluate_sums`)."""
    return None if p.val is None else feed.Memory(p.spec, *p.val)


def _agree(ens: Ensemble, comm: Any, p: feed.Prepared, s: settings.FitSettings, rows: Any) -> None:
    """Every rank trains the same members on the same data with the same settings, from rank 0's weights."""
    members, m0 = ens.members, ens.members[0]
    comm.check_agreement(
        p.spec, p.x, p.target, p.weight_host, dropout_rate=m0.dropout,
        generator=m0.rng.bit_generator.state, scaling=p.learned.scaling, epochs=s.epochs, batch_size=s.batch_size,
        shuffle=s.shuffle, members=len(members), seeds=[m.seed for m in members], optimizer=list(s.optimizers),
        lr=list(s.schedules), l2=list(s.l2), clip_norm=s.clip_norm, dropout=[m.dropout for m in members],
        rows=_distributed.rows_digest(rows), generators=_distributed.generators(members),
    )  # fmt: skip
    for m, params in zip(members, comm.broadcast_arrays([m.params for m in members], ens.xp, ens.device)):
        m.set_state(params, m.optimizer_state)


def _hyper(ens: Ensemble, sizes: list[int], s: settings.FitSettings) -> StackedHyper:
    members, m0, opts = ens.members, ens.members[0], s.optimizers
    wd = None if opts[0].name != "adamw" else tuple(o.hyper["weight_decay"] for o in opts)
    return stacked_hyper(sizes, m0.activation, m0.output, m0.loss, opts[0], s.l2, s.clip_norm,
                         tuple(m.dropout for m in members), tuple(m.seed for m in members), wd,
                         m0.label_smoothing)  # fmt: skip


def same_scaling(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return all(np.array_equal(u, v) for u, v in zip(a, b))


# ----------------------------------------------------------------------------------------------- runner
@functools.lru_cache(maxsize=16)
def _compiled(structure: StackedHyper, xp: Any, device: Any, dtype: str, required: bool) -> tuple[StackedStep, tuple]:
    """The stacked step of a hyper's :meth:`~gpunn.step.StackedHyper.structure` and its compiled forms (the whole
    step, its two data-parallel halves, and where the compiler has a loop, a run of steps as one loop), kept
    across fits: the values come as arrays, so every fit of the same structure and shapes reuses them."""
    step = StackedStep(structure, xp, device, dtype)
    compiler = _backend.compiler(xp, required)
    scan = _backend.scan(xp)
    loop = None if scan is None else compiler(functools.partial(_scanned, step, scan))
    return step, (compiler(step), compiler(step.gradients), compiler(step.apply), loop)


def _scanned(step: StackedStep, scan: Any, params: Any, state: Any, lr: Any, values: Any, x: Any, t: Any, w: Any,
             xs: tuple, active: Any) -> tuple[Any, Any, Any, Any]:  # fmt: skip
    """The steps of a :class:`~._plan.Run` as one loop of the compiler: each step's batch gathered inside it
    from ``x``, ``t`` and ``w`` by the run's per-step indices ``xs``; the members' metrics stacked per step."""

    def body(carry: tuple[Any, Any], per_step: Any) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
        idx, widx, mask, rows, took = per_step

        def run(carry: tuple[Any, Any]) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
            xb, tb, wb, mask_b, rows_b, took_b = gather(x, t, w, idx, widx, mask, rows, took, active, step.xp)
            p, s, loss_sum, correct = step(*carry, xb, tb, lr, wb, mask_b, rows_b, took_b, values)
            return (p, s), (loss_sum, correct)

        if took is None or mask is None or cond is None:
            return run(carry)
        # a padded Run's steps past every member's last batch: skipped, their sums zero (see _plan.Plan.pad)
        return cond(step.xp.any(took), run, lambda carry: (carry, _backend.zeros_of(run, carry)[1]), carry)

    cond = _backend.cond(step.xp)
    (params, state), (loss_sums, corrects) = scan(body, (params, state), xs)
    return params, state, loss_sums, corrects


# A compiled full-batch fit runs up to this many epochs as one call of the compiler (:meth:`_Runner.epochs`), as a
# hand-written scan over the epochs does: one call an epoch costs more than its dispatch, since XLA's CPU runtime
# allocates a call's temporaries afresh, and above 32 MiB (64 networks 10-32-32-1 on 1000 rows) the C library
# maps those pages from the kernel every time: 8300 page faults, as long as the step itself. A block keeps no
# state but its last (an epoch's start is computed again when a rollback asks for it, :class:`_After`), so its
# length costs no memory. How many of its epochs a call runs is set by time (:meth:`_Runner.live`): the first call
# one, each later one as many as the calls before it say fit in BLOCK_SECONDS, so that an interrupt or a progress
# line waits about that long, whatever the data's size.
BLOCK = 128
BLOCK_SECONDS = 1.0


@functools.lru_cache(maxsize=16)
def _blocked(step: StackedStep, epochs: int) -> Any:
    """The compiled :func:`_epochs` of ``step`` for blocks of ``epochs`` epochs (one program for any shorter block)."""
    xp = step.xp
    return _backend.compiler(xp, True)(functools.partial(_epochs, step, _backend.scan(xp), _backend.cond(xp)))


def _epochs(step: StackedStep, scan: Any, cond: Any, params: Any, state: Any, lrs: Any, live: Any, values: Any,
            x: Any, t: Any, w: Any, mask: Any, rows: Any, active: Any) -> tuple[Any, Any, Any, Any]:  # fmt: skip
    """Full-batch epochs as one loop: epoch e at the rates ``lrs[e]`` (K, 1) where ``live[e]``, the rest of the
    block skipped (so that a shorter block runs in the same program). Returns the parameters and state after
    the block and every epoch's metrics (zeros for a skipped one)."""

    def one(carry: tuple[Any, Any], lr: Any) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
        p, s, loss_sum, correct = step(*carry, x, t, lr, w, mask, rows, active, values)
        return (p, s), (loss_sum, correct)

    blank = _backend.zeros_of(one, (params, state), lrs[0, ...])[1]

    def body(carry: tuple[Any, Any], per_epoch: Any) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
        lr, on = per_epoch
        return cond(on, lambda c: one(c, lr), lambda c: (c, blank), carry)

    (params, state), (loss_sums, corrects) = scan(body, (params, state), (lrs, live))
    return params, state, loss_sums, corrects


class _After:
    """The stacked parameters and state after the first ``epochs`` epochs of a block (:func:`_block`), computed
    again from the block's start by the same program (the later epochs skipped, so the same numbers) when a
    rollback asks for them: only a member's failure or an interrupted commit does, so a block keeps no epoch's
    state but its last. Stands in the parameters' place in :func:`_run` (:func:`_now`)."""

    def __init__(self, form: Any, start: tuple, lrs: Any, batch: tuple, values: Any, plan: Plan, epochs: int):
        self.form, self.start, self.lrs, self.batch, self.values = form, start, lrs, batch, values
        self.plan, self.epochs = plan, epochs
        self.arrays: tuple[Any, Any] | None = None

    def get(self) -> tuple[Any, Any]:
        if self.arrays is None:
            live = self.plan.up(np.arange(self.lrs.shape[0]) < self.epochs, bool)
            params, state = self.form(*self.start, self.lrs, live, self.values, *self.batch)[:2]
            self.arrays = params, state
        return self.arrays


def _now(params: Any, state: Any) -> tuple[Any, dict[str, Any]]:
    """The stacked parameters and state, computed where an epoch inside a block left an :class:`_After` (and no
    state) in their place."""
    return params.get() if isinstance(params, _After) else (params, state)


class _Runner:
    """The stacked step, through the namespace's compiler when asked (as :class:`gpunn.train.Runner`); with
    ``comm``, on this rank's shard of every batch (:func:`._distributed.shard_step`). Compiled, it is the step
    of the hyper's structure, its values (rates, penalties, decays, clip norm, dropout) passed as arrays."""

    def __init__(self, hyper: StackedHyper, xp: Any, device: Any, dtype: str, compile: Any, comm: Any = None):
        self.mode, self.xp, self.device, self.comm, self.hyper = compile, xp, device, comm, hyper
        self.dtype_name = dtype
        required = compile is True
        self.compiled = compile is not False and _backend.compiler(xp, required) is not None
        if self.compiled:
            self.step, self._forms = _compiled(hyper.structure(), xp, device, dtype, required)
            self.values = self.step.values(hyper, arrays=True)
        else:
            self.step = StackedStep(hyper, xp, device, dtype)
            self.values = self.step.own
        self._eager = (self.step, self.step.gradients, self.step.apply, None)
        self.dtype = self.step.zero.dtype
        self._rates: dict[tuple[float, ...], Any] = {}
        self.pace: float | None = None  # seconds an epoch of the last block took (:meth:`live`)
        self.queued: _Queued | None = None  # the next block, given to the device ahead (:func:`_block`)

    @property
    def loops(self) -> bool:
        """True where an epoch's runs of steps go to the compiler as one loop (:class:`~._plan.Run`)."""
        return self.compiled and self.comm is None and self._forms[3] is not None

    def rate(self, lrs: list[float]) -> Any:
        """The members' rates as the step takes them: one float or a (K, 1) array, or (compiled) always a (K, 1)
        array (so that no rate is compiled in), made once per distinct set of rates."""
        if not self.compiled:
            return member_values(tuple(lrs), self.xp, self.device, self.dtype)
        key = tuple(lrs)
        return train.cached_rate(self._rates, key, lambda: member_values(key, self.xp, self.device, self.dtype, True))

    def _fall_back(self, exc: Exception, lr: Any) -> Any:
        train.fall_back(exc, self.mode, self.xp, "the ensemble's step")
        self.compiled = False
        self.step = StackedStep(self.hyper, self.xp, self.device, self.dtype_name)
        self.values = self.step.own
        self._eager = (self.step, self.step.gradients, self.step.apply, None)
        host = _backend.to_numpy(lr)
        return member_values(tuple(float(v) for v in host.reshape(-1)), self.xp, self.device, self.dtype)

    def steps(self, state: dict[str, Any], k: int) -> dict[str, Any]:
        if self.compiled and isinstance(state["step"], int):  # compile once, not once for an int and once more
            step = self.xp.full((k, 1), state["step"], dtype=self.xp.int32, device=self.device)
            return {**state, "step": step}
        return state

    def __call__(self, params: Any, state: Any, batch: tuple, lr: Any):
        if self.compiled:
            try:
                return self._run(params, self.steps(state, params.shape[0]), batch, lr, self._forms)
            except Exception as exc:
                lr = self._fall_back(exc, lr)
        return self._run(params, state, batch, lr, self._eager)

    def _run(self, params: Any, state: Any, batch: tuple, lr: Any, forms: tuple):
        if self.comm is None:
            return forms[0](params, state, batch[0], batch[1], lr, *batch[2:], self.values)
        return _distributed.shard_step(self.step, forms[1:3], self.comm, params, state, batch, lr, self.values)

    def epochs(self, params: Any, state: Any, batch: tuple, lrs: Any, live: Any) -> tuple | None:
        """A block of full-batch epochs as one compiled call (:func:`_epochs`), or None after the compiler
        failed (under ``compile="auto"``: the fit goes on one eager epoch at a time)."""
        try:
            form = _blocked(self.step, live.shape[0])
            return form(params, self.steps(state, params.shape[0]), lrs, live, self.values, *batch)
        except Exception as exc:
            self._fall_back(exc, lrs[0, ...])
            return None

    def live(self, epochs: int) -> int:
        """How many of ``epochs`` the next block runs: one at first, then as many as the last block's time an
        epoch says fit in :data:`BLOCK_SECONDS`, or all of them where that leaves less than a quarter as many
        (one call fewer, a quarter longer)."""
        if self.pace is None:
            return min(epochs, 1)
        n = max(1, int(min(epochs, BLOCK_SECONDS / self.pace if self.pace > 0 else epochs)))
        return epochs if 4 * (epochs - n) < n else n

    def run(self, params: Any, state: Any, run: Run, lr: Any) -> tuple[Any, Any, Any, Any]:
        """The steps of ``run`` as one compiled loop, their metrics stacked (steps, K, ...); after the compiler
        failed (under ``compile="auto"``), one eager step each, their metrics stacked the same way."""
        if self.compiled:
            try:
                return self._forms[3](params, self.steps(state, params.shape[0]), lr, self.values, run.x, run.t,
                                      run.w, run.xs, run.active)  # fmt: skip
            except Exception as exc:
                lr = self._fall_back(exc, lr)
        xp, loss_sums, corrects = self.xp, [], []
        for i in range(run.steps):
            idx, widx, mask, rows, took = (None if a is None else a[i, ...] for a in run.xs)
            batch = gather(run.x, run.t, run.w, idx, widx, mask, rows, took, run.active, xp)
            params, state, loss_sum, correct = self(params, state, batch, lr)
            loss_sums.append(loss_sum)
            corrects.append(correct)
        return params, state, xp.stack(loss_sums), None if corrects[0] is None else xp.stack(corrects)


# ----------------------------------------------------------------------------------------------- loop
def stack(ens: Ensemble, compiled: bool = False) -> tuple[Any, dict[str, Any], list[int]]:
    """The members' parameters and optimizer state as stacked (K, P) buffers, and their step counts (stacked on
    the host where an eager stack would compile: :func:`gpunn._backend.stack`)."""
    xp, members, device = ens.xp, ens.members, ens.device
    params = _backend.stack([m.params for m in members], xp, device)
    states: list[dict[str, Any]] = [m.optimizer_state for m in members]  # type: ignore[misc]
    name = members[0].optimizer.name  # type: ignore[union-attr]
    steps = [int(s["step"]) for s in states]
    slots = optim.slots(name, members[0].optimizer.hyper)  # type: ignore[union-attr]
    state: dict[str, Any] = {slot: _backend.stack([s[slot] for s in states], xp, device) for slot in slots}
    if all(s == steps[0] for s in steps) and not compiled:
        state["step"] = steps[0]
    else:
        state["step"] = _backend.from_numpy(np.asarray(steps, dtype=np.int32).reshape(-1, 1), xp, device)
    return params, state, steps


def _hand_over(ens: Ensemble, params: Any, state: dict[str, Any], steps: list[int], which: Iterable[int]) -> None:
    """Members ``which`` take their rows of the stacked buffers (views where the namespace has them)."""
    which = list(which)
    params, state = _now(params, state)
    if len(which) < 2 and not _backend.compiles_eagerly(ens.xp):
        for i in which:
            ens.members[i].set_state(params[i, :], _row(state, steps, i))
        return
    if not which:
        return
    # every row at once: one operation where each row would be one (a dispatch, and on JAX a program)
    xp, device = ens.xp, ens.device
    rows = _backend.unstack(params, xp, device)
    slots = {s: _backend.unstack(v, xp, device) for s, v in state.items() if s != "step"}
    for i in which:
        ens.members[i].set_state(rows[i], {"step": steps[i], **{s: v[i] for s, v in slots.items()}})


def _run(ens: Ensemble, plan: Plan, val: Any, hyper: StackedHyper, s: settings.FitSettings, verbose: int,
         member_callbacks: list[list[Any]], on_epoch: Any = None, comm: Any = None) -> None:  # fmt: skip
    """``s.epochs`` epochs of every member that has not diverged, committing each member's epoch as
    :meth:`gpunn.MLP.fit` commits a lone network's: its host state every epoch, its rows of the stacked arrays
    when a callback needs them and at the end. A member whose loss is not finite or explodes stops where a lone
    network would (:func:`_set_aside`), and the others train on."""
    xp, members, k = ens.xp, ens.members, len(ens.members)
    runner: Any = _Runner(hyper, xp, ens.device, members[0].dtype, ens.compile, comm)
    run_epoch = _epoch
    if hyper.optimizer.name == "lbfgs":  # an iteration an epoch; members stop as they converge
        runner = _lbfgs.solver(ens, plan, hyper, s)
        run_epoch = functools.partial(_lbfgs.epoch, evaluate=evaluate_sums)
    params, state, steps = stack(ens, runner.compiled)
    active = [d is None for d in ens.diverged]
    any_callbacks = any(member_callbacks) or on_epoch is not None
    block = _block_size(runner, plan, val, verbose, any_callbacks, members)
    guards = [train.DivergenceGuard(s.diverge_factor, members[0].loss) for _ in range(k)]
    previous: list[Any] = [None] * k  # a member's state at the start of its last committed epoch
    start = max(m.epoch for m in members)
    reporter = Reporter(verbose, start, start + s.epochs)
    handed = list(range(k))  # members whose arrays are not yet the current rows
    try:
        with _backend.memory_guard(ens.device, plan.bs[0] if plan.bs[0] < plan.n else None):
            pending: list[tuple] = []  # epochs that ran as one block (:func:`_block`), not yet committed
            for done in range(s.epochs):
                if not any(active):
                    break
                if not pending:
                    active_dev = None if all(active) else plan.up(np.array(active).reshape(k, 1), bool)
                    rngs = [m.rng.bit_generator.state for m in members]
                    params, state = _now(params, state)
                    if block:
                        pending = _block(ens, plan, runner, params, state, active, active_dev, s.epochs - done,
                                         reporter) or []  # fmt: skip
                        block = block if pending else 0  # the compiler failed: eager epochs from here on
                    if not pending:
                        pending = [(params, state, *run_epoch(ens, plan, runner, val, params, state, active,
                                                              active_dev, rngs))]  # fmt: skip
                start_params, start_state, new_params, new_state, records, taken, failed = pending.pop(0)
                before = (start_params, start_state, list(steps), rngs)
                host = [(m.epoch, m.schedule_state) for m in members]
                try:  # the epoch's commit, every member's or none (an interrupt here returns all to `before`)
                    new_steps = [a + b for a, b in zip(steps, taken.sum(axis=0).tolist())]
                    for i in range(k):
                        if active[i] and i not in failed:
                            try:
                                guards[i].check(members[i].epoch, records[i])
                            except train.DivergenceError as exc:
                                failed[i] = exc
                    ran = [i for i in range(k) if active[i] and i not in failed]
                    for i in ran:
                        m = members[i]
                        previous[i] = (before, m.schedule_state)
                        schedule_state = m.schedule.update(m.schedule_state, records[i])  # type: ignore[union-attr]
                        m.history.append(records[i])
                        m.schedule_state, m.epoch = schedule_state, m.epoch + 1
                    params, state, steps = new_params, new_state, new_steps
                except BaseException:
                    params, state, steps, handed = before[0], before[1], before[2], list(range(k))
                    for m, rng_state, (epoch, schedule_state) in zip(members, before[3], host):
                        m.rng.bit_generator.state, m.epoch, m.schedule_state = rng_state, epoch, schedule_state
                        m.history.truncate(epoch)
                    raise
                if failed:
                    pending = []  # the block's later epochs ran with the failed members: they run again without them
                    params, state, steps = _fail(ens, failed, before, previous, params, state, steps, runner.compiled)
                    for i in failed:
                        active[i], records[i] = False, {}
                    _every_member_failed(ens)
                if ran and reporter.verbose:  # (the mean of 64 records costs a tenth of a small step)
                    reporter.epoch(max(members[i].epoch for i in ran), _mean_record([records[i] for i in ran]))
                if not any_callbacks:
                    continue
                _hand_over(ens, params, state, steps, ran)
                given = {i: (members[i].params, members[i].optimizer_state) for i in ran}
                for i in ran:
                    results = [callback(members[i], records[i]) for callback in member_callbacks[i]]
                    if results.count(False):
                        active[i], previous[i] = False, None
                if any(members[i].params is not given[i][0] or members[i].optimizer_state is not given[i][1]
                       for i in ran):  # fmt: skip
                    # a callback set a member's weights (EarlyStopping's best epoch): the stack takes them
                    params, state, steps = stack(ens, runner.compiled)
                handed = [i for i in range(k) if i not in ran]
                if on_epoch is not None:  # every member now holds its state after the epoch
                    on_epoch(ens, records)
            # The last epoch's final update, which no later loss measures (an epoch's loss is computed on the
            # weights the one before it left): a member left with weights that are not finite fails that epoch.
            finite = _backend.finite_rows(_now(params, state)[0], xp)
            failed = {i: train.overflowed(members[i].epoch - 1) for i in range(k)
                      if previous[i] is not None and ens.diverged[i] is None and not finite[i]}  # fmt: skip
            if failed:
                now = (params, state, steps, [m.rng.bit_generator.state for m in members])
                params, state, steps = _fail(ens, failed, now, previous, params, state, steps, runner.compiled)
                _every_member_failed(ens)
    finally:
        reporter.close()
        _hand_over(ens, params, state, steps, handed if any_callbacks else list(range(k)))


def _block_size(runner: Any, plan: Plan, val: Any, verbose: int, any_callbacks: bool, members: list[Any]) -> int:
    """How many full-batch epochs go to the compiler as one call (:func:`_block`), or 0 for one call an epoch:
    where nothing needs each epoch's record as it ends (a callback, a schedule that learns from the loss,
    ``verbose=2``), without validation data: :data:`BLOCK`."""
    if not (isinstance(runner, _Runner) and runner.loops and plan.mode in ("full", "counts")
            and not isinstance(plan.x, Placed) and val is None and not any_callbacks and verbose < 2
            and not any(train.learns(m.schedule) for m in members)):  # fmt: skip
        return 0
    return BLOCK


def _fail(ens: Ensemble, failed: dict[int, Exception], before: tuple, previous: list[Any], params: Any, state: Any,
          steps: list[int], compiled: bool) -> tuple[Any, Any, list[int]]:  # fmt: skip
    """Members ``failed`` set aside (:func:`_set_aside`) from ``before``, the state at the start of the epoch that
    failed; the stacked buffers made again from every member's state."""
    _hand_over(ens, params, state, steps, range(len(ens.members)))
    _set_aside(ens, failed, before, previous)
    return stack(ens, compiled)


def _every_member_failed(ens: Ensemble) -> None:
    if all(d is not None for d in ens.diverged):
        raise DivergenceError("every member of the ensemble diverged; " + "; ".join(
            d for d in ens.diverged[:3] if d is not None) + ("; ..." if len(ens.diverged) > 3 else ""))  # fmt: skip


def _set_aside(ens: Ensemble, failed: dict[int, Exception], before: tuple, previous: list[Any]) -> None:
    """Members ``failed`` (member index: its error) stop where a lone MLP stops after the same error, by its own
    :meth:`gpunn.MLP.step_back` from the state before the failed epoch. They are marked in ``ens.diverged``, left
    out of the ensemble's predictions with a warning, and sit out from then on (when every member has diverged,
    ``fit`` raises :class:`DivergenceError`). Runs only on this failure path."""
    for i, exc in failed.items():
        m = ens.members[i]
        last = None
        if previous[i] is not None:  # the start of the member's last committed epoch, as MLP._previous holds it
            (params, state, steps, rngs), schedule_state = previous[i]
            params, state = _now(params, state)
            last = (params[i, :], _row(state, steps, i), rngs[i], schedule_state)
        params, state, steps, rngs = before
        params, state = _now(params, state)
        m.set_state(params[i, :], _row(state, steps, i), last)
        m.rng.bit_generator.state = rngs[i]  # the failed epoch's draws are not kept
        m.step_back(exc)  # type: ignore[arg-type]
        ens.diverged[i] = message = f"member {i}: {exc}"
        warnings.warn(
            f"gpunn: ensemble {message.rstrip('.')}. It is left out of the ensemble's predictions "
            "(Ensemble.diverged) while the other members train on.",
            RuntimeWarning,
            stacklevel=5,
        )


def _row(state: dict[str, Any], steps: list[int], i: int) -> dict[str, Any]:
    """Member i's optimizer state from the stacked one."""
    return {"step": steps[i], **{s: v[i, :] for s, v in state.items() if s != "step"}}


def _mean_record(records: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([r[key] for r in records])) for key in records[0]}


def _epoch(ens, plan, runner, val, params, state, active, active_dev, rng_states):
    """One pass for every active member; returns the new stacked state and each member's record, having
    changed nothing (if it raises, the members' generators are put back to ``rng_states``, their states before
    it)."""
    xp, members, k = ens.xp, ens.members, len(ens.members)
    try:
        lrs = _rates(members, active)
        lr = runner.rate(lrs)
        batches, taken = plan.epoch(members, active, active_dev, runner.loops)
        loss_sums, corrects = [], []
        for batch in batches:  # a step's batch, or a run of steps (their metrics then stacked, (steps, K, ...))
            if isinstance(batch, Run):
                params, state, loss_sum, correct = runner.run(params, state, batch, lr)
            else:
                batch = (feed.sparse.placed(batch[0]), *batch[1:])  # a sparse X's rows, densified batch by batch
                params, state, loss_sum, correct = runner(params, state, batch, lr)
            loss_sums.append(loss_sum)
            corrects.append(correct)
        has_correct = corrects[0] is not None
        val_loss: list[Any] = []
        val_correct: list[Any] = []
        if val is not None:
            val_loss, val_correct = evaluate_sums(ens, params, val)
        host_loss = _read_back(loss_sums + val_loss, xp)
        # (counts of masked batches are floats, the others integers: read back apart)
        host_counts = _read_back(corrects, xp) if has_correct else None
        host_val_counts = _read_back(val_correct, xp) if has_correct else None
        width = 1 if plan.weight_totals is None else 2
        s = taken.shape[0]  # steps
        comm = runner.comm
        if comm is not None:  # each rank summed its shards; every rank evaluated all the validation rows
            train_part = host_loss[: s * k * width].tolist() + ([] if host_counts is None else host_counts.tolist())
            summed = np.asarray(comm.sum_scalars(train_part))
            host_loss = np.concatenate([summed[: s * k * width], host_loss[s * k * width :]])
            host_counts = None if host_counts is None else summed[s * k * width :]
        records, failed = _records(ens, plan, val, host_loss, host_counts, host_val_counts, taken, lrs, active)
    except BaseException:
        for m, rng_state in zip(members, rng_states):
            m.rng.bit_generator.state = rng_state
        raise
    return params, state, records, taken, failed


class _Queued(NamedTuple):
    """A block of full-batch epochs given to the device and not read back yet (:func:`_dispatch`)."""

    params: Any  # the stacked parameters and state it started from
    state: Any
    active: list[bool]
    rates: list[list[float]]  # each epoch's members' rates
    lrs: Any  # the same on the device, padded to BLOCK epochs
    batch: tuple
    taken: np.ndarray
    out: tuple  # :meth:`_Runner.epochs`'s arrays
    began: float  # when it was given to the device, and the compile seconds by then
    compiling: float


def _dispatch(ens: Ensemble, plan: Plan, runner: _Runner, params: Any, state: Any, active: list[bool],
              active_dev: Any, epochs: int, reporter: Reporter, ahead: int = 0) -> _Queued | None:  # fmt: skip
    """Up to ``epochs`` full-batch epochs (as many as :meth:`_Runner.live` gives), from ``ahead`` epochs after the
    members' next, as one compiled call, nothing read back. It ends early where a progress line is due and
    before an epoch whose rate is not valid (which then raises as the first of the next block, once the epochs
    before it are committed). None if the compiler failed."""
    members, k = ens.members, len(ens.members)
    rates = [_rates(members, active, ahead)]
    first = max(m.epoch for m, a in zip(members, active) if a) + ahead
    epochs = runner.live(epochs)
    while len(rates) < epochs and not (reporter.verbose and reporter.due(first + len(rates))):
        try:
            rates.append(_rates(members, active, ahead + len(rates)))
        except ConfigError:
            break
    n, size = len(rates), BLOCK
    lrs = plan.up(np.asarray(rates + [rates[0]] * (size - n)).reshape(size, k, 1))
    batches, taken = plan.epoch(members, active, active_dev)
    began, compiling = perf_counter(), _backend.compiles()[1]
    out = runner.epochs(params, runner.steps(state, k), batches[0], lrs, plan.up(np.arange(size) < n, bool))
    return None if out is None else _Queued(params, state, list(active), rates, lrs, batches[0], taken, out, began,
                                            compiling)  # fmt: skip


def _block(ens: Ensemble, plan: Plan, runner: _Runner, params: Any, state: Any, active: list[bool], active_dev: Any,
           remaining: int, reporter: Reporter) -> list[tuple] | None:  # fmt: skip
    """The next block of full-batch epochs (:func:`_dispatch`; of the ``remaining`` epochs) with their metrics
    read back together: for each epoch, the stacked parameters and state at its start, then what :func:`_epoch`
    returns. The block after it is given to the device before this one's records are made, so that the host's
    bookkeeping (records, commits) runs while the device computes; it is taken only if the members' parameters,
    state and active set are still the ones it started from (a member's failure restacks them). None if the
    compiler failed."""
    k = len(ens.members)
    queued, runner.queued = runner.queued, None
    if not runner.compiled:  # the compiler failed on the block given ahead
        return None
    if queued is None or queued.params is not params or queued.state is not state or queued.active != active:
        queued = _dispatch(ens, plan, runner, params, state, active, active_dev, min(BLOCK, remaining), reporter)
        if queued is None:
            return None
    rates, n = queued.rates, len(queued.rates)
    end_params, end_state, loss_sums, corrects = queued.out
    host_loss = _backend.to_numpy(loss_sums).astype(np.float64)  # (size, K) or, with weights, (size, K, 2)
    # the block's time an epoch, its compile left out (the read-back waited for its end)
    runner.pace = max(0.0, perf_counter() - queued.began - (_backend.compiles()[1] - queued.compiling)) / n
    host_counts = None if corrects is None else _backend.to_numpy(corrects).astype(np.float64)
    if remaining > n:
        try:
            runner.queued = _dispatch(ens, plan, runner, end_params, end_state, active, active_dev,
                                      min(BLOCK, remaining - n), reporter, ahead=n)  # fmt: skip
        except ConfigError:  # an invalid rate: raised by the next block, once these epochs are committed
            pass
    form = _blocked(runner.step, BLOCK)  # (captured: a later block the compiler refuses changes the runner's step)
    start = (queued.params, runner.steps(queued.state, k))
    points = [start] + [(_After(form, start, queued.lrs, queued.batch, runner.values, plan, e), None)
                        for e in range(1, n)] + [(end_params, end_state)]  # fmt: skip
    epochs_out = []
    for e in range(n):
        counts = None if host_counts is None else host_counts[e]
        records, failed = _records(ens, plan, None, host_loss[e].reshape(-1), counts, None, queued.taken, rates[e],
                                   active, e)  # fmt: skip
        epochs_out.append((*points[e], *points[e + 1], records, queued.taken, failed))
    return epochs_out


def _rates(members: list[Any], active: list[bool], ahead: int = 0) -> list[float]:
    """The members' rates for the epoch ``ahead`` epochs from their next (a schedule that learns from the records
    gives the next one only); a rate that is not finite and >= 0 raises :class:`ConfigError`."""
    lrs: list[float] = []
    for i, m in enumerate(members):
        if not active[i]:
            continue
        rate = m.schedule.rate(m.epoch + ahead, m.schedule_state)
        if not (math.isfinite(rate) and rate >= 0):
            raise ConfigError(f"member {i}: the learning-rate schedule gave {rate!r} for epoch {m.epoch + ahead + 1}; "
                              "a rate is finite and >= 0")  # fmt: skip
        lrs.append(rate)
    it = iter(lrs)
    return [next(it) if a else lrs[0] for a in active]  # members sitting out take any rate: they do not move


def _records(ens: Ensemble, plan: Plan, val: Any, host_loss: np.ndarray, host_counts: Any, host_val_counts: Any,
             taken: np.ndarray, lrs: list[float], active: list[bool], ahead: int = 0
             ) -> tuple[list[dict[str, float]], dict[int, Exception]]:  # fmt: skip
    """Every member's record of an epoch (``ahead`` epochs from its next) from its sums read back (the batches'
    loss sums, then the validation blocks'; the correct counts apart), and the members whose loss is not finite
    (member index: its error)."""
    members, k, m0 = ens.members, len(ens.members), ens.members[0]
    width = 1 if plan.weight_totals is None else 2
    s = taken.shape[0]  # steps
    batch_sums = host_loss[: s * k * width].reshape(s, k, width)
    val_sums = host_loss[s * k * width :].reshape(-1, k)
    counts = None if host_counts is None else host_counts.reshape(s, k)
    val_counts = None if host_val_counts is None else host_val_counts.reshape(-1, k)
    # Every member's sums over its own steps at once (a loop over K members here would cost more than the step)
    totals = np.where(taken[:, :, None], batch_sums, 0.0).sum(axis=0)  # steps a member sat out may hold anything
    n_rows = np.asarray(plan.n_rows, dtype=np.float64)
    scales = losses.scales(m0.output, m0.loss, n_rows, m0.n_outputs)[0]  # every member's at once
    loss = totals[:, 0] * scales
    columns: dict[str, np.ndarray] = {"loss": loss}
    if plan.weight_totals is not None:
        columns["weighted_loss"] = totals[:, -1] * scales * n_rows / np.asarray(plan.weight_totals)
    labels = m0.n_outputs if m0.output == "sigmoid" else 1
    if counts is not None:
        columns["accuracy"] = np.where(taken, counts, 0.0).sum(axis=0) / (n_rows * labels)
    if val is not None:
        n_val = val.n_rows
        columns["val_loss"] = val_sums.sum(axis=0) * losses.scales(m0.output, m0.loss, n_val, m0.n_outputs)[0]
        if val_counts is not None:
            columns["val_accuracy"] = val_counts.sum(axis=0) / (n_val * labels)
    columns["lr"] = np.asarray(lrs)
    listed = {key: value.tolist() for key, value in columns.items()}
    records: list[dict[str, float]] = [{key: listed[key][i] for key in listed} if active[i] else {} for i in range(k)]
    failed: dict[int, Exception] = {
        i: train.non_finite(members[i].epoch + ahead, batch_sums[taken[:, i], i, 0], loss[i])
        for i in range(k)
        if active[i] and not math.isfinite(loss[i])
    }
    return records, failed


def _read_back(arrays: list[Any], xp: Any) -> np.ndarray:
    """:func:`gpunn.train.read_back` of the members' (K,) sums, without a concatenation for a single array (nor
    any, where an eager one would compile a program: copied one by one)."""
    if len(arrays) == 1:
        return np.asarray(_backend.to_numpy(arrays[0]), dtype=np.float64).reshape(-1)
    return train.read_back(arrays, xp, stack=not _backend.compiles_eagerly(xp))


def evaluate_sums(ens: Ensemble, params: Any, val: feed.Memory) -> tuple[list[Any], list[Any]]:
    """Per-member summed loss (K,) and correct count (K,) of every block of EVAL_ROWS rows of the validation data
    (:func:`validation`); on a namespace whose eager operations compile (JAX), each block one compiled program
    on its rows padded to a power of two (:meth:`gpunn.feed.Memory.padded`, as a lone network's), the padding
    masked out: one program for every such bucket of validation sizes (no eager slice, forward or loss
    compiled one by one)."""
    xp, m0 = ens.xp, ens.members[0]
    x, target, n = val.x, val.target, val.n_rows
    zero = _backend.from_numpy(np.zeros((), dtype=m0.dtype), xp, ens.device)
    structure = (tuple(m0.sizes), m0.activation if isinstance(m0.activation, str) else tuple(m0.activation),
                 m0.output, m0.loss, xp)  # fmt: skip
    loss_sums, corrects = [], []
    if ens.compile is not False and _backend.compiles_eagerly(xp) and not isinstance(x, feed.sparse.Placed):
        x, target, _ = val.padded()
        size = min(x.shape[0], feed.evaluate.EVAL_ROWS)
        block = _compiled_val_block(*structure, size)
        for start in range(0, n, size):  # (a block's start and rows as arrays: one program for every block)
            loss_sum, correct = block(params, x, target, np.int32(start), np.int32(min(size, n - start)), zero)
            loss_sums.append(loss_sum)
            if correct is not None:
                corrects.append(correct)
        return loss_sums, corrects
    for rows in row_blocks(n, feed.evaluate.EVAL_ROWS):
        xb, tb = feed.evaluate.block_of(x, target, rows)
        loss_sum, correct = _val_block(*structure, None, params, xb, tb, 0, None, zero)
        loss_sums.append(loss_sum)
        if correct is not None:
            corrects.append(correct)
    return loss_sums, corrects


def _val_block(sizes: tuple, activation: Any, output: str, loss: str, xp: Any, size: int | None, params: Any,
               x: Any, target: Any, start: Any, valid: Any, zero: Any) -> tuple[Any, Any]:  # fmt: skip
    """Every member's summed loss and correct count on ``x``, or (``size``) on its ``size`` rows from ``start``,
    the first ``valid`` of them counted (the rows past the end read its last row, and count for nothing)."""
    mask = None
    if size is not None:
        if size != x.shape[0]:
            idx = xp.minimum(xp.arange(size) + start, x.shape[0] - 1)
            x, target = _backend.take_rows(x, idx, xp), _backend.take_rows(target, idx, xp)
        mask = xp.reshape(xp.astype(xp.arange(size) < valid, x.dtype), (-1, 1))
    z = forward_stacked(unflatten_stacked(params, sizes, xp), x, activation, xp)[0]
    loss_sum, _, correct = losses.head(output, loss, z, target, zero, xp, members=True, mask=mask)
    return loss_sum, correct


@functools.lru_cache(maxsize=16)
def _compiled_val_block(sizes: tuple, activation: Any, output: str, loss: str, xp: Any, size: int) -> Any:
    compiler = _backend.compiler(xp)
    return compiler(functools.partial(_val_block, sizes, activation, output, loss, xp, size))
