"""A lone network's ``fit`` loop: epochs queued on the device, their metrics read back together, each checked by
the divergence guard and committed to the model in order, then the callbacks.

It runs the pure epoch of :mod:`gpunn.train` and speaks to the model through its public training state
(:meth:`gpunn.MLP.training_state`, :meth:`~gpunn.MLP.commit`, :meth:`~gpunn.MLP.step_back`): the model owns its
state and every change of it; this loop decides when.
"""

from __future__ import annotations

from typing import Any

from . import _backend, lbfgs, train
from .errors import NonFiniteError
from .history import Reporter
from .settings import FitSettings

# Epochs queued before their metrics are read back hold their weights and optimizer state alive: at most this
# many bytes of them (a small network queues a progress line's worth of epochs, a large one fewer).
QUEUE_BYTES = 64 << 20


def run(model: Any, data: Any, val: Any, runner: train.Runner, s: FitSettings, verbose: int, callbacks: Any,
        comm: Any) -> None:  # fmt: skip
    """Run ``s.epochs`` epochs, committing each completed one to ``model``, then the callbacks.

    Epochs are queued on the device a progress line's worth at a time (``Reporter.due``) and their metrics
    read back together, unless something needs every epoch's record as it ends: a callback, a schedule that
    learns from the loss (plateau), or other ranks (``comm``). The records, the divergence check and the
    commits are the same either way, in order."""
    reporter = Reporter(verbose, model.epoch, model.epoch + s.epochs)
    per_epoch = bool(callbacks) or comm is not None or train.learns(model.schedule)
    queue_max = 1 if per_epoch else max(1, QUEUE_BYTES // _state_bytes(model))
    guard = train.DivergenceGuard(s.diverge_factor, model.loss)
    queued: list[Any] = []
    try:
        with _backend.memory_guard(model.device, s.batch_size):
            state = model.training_state()
            for _ in range(s.epochs):
                if isinstance(runner, lbfgs.Runner):  # an iteration an epoch, until it converges
                    if runner.done(state):
                        break
                    ran = runner.start_epoch(state, val)
                else:
                    ran = train.start_epoch(state, data, val, runner, model.schedule, s.batch_size, s.shuffle, comm)
                queued.append(ran)
                state = ran.new
                if len(queued) < queue_max and not reporter.due(state.epoch):
                    continue
                stop = _commit_all(model, queued, data, val, runner, comm, guard, reporter, callbacks)
                queued = []
                if stop:
                    break
                state = model.training_state()  # a callback may have changed the weights (EarlyStopping's best)
            if queued:
                _commit_all(model, queued, data, val, runner, comm, guard, reporter, callbacks)
            _check_last_update(model)
            model.stopped_by = runner.reason if isinstance(runner, lbfgs.Runner) else None
        programs, seconds = runner.compiles()
        if programs and verbose >= 2:  # a recompilation, where a user looks at every epoch
            print(f"compiled {programs} program(s) in {seconds:.2f} s", file=reporter.stream, flush=True)
    except KeyboardInterrupt:
        _keep_queued(model, queued, data, val, runner, comm, guard, reporter)
        raise
    except BaseException:
        model.history.truncate(model.epoch)  # a record appended for an epoch that was not committed
        raise
    finally:
        reporter.close()


def _commit_all(model, queued, data, val, runner, comm, guard, reporter, callbacks) -> bool:
    """Read back the queued epochs' metrics, check and commit each in order; True if a callback stops."""
    if isinstance(runner, lbfgs.Runner):
        records = runner.finish_epochs(queued, data, val, model.schedule)
    else:
        records = train.finish_epochs(queued, data, val, runner, model.schedule, comm)
    for ran in queued:
        try:
            new, record = next(records)
            guard.check(ran.old.epoch, record)
        except NonFiniteError as exc:
            model.step_back(exc)
            raise
        model.commit(ran.old, new, record)
        reporter.epoch(model.epoch, record)
        if [callback(model, record) for callback in callbacks].count(False):
            return True
    return False


def _check_last_update(model: Any) -> None:
    """The fit's last update, which no later loss measures (an epoch's loss is computed on the weights the one
    before it left): weights that are not finite fail that epoch, the model back at its start."""
    if model.epoch and not _backend.finite_rows(model.params, model.xp):
        error = train.overflowed(model.epoch - 1)
        model.step_back(error)
        raise error


def _keep_queued(model, queued, data, val, runner, comm, guard, reporter) -> None:
    """On an interrupt, the queued epochs (which ran to the end) are committed, checked as usual."""
    try:
        if queued and queued[0].old.epoch == model.epoch:  # none of them committed yet
            _commit_all(model, queued, data, val, runner, comm, guard, reporter, ())
    finally:
        model.history.truncate(model.epoch)


def _state_bytes(model: Any) -> int:
    params, slots = model.params, sum(1 for k in (model.optimizer_state or {}) if k != "step")
    return max(1, int(params.shape[0]) * (model.xp.finfo(params.dtype).bits // 8) * (1 + slots))
