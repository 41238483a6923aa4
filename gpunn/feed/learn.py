"""What a first fit learns from its data, as pure functions of a frozen :class:`Spec`: the widths of a network
given only its hidden layers, a classifier's classes and a standardizing regression's target scaling.

:class:`gpunn.MLP` and :class:`gpunn.Ensemble` both call these, so a member learns exactly what a lone network
learns; nothing here writes into a model: each function returns what it learned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _backend
from ..data import Dataset
from ..data.moments import moments
from ..errors import InputError
from . import checks, encode
from .spec import Spec


def sizes(hidden: Sequence[int], placement: Spec, X: Any, y: Any) -> list[int]:
    """``[n_features, *hidden, n_outputs]`` of a network given its hidden widths only, from its first fit's data:
    X's columns, and y's classes (softmax), its columns (identity, several sigmoid labels) or 1 (one sigmoid)."""
    if isinstance(X, Dataset):
        d = X.n_features
    elif placement.encoding is not None:
        d = placement.encoding.width
    else:
        columns = checks.frame_columns(X)
        shape = (None, len(columns)) if columns is not None else _shape(X, "X")
        if len(shape) != 2 or not shape[1]:
            raise InputError(f"X must be 2-D (n_samples, n_features) with at least one feature; got shape "
                             f"{tuple(shape)}")  # fmt: skip
        d = int(shape[1])
    if placement.output == "softmax":
        if isinstance(X, Dataset):
            if not X.has_target:
                raise InputError(f"X ({X.path}) has no target column: open it with Dataset(path, target=...)")
            found: np.ndarray | None = np.unique(np.concatenate([np.unique(b) for b in X.target_blocks()]))
        else:
            found = checks.learn_classes(dataclasses.replace(placement, sizes=(d, 2)), y)
        if found is None:
            raise InputError("y must be one class label per row, shape (n,), to infer a softmax output's width")
        if found.size < 2:
            raise InputError(f"y holds a single class ({found[0].item()!r}); a classifier needs at least two")
        k = int(found.size)
    elif isinstance(X, Dataset):
        k = 1
    else:
        if y is None:
            raise InputError("fit needs y (the targets) to infer the output width of a network given hidden=[...]")
        shape = _shape(checks.column(y, "y"), "y")
        if len(shape) not in (1, 2) or (len(shape) == 2 and not shape[1]):
            raise InputError(f"y has shape {tuple(shape)}; expected (n,) or (n, n_outputs)")
        k = 1 if len(shape) == 1 else int(shape[1])
    return [d, *hidden, k]


def encoding(known: Any, X: Any, first: bool) -> Any:
    """The :class:`~gpunn.feed.encode.Encoding` a model takes ``X`` by: the one it knows; else, on its first fit
    on a table with text or empty cells, the one learned from that table's rows (None for none)."""
    if known is not None or not first or not encode.needs_encoding(X):
        return known
    return encode.learn(X)


def _shape(a: Any, name: str) -> tuple[int, ...]:
    shape = getattr(a, "shape", None)
    if shape is not None:
        return tuple(shape)
    try:
        return np.shape(a)
    except ValueError as exc:
        raise InputError(f"{name} is ragged: its rows have different lengths ({exc})") from None


def targets(
    spec: Spec, X: Any, y: Any, *, classes: np.ndarray | None, target_scaling: Any, first: bool
) -> tuple[Spec, np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]:
    """``(spec, classes, target_scaling)``: what a fit learns of its targets (the classes of a single-label
    classifier, and on a first fit a standardizing regression's target mean and deviation), kept where already
    known, and ``spec`` holding them. ``first`` is False for a model that has trained before: one trained before
    gpunn standardized targets (an older file) keeps its raw units."""
    if classes is None and checks.single_label(spec):
        if isinstance(X, Dataset):  # a stream takes its labels as they are (0/1, 0..k-1)
            classes = np.arange(2 if spec.output == "sigmoid" else spec.n_outputs)
        else:
            found = checks.learn_classes(spec, y)
            if found is not None:
                classes = classes_of(found, spec, y)
    if target_scaling is None and spec.standardize and spec.output == "identity" and first:
        if isinstance(X, Dataset):
            target_scaling = moments((np.reshape(b, (-1, 1)) for b in X.target_blocks()), 1)
        else:
            target_scaling = checks.learn_target_scaling(spec, y)
    spec = dataclasses.replace(spec, classes=spec_classes(classes), target_scaling=spec_target_scaling(target_scaling))
    return spec, classes, target_scaling


def classes_of(found: np.ndarray, spec: Spec, y: Any) -> np.ndarray:
    """A classifier's classes from the distinct labels of its first fit: the indices 0..k-1 when the labels are
    those (or some of them) already, else the labels themselves, one per class the output layer has."""
    k = 2 if spec.output == "sigmoid" else spec.n_outputs
    if checks.plain_classes(found, spec):
        return np.arange(k)
    if found.size < 2:
        raise InputError(f"y holds a single class ({found[0].item()!r}); a classifier needs at least two")
    if found.size != k:
        shown = found.tolist() if found.size <= 10 else found[:10].tolist() + ["..."]
        units = f"{spec.n_outputs} output unit(s)"
        where = ""
        if found.dtype.kind in "biuf":  # numbers: name the first that is no index either
            a = checks.column(y, "y")
            a = _backend.to_numpy(a) if not _backend.is_host_data(a) else np.asarray(a)
            a, top = a.reshape(-1), k - 1
            i = int(np.flatnonzero((a < 0) | (a > top) | (a != np.round(a)))[0])
            where = f"label {a[i].item()} at row {i}, outside 0..{top}, and "
        raise InputError(
            f"y holds {where}{found.size} classes {shown}, but the model's {spec.output} output with {units} "
            f"takes {k}" + ("; use output='softmax'" if spec.output == "sigmoid" else "")
        )
    return found


def spec_classes(classes: np.ndarray | None) -> tuple[Any, ...] | None:
    """The classes as a Spec holds them: None when the labels are the indices themselves."""
    return None if checks.are_indices(classes) else tuple(np.asarray(classes).tolist())


def spec_target_scaling(scaling: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    return None if scaling is None else (tuple(scaling[0].tolist()), tuple(scaling[1].tolist()))


def check_dataset(spec: Spec, dataset: Dataset, name: str) -> Dataset:
    """A streamed dataset a model of ``spec`` can train or be evaluated on: it has targets, the model's width and,
    where both have names, the model's features."""
    if not dataset.has_target:
        raise InputError(f"{name} ({dataset.path}) has no target column: open it with Dataset(path, target=...)")
    if spec.encoding is not None:
        raise InputError(f"{name} ({dataset.path}) is streamed as numbers, but this model encodes a table's text and "
                         "empty cells: give it the table in memory (gpunn.data.read_table)")  # fmt: skip
    if dataset.n_features != spec.n_features:
        raise InputError(f"{name} ({dataset.path}) has {dataset.n_features} features; the model takes "
                         f"{spec.n_features}")  # fmt: skip
    names, known = dataset.feature_names, spec.feature_names
    if names is not None and known is not None and tuple(names) != tuple(known):
        raise InputError(
            f"{name} ({dataset.path}) has the features {names}, the model {list(known)}: open it with "
            "Dataset(path, target, features=model.feature_names)"
        )
    return dataset
