"""One step's batch as a feed hands it to the training loop."""

from __future__ import annotations

from typing import Any, NamedTuple


class Batch(NamedTuple):
    """One step's share of an epoch: this rank's ``shard_rows`` rows of a global batch of ``rows``, starting at
    the global batch's row ``offset``.

    ``x``, ``target`` and ``weight`` (sample weights as a (rows, 1) column, or None) are the rows themselves, or,
    where ``order`` (an index array on the device: the epoch's shuffled order) is given, the whole arrays whose
    rows ``order[start : start + shard_rows]`` make the batch. The step gathers them itself, which a compiled
    step does inside the compiled function: no separate slice or gather, and no copy of the batch.
    ``weight_total`` is the global batch's weight total when ranks share a batch (each rank divides by it), else
    None (the step sums its own weights). ``real_rows``, where set, says that ``x``, ``target``, ``weight`` (and
    ``order``) are padded with rows of zeros (to :func:`gpunn._backend.bucket` of it) of which the first
    ``real_rows`` are the data: a compiled step then masks the rest, and compiles once for every size that pads
    to the same rows."""

    x: Any
    target: Any
    rows: int
    shard_rows: int
    weight: Any
    offset: int
    weight_total: Any
    order: Any = None
    start: int = 0
    real_rows: int | None = None
