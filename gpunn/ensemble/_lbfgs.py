"""The ensemble's epoch under ``optimizer="lbfgs"``: one iteration of every member that has not stopped, by one
:class:`gpunn.lbfgs.Solver` over the stacked buffers (each member its own history and line search), with the
records :mod:`gpunn.ensemble._loop` commits as it commits an SGD epoch's."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import lbfgs, settings, train
from ..step import StackedHyper
from ._plan import Plan

if TYPE_CHECKING:
    from . import Ensemble


def solver(ens: Ensemble, plan: Plan, hyper: StackedHyper, s: settings.FitSettings) -> lbfgs.Solver:
    """The members' solver on the plan's full batch (X shared; members on their own rows as counts)."""
    m = plan.n_rows if plan.weight_totals is None else plan.weight_totals
    for member in ens.members:
        member.stopped_by = None
    data = (plan.x, plan.t, plan.w_dev, plan.mask)
    return lbfgs.Solver(hyper, s.optimizers[0], ens.xp, ens.device, ens.members[0].dtype, ens.compile, data,
                        list(m), list(plan.n_rows), s.l2)  # fmt: skip


def epoch(ens: Ensemble, plan: Plan, solver: lbfgs.Solver, val: Any, params: Any, state: dict[str, Any],
          active: list[bool], active_dev: Any, rng_states: Any, evaluate: Any = None):  # fmt: skip
    """As :func:`gpunn.ensemble._loop._epoch`: ``(params, state, records, taken, failed)``. Members that stopped
    (converged, or out of evaluations) are first set inactive in ``active``: they train no more in this fit."""
    members, k = ens.members, len(ens.members)
    m0 = members[0]
    solver.start(params, active)
    for i in range(k):
        if solver.reasons[i] is not None and active[i]:
            active[i], members[i].stopped_by = False, solver.reasons[i]
    if not any(active):
        return params, state, [{} for _ in range(k)], np.zeros((1, k), dtype=bool), {}
    s, y = solver.pairs(state, True)
    new, s, y, result = solver.iterate(params, s, y, active)
    for j in np.flatnonzero(result.ran):
        members[j].stopped_by = result.reasons[j]
    new_state = {
        "step": state["step"],
        **{f"s{i}": a for i, a in enumerate(s)},
        **{f"y{i}": a for i, a in enumerate(y)},
    }
    val_floats = val_counts = None
    if val is not None:
        loss_sums, corrects = evaluate(ens, new, val)
        val_floats, val_counts = train.read_back(loss_sums, ens.xp, corrects)
        val_floats = val_floats.reshape(-1, k).sum(axis=0)
        val_counts = val_counts.reshape(-1, k).sum(axis=0) if corrects else None
    weighted = plan.weight_totals is not None
    records: list[dict[str, float]] = []
    failed: dict[int, Exception] = {}
    for i in range(k):
        if not result.ran[i]:
            records.append({})
            continue
        record = lbfgs.row_record(result.rows[i], m0.spec, weighted, plan.n_rows[i])
        if not math.isfinite(record["loss"]):
            failed[i] = train.non_finite(members[i].epoch, np.asarray([record["loss"]]), record["loss"])
        if val_floats is not None:
            n_val = val.n_rows
            record["val_loss"] = float(val_floats[i]) * train.loss_scale(m0.spec, n_val)
            if val_counts is not None:
                record["val_accuracy"] = float(val_counts[i]) / (n_val * train.labels_per_row(m0.spec))
        record["lr"] = float(result.steps[i])
        records.append(record)
    return new, new_state, records, result.ran.reshape(1, k), failed
