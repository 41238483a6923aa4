"""A table's columns as the numbers a network takes: categories one-hot, empty cells imputed and flagged.

The API is four calls around one frozen value, :class:`Encoding`:

- :func:`learn(X) <learn>` learns it from the training rows of a table (a pandas or polars DataFrame, a pyarrow
  Table, :class:`gpunn.data.Columns`);
- :meth:`Encoding.apply` turns a table with those columns into a float64 array of ``Encoding.width`` columns;
- :meth:`Encoding.to_dict` and :func:`from_dict` carry it in a model file (JSON).

Per column, from the training rows only:

- a **text** column (strings, pandas categoricals, text cells in a CSV file) is one-hot encoded: one 0/1 column
  per category seen at least ``min_frequency`` times (default :data:`MIN_FREQUENCY`), in sorted order, and, when
  some categories were seen fewer times, one "other" column they all share. An empty cell is the category ``""``.
  A category never seen in training is a row of zeros (an error never). More than ``max_categories`` (default
  :data:`MAX_CATEGORIES`) frequent categories is refused, naming the column: leave it out or raise the cap; so is
  a column without one frequent category (names, ids).
- a **number** column (booleans are 0/1) keeps its value; an empty cell (NaN, null, an empty CSV cell) takes the
  training rows' median, and a column that had empty cells in training gets a 0/1 column after it, 1 where the
  cell was empty. A column empty in every training row is refused.

gpunn learns an encoding only for a table that needs one (a text column or an empty cell): a model trained on
complete numbers keeps taking its columns as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.columns import NUMBER, TEXT, column_names, has_text_or_empty, is_table, raw_columns
from ..errors import InputError

MAX_CATEGORIES = 32  # one-hot columns a text column may take (its frequent categories); more is refused
MIN_FREQUENCY = 2  # training rows a category needs for a column of its own; rarer ones share the "other" column
CATEGORY = "category"


@dataclass(frozen=True)
class Feature:
    """The code of one column: a ``"number"`` (``fill`` for an empty cell; ``indicator``: a 0/1 "was empty"
    column follows) or a ``"category"`` (one column per ``categories``, and one "other" column for the ``rare``
    ones when there are any)."""

    name: str
    kind: str
    fill: float = 0.0
    indicator: bool = False
    categories: tuple[str, ...] = ()
    rare: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        if self.kind == NUMBER:
            return 1 + self.indicator
        return len(self.categories) + bool(self.rare)

    def output_names(self) -> list[str]:
        if self.kind == NUMBER:
            return [self.name] + ([f"{self.name}=<empty>"] if self.indicator else [])
        return [f"{self.name}={c}" for c in self.categories] + ([f"{self.name}=<other>"] if self.rare else [])


@dataclass(frozen=True)
class Encoding:
    """How a table's columns become a network's inputs: one :class:`Feature` per column, in input order."""

    features: tuple[Feature, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The table's columns, in the order the model takes them."""
        return tuple(f.name for f in self.features)

    @property
    def width(self) -> int:
        """The encoded columns: the network's input width."""
        return sum(f.width for f in self.features)

    def output_names(self) -> list[str]:
        """A name for each encoded column: ``col``, ``col=<empty>``, ``col=category``, ``col=<other>``."""
        return [n for f in self.features for n in f.output_names()]

    def binary(self) -> np.ndarray:
        """(width,) bool: the 0/1 columns (one-hot, "other" and empty-cell indicators), which standardizing
        leaves as they are."""
        flags = []
        for f in self.features:
            flags += [False, True] if f.kind == NUMBER and f.indicator else [f.kind != NUMBER] * f.width
        return np.array(flags, dtype=bool)

    def apply(self, X: Any, name: str = "X") -> np.ndarray:
        """The table ``X`` (its columns by name) encoded: float64, (rows, width)."""
        if not is_table(X):
            raise InputError(f"{name} is a {type(X).__name__}; this model encodes the columns of a table "
                             f"({_listed(self.names)}): give a pandas or polars DataFrame or a pyarrow "
                             "Table")  # fmt: skip
        missing = [c for c in self.names if c not in set(column_names(X))]
        if missing:
            raise InputError(f"{name} lacks the column(s) {_listed(missing)} (the model's: {_listed(self.names)})")
        raw = raw_columns(X, self.names)
        out = np.zeros((len(raw[0]), self.width))
        j = 0
        for f, a in zip(self.features, raw):
            a = _as_kind(a, f, name)
            if f.kind == NUMBER:
                empty = np.isnan(a)
                out[:, j] = np.where(empty, f.fill, a)
                if f.indicator:
                    out[:, j + 1] = empty
            else:
                index = category_index(f, a)
                rows = np.flatnonzero(index >= 0)
                out[rows, j + index[rows]] = 1.0
            j += f.width
        return out

    def to_dict(self) -> dict[str, Any]:
        """The encoding as JSON-able values (a model file's ``encoding`` field)."""
        columns = []
        for f in self.features:
            if f.kind == NUMBER:
                columns.append({"name": f.name, "kind": NUMBER, "fill": f.fill, "indicator": f.indicator})
            else:
                columns.append({"name": f.name, "kind": CATEGORY, "categories": list(f.categories),
                                "rare": list(f.rare)})  # fmt: skip
        return {"columns": columns}


def category_index(f: Feature, a: np.ndarray) -> np.ndarray:
    """Each text cell's one-hot column within ``f``: its category's, the "other" column for a rare one, -1 for
    one never seen in training."""
    codes = {c: i for i, c in enumerate(f.categories)} | {c: len(f.categories) for c in f.rare}
    values, inverse = np.unique(a.astype(str), return_inverse=True)
    return np.array([codes.get(v, -1) for v in values.tolist()], dtype=np.int64)[inverse.reshape(-1)]


def _as_kind(a: np.ndarray, f: Feature, name: str) -> np.ndarray:
    """A column as the kind the model was trained on; a column empty in every row passes as either kind."""
    numbers = a.dtype.kind == "f"
    if numbers == (f.kind == NUMBER):
        return a
    if numbers and np.isnan(a).all():
        return np.full(len(a), "", dtype=object)
    if not numbers and all(v == "" for v in a.tolist()):
        return np.full(len(a), np.nan)
    if numbers:
        raise InputError(f"{name}: column {f.name!r} holds numbers, but the model was trained on it as text "
                         f"categories ({_listed(f.categories)}); give it as text")  # fmt: skip
    i = next(i for i, v in enumerate(a.tolist()) if v != "")
    raise InputError(f"{name}: column {f.name!r} holds text ({a[i]!r} at row {i}), but the model was trained on it "
                     "as numbers")  # fmt: skip


def needs_encoding(X: Any) -> bool:
    """Whether a table has a text column or an empty cell (a table of complete numbers is taken as it is)."""
    if not is_table(X) or len(set(column_names(X))) != len(column_names(X)):  # twice: the frame check names it
        return False
    return has_text_or_empty(X)


def learn(
    X: Any, *, max_categories: int = MAX_CATEGORIES, min_frequency: int = MIN_FREQUENCY, name: str = "X"
) -> Encoding:
    """The :class:`Encoding` of a table's training rows (see the module's description); a column empty in every
    row, or one with more than ``max_categories`` frequent categories, is an :class:`~gpunn.errors.InputError`
    naming it."""
    if not is_table(X):
        raise InputError(f"{name}: an encoding is learned from a table (a pandas or polars DataFrame, a pyarrow "
                         f"Table); got {type(X).__name__}")  # fmt: skip
    for value, what in ((max_categories, "max_categories"), (min_frequency, "min_frequency")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{what} must be an integer >= 1; got {value!r}")
    names = column_names(X)
    if len(set(names)) != len(names):
        twice = sorted({c for c in names if names.count(c) > 1})
        raise InputError(f"{name} has more than one column named {_listed(twice)}")
    features = []
    for column, a in zip(names, raw_columns(X, names)):
        if not len(a):
            raise InputError(f"{name} has no rows to learn an encoding from")
        if a.dtype.kind == "f":
            empty = np.isnan(a)
            if empty.all():
                raise InputError(f"{name}: column {column!r} is empty in all {len(a)} rows: there is nothing to "
                                 "learn from it; leave it out (gpunn train --features)")  # fmt: skip
            features.append(Feature(column, NUMBER, float(np.median(a[~empty])), bool(empty.any())))
            continue
        values, counts = np.unique(a.astype(str), return_counts=True)
        if values.tolist() == [""]:
            raise InputError(f"{name}: column {column!r} is empty in all {len(a)} rows: there is nothing to learn "
                             "from it; leave it out (gpunn train --features)")  # fmt: skip
        kept = values[counts >= min_frequency].tolist()
        if not kept:  # a name or an id: one "other" column, 1 in every row, would be all it learns
            raise InputError(f"{name}: column {column!r} holds {len(values)} distinct values, none seen "
                             f"{min_frequency} times, as names or ids do: there are no categories to learn; leave "
                             "it out (gpunn train --features)")  # fmt: skip
        if len(kept) > max_categories:
            raise InputError(
                f"{name}: column {column!r} holds {len(kept)} categories seen at least {min_frequency} times "
                f"({len(values)} distinct values), more than the {max_categories} gpunn one-hot encodes: leave it "
                f"out (gpunn train --features), or raise the cap (--max-categories {len(kept)}; "
                f"max_categories={len(kept)} in Python)"
            )
        features.append(Feature(column, CATEGORY, categories=tuple(kept),
                                rare=tuple(values[counts < min_frequency].tolist())))  # fmt: skip
    return Encoding(tuple(features))


def from_dict(value: Any, n_features: int, feature_names: Any) -> Encoding:
    """The :class:`Encoding` a model file's ``encoding`` field holds, checked whole: a ``ValueError`` names the
    problem (the width must be the network's ``n_features``, the columns its ``feature_names``)."""
    columns = value.get("columns") if isinstance(value, dict) else None
    if not isinstance(columns, list) or not columns:
        raise ValueError(f"is {value!r}; it must be an object with a non-empty list of columns")
    features = []
    for i, c in enumerate(columns):
        where = f"column {i}"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise ValueError(f"{where} is {c!r}; it must be an object with a name")
        if c.get("kind") == NUMBER:
            fill: Any = c.get("fill")
            indicator = c.get("indicator")
            if type(fill) not in (int, float) or not math.isfinite(fill) or not isinstance(indicator, bool):
                raise ValueError(f"{where} ({c['name']!r}) must have a finite fill and an indicator true or false")
            features.append(Feature(c["name"], NUMBER, float(fill), indicator))
        elif c.get("kind") == CATEGORY:
            kept, rare = c.get("categories"), c.get("rare")
            if not (isinstance(kept, list) and isinstance(rare, list) and all(isinstance(v, str) for v in kept + rare)
                    and len(set(kept + rare)) == len(kept + rare) and kept + rare):  # fmt: skip
                raise ValueError(f"{where} ({c['name']!r}) must list distinct text categories and rare ones")
            features.append(Feature(c["name"], CATEGORY, categories=tuple(kept), rare=tuple(rare)))
        else:
            raise ValueError(f"{where} has kind {c.get('kind')!r}; it must be {NUMBER!r} or {CATEGORY!r}")
    encoding = Encoding(tuple(features))
    if encoding.width != n_features:
        raise ValueError(f"encodes {encoding.width} columns but the network takes {n_features}")
    if feature_names is None or list(feature_names) != list(encoding.names):
        raise ValueError(f"encodes the columns {list(encoding.names)} but feature_names is {feature_names!r}")
    return encoding


def _listed(names: Sequence[str], most: int = 12) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:most])
    return shown + (f", ... ({len(names)})" if len(names) > most else "")


__all__ = ["CATEGORY", "MAX_CATEGORIES", "MIN_FREQUENCY", "NUMBER", "TEXT", "Encoding", "Feature", "from_dict",
           "learn", "needs_encoding"]  # fmt: skip
