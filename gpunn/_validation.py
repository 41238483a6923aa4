"""Input checks at the public boundary: every rejection is a gpunn error that names the problem.

Host data (NumPy arrays, lists) is checked on the host, before it is moved. Arrays already on the model's
device are checked there with one read-back per call, never inside a training step.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat as aac
import numpy as np

from . import _backend
from .errors import ConfigError, DeviceError, InputError, InputTypeError


def _kind_error(name: str, dtype: Any) -> InputTypeError:
    return InputTypeError(f"{name} has dtype {dtype}; gpunn trains on real numbers (float, int or bool)")


def host_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a NumPy array of a real numeric dtype, or a clear error."""
    if x is None:
        raise InputTypeError(f"{name} is None; pass an array of shape (n_samples, ...)")
    try:
        a = np.asarray(x)
    except ValueError as exc:
        raise InputError(f"{name} is ragged: its rows have different lengths ({exc})") from None
    if a.dtype.kind not in "fiub":
        raise _kind_error(name, a.dtype)
    return a


def check_features(x: Any, n_features: int | None, name: str = "X") -> None:
    """Shape checks shared by host and device arrays."""
    shape = tuple(x.shape)
    if len(shape) != 2:
        hint = ""
        if len(shape) == 1 and n_features not in (None, 1) and shape[0] == n_features:
            hint = " (a single sample? use X.reshape(1, -1))"
        elif len(shape) == 1 and n_features in (None, 1):
            hint = " (a single feature? use X.reshape(-1, 1))"
        raise InputError(f"{name} must be 2-D (n_samples, n_features); got shape {shape}{hint}")
    if shape[0] == 0:
        raise InputError(f"{name} is empty: it has 0 samples")
    if shape[1] == 0:
        raise InputError(f"{name} has 0 features")
    if n_features is not None and shape[1] != n_features:
        raise InputError(f"{name} has {shape[1]} features but the model expects {n_features}")


def first_bad(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the first True in ``mask``."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_finite_host(a: np.ndarray, cast: np.ndarray, name: str, dtype: str) -> None:
    """Reject NaN, inf, and finite values that overflow ``dtype`` (``cast`` is ``a`` converted to it)."""
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        where = first_bad(~np.isfinite(a))
        raise InputError(f"{name} holds {a[where]} at {_position(where)}; gpunn needs finite values")
    if cast.dtype != a.dtype and not np.isfinite(cast).all():
        where = first_bad(~np.isfinite(cast))
        raise InputError(f"{name} holds {a[where]} at {_position(where)}, too large for {dtype}")


def cast_host(a: np.ndarray, dtype: str, name: str) -> np.ndarray:
    """``a`` converted to ``dtype``, after checking that every value is finite and fits."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by position
        cast = a.astype(dtype, copy=False)
    check_finite_host(a, cast, name, dtype)
    return cast


def _position(where: tuple[int, ...]) -> str:
    if len(where) == 2:
        return f"row {where[0]}, column {where[1]}"
    return f"row {where[0]}"


def check_device_array(x: Any, xp: Any, device: Any, name: str) -> None:
    """An array that is not host data must be in the model's namespace and on its device."""
    try:
        ns = aac.array_namespace(x)
    except TypeError:
        raise InputTypeError(f"{name} has type {type(x).__name__}, which gpunn cannot read") from None
    if ns is not xp:
        raise InputTypeError(
            f"{name} is a {_backend.namespace_name(ns)} array but the model runs on "
            f"{_backend.namespace_name(xp)}; pass convert=True to copy it over (through DLPack where it can), "
            "or pass a NumPy array"
        )
    if not _backend.is_traced(x) and not _backend.same_device(aac.device(x), device):
        raise DeviceError(f"{name} is on device {aac.device(x)} but the model is on {device}; move one of them")
    if not xp.isdtype(x.dtype, ("real floating", "integral", "bool")):
        raise _kind_error(name, x.dtype)


def labels_host(y: np.ndarray, output: str, n_outputs: int, name: str = "y") -> None:
    """Check class labels on the host: finite, whole numbers, inside the model's classes."""
    if output == "identity" or y.dtype.kind == "b":
        return
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            where = first_bad(bad)
            raise InputError(f"{name} holds {y[where]} at {_position(where)}; class labels must be whole numbers")
    top = 1 if output == "sigmoid" else n_outputs - 1
    bad = (y < 0) | (y > top)
    if bad.any():
        where = first_bad(bad)
        allowed = "{0, 1}" if output == "sigmoid" else f"0..{top}"
        raise InputError(f"{name} holds label {y[where]} at {_position(where)}, outside {allowed}")


def target_shape(y_shape: tuple[int, ...], n: int, output: str, n_outputs: int, name: str = "y") -> None:
    """y is (n,) or (n, 1), or (n, n_outputs) for models with several sigmoid or identity outputs."""
    if len(y_shape) == 0 or y_shape[0] != n:
        got = y_shape[0] if y_shape else "no"
        raise InputError(f"X has {n} rows but {name} has {got}")
    allowed = [(n,), (n, 1)] if n_outputs == 1 or output == "softmax" else [(n, n_outputs)]
    if tuple(y_shape) not in allowed:
        raise InputError(f"{name} has shape {tuple(y_shape)}; expected {' or '.join(map(str, allowed))}")


def _number(value: Any) -> float:
    """``value`` as a float: numbers only (a string such as "0.1" or a bool is a mistake, not a number)."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError
    return float(value)


def positive_float(value: Any, name: str) -> float:
    """A finite float > 0, or ConfigError."""
    try:
        f = _number(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number > 0; got {value!r}") from None
    if not math.isfinite(f) or f <= 0:
        raise ConfigError(f"{name} must be a finite number > 0; got {value!r}")
    return f


def non_negative_float(value: Any, name: str) -> float:
    """A finite float >= 0, or ConfigError."""
    try:
        f = _number(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number >= 0; got {value!r}") from None
    if not math.isfinite(f) or f < 0:
        raise ConfigError(f"{name} must be a finite number >= 0; got {value!r}")
    return f


def integer(value: Any, name: str, minimum: int) -> int:
    """An int >= minimum (bools and fractional numbers rejected), or ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def dtype_name(value: Any) -> Any:
    """ "float32" for "float32", np.float32 or np.dtype("float32") (and so on); anything else as it is."""
    if isinstance(value, str):
        return value
    try:
        return np.dtype(value).name
    except TypeError:
        return value


def choice(value: Any, name: str, options: tuple[str, ...]) -> str:
    """One of ``options``, or ConfigError listing them."""
    if value not in options:
        raise ConfigError(f"{name} {value!r} is not known; use one of {', '.join(options)}")
    return value
