"""The public boundary: data checked, scaled and placed on the model's device, once per call, for a model
described by its :class:`~gpunn.feed.spec.Spec`.

Host data (NumPy arrays, lists) is checked on the host before it is moved; arrays already on the model's device
are checked there with one read-back per call, never inside a training step. Every rejection is a gpunn error
that names the problem (the checks themselves live in :mod:`gpunn._validation`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _backend, losses
from .. import _validation as check
from ..data import Dataset
from ..data.columns import Columns, column_names, is_table, table_kind
from ..data.moments import moments, row_blocks, rows_per_block, scale_rows
from ..errors import ConfigError, InputError
from .sparse import Placed, SparseRows, check_sparse, is_sparse
from .spec import Spec

__all__ = ["Spec", "row_blocks", "scale_rows"]


# ----------------------------------------------------------------------------------------- data frames
def _frame_kind(X: Any) -> str | None:
    """The library of a data frame or table ("pandas", "polars" or "pyarrow"), None for anything else."""
    return table_kind(X)


def frame_columns(X: Any) -> list[str] | None:
    """The column names of a pandas or polars DataFrame, a pyarrow Table or :class:`gpunn.data.Columns`, as
    strings; None for arrays."""
    return column_names(X) if is_table(X) else None


def _frame_column(X: Any, kind: str, key: Any) -> np.ndarray:
    if kind == "pandas":
        return X[key].to_numpy()
    if kind == "polars":
        return X.get_column(key).to_numpy()
    return X.column(key).to_numpy()


def from_frame(spec: Spec, X: Any, name: str) -> Any:
    """A data frame's feature columns as one host array, in the order the model was trained with (a frame
    whose columns come in another order is put back in order); anything else is returned as it is.

    Each column is copied once, straight into the array (in the model's dtype, or in the columns' own when
    the model standardizes, so that the statistics see the data as given)."""
    if spec.encoding is not None:  # a table's text and empty cells, encoded as the model learned to
        encoded = spec.encoding.apply(_named_columns(spec, X, name), name)
        if encoded.shape[1] != spec.n_features:  # a model given its widths, first fitted on a table with text
            shown = spec.encoding.output_names()
            raise InputError(f"{name}'s columns encode to {len(shown)} inputs ({', '.join(shown[:8])}"
                             f"{', ...' if len(shown) > 8 else ''}) but the model takes {spec.n_features}: make it "
                             "with hidden=[...] to take its input width from the data")  # fmt: skip
        return encoded if spec.standardize else encoded.astype(spec.dtype)
    kind = _frame_kind(X)
    if kind is None:
        return _refuse_text(X, name) if isinstance(X, Columns) else X
    columns = frame_columns(X) or []
    keys = dict(zip(columns, X.column_names if kind == "pyarrow" else X.columns))
    if len(keys) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise InputError(f"{name} has more than one column named {', '.join(map(repr, twice))}")
    order = columns
    if spec.feature_names is not None:
        missing = [c for c in spec.feature_names if c not in keys]
        extra = [c for c in columns if c not in set(spec.feature_names)]
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"lacks the column(s) {', '.join(map(repr, missing))}")
            if extra:
                problems.append(f"has column(s) the model was not trained on: {', '.join(map(repr, extra))}")
            raise InputError(f"{name} {' and '.join(problems)} (the model's features: {list(spec.feature_names)})")
        order = list(spec.feature_names)
    values = [_frame_column(X, kind, keys[c]) for c in order]
    text = [c for c, v in zip(order, values) if v.dtype.kind not in "biuf"]
    if text:
        raise InputError(f"{name} has non-numeric column(s) {', '.join(map(repr, text))}; this model was trained "
                         "on numbers only (a model first fitted on a table with text learns to encode it)")  # fmt: skip
    dtype = np.result_type(*[v.dtype for v in values], np.float32) if spec.standardize else np.dtype(spec.dtype)
    out = np.empty((len(values[0]) if values else 0, len(values)), dtype=dtype)
    for j, v in enumerate(values):
        out[:, j] = v
    return out


def _named_columns(spec: Spec, X: Any, name: str) -> Any:
    """A table for a model with an encoding: its columns must be the model's, in any order."""
    names, known = frame_columns(X), spec.encoding.names
    extra = [c for c in names or [] if c not in set(known)]
    if extra:
        raise InputError(f"{name} has column(s) the model was not trained on: {', '.join(map(repr, extra))} "
                         f"(the model's features: {list(known)})")  # fmt: skip
    return X


def _refuse_text(X: Columns, name: str) -> np.ndarray:
    """A table of complete numbers as an array; one with text or empty cells given to a model without an
    encoding is refused, naming the first such column."""
    for c, a in zip(X.names, X.arrays):
        if a.dtype.kind != "f":
            raise InputError(f"{name}: column {c!r} holds text; this model was trained on numbers only")
        if np.isnan(a).any():
            i = int(np.flatnonzero(np.isnan(a))[0])
            raise InputError(f"{name}: column {c!r} has an empty cell at row {i}; this model was trained on complete "
                             "numbers only")  # fmt: skip
    return np.column_stack(X.arrays)


def column(value: Any, name: str) -> Any:
    """A pandas or polars Series, a one-column frame or table, or a pyarrow array, as a NumPy array (targets,
    sample weights); anything else is returned as it is."""
    kind = _frame_kind(value)
    if kind is not None:
        columns = frame_columns(value) or []
        if len(columns) != 1:
            raise InputError(f"{name} is a table with {len(columns)} columns; give one column (a Series)")
        key = value.column_names[0] if kind == "pyarrow" else value.columns[0]
        return _frame_column(value, kind, key)
    library, kind_name = type(value).__module__.partition(".")[0], type(value).__name__
    if library in ("pandas", "polars") and kind_name == "Series":
        return value.to_numpy()
    if library == "pyarrow" and kind_name.endswith("Array"):  # Array, ChunkedArray, DoubleArray, ...
        return value.to_numpy(zero_copy_only=False)
    return value


def check_x(spec: Spec, X: Any, name: str, host: bool = False) -> Any:
    """``X`` validated: a host array (in the model's dtype, or the original if scaling will cast it) or a
    device array in the model's dtype (``host``: read back into a host array in the model's dtype, cast and
    checked there, where on JAX checking it on the device would compile a program for each row count). Data
    frames are taken by column name (:func:`from_frame`); a SciPy sparse matrix stays sparse
    (:class:`~gpunn.feed.sparse.SparseRows`, densified a batch of rows at a time)."""
    if isinstance(X, Dataset):
        raise InputError(
            f"{name} is a gpunn.data.Dataset, which fit, validation_data and evaluate stream; to predict, read its "
            "rows with gpunn.data.read (or a block at a time with Dataset.read)"
        )
    if is_sparse(X):
        return check_sparse(spec, X, name)
    X = from_frame(spec, X, name)
    if _backend.is_host_data(X):
        a = check.host_array(X, name)
        check.check_features(a, spec.n_features, name)
        cast = check.cast_host(a, spec.dtype, name)
        return a if cast.dtype != a.dtype and spec.standardize else cast
    xp = spec.xp
    check.check_device_array(X, xp, spec.device, name)
    check.check_features(X, spec.n_features, name)
    if host:
        a = _backend.to_numpy(X)
        return check.cast_host(a, spec.dtype, name)
    x = xp.astype(X, spec.float_dtype) if X.dtype != spec.float_dtype else X
    if not _backend.is_traced(x) and not bool(xp.all(xp.isfinite(x))):  # one read-back per call, not in a step
        check.check_finite_host(_backend.to_numpy(X), _backend.to_numpy(x), name, spec.dtype)
    return x


def place_x(spec: Spec, x: Any, scaling: tuple[np.ndarray, np.ndarray] | None, in_place: bool = False) -> Any:
    """A checked ``x`` scaled (when ``scaling`` is given) and on the model's device. ``in_place`` scales a host
    array of the model's dtype in place rather than into a copy. A sparse ``x`` stays on the host, to be placed a
    batch of rows at a time (:class:`~gpunn.feed.sparse.Placed`)."""
    xp = spec.xp
    if isinstance(x, SparseRows):
        return Placed(spec, x, scaling)
    if isinstance(x, np.ndarray):
        if scaling is not None:
            own = in_place and x.dtype == spec.dtype and x.flags.writeable
            x = scale_rows(x, scaling, np.empty(x.shape, spec.dtype) if not own else x)
        return _backend.from_numpy(x.astype(spec.dtype, copy=False), xp, spec.device)
    if scaling is not None:
        mean, scale = (_backend.from_numpy(s.astype(spec.dtype), xp, spec.device) for s in scaling)
        x = (x - mean) / scale
    return x


def prepare_x(spec: Spec, X: Any, scaling: tuple[np.ndarray, np.ndarray] | None, name: str = "X") -> Any:
    """Validate ``X`` and return it on the model's device, in its dtype, scaled by ``scaling`` (if given)."""
    return place_x(spec, check_x(spec, X, name), scaling)


def fit_scaling(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of a checked ``x``, in float64, a block of rows at a time."""
    a: Any = x if isinstance(x, (np.ndarray, SparseRows)) else _backend.to_numpy(x)  # sparse: a dense block at a time
    return moments((a[b] for b in row_blocks(len(a), rows_per_block(a))), a.shape[1])


def single_label(spec: Spec) -> bool:
    """Whether the model takes one class label per row (softmax, or one sigmoid output), which may be any labels."""
    return spec.output == "softmax" or (spec.output == "sigmoid" and spec.n_outputs == 1)


def _label_host(y: Any, spec: Spec, name: str) -> np.ndarray | None:
    """A target column as a host array of any dtype (numbers, strings), None for a traced array (no values)."""
    if _backend.is_host_data(y):
        try:
            return np.asarray(y)
        except ValueError as exc:
            raise InputError(f"{name} is ragged: its rows have different lengths ({exc})") from None
    check.check_device_array(y, spec.xp, spec.device, name)
    return None if _backend.is_traced(y) else _backend.to_numpy(y)


def learn_classes(spec: Spec, y: Any, name: str = "y") -> np.ndarray | None:
    """The distinct labels of a single-label classifier's ``y`` in sorted order (numbers or strings), learned on the
    first fit; None for a regression, a multi-label model or a traced ``y``."""
    if not single_label(spec):
        return None
    a = _label_host(column(y, name), spec, name)
    if a is None or a.ndim not in (1, 2) or (a.ndim == 2 and a.shape[1] != 1):
        return None  # targets() reports the shape
    a = a.reshape(-1)
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{name} holds {a[i]} at row {i}; a class label must be a finite number or a string")
    elif a.dtype.kind not in "biuUO" or (a.dtype.kind == "O" and any(isinstance(v, bytes) for v in a)):
        # bytes (dtype S) trained, and the model could then not be saved: its classes go to the file as JSON text
        raise InputError(f"{name} has dtype {a.dtype}; class labels must be numbers or strings (decode bytes "
                         "with y.astype(str))")  # fmt: skip
    if a.dtype.kind == "O" and any(v is None or (isinstance(v, float) and v != v) for v in a):
        i = next(i for i, v in enumerate(a) if v is None or (isinstance(v, float) and v != v))
        raise InputError(f"{name} holds {a[i]!r} at row {i}; a missing label cannot be a class")
    try:
        classes = np.unique(a)
    except TypeError:
        kinds = sorted({type(v).__name__ for v in a})
        raise InputError(
            f"{name} mixes labels of types {', '.join(kinds)}, which cannot be sorted into classes"
        ) from None
    if classes.dtype.kind == "O":  # Python objects (str): keep them as text
        classes = classes.astype(str)
    return classes


def plain_classes(classes: np.ndarray, spec: Spec) -> bool:
    """Whether labels are the indices themselves: whole numbers in 0..k-1 (0/1 for one sigmoid output)."""
    if classes.dtype.kind not in "biuf":
        return False
    top = 1 if spec.output == "sigmoid" else spec.n_outputs - 1
    return bool(np.all(classes == np.round(classes)) and classes.min() >= 0 and classes.max() <= top)


def are_indices(classes: np.ndarray | None) -> bool:
    """Whether ``classes`` are the indices 0..k-1 (labels that need no mapping), or None."""
    return classes is None or (classes.dtype.kind in "biuf" and bool(np.array_equal(classes, np.arange(len(classes)))))


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds, so that messages show 'no', not np.str_('no')."""
    return value.item() if isinstance(value, np.generic) else value


def class_indices(classes: Any, a: np.ndarray, name: str) -> np.ndarray:
    """Labels (host, any shape) as their indices among a model's sorted ``classes``; a label the model does not
    hold is an error naming it."""
    classes = np.asarray(classes)
    flat = a.reshape(-1)
    try:
        idx = np.minimum(np.searchsorted(classes, flat), len(classes) - 1)
        known = np.asarray(classes[idx] == flat, dtype=bool).reshape(-1)
        if known.shape != flat.shape:
            raise TypeError
    except (TypeError, ValueError, np.exceptions.DTypePromotionError):  # labels of another kind than the classes'
        idx, known = np.zeros(flat.shape, np.int64), np.zeros(flat.shape, bool)
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise InputError(
            f"{name} holds label {_plain(flat[i])!r} at row {i}, which is not one of the model's classes "
            f"{classes.tolist()}"
        )
    return idx.astype(np.int64).reshape(a.shape)


def learn_target_scaling(spec: Spec, y: Any, name: str = "y") -> tuple[np.ndarray, np.ndarray] | None:
    """Per-output mean and standard deviation (float64; a zero deviation becomes 1) of a regression's ``y``, or None
    for a traced ``y`` (no values). ``y`` is checked as :func:`targets` checks it."""
    y = column(y, name)
    a = check.host_array(y, name) if _backend.is_host_data(y) else _label_host(y, spec, name)
    if a is None:
        return None
    check.cast_host(a, "float64", name)
    a = a.reshape(len(a), -1) if a.ndim else a
    if a.ndim != 2 or not len(a):
        return None  # targets() reports the shape
    return moments([a], a.shape[1])


def targets(spec: Spec, y: Any, n: int, name: str = "y", fitting: bool = False) -> Any:
    """Validate ``y`` and return the model's targets on its device, encoded as the loss takes them
    (:func:`gpunn.losses.encode_targets` of 0/1 columns, one-hot rows for softmax, or values). A classifier whose
    labels are not its indices (``spec.classes``) takes them as labels; a regression with ``spec.target_scaling``
    gets its targets standardized. With ``fitting`` (a model's first fit) a single-label ``y`` must hold two
    classes."""
    xp = spec.xp
    y = column(y, name)
    if spec.classes is not None and spec.output not in losses.REGRESSION:
        labels = _label_host(y, spec, name)
        if labels is None:
            raise InputError(f"{name} is traced, but this model's classes {list(spec.classes)} are mapped on the host")
        check.target_shape(labels.shape, n, spec.output, spec.n_outputs, name)
        y = class_indices(spec.classes, labels, name)
    host = _backend.is_host_data(y)
    a: np.ndarray | None = None
    if host:
        a = check.host_array(y, name)
    else:
        check.check_device_array(y, xp, spec.device, name)
        # labels are small: check them on the host, once per call (a traced y has no values to check)
        a = None if _backend.is_traced(y) else _backend.to_numpy(y)
    check.target_shape(tuple(y.shape) if a is None else a.shape, n, spec.output, spec.n_outputs, name)
    if a is not None:
        if spec.output in losses.REGRESSION:
            check.cast_host(a, spec.dtype, name)
        check.labels_host(a, spec.output, spec.n_outputs, name)
        if fitting and spec.output not in losses.REGRESSION and (a.ndim == 1 or a.shape[1] == 1):
            classes = np.unique(a)
            if classes.size < 2:
                shown = classes[0] if spec.classes is None else spec.classes[int(classes[0])]
                raise InputError(f"{name} holds a single class ({shown}); a classifier needs at least two")
    scaling = spec.target_scaling if spec.output == "identity" else None
    if spec.output == "softmax":
        if a is not None and host:
            labels = a.reshape(n).astype(np.int64)
            t = np.eye(spec.n_outputs, dtype=spec.dtype)[labels]
        else:
            classes = xp.arange(spec.n_outputs, device=spec.device)
            t = xp.astype(xp.reshape(y, (n, 1)) == xp.astype(classes, y.dtype), spec.float_dtype)
    elif a is not None and host:
        if scaling is not None:  # standardized in float64, then cast
            mean, std = (np.asarray(s, dtype=np.float64) for s in scaling)
            t = ((a.reshape(n, spec.n_outputs).astype(np.float64) - mean) / std).astype(spec.dtype)
        else:
            t = a.reshape(n, spec.n_outputs).astype(spec.dtype)
    else:
        t = xp.astype(xp.reshape(y, (n, spec.n_outputs)), spec.float_dtype)
        if scaling is not None:
            mean, std = (_backend.from_numpy(np.asarray(s, dtype=spec.dtype), xp, spec.device) for s in scaling)
            t = (t - mean) / std
    t = losses.encode_targets(spec.output, spec.loss, t)
    return _backend.from_numpy(t, xp, spec.device) if host else t


def as_model_array(spec: Spec, value: Any, name: str, shape: tuple[int, ...]) -> Any:
    """One parameter array given by a user, checked against ``shape`` and in the model's namespace and dtype."""
    xp = spec.xp
    if _backend.is_host_data(value):
        a = check.host_array(value, name)
        if a.shape != shape:
            raise InputError(f"{name} has shape {a.shape}; the model needs {shape}")
        return _backend.from_numpy(check.cast_host(a, spec.dtype, name), xp, spec.device)
    check.check_device_array(value, xp, spec.device, name)
    if tuple(value.shape) != shape:
        raise InputError(f"{name} has shape {tuple(value.shape)}; the model needs {shape}")
    return xp.astype(value, spec.float_dtype)


def adopt(spec: Spec, x: Any) -> Any:
    """``x`` from any namespace or device, as an array of the model's namespace on its device (DLPack)."""
    if _backend.is_host_data(x):
        return x
    import array_api_compat as aac

    if aac.array_namespace(x) is spec.xp and _backend.same_device(aac.device(x), spec.device):
        return x
    try:
        with _backend.device_scope(spec.xp, spec.device):
            moved = spec.xp.from_dlpack(x)
        if _backend.same_device(aac.device(moved), spec.device):
            return moved
    except Exception:  # DLPack cannot cross these devices or libraries: go through the host
        pass
    return _backend.from_numpy(_backend.to_numpy(x), spec.xp, spec.device)


def adopt_fit(spec: Spec, X: Any, y: Any, validation_data: Any) -> tuple[Any, Any, Any]:
    """A fit's ``X``, ``y`` and validation pair (``fit(convert=True)``), each :func:`adopt`-ed."""
    if isinstance(validation_data, (tuple, list)):
        validation_data = tuple(adopt(spec, v) for v in validation_data)
    return adopt(spec, X), adopt(spec, y), validation_data


def sample_weights(spec: Spec, sample_weight: Any, class_weight: Any, y: Any, n: int) -> np.ndarray | None:
    """Per-row weights (float64, shape (n,)) from ``sample_weight`` times the weight of each row's class, or None
    when neither is given. Class weights are a dict {label: weight} or "balanced" (n / (classes * count), as
    scikit-learn defines it)."""
    if sample_weight is None and class_weight is None:
        return None
    w = np.ones(n)
    sample_weight, y = column(sample_weight, "sample_weight"), column(y, "y")
    if sample_weight is not None:
        host = sample_weight if _backend.is_host_data(sample_weight) else _backend.to_numpy(sample_weight)
        a = check.host_array(host, "sample_weight")
        if a.shape != (n,):
            raise InputError(f"sample_weight has shape {a.shape}; it needs one weight per row of X, shape ({n},)")
        a = check.weights(a.astype(np.float64), "sample_weight")
        w = w * a
    if class_weight is not None:
        if spec.output in losses.REGRESSION or (spec.output == "sigmoid" and spec.n_outputs > 1):
            raise ConfigError("class_weight needs one class label per row (a sigmoid or softmax classifier)")
        labels = _label_host(y, spec, "y")
        if labels is None:
            raise ConfigError("class_weight needs the labels' values; y is traced")
        labels = labels.reshape(n)
        labels = class_indices(spec.classes, labels, "y") if spec.classes is not None else check.host_array(labels, "y")
        labels = labels.astype(np.int64)
        classes = range(2 if spec.output == "sigmoid" else spec.n_outputs)
        names = list(classes) if spec.classes is None else list(spec.classes)  # class_weight's keys are labels
        if isinstance(class_weight, str) and class_weight == "balanced":
            present, counts = np.unique(labels, return_counts=True)
            table = dict(zip(present.tolist(), (n / (len(present) * counts)).tolist()))
        elif isinstance(class_weight, dict):
            table = {}
            for key, value in class_weight.items():
                if spec.classes is not None:
                    if isinstance(key, bool) or key not in names:
                        raise ConfigError(f"class_weight key {key!r} is not a label of this model ({names})")
                    index = names.index(key)
                elif isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key not in classes:
                    raise ConfigError(
                        f"class_weight key {key!r} is not a label of this model ({classes.start}..{classes.stop - 1})"
                    )
                else:
                    index = int(key)
                table[index] = check.non_negative_float(value, f"class_weight[{key}]")
        else:
            raise ConfigError(f"class_weight must be a dict {{label: weight}} or 'balanced'; got {class_weight!r}")
        w = w * np.array([table.get(c, 1.0) for c in classes])[labels]
    if not w.sum() > 0:
        raise InputError("the sample weights sum to 0: there is nothing to train on")
    return w
