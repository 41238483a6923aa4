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


@pytest.mark.parametrize("cell,optimizer,dropout", list(TARGETS), ids=[f"{c}-{o}-{d}" for c, o, d in TARGETS])
def test_operations_per_step_stay_within_the_targets(cell, optimizer, dropout):
    result = ops.measure(cell, optimizer, dropout)
    assert result["ops_per_step"] <= TARGETS[cell, optimizer, dropout], result["breakdown"]
    # Nothing turns a Python scalar into an array, and nothing reads a value back, inside an epoch's steps: the
    # one host array moved per epoch is the shuffled order.
    uploads = result["not_counted"].get("aten::lift_fresh", 0) * result["steps"]
    assert uploads <= result["epochs"], result["not_counted"]
    assert not {"aten::item", "aten::_local_scalar_dense"} & set(result["breakdown"]), result["breakdown"]
