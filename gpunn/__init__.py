"""gpunn: a from-scratch neural network written once against the Python Array API standard.

The same forward and backward code trains on NumPy (CPU), CuPy (CUDA), PyTorch, JAX and array-api-strict.
"""

import sys

if getattr(sys, "argv", [])[:1] == ["-m"] and {"gpunn", "-mgpunn"} & set(getattr(sys, "orig_argv", ())):
    # python -m gpunn (sys.argv[0] is "-m" while Python imports this package, before gpunn/__main__.py): Ctrl-C
    # during the imports below ends as the gpunn command's does (one line, status 130), not in a traceback
    try:
        import _gpunn_entry
    except ImportError:  # the package without its entry module (copied alone): Python's own answer stands
        pass
    else:
        _gpunn_entry.guard_module_run()

from . import callbacks, schedules
from ._load import load
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

__version__ = "0.1.0"

# ``gpunn.stream`` (streamed training's placement and ``PREFETCH``) lives in the feed layer; the old name stays.
sys.modules[f"{__name__}.stream"] = stream

__all__ = [
    "MLP",
    "Ensemble",
    "callbacks",
    "schedules",
    "History",
    "load",
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
