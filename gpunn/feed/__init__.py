"""The feed layer: user input checked, scaled, placed on the model's device and batched, in memory or streamed.

It knows a model only by its :class:`Spec` (namespace, device, dtype, widths, activation, output, feature
names). Two feeds, :class:`Memory` and :class:`Streamed`, give the training loop the same interface:
``n_rows``, ``weight_total``, ``batches(batch_size, rng, comm, epoch)`` and ``evaluate_sums(params)``.
"""

from . import encode, evaluate, holdout, learn, predict, sparse, stream
from .batch import Batch
from .checks import (
    adopt,
    adopt_fit,
    as_model_array,
    check_x,
    column,
    fit_scaling,
    frame_columns,
    place_x,
    prepare_x,
    sample_weights,
    targets,
)
from .evaluate import block_sums
from .memory import Memory
from .prepare import Learned, Prepared, prepare
from .spec import Spec
from .stream import Streamed

__all__ = [
    "Batch", "Learned", "Memory", "Prepared", "Spec", "Streamed", "adopt", "adopt_fit", "as_model_array", "block_sums",
    "check_x", "column", "encode", "evaluate", "fit_scaling", "frame_columns", "holdout", "learn", "place_x",
    "predict", "prepare", "prepare_x", "sample_weights", "sparse", "stream", "targets",
]  # fmt: skip
