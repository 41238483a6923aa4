"""Array operations per training step, counted with PyTorch's profiler (``python -m benchmarks.ops``).

On a GPU each operation is a kernel launch, so the count is the step's cost for the sizes users train; these
are the targets of the training-step design, kept from creeping back up. Counting is deterministic: this is no
timing test.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from benchmarks import ops  # noqa: E402

TARGETS = {("tiny", "sgd"): 42, ("tiny", "adam"): 55, ("mid-128", "sgd"): 40}


@pytest.mark.parametrize("cell,optimizer", list(TARGETS), ids=[f"{c}-{o}" for c, o in TARGETS])
def test_operations_per_step_stay_within_the_targets(cell, optimizer):
    result = ops.measure(cell, optimizer)
    assert result["ops_per_step"] <= TARGETS[cell, optimizer], result["breakdown"]
    # Nothing turns a Python scalar into an array, and nothing reads a value back, inside an epoch's steps: the
    # one host array moved per epoch is the shuffled order.
    uploads = result["not_counted"].get("aten::lift_fresh", 0) * result["steps"]
    assert uploads <= result["epochs"], result["not_counted"]
    assert not {"aten::item", "aten::_local_scalar_dense"} & set(result["breakdown"]), result["breakdown"]
