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
    X: np.ndarray, y: np.ndarray, *, test_size: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle with a seeded generator and hold out ``test_size`` (a fraction) of the rows for testing."""
    n = len(X)
    if not 0.0 < test_size < 1.0:
        raise InputError(f"test_size must be a fraction between 0 and 1; got {test_size}")
    n_test = int(round(n * test_size))
    if n_test < 1 or n - n_test < 1:
        raise InputError(f"cannot split {n} rows with test_size {test_size}: both parts need at least one row")
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:n_test], order[n_test:]
    return X[train], X[test], y[train], y[test]


def read_csv(
    path: str | os.PathLike[str], *, target: str | None = None
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read a numeric CSV with a header row. Returns ``(X, y, feature_names)``; ``y`` is None without ``target``.

    Every problem names the file, and the line and column where it applies: a ragged row, a non-numeric or
    empty cell, a missing target column, a file with no data rows.
    """
    name = os.fspath(path)
    try:
        with open(name, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{name}: not a readable CSV text file ({exc})") from None
    if not rows:
        raise InputError(f"{name}: file is empty; expected a header row and data rows")
    header = [h.strip() for h in rows[0]]
    body = [(line, row) for line, row in enumerate(rows[1:], start=2) if row and any(c.strip() for c in row)]
    if not body:
        raise InputError(f"{name}: no data rows after the header")
    if target is not None and target not in header:
        raise InputError(f"{name}: target column {target!r} is not in the header ({', '.join(header)})")
    values = _parse_rows(name, header, body)
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise InputError(f"{name}: line {body[i][0]}, column {header[j]!r}: {values[i, j]} is not a finite number")
    if target is None:
        return values, None, header
    k = header.index(target)
    features = [h for j, h in enumerate(header) if j != k]
    return np.delete(values, k, axis=1), values[:, k], features


def _parse_rows(name: str, header: list[str], body: list[tuple[int, list[str]]]) -> np.ndarray:
    """Cells to float64, fast when the file is clean; otherwise the first bad cell, by line and column."""
    if all(len(row) == len(header) for _, row in body):
        try:
            return np.array([row for _, row in body], dtype=np.float64)
        except ValueError:
            pass  # find and name the bad cell below
    values = np.empty((len(body), len(header)), dtype=np.float64)
    for i, (line, row) in enumerate(body):
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
