"""gpunn: a from-scratch neural network written once against the Python Array API standard.

The same forward and backward code trains on NumPy (CPU), CuPy (CUDA), PyTorch, JAX and array-api-strict.
"""

import sys

from . import _entry  # first, before anything heavy: the gpunn command's guard against Ctrl-C while it starts

if _entry.launched_as_command():  # Ctrl-C during the imports below ends as the command's does (one line, 130)
    _entry.guard_module_run()

from . import callbacks, schedules
from ._load import load
from ._version import __version__
from .ensemble import Ensemble
from .errors import (
    CheckpointError,
    ConfigError,
    DeviceError,
    DivergenceError,
    GpunnError,
    InputError,
    InputTypeError,
    NonFiniteError,
    NotFittedError,
    OutOfMemoryError,
)
from .feed import stream
from .history import History
from .model import MLP
from .train import compile_cache

# ``gpunn.stream`` (streamed training's placement and ``PREFETCH``) lives in the feed layer; the old name stays.
sys.modules[f"{__name__}.stream"] = stream

__all__ = [
    "MLP",
    "Ensemble",
    "callbacks",
    "schedules",
    "History",
    "load",
    "compile_cache",
    "CheckpointError",
    "ConfigError",
    "DeviceError",
    "DivergenceError",
    "GpunnError",
    "InputError",
    "InputTypeError",
    "NonFiniteError",
    "NotFittedError",
    "OutOfMemoryError",
    "__version__",
]
