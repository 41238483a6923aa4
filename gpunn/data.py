"""Data on the host: built-in datasets, CSV files, train/test splits. Everything here is NumPy."""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np

from .errors import InputError

DATASETS = ("moons", "circles", "spirals")


def make_moons(n_samples: int = 1000, *, noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles in 2-D with Gaussian noise: labels 0 and 1, half each."""
    rng = np.random.default_rng(seed)
    n_out = n_samples // 2
    n_in = n_samples - n_out
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    x = np.concatenate([np.cos(t_out), 1 - np.cos(t_in)])
    y = np.concatenate([np.sin(t_out), 0.5 - np.sin(t_in)])
    X = np.stack([x, y], axis=1) + rng.normal(0.0, noise, size=(n_samples, 2))
    labels = np.concatenate([np.zeros(n_out, np.int64), np.ones(n_in, np.int64)])
    order = rng.permutation(n_samples)
    return X[order], labels[order]


def make_circles(
    n_samples: int = 1000, *, noise: float = 0.08, factor: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A small circle (label 1) inside a large one (label 0) in 2-D, with Gaussian noise."""
    rng = np.random.default_rng(seed)
    n_out = n_samples // 2
    n_in = n_samples - n_out
    t_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    X = np.concatenate(
        [np.stack([np.cos(t_out), np.sin(t_out)], 1), factor * np.stack([np.cos(t_in), np.sin(t_in)], 1)]
    )
    X = X + rng.normal(0.0, noise, size=X.shape)
    labels = np.concatenate([np.zeros(n_out, np.int64), np.ones(n_in, np.int64)])
    order = rng.permutation(n_samples)
    return X[order], labels[order]


def make_spirals(
    n_samples: int = 1500, *, n_classes: int = 3, noise: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n_classes`` interleaved spiral arms in 2-D: a multi-class problem for a softmax output."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_samples) % n_classes
    r = np.tile(np.linspace(0.05, 1.0, -(-n_samples // n_classes)), n_classes)[:n_samples]
    r = np.sort(r)
    theta = labels * (2 * np.pi / n_classes) + r * 4.0 + rng.normal(0.0, noise, n_samples)
    X = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    order = rng.permutation(n_samples)
    return X[order], labels[order].astype(np.int64)


def make_dataset(name: str, n_samples: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A built-in dataset by name: "moons" (the default job), "circles" or "spirals" (3 classes)."""
    makers = {"moons": make_moons, "circles": make_circles, "spirals": make_spirals}
    if name not in makers:
        raise InputError(f"dataset {name!r} is not built in; use one of {', '.join(DATASETS)}")
    kwargs: dict[str, Any] = {"seed": seed}
    if n_samples is not None:
        kwargs["n_samples"] = n_samples
    return makers[name](**kwargs)


def train_test_split(
    X: np.ndarray, y: np.ndarray, *, test_size: float = 0.2, seed: int = 0, copy: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle with a seeded generator and hold out ``test_size`` (a fraction) of the rows for testing.

    Returns ``X_train, X_test, y_train, y_test``. With ``copy=False``, ``X`` and ``y`` (NumPy arrays) are
    shuffled in place and the four parts are views into them: the same split, without a second copy of a large
    dataset.
    """
    n = len(X)
    if len(y) != n:
        raise InputError(f"X has {n} rows but y has {len(y)}")
    if not 0.0 < test_size < 1.0:
        raise InputError(f"test_size must be a fraction between 0 and 1; got {test_size}")
    n_test = int(round(n * test_size))
    if n_test < 1 or n - n_test < 1:
        raise InputError(f"cannot split {n} rows with test_size {test_size}: both parts need at least one row")
    order = np.random.default_rng(seed).permutation(n)
    if copy:
        test, train = order[:n_test], order[n_test:]
        return X[train], X[test], y[train], y[test]
    for a in (X, y):
        if not isinstance(a, np.ndarray) or not a.flags.writeable:
            raise InputError("train_test_split(copy=False) shuffles in place: X and y must be writeable NumPy arrays")
    permute_rows(X, order)
    permute_rows(y, order)
    return X[n_test:], X[:n_test], y[n_test:], y[:n_test]


def permute_rows(a: np.ndarray, order: np.ndarray) -> None:
    """``a[:] = a[order]`` in place, holding one row aside instead of a copy of ``a``: each cycle of the
    permutation is followed once."""
    seen = np.zeros(len(order), dtype=bool)
    for start in np.flatnonzero(order != np.arange(len(order))).tolist():
        if seen[start]:
            continue
        held, i = a[start].copy(), start
        while (j := int(order[i])) != start:
            a[i] = a[j]
            seen[i], i = True, j
        a[i], seen[i] = held, True


BLOCK_ROWS = 1024  # CSV rows parsed at a time: bounds the temporary memory of reading a large file


def read_csv(
    path: str | os.PathLike[str], *, target: str | None = None, dtype: str = "float64"
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read a numeric CSV with a header row. Returns ``(X, y, feature_names)``; ``y`` is None without ``target``.

    ``X`` comes back in ``dtype`` (``"float32"`` halves the memory of a large file; each value is parsed as a
    float64 first and rounded once), ``y`` in float64. The file is parsed a block of rows at a time straight into
    ``X``, so reading needs little more memory than ``X`` itself (a pipe, whose length is not known up front,
    grows ``X`` as it goes). Every problem names the file, and the line and
    column where it applies: a ragged row, a non-numeric or empty cell, a value that is not finite, a missing
    target column, a file with no data rows. Blank lines are skipped.
    """
    name = os.fspath(path)
    dtype = str(np.dtype(dtype))
    if dtype not in ("float32", "float64"):
        raise InputError(f"read_csv reads float32 or float64, not {dtype}")
    try:
        rows = BLOCK_ROWS  # what to allocate first: a pipe's length is unknown, X grows as needed
        if os.path.isfile(name):  # a file's newlines bound its rows: X is allocated once
            with open(name, "rb") as f:
                rows = 1 + sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        with open(name, newline="", encoding="utf-8-sig") as f:
            header = [h.strip() for h in next(csv.reader([f.readline()]), [])]
            if not header:
                raise InputError(f"{name}: file is empty; expected a header row and data rows")
            if target is not None and target not in header:
                raise InputError(f"{name}: target column {target!r} is not in the header ({', '.join(header)})")
            k = header.index(target) if target is not None else None
            X = np.empty((rows, len(header) - (k is not None)), dtype=dtype)
            y = np.empty(rows) if k is not None else None
            n, block, numbers = 0, [], []
            for line_number, line in enumerate(f, start=2):
                if line.strip(" \t\r\n,"):
                    block.append(line)
                    numbers.append(line_number)
                if len(block) == BLOCK_ROWS:
                    X, y, n = _place(_parse(name, header, block, numbers), k, X, y, n)
                    block, numbers = [], []
            if block:
                X, y, n = _place(_parse(name, header, block, numbers), k, X, y, n)
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{name}: not a readable CSV text file ({exc})") from None
    if n == 0:
        raise InputError(f"{name}: no data rows after the header")
    if y is None:
        return X[:n], None, header
    return X[:n], y[:n], [h for j, h in enumerate(header) if j != k]


def _parse(name: str, header: list[str], block: list[str], numbers: list[int]) -> np.ndarray:
    """``block`` (lines ``numbers`` of the file) as float64 rows, every value finite, or an error naming where."""
    try:
        values = np.loadtxt(block, delimiter=",", quotechar='"', comments=None, ndmin=2)
    except ValueError:
        values = _parse_slowly(name, header, block, numbers)  # names the bad cell, or parses what loadtxt won't
    if values.shape[1] != len(header):
        values = _parse_slowly(name, header, block, numbers)
    finite = np.isfinite(values)
    if not finite.all():
        i, j = (int(a) for a in np.argwhere(~finite)[0])
        raise InputError(f"{name}: line {numbers[i]}, column {header[j]!r}: {values[i, j]} is not a finite number")
    return values


def _place(
    values: np.ndarray, k: int | None, X: np.ndarray, y: np.ndarray | None, n: int
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Write ``values`` into rows ``n...`` of ``X`` (all columns but ``k``) and ``y`` (column ``k``), doubling
    them when they are full; the arrays and the new row count."""
    m = n + len(values)
    if m > len(X):
        X = np.concatenate([X[:n], np.empty((max(m, 2 * len(X)) - n, X.shape[1]), X.dtype)])
        y = None if y is None else np.concatenate([y[:n], np.empty(len(X) - n)])
    if y is None:
        X[n:m] = values
    else:
        assert k is not None
        X[n:m, :k], X[n:m, k:], y[n:m] = values[:, :k], values[:, k + 1 :], values[:, k]
    return X, y, m


def _parse_slowly(name: str, header: list[str], block: list[str], numbers: list[int]) -> np.ndarray:
    """Cells to float64 one by one with the csv module; the first bad cell is reported by line and column."""
    values = np.empty((len(block), len(header)))
    for i, (line, row) in enumerate(zip(numbers, csv.reader(block))):
        if len(row) != len(header):
            raise InputError(f"{name}: line {line} has {len(row)} fields but the header has {len(header)}")
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                what = "an empty cell" if not cell.strip() else f"non-numeric value {cell.strip()!r}"
                raise InputError(f"{name}: line {line}, column {header[j]!r}: {what}") from None
    return values


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


from .stream import Dataset  # noqa: E402, F401  (streamed training from files larger than memory)
