"""The exceptions gpunn raises. Each subclasses the builtin a caller would catch anyway."""


class GpunnError(Exception):
    """Base class of every gpunn error."""


class InputError(GpunnError, ValueError):
    """Data handed to gpunn is malformed: wrong shape, non-finite values, bad labels, a bad CSV."""


class InputTypeError(GpunnError, TypeError):
    """Data handed to gpunn has a type gpunn cannot train on (strings, objects, complex, None)."""


class ConfigError(GpunnError, ValueError):
    """A hyper-parameter or option has a value gpunn does not accept."""


class DeviceError(GpunnError, ValueError):
    """The requested device or array namespace is not usable here, or data sits on another device."""


class NotFittedError(GpunnError, ValueError):
    """A prediction was asked of a model that has not been trained or loaded."""


class CheckpointError(GpunnError, ValueError):
    """A checkpoint file is missing, truncated, corrupt or does not match the model."""


class NonFiniteError(GpunnError, FloatingPointError, ValueError):
    """Training produced a NaN or infinite loss; the model keeps its last finite weights. A ``ValueError`` too, as
    scikit-learn raises for non-finite weights, so code written against scikit-learn catches it."""


class DivergenceError(NonFiniteError):
    """Training exploded: an epoch's loss, still finite, grew far beyond the loss this ``fit`` started from
    (``fit(diverge_factor=)``); the model keeps the weights of the last epoch before the explosion."""


class OutOfMemoryError(GpunnError, MemoryError):
    """The device ran out of memory; a smaller batch usually fits."""
