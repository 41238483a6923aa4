"""Data files read on the host: CSV (.csv, .csv.gz), Parquet, Feather/Arrow, .npy and .npz, into NumPy arrays.

Parquet and Feather files, and fast CSV parsing, take pyarrow (``pip install 'gpunn[data]'``), imported only
when a file is read. Every rejection names the file, the row or row group, and the column."""

from __future__ import annotations

import csv
import gzip
import os
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import IO, Any, NamedTuple

import numpy as np

from .. import _validation as check
from ..errors import ConfigError, InputError
from .columns import Columns, raw_columns

BLOCK_ROWS = 1024  # CSV rows parsed at a time by the NumPy reader: bounds the temporary memory of a large file
SEGMENT_BYTES = 32 << 20  # CSV text pyarrow parses at a time (multi-threaded): bounds its memory beyond X
NPY_ROWS = 1 << 16  # rows of a .npy file copied into X at a time
FORMATS = ((".csv.gz", "csv"), (".csv", "csv"), (".tsv.gz", "csv"), (".tsv", "csv"), (".parquet", "parquet"),
           (".feather", "ipc"), (".arrow", "ipc"), (".npy", "npy"), (".npz", "npz"))  # fmt: skip
PYARROW_NEEDED = "16"  # RecordBatch.to_tensor(row_major=True)


class ReadResult(NamedTuple):
    """What :func:`read` returns; unpacks as ``X, y, feature_names, target_name = read(...)``."""

    X: np.ndarray
    """(rows, features) in the requested float dtype, C-contiguous and writeable."""
    y: np.ndarray | None
    """The target: float64 numbers, or class names as an object array of ``str``; None without a target."""
    feature_names: list[str]
    """The names of the columns of ``X``, in order."""
    target_name: str | None
    """The target's column (or array) name; None without a target."""


def read(
    path: str | os.PathLike[str],
    *,
    target: str | int | None = None,
    features: Sequence[str | int] | None = None,
    dtype: str = "float32",
    delimiter: str | None = None,
) -> ReadResult:
    """Read a data file into ``(X, y, feature_names, target_name)`` (a :class:`ReadResult`).

    The format comes from the file name:

    - ``.csv``, ``.csv.gz``: text with a header row, comma-separated (``delimiter=";"`` for another one-character
      separator); blank lines are skipped. ``.tsv``, ``.tsv.gz``: the same, tab-separated.
    - ``.parquet``; ``.feather`` or ``.arrow`` (the Arrow IPC file format, Feather v2, or an IPC stream).
    - ``.npy``: one 2-D numeric array (rows, columns). It has no column names: its columns are named by their
      index, ``"0"``, ``"1"``, ..., and ``target`` (and each of ``features``) is a column index, an ``int`` or a
      string such as ``"3"`` (negative counts from the end: ``-1`` is the last column).
    - ``.npz``: an archive (``numpy.savez``) with a 2-D numeric array ``X`` (rows, features), optionally
      ``feature_names`` (one string per column of ``X``; else the columns are named ``"0"``, ``"1"``, ...), and
      the target as its own 1-D array of one value per row, which ``target`` names (conventionally ``"y"``).

    A path with none of these endings that is not a regular file (a pipe, ``/dev/stdin``) is read as CSV.

    ``target`` names the column to predict (None: no target, as for data to predict on); ``features`` the
    feature columns, in the order ``X`` takes them (None: every column but the target; other columns are not
    read, so they may hold anything). ``X`` comes back in ``dtype`` (float32 or float64; every value is taken as
    a float64 first and rounded once). A numeric target comes back as float64; a target that is not numeric
    (CSV cells that are not all numbers, a string or categorical column) comes back as an object array of
    ``str`` class names, stripped of surrounding spaces in CSV.

    CSV, Parquet and Feather are read with pyarrow (``pip install 'gpunn[data]'``), multi-threaded, straight
    into ``X``: CSV 32 MiB of text at a time and Parquet a row group at a time, so reading needs little more
    memory than ``X`` (a Feather file is memory-mapped; a compressed one is decompressed whole first). Without
    pyarrow, CSV is read by the NumPy reader of :func:`read_csv` (the same result, several times slower) and the
    other two raise :class:`~gpunn.errors.ConfigError`.

    Every problem is an :class:`~gpunn.errors.InputError` that names the file and where: a missing target or
    feature column, a non-numeric feature column, an empty, missing (null) or non-finite value (by CSV line, or
    by row counted from 0 and Parquet row group or Arrow record batch), a ragged CSV row, a truncated or corrupt
    file, a file with no data rows, an unknown file type.
    """
    return read_weighted(path, target, features, dtype, None, delimiter)[0]


def read_weighted(
    path: str | os.PathLike[str], target: Any, features: Sequence[Any] | None, dtype: str, weight: Any,
    delimiter: str | None = None, table: bool = False,
) -> tuple[ReadResult, np.ndarray | None]:  # fmt: skip
    """:func:`read`, and with ``weight`` (a column name; an ``.npy`` column index; an ``.npz`` array name) that
    column's values, float64 of shape (rows,), finite and >= 0: read with the features, but not one of them
    (``gpunn train --sample-weight``). With ``table``, a CSV, Parquet or Feather file whose features hold text
    or empty cells is read by :func:`read_table` (``X`` a :class:`~gpunn.data.Columns`) instead of refused."""
    if table:
        try:
            return read_weighted(path, target, features, dtype, weight, delimiter)
        except NotNumbers:
            return read_table(path, target=target, features=features, weight=weight, delimiter=delimiter)
    name = os.fspath(path)
    dtype = _float_dtype(dtype, ConfigError, "read")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (str, int))):
        raise ConfigError(f"target takes a column name (or a .npy column index), not {target!r}")
    if features is not None and (
        isinstance(features, (str, bytes))
        or not len(features)
        or not all(isinstance(f, (str, int)) and not isinstance(f, bool) for f in features)
    ):
        raise ConfigError(f"features takes a non-empty list of column names, not {features!r}")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (str, int))):
        raise ConfigError(f"weight takes a column name (or a .npy column index), not {weight!r}")
    try:
        info = os.stat(name)
        regular, empty = stat.S_ISREG(info.st_mode), stat.S_ISREG(info.st_mode) and info.st_size == 0
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from None
    kind = next((k for suffix, k in FORMATS if name.lower().endswith(suffix)), None if regular else "csv")
    if kind is None:
        endings = ", ".join(suffix for suffix, _ in FORMATS)
        raise InputError(f"{name}: unknown type of data file; gpunn reads {endings}")
    if empty:
        raise InputError(f"{name}: file is empty" + ("; expected a header row and data rows" if kind == "csv" else ""))
    if delimiter is not None and kind != "csv":
        raise ConfigError(f"{name}: a delimiter applies to CSV files, not to {kind} files")
    sep = csv_delimiter(name, delimiter)
    result: tuple[ReadResult, np.ndarray | None] | None = None
    if kind == "csv":
        pa = _pyarrow()
        if pa is not None and regular:
            try:
                result = _read_csv_arrow(pa, name, target, features, dtype, weight, sep)
            except _Reparse:
                pass  # the NumPy reader decides: it names the line and column of a problem, or reads what pyarrow won't
        if result is None:
            result = _read_csv_numpy(name, target, features, dtype, class_names=True, weight=weight, delimiter=sep)
    else:
        readers = {"parquet": _read_parquet, "ipc": _read_ipc, "npy": _read_npy, "npz": _read_npz}
        result = readers[kind](name, target, features, dtype, weight)
    if result[1] is not None:  # finite already, as every column read as numbers
        check.weights(result[1], name, str(weight))
    return result


def read_table(
    path: str | os.PathLike[str],
    *,
    target: str | None = None,
    features: Sequence[str] | None = None,
    weight: str | None = None,
    delimiter: str | None = None,
) -> tuple[ReadResult, np.ndarray | None]:
    """A CSV, Parquet or Feather file whose features may hold text and empty cells: ``(ReadResult, weights)``,
    the result's ``X`` a :class:`~gpunn.data.Columns` (each feature float64 numbers with NaN where a cell is
    empty, or text with ``""`` where empty; a CSV column is numbers when every cell that is not empty is one),
    and ``weights`` the ``weight`` column's values (or None), as :func:`read_weighted` gives them.

    The target may not have empty cells: such a file is refused naming the rows (CSV lines), as a row without
    its target has nothing to learn. CSV text is read with Python's csv module, slower than :func:`read`."""
    name = os.fspath(path)
    lower = name.lower()
    kind = next((k for suffix, k in FORMATS if lower.endswith(suffix)), "csv")
    if kind in ("npy", "npz"):
        raise InputError(f"{name}: a .{kind} file holds numbers only; text and empty cells come in CSV, Parquet "
                         "or Feather files")  # fmt: skip
    if kind == "csv":
        names, arrays, lines = _csv_cells(name, target, features, weight, delimiter)
    else:
        names, arrays = _arrow_cells(name, kind, target, features, weight)
        lines = None
    n = len(arrays[0])
    if n == 0:
        raise InputError(f"{name}: no data rows")
    d = len(names) - (target is not None) - (weight is not None)
    y = w = None
    if target is not None:
        y = _table_target(name, str(target), arrays[d], lines)
    if weight is not None:
        w = arrays[-1]
        if w.dtype.kind != "f":
            raise InputError(f"{name}: weight column {weight!r} holds text; weights are numbers")
        check.finite(w[:, None], name, [str(weight)])
        check.weights(w, name, str(weight))
    X = Columns(names[:d], arrays[:d])
    return ReadResult(X, y, names[:d], None if target is None else str(target)), w  # type: ignore[arg-type]


def _table_target(name: str, target: str, y: np.ndarray, lines: list[int] | None) -> np.ndarray:
    """A table's target column: numbers (float64), or class names (``str``); empty cells are refused."""
    empty = np.isnan(y) if y.dtype.kind == "f" else y == ""
    if empty.any():
        rows = np.flatnonzero(empty)
        where = [str(lines[i]) for i in rows[:10]] if lines is not None else [str(i) for i in rows[:10]]
        more = f", ... ({len(rows)} rows)" if len(rows) > 10 else f" ({len(rows)} row{'s' * (len(rows) > 1)})"
        raise InputError(f"{name}: the target {target!r} is empty on {'line' if lines else 'row'}"
                         f"{'s' * (len(rows) > 1)} {', '.join(where)}{more}: a row without its target has nothing "
                         "to learn from; remove those rows or fill their target")  # fmt: skip
    if y.dtype.kind == "f":
        check.finite(y[:, None], name, [target])
    return y


def _csv_cells(
    name: str, target: Any, features: Any, weight: Any, delimiter: str | None
) -> tuple[list[str], list[np.ndarray], list[int]]:
    """The features', target's and weight's columns of a CSV file, as :class:`Columns` holds them, and each
    row's line number."""
    sep = csv_delimiter(name, delimiter)
    try:
        with _open_text(name) as f:
            header = [h.strip() for h in next(csv.reader([f.readline()], delimiter=sep), [])]
            if not header:
                raise InputError(f"{name}: file is empty; expected a header row and data rows")
            k, cols = _select(name, header, target, features, "header", weight)
            blank = " \t\r\n," + sep
            numbered = [(i, line) for i, line in enumerate(f, start=2) if line.strip(blank)]
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or _one_line(exc)})") from None
    except (UnicodeDecodeError, csv.Error, EOFError, zlib.error) as exc:
        raise InputError(f"{name}: not a readable CSV text file ({_one_line(exc)})") from None
    rows = list(csv.reader([line for _, line in numbered], delimiter=sep))
    lines = [i for i, _ in numbered]
    for line, row in zip(lines, rows):
        if len(row) != len(header):
            raise InputError(f"{name}: line {line} has {len(row)} fields but the header has {len(header)}")
    d = len(cols) - (weight is not None)
    order = cols[:d] + ([k] if k is not None else []) + cols[d:]
    arrays = []
    for j in order:
        cells = [row[j].strip() for row in rows]
        arrays.append(_cells_column(cells))
    return [header[j] for j in order], arrays, lines


def _cells_column(cells: list[str]) -> np.ndarray:
    """CSV cells as numbers (NaN where empty) when every cell that is not empty is one, else as text."""
    try:
        return np.array([float(c) if c else np.nan for c in cells], dtype=np.float64)
    except ValueError:
        return np.array(cells, dtype=object)


def _arrow_cells(name: str, kind: str, target: Any, features: Any, weight: Any) -> tuple[list[str], list[np.ndarray]]:
    """The features', target's and weight's columns of a Parquet or Feather file, as :class:`Columns` holds them."""
    pa = _need_pyarrow(name, "Parquet" if kind == "parquet" else "Feather (Arrow IPC)")
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(name)
        else:
            with pa.memory_map(name) as source:
                try:
                    schema = pa.ipc.open_file(source).schema
                except (pa.ArrowException, OSError):
                    source.seek(0)
                    schema = pa.ipc.open_stream(source).schema
        k, cols = _select(name, list(schema.names), target, features, "file's columns", weight)
        d = len(cols) - (weight is not None)
        order = [schema.names[j] for j in cols[:d] + ([k] if k is not None else []) + cols[d:]]
        if kind == "parquet":
            table = pq.read_table(name, columns=order)
        else:
            with pa.memory_map(name) as source:
                try:
                    table = pa.ipc.open_file(source).read_all()
                except (pa.ArrowException, OSError):
                    source.seek(0)
                    table = pa.ipc.open_stream(source).read_all()
            table = table.select(order)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{name}: cannot read ({_one_line(exc)}); the file may be corrupt or truncated") from None
    return order, raw_columns(table, order)


def read_csv(
    path: str | os.PathLike[str], *, target: str | None = None, dtype: str = "float64"
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read a numeric CSV with a header row, with NumPy only. Returns ``(X, y, feature_names)``; ``y`` is None
    without ``target``, and then ``feature_names`` is the whole header.

    ``X`` comes back in ``dtype`` (``"float32"`` halves the memory of a large file; each value is parsed as a
    float64 first and rounded once), ``y`` in float64. The file is parsed a block of rows at a time straight into
    ``X``, so reading needs little more memory than ``X`` itself (a pipe, whose length is not known up front,
    grows ``X`` as it goes; a ``.gz`` file is decompressed as it is read). Every problem names the file, and the
    line and column where it applies: a ragged row, a non-numeric or empty cell (the target's too: :func:`read`
    takes class names), a value that is not finite, a missing target column, a file with no data rows. Blank
    lines are skipped.
    """
    name = os.fspath(path)
    dtype = _float_dtype(dtype, InputError, "read_csv")
    X, y, names, _ = _read_csv_numpy(name, target, None, dtype, class_names=False)[0]
    return X, y, names


class NotNumbers(InputError):
    """A feature column holds text or an empty cell: :func:`read_table` reads such a file."""


class _Reparse(Exception):
    """pyarrow could not read a CSV file as gpunn reads it: the NumPy reader reads it again, and decides."""


class _ClassNames(Exception):
    """A CSV target holds class names after numeric blocks: read again, keeping the target's text."""


def _float_dtype(dtype: Any, error: type[Exception], who: str) -> str:
    try:
        name = str(np.dtype(dtype))
    except TypeError:
        name = repr(dtype)
    if name not in ("float32", "float64"):
        raise error(f"{who} reads float32 or float64, not {name}")
    return name


def _pyarrow() -> Any:
    """The pyarrow module when it is installed, recent enough, and not blocked; else None."""
    try:
        import pyarrow
    except ImportError:
        return None
    major = pyarrow.__version__.split(".")[0]
    return pyarrow if major.isdigit() and int(major) >= int(PYARROW_NEEDED) else None


def _need_pyarrow(name: str, what: str) -> Any:
    pa = _pyarrow()
    if pa is None:
        raise ConfigError(f"{name}: reading {what} files needs pyarrow {PYARROW_NEEDED} or later: "
                          "pip install 'gpunn[data]'")  # fmt: skip
    return pa


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def _names(columns: Sequence[str], most: int = 12) -> str:
    """Column names for a message, the first ``most`` of a long list."""
    shown = ", ".join(columns[:most])
    return shown if len(columns) <= most else f"{shown}, ... ({len(columns)} columns)"


def _select(
    name: str, columns: list[str], target: Any, features: Sequence[Any] | None, where: str, weight: Any = None
) -> tuple[int | None, list[int]]:
    """The index of the target column (None without one) and those of the feature columns, in order, followed
    by the weight column's when ``weight`` names one (read with the features as a number, but not a feature)."""
    position: dict[str, int] = {}
    for j, c in enumerate(columns):
        position.setdefault(c, j)
    if target is not None and target not in position:
        hint = ""
        if len(columns) == 1:  # a whole header read as one name: another separator
            found = [c for c in ";\t|:" if c in columns[0]]
            if found:
                hint = f"; the header is one column holding {found[0]!r}: is it the separator (delimiter={found[0]!r})?"
        raise InputError(f"{name}: target column {target!r} is not in the {where} ({_names(columns)}){hint}")
    if weight is not None:
        if weight not in position:
            raise InputError(f"{name}: weight column {weight!r} is not in the {where} ({_names(columns)})")
        if weight == target:
            raise InputError(f"{name}: {weight!r} is both the target and the weight column")
        if features is not None and weight in features:
            raise InputError(f"{name}: the weight column {weight!r} is also listed among the features")
    missing = [c for c in features or [] if c not in position]
    if missing:
        listed, many = ", ".join(repr(c) for c in missing), len(missing) > 1
        raise InputError(f"{name}: feature column{'s' * many} {listed} {'are' if many else 'is'} not in the {where} "
                         f"({_names(columns)})")  # fmt: skip
    if features is not None and target is not None and target in features:
        raise ConfigError(f"{name}: the target {target!r} is also listed among the features")
    k = position[target] if target is not None else None
    skip = {k, position[weight] if weight is not None else None}
    wanted = list(features) if features is not None else [c for j, c in enumerate(columns) if j not in skip]
    if features is not None and len(set(wanted)) != len(wanted):
        raise ConfigError(f"features lists a column more than once: {list(features)}")
    counts = Counter(columns)
    named = wanted + [c for c in (target, weight) if c is not None]
    twice = sorted({c for c in named if counts[c] > 1})
    if twice:
        listed = ", ".join(map(repr, twice))
        raise InputError(f"{name}: column{'s' * (len(twice) > 1)} {listed} appear{'s' * (len(twice) == 1)} more "
                         f"than once in the {where}; columns are selected by name")  # fmt: skip
    if not wanted:
        raise InputError(f"{name}: no feature columns besides the target {target!r}")
    return k, [position[c] for c in wanted + ([weight] if weight is not None else [])]


# ------------------------------------------------------------------------------------------ CSV, NumPy
def csv_delimiter(name: str, delimiter: str | None = None) -> str:
    """The field separator of a CSV file: ``delimiter`` when given, else a tab for ``.tsv`` (``.tsv.gz``), else
    a comma."""
    if delimiter is not None:
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '\r\n"':
            raise ConfigError(f"delimiter is one character such as ';' or a tab; got {delimiter!r}")
        return delimiter
    return "\t" if name.lower().endswith((".tsv", ".tsv.gz")) else ","


def csv_header(name: str, delimiter: str | None = None) -> list[str]:
    """The column names of a CSV file's header row (the file's first line), without reading further."""
    try:
        with _open_text(name) as f:
            return [h.strip() for h in next(csv.reader([f.readline()], delimiter=csv_delimiter(name, delimiter)), [])]
    except (OSError, UnicodeDecodeError, csv.Error, EOFError, zlib.error) as exc:
        raise InputError(f"{name}: cannot read ({getattr(exc, 'strerror', None) or _one_line(exc)})") from None


def _open_text(name: str) -> IO[str]:
    if name.lower().endswith(".gz"):
        return gzip.open(name, "rt", newline="", encoding="utf-8-sig")
    return open(name, newline="", encoding="utf-8-sig")


def _read_csv_numpy(
    name: str, target: Any, features: Sequence[Any] | None, dtype: str, class_names: bool, weight: Any = None,
    delimiter: str = ",",
) -> tuple[ReadResult, np.ndarray | None]:  # fmt: skip
    """The NumPy reader. With ``class_names`` a target that is not all numbers comes back as strings: a file is
    read with a numeric target first and read again if it turns out not to be; a pipe keeps the text as it goes."""
    texts = class_names and not os.path.isfile(name)
    while True:
        try:
            return _read_csv_numpy_once(name, target, features, dtype, class_names, texts, weight, delimiter)
        except _ClassNames:
            texts = True


def _read_csv_numpy_once(
    name: str, target: Any, features: Sequence[Any] | None, dtype: str, class_names: bool, texts: bool,
    weight: Any, delimiter: str = ",",
) -> tuple[ReadResult, np.ndarray | None]:  # fmt: skip
    try:
        rows = BLOCK_ROWS  # what to allocate first: a pipe's length is unknown, X grows as needed
        if os.path.isfile(name) and not name.lower().endswith(".gz"):  # a file's newlines bound its rows
            rows = 1 + _count_newlines(name)
        with _open_text(name) as f:
            header = [h.strip() for h in next(csv.reader([f.readline()], delimiter=delimiter), [])]
            if not header:
                raise InputError(f"{name}: file is empty; expected a header row and data rows")
            k, cols = _select(name, header, target, features, "header", weight)
            parsed = _CsvRows(name, header, k, cols, dtype, rows, class_names, texts, weight is not None, delimiter)
            blank = " \t\r\n," + delimiter
            block: list[str] = []
            numbers: list[int] = []
            for line_number, line in enumerate(f, start=2):
                if line.strip(blank):
                    block.append(line)
                    numbers.append(line_number)
                if len(block) == BLOCK_ROWS:
                    parsed.add(block, numbers)
                    block, numbers = [], []
            if block:
                parsed.add(block, numbers)
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or _one_line(exc)})") from None
    except (UnicodeDecodeError, csv.Error, EOFError, zlib.error) as exc:
        raise InputError(f"{name}: not a readable CSV text file ({_one_line(exc)})") from None
    return parsed.result(), None if parsed.w is None else parsed.w[: parsed.n]


class _CsvRows:
    """The rows of a CSV file parsed so far: ``X``, the target and the weights, a block of lines at a time."""

    def __init__(
        self, name: str, header: list[str], k: int | None, cols: list[int], dtype: str, rows: int,
        class_names: bool, texts: bool, weighted: bool = False, delimiter: str = ",",
    ) -> None:  # fmt: skip
        self.delimiter = delimiter
        self.name, self.header, self.k, self.cols = name, header, k, cols  # cols: the weight's last, if weighted
        self.class_names = class_names  # the target may hold class names
        self.texts = texts and k is not None  # keep the target's text (else parse it as numbers)
        self.d = len(cols) - weighted  # the features
        self.X = np.empty((rows, self.d), dtype=dtype)
        self.w = np.empty(rows) if weighted else None
        self.y = np.empty(rows) if k is not None and not self.texts else None
        self.text: list[str] = []
        self.lines: list[int] = []
        self.n = 0
        self.not_finite: tuple[int, float] | None = None  # the target's first, an error if it stays numeric

    def add(self, block: list[str], numbers: list[int]) -> None:
        values, target = self._parse(block, numbers)
        m = self.n + len(values)
        if m > len(self.X):  # a pipe: double
            size = max(m, 2 * len(self.X))
            self.X = np.concatenate([self.X[: self.n], np.empty((size - self.n, self.X.shape[1]), self.X.dtype)])
            if self.y is not None:
                self.y = np.concatenate([self.y[: self.n], np.empty(size - self.n)])
            if self.w is not None:
                self.w = np.concatenate([self.w[: self.n], np.empty(size - self.n)])
        self.X[self.n : m] = values[:, : self.d]
        if self.w is not None:
            self.w[self.n : m] = values[:, self.d]
        if isinstance(target, list):
            self.text += target
            self.lines += numbers
        elif target is not None:
            assert self.y is not None
            self.y[self.n : m] = target
            if self.class_names and self.not_finite is None and not np.isfinite(target).all():
                i = int(np.argmin(np.isfinite(target)))
                self.not_finite = (numbers[i], float(target[i]))
        self.n = m

    def result(self) -> ReadResult:
        if self.n == 0:
            raise InputError(f"{self.name}: no data rows after the header")
        names = [self.header[j] for j in self.cols[: self.d]]
        if self.k is None:
            return ReadResult(self.X[: self.n], None, names, None)
        target_name = self.header[self.k]
        y = self.y[: self.n] if self.y is not None else None
        bad = self.not_finite
        if y is None:  # kept as text: numbers if every cell is one, else class names
            try:
                y = np.array(self.text, dtype=object).astype(np.float64)
            except ValueError:
                return ReadResult(self.X[: self.n], np.array(self.text, dtype=object), names, target_name)
            finite = np.isfinite(y)
            if not finite.all():
                i = int(np.argmin(finite))
                bad = (self.lines[i], float(y[i]))
        if bad is not None:
            raise InputError(f"{self.name}: line {bad[0]}, column {target_name!r}: {bad[1]} is not a finite number")
        return ReadResult(self.X[: self.n], y, names, target_name)

    def _parse(self, block: list[str], numbers: list[int]) -> tuple[np.ndarray, np.ndarray | list[str] | None]:
        """The block's feature values (float64) and its target (float64, or text), or an error naming where."""
        if not self.texts:
            try:
                values = np.loadtxt(block, delimiter=self.delimiter, quotechar='"', comments=None, ndmin=2)
            except ValueError:
                values = None  # a bad cell, or one that loadtxt won't parse: cell by cell below
            if values is not None and values.shape[1] == len(self.header):
                target = values[:, self.k] if self.k is not None else None
                self._check_finite(values[:, self.cols], None if self.class_names else target, numbers)
                return values[:, self.cols], target
        return self._parse_cells(block, numbers)

    def _parse_cells(self, block: list[str], numbers: list[int]) -> tuple[np.ndarray, np.ndarray | list[str] | None]:
        """The csv module's cells, converted with Python's ``float``; the first bad cell is reported."""
        rows = list(csv.reader(block, delimiter=self.delimiter))
        for line, row in zip(numbers, rows):
            if len(row) != len(self.header):
                raise InputError(f"{self.name}: line {line} has {len(row)} fields but the header has "
                                 f"{len(self.header)}")  # fmt: skip
        cells = np.empty((len(rows), len(self.header)), dtype=object)
        cells[:] = rows
        try:
            values = cells[:, self.cols].astype(np.float64)
        except ValueError:
            values = None
        k, target = self.k, None
        text = [cell.strip() for cell in cells[:, k]] if k is not None else []
        numeric = k is not None and not self.texts
        if numeric:
            try:
                target = np.array(text, dtype=object).astype(np.float64)
            except ValueError:
                target = None
        if values is None or (numeric and target is None and not self.class_names) or "" in text:
            self._first_bad_cell(rows, numbers)
        if values is None:  # every cell is a number to Python's float after all
            values = np.array([[float(row[j]) for j in self.cols] for row in rows])
        if numeric and target is None:  # class names after numeric blocks: read again, keeping the text
            raise _ClassNames
        self._check_finite(values, None if self.class_names else target, numbers)
        return values, (text if k is not None and self.texts else target)

    def _first_bad_cell(self, rows: list[list[str]], numbers: list[int]) -> None:
        """Raise for the first cell, in reading order, that is empty, or not a number where one is needed."""
        check = sorted(self.cols + ([self.k] if self.k is not None else []))
        for line, row in zip(numbers, rows):
            for j in check:
                cell = row[j].strip()
                error = NotNumbers if j in self.cols[: self.d] else InputError  # read_table takes what a feature holds
                if not cell:
                    raise NotNumbers(f"{self.name}: line {line}, column {self.header[j]!r}: an empty cell")
                if j == self.k and self.class_names:
                    continue
                try:
                    float(cell)
                except ValueError:
                    raise error(
                        f"{self.name}: line {line}, column {self.header[j]!r}: non-numeric value {cell!r}"
                    ) from None

    def _check_finite(self, values: np.ndarray, target: np.ndarray | None, numbers: list[int]) -> None:
        """Raise for the first value, in reading order, that is not finite."""
        bad = ~np.isfinite(values)
        rows = bad.any(axis=1) if target is None else bad.any(axis=1) | ~np.isfinite(target)
        if not rows.any():
            return
        i = int(np.argmax(rows))
        found = [(self.cols[j], float(values[i, j])) for j in np.flatnonzero(bad[i])]
        if target is not None and not np.isfinite(target[i]):
            assert self.k is not None
            found.append((self.k, float(target[i])))
        j, value = min(found)
        raise InputError(f"{self.name}: line {numbers[i]}, column {self.header[j]!r}: {value} is not a finite number")


# ---------------------------------------------------------------------------------------- CSV, pyarrow
def _read_csv_arrow(
    pa: Any, name: str, target: Any, features: Sequence[Any] | None, dtype: str, weight: Any = None,
    delimiter: str = ",",
) -> tuple[ReadResult, np.ndarray | None]:  # fmt: skip
    """Parse with pyarrow, a segment of the text at a time (multi-threaded within it), straight into ``X``.

    Memory: ``X``, one buffer of text (``SEGMENT_BYTES``, filled with ordinary reads, not a memory map) and its
    parsed columns. Raises :class:`_Reparse` for anything the NumPy reader should decide: a cell pyarrow won't
    take as a number, a ragged row, a value that is not finite, no data rows: that reader names the line and
    column, or reads what pyarrow refused (a line of spaces and commas, ``1_000``). The result is the NumPy
    reader's, bit for bit."""
    import pyarrow.csv as pacsv

    gz = name.lower().endswith(".gz")
    try:
        rows = BLOCK_ROWS if gz else 1 + _count_newlines(name)  # a file's newlines bound its rows; X grows past
        with gzip.open(name, "rb") if gz else open(name, "rb") as f:
            header = [h.strip() for h in next(csv.reader([f.readline().decode("utf-8-sig")], delimiter=delimiter), [])]
            if not header:
                raise _Reparse
            k, cols = _select(name, header, target, features, "header", weight)
            d = len(cols)  # the features, then the weight column if any
            dx = d - (weight is not None)
            keep = [str(j) for j in cols] + ([str(k)] if k is not None else [])
            options = {
                "read_options": pacsv.ReadOptions(column_names=[str(j) for j in range(len(header))]),
                "parse_options": pacsv.ParseOptions(delimiter=delimiter),
                "convert_options": pacsv.ConvertOptions(
                    column_types={c: pa.float64() for c in keep[:d]} | ({str(k): pa.string()} if k is not None else {}),
                    include_columns=keep, null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False,
                ),
            }  # fmt: skip
            X = np.empty((rows, dx), dtype=dtype)
            w = np.empty(rows) if weight is not None else None
            n, targets, held = 0, [], 0  # held: bytes of a partial line kept at the front of the buffer
            text = bytearray(SEGMENT_BYTES)
            while True:
                end = held + read_into(f, memoryview(text)[held:])
                if end == 0:
                    break
                cut = text.rfind(b"\n", 0, end) + 1 if end == len(text) else end  # whole lines; at the end, all
                if cut == 0:  # a line longer than the buffer (or lone carriage returns): the NumPy reader
                    raise _Reparse
                table = pacsv.read_csv(pa.BufferReader(pa.py_buffer(memoryview(text)[:cut])), **options)
                for batch in table.select(range(d)).to_batches():  # the features: the first d columns
                    m = n + batch.num_rows
                    block = np.asarray(batch.to_tensor())  # row-major float64
                    if not np.isfinite(block).all():
                        raise _Reparse
                    if m > len(X):  # a .gz file, whose rows are not counted first: double
                        size = max(m, 2 * len(X))
                        X = np.concatenate([X[:n], np.empty((size - n, dx), X.dtype)])
                        if w is not None:
                            w = np.concatenate([w[:n], np.empty(size - n)])
                    X[n:m] = block[:, :dx]
                    if w is not None:
                        w[n:m] = block[:, dx]
                    n = m
                if k is not None:
                    targets += table.column(d).chunks
                del table
                held = end - cut
                text[:held] = text[cut:end]
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error, pa.ArrowException):
        raise _Reparse from None
    if n == 0:
        raise _Reparse
    y = _csv_target(pa, pa.chunked_array(targets, type=pa.string())) if k is not None else None
    names = [header[j] for j in cols[:dx]]
    return ReadResult(X[:n], y, names, header[k] if k is not None else None), None if w is None else w[:n]


def read_into(f: Any, view: memoryview) -> int:
    """Fill ``view`` from ``f`` up to its end or the end of the file (a gzip file returns less at a time); the
    number of bytes read."""
    total = 0
    while total < len(view):
        got = f.readinto(view[total:])
        if not got:
            break
        total += got
    return total


def _count_newlines(name: str) -> int:
    with open(name, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _csv_target(pa: Any, raw: Any) -> np.ndarray:
    """A CSV target column's text as float64 numbers when every cell is one, else as class names (str)."""
    import pyarrow.compute as pc

    try:
        y = np.array(pc.cast(pc.utf8_trim_whitespace(raw), pa.float64()).to_numpy(), dtype=np.float64)
    except pa.ArrowInvalid:
        values = pc.unique(raw)
        names = [v.strip() for v in values.to_pylist()]
        if "" in names or all(_is_number(v) for v in names):  # an empty cell, or numbers only Python takes
            raise _Reparse from None
        return np.array(names, dtype=object)[pc.index_in(raw, value_set=values).to_numpy()]
    if not np.isfinite(y).all():
        raise _Reparse
    return y


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------ Parquet and Arrow IPC
def _read_parquet(
    name: str, target: Any, features: Sequence[Any] | None, dtype: str, weight: Any = None
) -> tuple[ReadResult, np.ndarray | None]:
    pa = _need_pyarrow(name, "Parquet")
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(name, page_checksum_verification=True)  # pages written with checksums are verified
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{name}: not a readable Parquet file ({_one_line(exc)})") from None
    with pf:
        schema = pf.schema_arrow
        k, cols, kind = _select_typed(pa, name, schema, target, features, weight)
        columns = schema.names
        wanted = [columns[j] for j in cols] + ([columns[k]] if k is not None else [])
        groups = pf.num_row_groups

        def parts() -> Iterator[tuple[str, Any]]:
            for g in range(groups):
                try:
                    yield f"row group {g}", pf.read_row_group(g, columns=wanted, use_threads=True)
                except (pa.ArrowException, OSError) as exc:
                    raise InputError(f"{name}: row group {g} of {groups} cannot be read ({_one_line(exc)}); "
                                     "the file is corrupt or truncated") from None  # fmt: skip

        return _fill(pa, name, pf.metadata.num_rows, parts(), wanted, kind, dtype, weight is not None)


def _read_ipc(
    name: str, target: Any, features: Sequence[Any] | None, dtype: str, weight: Any = None
) -> tuple[ReadResult, np.ndarray | None]:
    pa = _need_pyarrow(name, "Feather (Arrow IPC)")
    try:
        source = pa.memory_map(name)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{name}: cannot read ({_one_line(exc)})") from None
    with source:
        batches: list[Any] = []
        try:
            reader = pa.ipc.open_file(source)
        except (pa.ArrowException, OSError) as exc:  # not the file format: the stream format?
            source.seek(0)
            try:
                stream = pa.ipc.open_stream(source)
            except (pa.ArrowException, OSError):
                raise InputError(f"{name}: not a readable Feather or Arrow IPC file ({_one_line(exc)}); "
                                 "it may be truncated or corrupt") from None  # fmt: skip
            schema = stream.schema
            k, cols, kind = _select_typed(pa, name, schema, target, features, weight)
            while True:
                try:
                    batches.append(stream.read_next_batch())
                except StopIteration:
                    break
                except (pa.ArrowException, OSError) as exc:
                    raise InputError(f"{name}: record batch {len(batches)} cannot be read ({_one_line(exc)}); "
                                     "the file is corrupt or truncated") from None  # fmt: skip
        else:
            schema = reader.schema
            k, cols, kind = _select_typed(pa, name, schema, target, features, weight)
            for i in range(reader.num_record_batches):
                try:
                    batches.append(reader.get_batch(i))
                except (pa.ArrowException, OSError) as exc:
                    raise InputError(f"{name}: record batch {i} of {reader.num_record_batches} cannot be read "
                                     f"({_one_line(exc)}); the file is corrupt or truncated") from None  # fmt: skip
        columns = schema.names
        wanted = [columns[j] for j in cols] + ([columns[k]] if k is not None else [])
        n = sum(b.num_rows for b in batches)

        def parts() -> Iterator[tuple[str, Any]]:
            for i in range(len(batches)):
                batch, batches[i] = batches[i], None  # each freed once copied
                yield f"record batch {i}", batch

        return _fill(pa, name, n, parts(), wanted, kind, dtype, weight is not None)


def _select_typed(
    pa: Any, name: str, schema: Any, target: Any, features: Sequence[Any] | None, weight: Any = None
) -> tuple[int | None, list[int], str | None]:
    """The columns as :func:`_select` (the weight column's last, when ``weight`` names one), the features and the
    weights checked numeric, and the target's kind: "number", "text" or None (no target)."""
    columns = list(schema.names)
    k, cols = _select(name, columns, target, features, "file's columns", weight)
    if weight is not None and not _numeric(pa, schema.field(cols[-1]).type):
        raise InputError(f"{name}: weight column {weight!r} ({schema.field(cols[-1]).type}) is not numeric; "
                         "weights are numbers")  # fmt: skip
    features_at = cols[:-1] if weight is not None else cols
    bad = [f"{columns[j]!r} ({schema.field(j).type})" for j in features_at if not _numeric(pa, schema.field(j).type)]
    if bad:
        raise NotNumbers(f"{name}: feature column{'s' * (len(bad) > 1)} {', '.join(bad)} "
                         f"{'are' if len(bad) > 1 else 'is'} not numeric; gpunn trains on numbers")  # fmt: skip
    kind = None
    if k is not None:
        kind = _target_kind(pa, schema.field(k).type)
        if kind is None:
            raise InputError(f"{name}: target column {columns[k]!r} has type {schema.field(k).type}; gpunn takes "
                             "numbers or class names (strings) as targets")  # fmt: skip
    return k, cols, kind


def _numeric(pa: Any, t: Any) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                or pa.types.is_decimal(t))  # fmt: skip


def _target_kind(pa: Any, t: Any) -> str | None:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if _numeric(pa, t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t):
        return "text"
    return None


def _fill(pa: Any, name: str, n: int, parts: Iterator[tuple[str, Any]], wanted: list[str], kind: str | None,
          dtype: str, weighted: bool = False) -> tuple[ReadResult, np.ndarray | None]:  # fmt: skip
    """Copy the parts (tables or record batches) of a typed file into ``X`` (and the target, and the weights:
    ``wanted``'s column after the features when ``weighted``), a batch at a time."""
    import pyarrow.compute as pc

    d = len(wanted) - (kind is not None)  # the features and the weights, read as numbers
    dx = d - weighted
    X = np.empty((n, dx), dtype=dtype)
    w = np.empty(n) if weighted else None
    y = None if kind is None else np.empty(n) if kind == "number" else np.empty(n, dtype=object)
    row = 0
    for where, part in parts:
        for batch in part.to_batches() if isinstance(part, pa.Table) else [part]:
            m = row + batch.num_rows
            if m > n:
                raise InputError(f"{name}: {where} holds more rows than the file's metadata says ({n}); "
                                 "the file is corrupt")  # fmt: skip
            columns = batch.select(wanted).columns
            for j, column in enumerate(columns):
                check_nulls(pc, name, column, row, where, wanted[j], NotNumbers if j < dx else InputError)
            numbers = [c if c.type == pa.float64() else c.cast(pa.float64(), safe=False) for c in columns[:d]]
            block = np.asarray(pa.RecordBatch.from_arrays(numbers, names=wanted[:d]).to_tensor())
            _check_rows_finite(name, block, row, where, wanted)
            X[row:m] = block[:, :dx]
            if w is not None:
                w[row:m] = block[:, dx]
            if y is not None:
                t = columns[d]
                if pa.types.is_dictionary(t.type):
                    t = t.dictionary_decode()
                if kind == "number":
                    y[row:m] = t.cast(pa.float64(), safe=False).to_numpy()
                    _check_rows_finite(name, y[row:m, None], row, where, wanted[d:])
                else:
                    y[row:m] = t.to_numpy(zero_copy_only=False)
            row = m
    if row != n:
        raise InputError(f"{name}: holds {row} rows but its metadata says {n}; the file is corrupt or truncated")
    if n == 0:
        raise InputError(f"{name}: no data rows")
    return ReadResult(X, y, wanted[:dx], wanted[d] if kind is not None else None), w


def _check_rows_finite(name: str, block: np.ndarray, row: int, where: str, columns: list[str]) -> None:
    """A file's rows checked finite (:func:`gpunn._validation.finite`), named by file, row, block and column."""
    check.finite(block, name, columns, row, where)


def check_nulls(
    pc: Any, name: str, column: Any, row: int, where: str, column_name: str, error: type[InputError] = InputError
) -> None:
    """A pyarrow column without missing values (nulls), else an error naming the file row of the first."""
    if column.null_count:
        i = row + int(np.argmax(pc.is_null(column).to_numpy(zero_copy_only=False)))
        raise error(f"{name}: row {i} ({where}), column {column_name!r}: a missing value (null)")


# ------------------------------------------------------------------------------------------------ NumPy
def _read_npy(
    name: str, target: Any, features: Sequence[Any] | None, dtype: str, weight: Any = None
) -> tuple[ReadResult, np.ndarray | None]:
    """A 2-D numeric .npy array, its columns named by index; read through a memory map, a block of rows at a
    time."""
    try:
        with open(name, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, source_dtype = header(f)
            offset = f.tell()
        size = os.path.getsize(name)
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or _one_line(exc)})") from None
    except ValueError as exc:
        raise InputError(f"{name}: not a readable .npy file ({_one_line(exc)})") from None
    if source_dtype.hasobject:
        raise InputError(f"{name}: holds Python objects (dtype {source_dtype}); gpunn reads numeric arrays")
    if len(shape) != 2:
        raise InputError(f"{name}: holds an array of shape {shape}; a .npy data file holds a 2-D array "
                         "(rows, columns)")  # fmt: skip
    needed = int(np.prod(shape)) * source_dtype.itemsize
    if size - offset < needed:
        raise InputError(f"{name}: truncated: its header promises a {shape[0]} x {shape[1]} {source_dtype} "
                         f"array ({needed} bytes of data) but the file holds {size - offset} bytes after the "
                         "header")  # fmt: skip
    if source_dtype.kind not in "biuf":
        raise InputError(f"{name}: holds {source_dtype} values, not numbers")
    columns = [str(j) for j in range(shape[1])]
    k, cols = _select(name, columns, _column_index(name, target, shape[1]),
                      None if features is None else [_column_index(name, f, shape[1]) for f in features],
                      "array's columns (a .npy file's columns are named by index)",
                      _column_index(name, weight, shape[1]))  # fmt: skip
    if shape[0] == 0:
        raise InputError(f"{name}: no data rows")
    array = np.load(name, mmap_mode="r", allow_pickle=False)
    dx = len(cols) - (weight is not None)  # the features; then the weight column, if any
    X = np.empty((shape[0], dx), dtype=dtype)
    y = np.empty(shape[0]) if k is not None else None
    w = np.empty(shape[0]) if weight is not None else None
    names = [columns[j] for j in cols]
    for s in range(0, shape[0], NPY_ROWS):
        rows = np.asarray(array[s : s + NPY_ROWS])
        X[s : s + len(rows)] = rows[:, cols[:dx]]
        _check_rows_finite(name, rows[:, cols].astype(np.float64, copy=False), s, "", names)
        if w is not None:
            w[s : s + len(rows)] = rows[:, cols[dx]]
        if y is not None:
            y[s : s + len(rows)] = rows[:, k]
            _check_rows_finite(name, y[s : s + len(rows), None], s, "", [columns[k]])  # type: ignore[index]
    del array
    return ReadResult(X, y, names[:dx], columns[k] if k is not None else None), w


def _column_index(name: str, value: Any, d: int) -> str | None:
    """A .npy column given as an index (int or digits, negative from the end) as its name, "0".."d-1"."""
    if value is None:
        return None
    try:
        j = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: a .npy file's columns are named by index (0 to {d - 1}, or -1 for the last); "
                         f"not {value!r}") from None  # fmt: skip
    if not -d <= j < d:
        raise InputError(f"{name}: column {j} is out of range for an array of {d} columns")
    return str(j % d)


def _read_npz(
    name: str, target: Any, features: Sequence[Any] | None, dtype: str, weight: Any = None
) -> tuple[ReadResult, np.ndarray | None]:
    """An archive with arrays ``X`` (rows, features), optionally ``feature_names``, the target array and the
    weights' array."""
    try:
        archive = np.load(name, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{name}: not a readable .npz archive ({_one_line(exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"{name}: holds a single array, not an .npz archive (name such a file .npy)")
    with archive:
        held = ", ".join(archive.files) or "no arrays"

        def get(key: str) -> np.ndarray:
            if key not in archive.files:
                what = "the features" if key == "X" else "the weights" if key == str(weight) else "the target"
                raise InputError(f"{name}: no array {key!r} ({what}) in the archive; it holds {held}")
            try:
                return archive[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise InputError(f"{name}: array {key!r} cannot be read ({_one_line(exc)}); the archive is "
                                 "corrupt or truncated") from None  # fmt: skip

        source = get("X")
        if source.ndim != 2 or source.dtype.kind not in "biuf":
            raise InputError(f"{name}: array 'X' must be 2-D and numeric; it is {source.dtype} of shape "
                             f"{source.shape}")  # fmt: skip
        columns = [str(j) for j in range(source.shape[1])]
        if "feature_names" in archive.files:
            given = get("feature_names")
            if given.ndim != 1 or len(given) != source.shape[1] or given.dtype.kind not in "US":
                raise InputError(f"{name}: array 'feature_names' must hold one string per column of X "
                                 f"({source.shape[1]}); it is {given.dtype} of shape {given.shape}")  # fmt: skip
            columns = [str(c) for c in given.tolist()]
        if target in ("X", "feature_names"):
            raise ConfigError(f"{name}: the target of an .npz archive is an array of its own (such as 'y'), "
                              f"not {target!r}")  # fmt: skip
        if weight in ("X", "feature_names"):
            raise ConfigError(f"{name}: the weights of an .npz archive are an array of their own (such as 'w'), "
                              f"not {weight!r}")  # fmt: skip
        if weight is not None and str(weight) == str(target):
            raise InputError(f"{name}: {weight!r} is both the target and the weight array")
        if features is not None:
            features = [str(f) for f in features]
        _, cols = _select(name, columns, None, features, "names of X's columns")
        y = None
        if target is not None:
            values = get(str(target))
            if values.ndim != 1 or len(values) != len(source):
                raise InputError(f"{name}: the target array {target!r} must hold one value per row of X "
                                 f"({len(source)}); its shape is {values.shape}")  # fmt: skip
            if values.dtype.kind in "biuf":
                y = values.astype(np.float64)
                _check_rows_finite(name, y[:, None], 0, "", [str(target)])
            elif values.dtype.kind in "US":
                y = np.array([str(v) for v in values.tolist()], dtype=object)
            else:
                raise InputError(f"{name}: the target array {target!r} holds {values.dtype}; gpunn takes numbers "
                                 "or class names (strings)")  # fmt: skip
        w = None
        if weight is not None:
            values = get(str(weight))
            if values.ndim != 1 or len(values) != len(source) or values.dtype.kind not in "biuf":
                raise InputError(f"{name}: the weight array {weight!r} must hold one number per row of X "
                                 f"({len(source)}); it is {values.dtype} of shape {values.shape}")  # fmt: skip
            w = values.astype(np.float64)
            _check_rows_finite(name, w[:, None], 0, "", [str(weight)])
        if len(source) == 0:
            raise InputError(f"{name}: no data rows")
        X = np.empty((len(source), len(cols)), dtype=dtype)
        X[:] = source[:, cols]
        _check_rows_finite(name, source[:, cols].astype(np.float64, copy=False), 0, "", [columns[j] for j in cols])
        return ReadResult(X, y, [columns[j] for j in cols], None if target is None else str(target)), w


def write_csv(path: str | os.PathLike[str] | None, header: list[str], columns: list[np.ndarray]) -> None:
    """Write columns under a header to ``path``, or to standard output when ``path`` is None or "-"."""
    import sys

    def emit(f: Any) -> None:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(zip(*(c.tolist() for c in columns)))

    if path is None or os.fspath(path) == "-":
        emit(sys.stdout)
    else:
        with open(path, "w", newline="", encoding="utf-8") as f:
            emit(f)
