"""Named columns of mixed kinds on the host: numbers (float64, NaN where a cell is empty) and text (``str``, ``""``
where a cell is empty), as a table's features arrive before a model encodes them (:mod:`gpunn.feed.encode`).

:class:`Columns` is what :func:`gpunn.data.readers.read_table` returns for a file with text or empty cells;
:func:`raw_columns` reads the same two kinds out of a pandas or polars DataFrame, a pyarrow Table or RecordBatch.
Booleans are numbers (0 and 1); pandas categoricals, strings and other objects are text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError

NUMBER, TEXT = "number", "text"


class Columns:
    """A table held as named host columns, each a float64 array (numbers; NaN: empty) or an object array of
    ``str`` (text; ``""``: empty), all of one length. Indexing by rows (``cols[rows]``) gives a new ``Columns``."""

    def __init__(self, names: Sequence[str], arrays: Sequence[np.ndarray]) -> None:
        if len(names) != len(arrays) or not names:
            raise InputError("Columns takes one or more names and one array per name")
        lengths = {len(a) for a in arrays}
        if len(lengths) != 1:
            raise InputError(f"the columns have different lengths: {sorted(lengths)}")
        self.names = [str(n) for n in names]
        self.arrays = [_one_kind(a, n) for n, a in zip(self.names, arrays)]

    def __len__(self) -> int:
        return len(self.arrays[0])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), len(self.names)

    def __getitem__(self, rows: Any) -> Columns:
        part = Columns.__new__(Columns)  # the arrays are of their kinds already: no second pass over the text
        part.names, part.arrays = list(self.names), [a[rows] for a in self.arrays]
        return part

    def kind(self, name: str) -> str:
        return NUMBER if self.arrays[self.names.index(name)].dtype.kind == "f" else TEXT

    def __repr__(self) -> str:
        kinds = ", ".join(f"{n}: {self.kind(n)}" for n in self.names[:8])
        return f"Columns({len(self)} rows; {kinds}{', ...' if len(self.names) > 8 else ''})"


def _one_kind(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise InputError(f"column {name!r} has shape {a.shape}; a column is 1-D")
    if a.dtype.kind in "biuf":
        return a.astype(np.float64)
    return np.array([_text(v) for v in a.tolist()], dtype=object)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or type(v).__name__ in ("NAType", "NaTType")


def _text(v: Any) -> str:
    return "" if _missing(v) else str(v)


def is_table(X: Any) -> bool:
    """Whether ``X`` holds named columns: :class:`Columns`, a pandas or polars DataFrame, a pyarrow Table or
    RecordBatch."""
    return isinstance(X, Columns) or table_kind(X) is not None


def table_kind(X: Any) -> str | None:
    """The library of a data frame or table ("pandas", "polars" or "pyarrow"), None for anything else."""
    library, kind = type(X).__module__.partition(".")[0], type(X).__name__
    if library == "pandas" and kind == "DataFrame":
        return "pandas"
    if library == "polars" and kind == "DataFrame":
        return "polars"
    if library == "pyarrow" and kind in ("Table", "RecordBatch"):
        return "pyarrow"
    return None


def column_names(X: Any) -> list[str]:
    if isinstance(X, Columns):
        return list(X.names)
    return [str(c) for c in (X.column_names if table_kind(X) == "pyarrow" else X.columns)]


def raw_columns(X: Any, names: Sequence[str] | None = None) -> list[np.ndarray]:
    """The columns ``names`` (default: all) of a table as :class:`Columns` holds them: float64 numbers with NaN
    where empty, or ``str`` text with ``""`` where empty."""
    names = column_names(X) if names is None else list(names)
    if isinstance(X, Columns):
        return [X.arrays[X.names.index(n)] for n in names]
    kind = table_kind(X)
    keys = dict(zip(column_names(X), X.column_names if kind == "pyarrow" else X.columns))
    convert = {"pandas": _pandas, "polars": _polars, "pyarrow": _arrow}[kind or ""]
    return [convert(X, keys[n]) for n in names]


def has_text_or_empty(X: Any) -> bool:
    """Whether a table (with distinct column names) has a column that is not numbers or a cell that is empty,
    found without copying its columns."""
    if isinstance(X, Columns):
        return any(a.dtype.kind != "f" or bool(np.isnan(a).any()) for a in X.arrays)
    kind = table_kind(X)
    if kind == "pandas":
        numeric = all(getattr(t, "kind", "O") in "biuf" and type(t).__name__ != "CategoricalDtype" for t in X.dtypes)
        return not numeric or bool(X.isna().to_numpy().any())
    if kind == "polars":
        import polars as pl

        if not all(t.is_numeric() or t == pl.Boolean for t in X.dtypes):
            return True
        floats = [c for c, t in zip(X.columns, X.dtypes) if t.is_float()]
        nan = bool(X.select([pl.col(c).is_nan().any() for c in floats]).to_numpy().any()) if floats else False
        return nan or bool(sum(X.null_count().row(0)))
    import pyarrow as pa
    import pyarrow.compute as pc

    for column in X.columns:
        t = column.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)):
            return True
        if column.null_count or (pa.types.is_floating(t) and pc.any(pc.is_nan(column)).as_py()):
            return True
    return False


def _pandas(X: Any, key: Any) -> np.ndarray:
    s = X[key]
    dtype = s.dtype
    if getattr(dtype, "kind", "O") in "biuf" and type(dtype).__name__ != "CategoricalDtype":
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    values = s.astype(object).to_numpy()
    if type(dtype).__name__ != "CategoricalDtype" and _all_numbers(values):
        return np.array([np.nan if _missing(v) else float(v) for v in values], dtype=np.float64)
    return np.array([_text(v) for v in values], dtype=object)


def _all_numbers(values: np.ndarray) -> bool:
    """An object column of Python numbers (and missing values): pandas keeps nullable numbers so."""
    present = [v for v in values.tolist() if not _missing(v)]
    return bool(present) and all(isinstance(v, (int, float, np.number)) for v in present)


def _polars(X: Any, key: Any) -> np.ndarray:
    import polars as pl

    s = X.get_column(key)
    if s.dtype.is_numeric() or s.dtype == pl.Boolean:
        return s.cast(pl.Float64).fill_null(float("nan")).to_numpy().astype(np.float64)
    return np.array([_text(v) for v in s.cast(pl.String).to_list()], dtype=object)


def _arrow(X: Any, key: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = X.column(key)
    t = column.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return np.asarray(pc.fill_null(pc.cast(column, pa.float64()), float("nan")).to_numpy(zero_copy_only=False),
                          dtype=np.float64)  # fmt: skip
    if pa.types.is_dictionary(t):
        column = column.dictionary_decode() if isinstance(column, pa.Array) else pc.cast(column, t.value_type)
    return np.array([_text(v) for v in column.to_pylist()], dtype=object)
