"""The data of one ``gpunn train``: read, targets chosen, split into training, validation and test rows.

The test rows are held out first and touched once, after training; validation rows, when there are any
(``--validation-split``, or ``--early-stopping``'s 0.1), come out of the training rows."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import data
from ..errors import ConfigError, InputError
from .targets import Target, streamed_target, target_of

DEFAULT_VALIDATION_SPLIT = 0.1  # --early-stopping's validation rows when --validation-split is not given
# what pandas and pyarrow call an index written as a column: df.to_csv("f.csv") writes one with an empty name
UNNAMED = re.compile(r"^(|Unnamed: \d+|__index_level_\d+__)$")


@dataclasses.dataclass
class Plan:
    """(X, y) pairs held in memory, or streamed Datasets with y None; test and validation may be None."""

    train: tuple[Any, Any]
    weight: np.ndarray | None  # the training rows' sample weights, in memory (a streamed Dataset has its own)
    test: tuple[Any, Any] | None
    validation: Any  # (X, y), a Dataset, or None
    target: Target
    source: str
    names: list[str] | None
    n_features: int

    @staticmethod
    def rows(part: Any) -> int:
        return 0 if part is None else len(part[0]) if isinstance(part, tuple) else len(part)


def validation_split(s: dict[str, Any]) -> float | None:
    """The fraction of the training rows held out for validation, or None for none."""
    if s["validation_split"] is not None:
        return float(s["validation_split"])
    return DEFAULT_VALIDATION_SPLIT if s["early_stopping"] is not None else None


def _load(s: dict[str, Any], table: bool) -> tuple[Any, np.ndarray, np.ndarray | None, str, list[str] | None]:
    """``(X, y, sample weights or None, source, feature names)``; X is a :class:`gpunn.data.Columns` for a file
    with text or empty cells among its features, or, with ``table``, for any file (a model that encodes them)."""
    if s["data"] is None:
        for option in ("target", "features", "sample_weight", "delimiter"):
            if s[option] is not None:
                raise InputError(f"--{option.replace('_', '-')} needs --data FILE")
        X, y = data.make_dataset(s["dataset"], s["samples"], seed=s["seed"])
        return X, y, None, f"built-in dataset '{s['dataset']}'", None
    if s["target"] is None:
        raise InputError(f"--data {s['data']} needs --target COLUMN to name the column to predict")
    if s["features"] is None and _is_csv(s["data"]):  # before reading: an index of text would fail as a bad cell
        _refuse_unnamed(s, data.readers.csv_header(s["data"], s["delimiter"]))
    # .csv, .csv.gz, .tsv, .parquet, .feather/.arrow, .npy, .npz; X straight in the model's dtype, no float64 copy
    if table:
        (X, target, names, _), w = data.read_table(s["data"], target=s["target"], features=s["features"],
                                                   weight=s["sample_weight"], delimiter=s["delimiter"])  # fmt: skip
    else:
        (X, target, names, _), w = data.readers.read_weighted(
            s["data"], s["target"], s["features"], s["dtype"], s["sample_weight"], s["delimiter"], table=True
        )
    assert target is not None  # read returns the target column when it is asked for one
    if s["features"] is None:
        _refuse_unnamed(s, names)
    return X, target, w, s["data"], names


def _is_csv(path: str) -> bool:
    lower = path.lower()
    return lower.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz"))


def _refuse_unnamed(s: dict[str, Any], columns: list[str]) -> None:
    """An unnamed column (a saved pandas index) is refused, not trained on: its row numbers would be a feature
    that predicts the split and nothing else."""
    skip = {s["target"], s["sample_weight"]}
    unnamed = [(j, c) for j, c in enumerate(columns) if UNNAMED.match(c) and c not in skip]
    if unnamed:
        j, name = unnamed[0]
        named = [c for c in columns if not UNNAMED.match(c) and c not in skip]
        raise InputError(
            f"{s['data']}: column {j + 1} has no name ({name!r}), as a saved pandas index has "
            f"(df.to_csv(path, index=False) leaves it out); gpunn does not train on it unasked: "
            f"name the features with --features {','.join(named) if named else 'COL,COL'}"
        )


def _split_weights(w: np.ndarray | None, test_size: float, seed: int) -> np.ndarray | None:
    """The weights of the rows that ``data.train_test_split`` with this seed keeps for training (its order
    depends on the row count and the seed only)."""
    return None if w is None else data.train_test_split(w, w, test_size=test_size, seed=seed)[0]


def in_memory(s: dict[str, Any], table: bool = False) -> Plan:
    """The data held in memory; with ``table`` its features read as a table's columns (:func:`_load`)."""
    X, y, w, source, names = _load(s, table)
    target = target_of(y, s["output"], source)
    y = target.y
    test: tuple[Any, Any] | None = None
    X_train, y_train = X, y
    in_place = isinstance(X, np.ndarray)  # a table's columns are split into copies
    if s["test_size"] > 0:  # in place, as fit(copy=False) scales X_train: a large CSV is held once, not three times
        with _rows_for("--test-size", s["test_size"], len(X), "rows"):
            X_train, X_test, y_train, y_test = data.train_test_split(X, y, test_size=s["test_size"], seed=s["seed"],
                                                                     copy=not in_place)  # fmt: skip
        w = _split_weights(w, s["test_size"], s["seed"])  # the test rows are evaluated unweighted
        test = (X_test, y_test)
    validation = None
    fraction = validation_split(s)
    if fraction is not None:  # out of the training rows: the test rows stay unseen until the end
        left = f"training rows left by --test-size {s['test_size']}" if s["test_size"] > 0 else "training rows"
        with _rows_for("--validation-split", fraction, len(X_train), left):
            X_train, X_val, y_train, y_val = data.train_test_split(X_train, y_train, test_size=fraction,
                                                                   seed=s["seed"], copy=not in_place)  # fmt: skip
        w = _split_weights(w, fraction, s["seed"])
        validation = (X_val, y_val)
    return Plan((X_train, y_train), w, test, validation, target, source, names, X.shape[1])


@contextlib.contextmanager
def _rows_for(option: str, fraction: float, n: int, rows: str) -> Iterator[None]:
    """A split with too few rows named by the option that asked for it (the split itself words it as test_size,
    which a validation split is not)."""
    try:
        yield
    except InputError:
        raise InputError(f"{option} {fraction} cannot split the {n} {rows}: both parts need at least one row (use "
                         "more rows or a fraction that leaves one on each side)") from None  # fmt: skip


def streamed(s: dict[str, Any]) -> Plan:
    """--stream: the file read a block at a time; test (and validation) rows are whole blocks drawn at random."""
    if s["data"] is None or s["target"] is None:
        raise InputError("--stream trains from a file: give --data FILE.parquet (or .npy) and --target COLUMN")
    if s["delimiter"] is not None:
        raise InputError("--delimiter applies to CSV files, which --stream does not read")
    target: Any = s["target"]
    features: Any = s["features"]
    weight: Any = s["sample_weight"]
    if s["data"].lower().endswith(".npy"):  # columns by number
        target = _npy_column("target", target)
        if features is not None:
            if not all(f.lstrip("-").isdigit() for f in features):
                raise InputError(f"--features of an .npy file are column numbers; got {','.join(features)}")
            features = [int(f) for f in features]
        if weight is not None:
            weight = _npy_column("sample-weight", weight)
    if s["class_weight"] is not None:
        raise ConfigError("--class-weight is not available with --stream: give the file a column of each row's "
                         "weight and name it with --sample-weight COLUMN")  # fmt: skip
    ds = data.Dataset(s["data"], target, features, weight=weight)
    if features is None:
        _refuse_unnamed(s, list(ds.feature_names or []))
    train, test = ds.split(s["test_size"], seed=s["seed"]) if s["test_size"] > 0 else (ds, None)
    validation = None
    fraction = validation_split(s)
    if fraction is not None:
        train, validation = train.split(fraction, seed=s["seed"])
    chosen = streamed_target(ds, s["output"], s["data"])
    return Plan((train, None), None, None if test is None else (test, None), validation, chosen, s["data"],
                ds.feature_names, ds.n_features)  # fmt: skip


def _npy_column(option: str, text: str) -> int:
    if not text.lstrip("-").isdigit():
        raise InputError(f"--{option} of an .npy file is a column number; got {text!r}")
    return int(text)
