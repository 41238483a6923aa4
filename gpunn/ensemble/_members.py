"""``Ensemble.fit(comm=, parallel="members")``: the members split over the ranks, each rank training its own
contiguous slice of them as a smaller ensemble, with no communication between the steps.

Rank r of N takes members ``comm.shard(0, K)`` (sizes differing by at most one) and runs them through the same
epoch loop as one process (:func:`gpunn.ensemble._loop._run`), on every row (or each member's ``rows=``). Each
member's computation is its own in the stacked step, so a member trained on any rank is the member one process
trains. At the end one ``allgather`` hands every member's state (weights, optimizer state, generator, epoch,
history, schedule state, the state its callbacks keep in ``metadata["callbacks"]``, and whether it diverged) to
every rank, so that every rank holds the whole ensemble, as after a fit with ``parallel="rows"``.

When a rank passes ``on_epoch`` (a checkpoint), the ranks gather the members after every epoch too, and
``on_epoch`` sees the whole ensemble. A rank whose members have all stopped (early stopping, divergence) goes on
taking part in these gathers until every rank has finished. Every gather is timed as any collective is
(``GPUNN_MPI_TIMEOUT``): a rank that dies or stalls ends the job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import _backend, distributed, settings
from ..errors import ConfigError, DivergenceError, GpunnError
from ..history import History
from . import _loop
from ._plan import Plan

if TYPE_CHECKING:
    from . import Ensemble

PARALLEL = ("rows", "members")
_NUMBERED = re.compile(r"^(gpunn: ensemble )?member (\d+): ")


def check(comm: Any, parallel: Any, k: int, on_epoch: Any) -> bool:
    """Check ``parallel=`` and, with ``comm``, that every rank splits the same K members the same way, in one
    ``allgather`` before anything changes; every rank raises the same one-line ConfigError if not. Returns whether
    the members are to be gathered after every epoch (some rank passed ``on_epoch``)."""
    settings.communicator(comm)
    problem = None
    if not (isinstance(parallel, str) and parallel in PARALLEL):
        problem = (f"parallel={parallel!r}: give 'rows' (every rank trains every member on its shard of each batch) "
                   "or 'members' (every rank trains its own members on every row)")  # fmt: skip
    if comm is None:
        if problem is not None:
            raise ConfigError(problem)
        return False
    mine = (problem, None if problem else parallel, k, on_epoch is not None)
    every = comm._collective("the check of parallel= at the start of fit", comm.comm.allgather, mine)
    message = _problem(every, comm.size)
    if message is not None:
        exc: Any = ConfigError(message)
        exc.every_rank = True  # every rank raises it: no MPI_Abort needed
        raise exc
    return any(e[3] for e in every)


def _problem(every: list[tuple], size: int) -> str | None:
    """One line naming what is wrong with the ranks' ``(problem, parallel, K, on_epoch)``, else None."""
    bad = [(r, e[0]) for r, e in enumerate(every) if e[0] is not None]
    if bad:
        ranks = [r for r, _ in bad]
        who = f"every rank of {size}" if len(ranks) == size else f"rank{'s' if len(ranks) > 1 else ''} " + ", ".join(
            map(str, ranks)
        ) + f" of {size}"  # fmt: skip
        return f"{bad[0][1]} (on {who})"
    found = distributed.disagreement([{"parallel": repr(e[1]), "members": str(e[2])} for e in every])
    if found is not None:
        return found[0].split(". Every rank must", 1)[0] + ". Every rank must train the same members the same way"
    parallel, k = every[0][1], every[0][2]
    if parallel == "members" and size > k:
        plural = "" if k == 1 else "s"
        return (f"parallel='members' gives every rank at least one member: {size} ranks for {k} member{plural}; start "
                f"at most {k} rank{plural}, or split rows with parallel='rows'")  # fmt: skip
    return None


def run(ens: Ensemble, p: Any, s: Any, rows: Any, sizes: list[int], verbose: int, callbacks: list[list[Any]],
        on_epoch: Any, *, comm: Any, each_epoch: bool) -> None:  # fmt: skip
    """Train this rank's members as an ensemble of their own, then gather every member on every rank."""
    k = len(ens.members)
    lo, hi = distributed.part(k, comm.size, comm.rank)
    sub = type(ens).from_members(ens.members[lo:hi], compile=ens.compile)
    sub.diverged = list(ens.diverged[lo:hi])
    part = dataclasses.replace(s, schedules=s.schedules[lo:hi], optimizers=s.optimizers[lo:hi], l2=s.l2[lo:hi])
    w = p.weight_host
    plan = Plan(sub, p.x, p.target, w if w is None or w.ndim == 1 else w[lo:hi], None if rows is None else rows[lo:hi],
                s.batch_size, s.shuffle)  # fmt: skip
    gather = _Gather(ens, sub, comm, lo, on_epoch)
    try:
        with _renumbered(lo):
            _loop._run(sub, plan, _loop.validation(p), _loop._hyper(sub, sizes, part), part, verbose, callbacks[lo:hi],
                      gather.epoch if each_epoch else None)  # fmt: skip
    except DivergenceError:
        if any(d is None for d in sub.diverged):
            raise
    gather.finish()
    if all(d is not None for d in ens.diverged):  # as one process: every member diverged, on every rank
        exc: Any = DivergenceError("every member of the ensemble diverged; " + "; ".join(
            d for d in ens.diverged[:3] if d is not None) + ("; ..." if k > 3 else ""))  # fmt: skip
        exc.every_rank = True
        raise exc


class _Gather:
    """The members' states exchanged between the ranks: after every epoch for ``on_epoch``, and once at the end."""

    def __init__(self, ens: Ensemble, sub: Ensemble, comm: Any, lo: int, on_epoch: Any):
        self.ens, self.sub, self.comm, self.lo, self.on_epoch = ens, sub, comm, lo, on_epoch
        self.rounds = 0

    def _exchange(self, done: bool, records: list[dict[str, float]]) -> list[tuple]:
        self.rounds += 1
        states = [_state(m, _global(d, self.lo)) for m, d in zip(self.sub.members, self.sub.diverged)]
        # (a rank whose members have finished waits in "the end of fit" while the others go on, epoch by epoch)
        what: Any = "the gather of the members at the end of fit" if done else (
            "the gather of the members after epoch", self.rounds)  # fmt: skip
        every = self.comm._collective(what, self.comm.comm.allgather, (done, states, records))
        for rank, (_, states, _) in enumerate(every):
            if rank == self.comm.rank:
                continue
            first = distributed.part(len(self.ens), self.comm.size, rank)[0]
            for i, state in enumerate(states):
                _take(self.ens, first + i, state)
        self.ens.diverged[self.lo : self.lo + len(self.sub)] = [_global(d, self.lo) for d in self.sub.diverged]
        return every

    def epoch(self, sub: Ensemble, records: list[dict[str, float]]) -> None:
        """The sub-ensemble's ``on_epoch``: every rank's members after this epoch, then the user's ``on_epoch``."""
        every = self._exchange(False, records)
        if self.on_epoch is not None:
            self.on_epoch(self.ens, [r for _, _, rs in every for r in rs])

    def finish(self) -> None:
        """Take part in the gathers until every rank has finished; the last one is the end of ``fit``."""
        while True:
            every = self._exchange(True, [{} for _ in self.sub.members])
            if all(done for done, _, _ in every):
                return
            if self.on_epoch is not None:
                self.on_epoch(self.ens, [r for _, _, rs in every for r in rs])


def _state(m: Any, diverged: str | None) -> dict[str, Any]:
    """What a member's fit changed, on the host."""
    opt = m.optimizer_state
    return {
        "params": _backend.to_numpy(m.params),
        "optimizer": None if opt is None else {
            key: int(v) if key == "step" else _backend.to_numpy(v) for key, v in opt.items()
        },  # fmt: skip
        "rng": m.rng.bit_generator.state, "epoch": m.epoch, "history": m.history.to_dict(),
        "schedule_state": m.schedule_state, "callbacks": m.metadata.get("callbacks"), "diverged": diverged,
    }  # fmt: skip


def _take(ens: Ensemble, i: int, state: dict[str, Any]) -> None:
    """Member i takes the state another rank trained it to."""
    m = ens.members[i]
    opt = state["optimizer"]
    if opt is not None:
        opt = {key: v if key == "step" else _backend.from_numpy(v, m.xp, m.device) for key, v in opt.items()}
    m.set_state(_backend.from_numpy(state["params"], m.xp, m.device), opt)
    m.rng.bit_generator.state = state["rng"]
    m.epoch, m.history, m.schedule_state = state["epoch"], History.from_dict(state["history"]), state["schedule_state"]
    if state["callbacks"] is not None:
        m.metadata["callbacks"] = state["callbacks"]
    ens.diverged[i] = state["diverged"]


def _global(text: str | None, lo: int) -> Any:
    """A message about member i of this rank's slice, about member ``lo + i`` of the ensemble."""
    if text is None or not lo:
        return text
    return _NUMBERED.sub(lambda m: f"{m.group(1) or ''}member {int(m.group(2)) + lo}: ", text, count=1)


@contextlib.contextmanager
def _renumbered(lo: int) -> Iterator[None]:
    """The warnings and errors of this rank's slice name the members as the whole ensemble numbers them."""
    if not lo:
        yield
        return
    log: list[Any] = []
    try:
        with warnings.catch_warnings(record=True) as log:  # type: ignore[assignment]
            yield
    except GpunnError as exc:
        if not _NUMBERED.match(str(exc)):
            raise
        renamed: Any = type(exc)(_global(str(exc), lo))
        renamed.__dict__.update(exc.__dict__)
        raise renamed from None
    finally:
        for w in log:
            warnings.warn(_global(str(w.message), lo), w.category, stacklevel=5)
