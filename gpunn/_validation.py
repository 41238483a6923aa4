"""Input checks at the public boundary: every rejection is a gpunn error that names the problem.

Host data (NumPy arrays, lists) is checked on the host, before it is moved. Arrays already on the model's
device are checked there with one read-back per call, never inside a training step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat as aac
import numpy as np

from . import _backend, losses
from .errors import ConfigError, DeviceError, InputError, InputTypeError


def _kind_error(name: str, dtype: Any) -> InputTypeError:
    return InputTypeError(f"{name} has dtype {dtype}; gpunn trains on real numbers (float, int or bool)")


def host_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a NumPy array of a real numeric dtype, or a clear error."""
    if x is None:
        raise InputTypeError(f"{name} is None; pass an array of shape (n_samples, ...)")
    if isinstance(x, np.ma.MaskedArray) and np.ma.is_masked(x):
        raise InputError(
            f"{name} is a masked array with {int(np.ma.count_masked(x))} masked values, which gpunn "
            "would read as the values under the mask: fill them (.filled(value)) or drop those rows"
        )
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


def finite(
    a: np.ndarray, name: str, columns: Sequence[str] | None = None, row: int = 0, where: str = "",
    cast: np.ndarray | None = None,
) -> None:  # fmt: skip
    """The one finite check: the first NaN or inf in ``a`` is an :class:`InputError` (integers and bools are
    always finite); with ``cast`` (``a`` converted to a narrower dtype), so is the first value too large for it.

    Rows of a file (``columns`` names the columns of ``a``, ``row`` is the file row of its first row and
    ``where`` its row group or block): ``"{name}: row {row + i} ({where}), column {c!r}: {v} is not a finite
    number"`` (``is too large for float32``). An array passed by a user (``columns`` None): ``"{name} holds {v}
    at row i, column j; gpunn needs finite values"`` (``, too large for float32``)."""
    for values, problem in ((a, None), (cast, "too large")):
        if values is None or values.dtype.kind not in "fc" or np.isfinite(values).all():
            continue
        at = first_bad(~np.isfinite(values))
        large = f"too large for {values.dtype}"
        if columns is None:
            tail = f", {large}" if problem else "; gpunn needs finite values"
            raise InputError(f"{name} holds {a[at]} at {_position(at)}{tail}")
        within = f" ({where})" if where else ""
        column = columns[at[1]] if len(at) == 2 else columns[0]
        tail = f"is {large}" if problem else "is not a finite number"
        raise InputError(f"{name}: row {row + at[0]}{within}, column {column!r}: {a[at]} {tail}")


def weights(w: np.ndarray, name: str, column: str | None = None, row: int = 0, where: str = "") -> np.ndarray:
    """The one weight check: sample weights are finite numbers >= 0; returns ``w``, else the first bad one is an
    :class:`InputError`.

    Rows of a file (``column``, the weight column's name; ``row``, the file row of ``w[0]``; ``where``, its row
    group or block): ``"{name}: row {row + i} ({where}), weight column {column!r}: {v} is negative; weights are
    finite numbers >= 0"`` (or ``is not a finite number``). An array passed by a user (``column`` None):
    ``"{name} holds {v} at row {i}; weights must be finite and >= 0"``."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(w) | (w < 0)
    if not bad.any():
        return w
    i = int(np.flatnonzero(bad)[0])
    if column is None:
        raise InputError(f"{name} holds {w[i]} at row {i}; weights must be finite and >= 0")
    problem = "is negative" if w[i] < 0 else "is not a finite number"
    within = f" ({where})" if where else ""
    raise InputError(f"{name}: row {row + i}{within}, weight column {column!r}: {w[i]} {problem}; weights are finite "
                     "numbers >= 0")  # fmt: skip


def batch_weights(totals: Any, message: Callable[[int], str]) -> None:
    """The one check that every batch has some weight: ``totals`` holds each batch's weight total (host numbers);
    the first that is not > 0 is an :class:`InputError` worded by ``message(index of that batch)``."""
    totals = np.asarray(totals, dtype=np.float64).reshape(-1)
    empty = ~(totals > 0)
    if empty.any():
        raise InputError(message(int(np.flatnonzero(empty)[0])))


def check_finite_host(a: np.ndarray, cast: np.ndarray, name: str, dtype: str) -> None:
    """Reject NaN, inf, and finite values that overflow ``dtype`` (``cast`` is ``a`` converted to it), with
    :func:`finite`."""
    finite(a, name, cast=cast if cast.dtype != a.dtype else None)


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


def labels_host(y: np.ndarray, output: str, n_outputs: int, name: str = "y", row: int = 0) -> None:
    """Check class labels on the host: finite, whole numbers, inside the model's classes (``row``: the row number
    of ``y[0]`` in messages). A Poisson target (output "exp") holds counts or rates: values >= 0."""
    if output == "exp" and y.dtype.kind != "b":
        bad = y < 0
        if bad.any():
            where = first_bad(bad)
            at = _position((where[0] + row, *where[1:]))
            raise InputError(f"{name} holds {y[where]} at {at}; a Poisson target (output 'exp') must be >= 0")
    if output in losses.REGRESSION or y.dtype.kind == "b":
        return
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            where = first_bad(bad)
            at = _position((where[0] + row, *where[1:]))
            raise InputError(f"{name} holds {y[where]} at {at}; class labels must be whole numbers")
    top = 1 if output == "sigmoid" else n_outputs - 1
    bad = (y < 0) | (y > top)
    if bad.any():
        where = first_bad(bad)
        allowed = "{0, 1}" if output == "sigmoid" else f"0..{top}"
        at = _position((where[0] + row, *where[1:]))
        raise InputError(f"{name} holds label {y[where]} at {at}, outside {allowed}")


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


def boolean(value: Any, name: str) -> bool:
    """True or False (a NumPy bool too), or ConfigError: a string such as "no" is truthy, not a refusal."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def unit_interval(value: Any, name: str, *, closed: bool = False) -> float:
    """A number in [0, 1) (``closed``: [0, 1]), or ConfigError."""
    top = "1]" if closed else "1)"
    try:
        f = _number(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in [0, {top}; got {value!r}") from None
    if not (0.0 <= f < 1.0 or (closed and f == 1.0)):  # also rejects NaN
        raise ConfigError(f"{name} must be in [0, {top}; got {value!r}")
    return f


def dtype_name(value: Any) -> Any:
    """ "float32" for "float32", np.float32 or np.dtype("float32") (and so on); anything else as it is (None
    too, which NumPy would read as float64)."""
    if isinstance(value, str) or value is None:
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
