"""Array operations per training step, counted with PyTorch's profiler (``python -m benchmarks.ops``).

On a GPU each operation is a kernel launch, so the count is the step's cost for the sizes users train; these
are the targets of the training-step design, kept from creeping back up. Counting is deterministic: this is no
timing test.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from benchmarks import ops  # noqa: E402

# (cell, optimizer, dropout): operations per step. Dropout's masks cost one hash of every hidden unit of the
# batch, about 30 operations for all layers together, plus a multiply per layer forward and backward.
TARGETS = {("tiny", "sgd", 0.0): 42, ("tiny", "adam", 0.0): 55, ("mid-128", "sgd", 0.0): 40, ("tiny", "adam", 0.2): 90}
# mid-128 on 1024 of its 8192 rows: the same step (784 features, batch 128) at an eighth of the time; with 8 steps an
# epoch instead of 64, what an epoch costs once weighs more per step, so the target holds at least as strictly.
ROWS = {"mid-128": 1024}


@pytest.mark.parametrize("cell,optimizer,dropout", list(TARGETS), ids=[f"{c}-{o}-{d}" for c, o, d in TARGETS])
def test_operations_per_step_stay_within_the_targets(cell, optimizer, dropout):
    result = ops.measure(cell, optimizer, dropout, n=ROWS.get(cell))
    assert result["ops_per_step"] <= TARGETS[cell, optimizer, dropout], result["breakdown"]
    # Nothing turns a Python scalar into an array, and nothing reads a value back, inside an epoch's steps: the
    # one host array moved per epoch is the shuffled order.
    uploads = result["not_counted"].get("aten::lift_fresh", 0) * result["steps"]
    assert uploads <= result["epochs"], result["not_counted"]
    assert not {"aten::item", "aten::_local_scalar_dense"} & set(result["breakdown"]), result["breakdown"]


# gpunn.Ensemble: one stacked step for every member, so its count does not grow with the members (issue 18: 32
# members at most 1.15x one member), and one member costs what a lone MLP does.
ENSEMBLE_TARGETS = {("tiny", "sgd"): 42, ("tiny", "adam"): 55}


@pytest.mark.parametrize("cell,optimizer", list(ENSEMBLE_TARGETS), ids=[f"{c}-{o}" for c, o in ENSEMBLE_TARGETS])
def test_an_ensemble_step_costs_the_operations_of_one_network(cell, optimizer):
    one = ops.measure(cell, optimizer, members=1)
    many = ops.measure(cell, optimizer, members=32)
    assert one["ops_per_step"] <= ENSEMBLE_TARGETS[cell, optimizer], one["breakdown"]
    assert many["ops_per_step"] <= 1.15 * one["ops_per_step"], (many["breakdown"], one["breakdown"])
    uploads = many["not_counted"].get("aten::lift_fresh", 0) * many["steps"]
    assert uploads <= many["epochs"], many["not_counted"]
    assert not {"aten::item", "aten::_local_scalar_dense"} & set(many["breakdown"]), many["breakdown"]


# Host read-backs (issue 20.9): without callbacks a fit reads its metrics back once per progress line, not once
# per epoch; a callback (which takes every epoch's record) brings back one per epoch.
@pytest.mark.parametrize("verbose", [1, 0])
def test_metrics_come_back_once_per_progress_line(verbose):
    r = ops.readbacks("tiny", epochs=40, verbose=verbose)
    # after a first fit of 1 epoch, epochs 2..41: a line every 4 epochs and one at the end (verbose=0: where the
    # lines would be), against 40 read-backs before
    assert r["read_backs"] <= 11, r
    if verbose:
        assert r["lines"] == 11 and r["per_line"] <= 1, r
    every = ops.readbacks("tiny", epochs=12, verbose=1, callbacks=True)
    assert every["read_backs"] == 12, every
