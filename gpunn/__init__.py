"""gpunn: a from-scratch neural network written once against the Python Array API standard.

The same forward and backward code trains on NumPy (CPU), CuPy (CUDA), PyTorch, JAX and array-api-strict.
"""

from . import callbacks, schedules
from .checkpoint import load
from .ensemble import Ensemble
from .errors import (
    CheckpointError,
    ConfigError,
    DeviceError,
    GpunnError,
    InputError,
    InputTypeError,
    NonFiniteError,
    NotFittedError,
    OutOfMemoryError,
)
from .history import History
from .model import MLP

__version__ = "0.1.0"

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
    "GpunnError",
    "InputError",
    "InputTypeError",
    "NonFiniteError",
    "NotFittedError",
    "OutOfMemoryError",
    "__version__",
]
