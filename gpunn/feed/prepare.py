"""A fit's input checked, learned from and placed, as one pure function of a frozen :class:`Spec`.

:func:`prepare` is what :class:`gpunn.MLP` and :class:`gpunn.Ensemble` both call before they change anything:
every input is checked first (a refusal changes nothing), then what a first fit learns (classes, target and
feature scaling, feature names) is learned, and the data is scaled and placed on the model's device. It
returns all of it as a :class:`Prepared` value and writes into nothing it was given (but X itself, scaled in
place, when asked with ``copy=False``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import losses
from ..data import Dataset
from ..errors import ConfigError, InputError
from . import learn
from .checks import check_x, fit_scaling, frame_columns, place_x, sample_weights, targets
from .spec import Spec


@dataclass(frozen=True)
class Learned:
    """What a model knows of its data after a fit: its classes, target scaling, feature names, feature scaling and
    the encoding of a table's columns (each None where it has none)."""

    classes: np.ndarray | None = None
    target_scaling: tuple[np.ndarray, np.ndarray] | None = None
    feature_names: list[str] | None = None
    scaling: tuple[np.ndarray, np.ndarray] | None = None
    encoding: Any = None


@dataclass(frozen=True)
class Prepared:
    """A fit's data, checked and placed: ``x`` (on the device, scaled) or a streamed :class:`Dataset`, its targets
    and host sample weights (None for a Dataset), the validation data as a placed ``(x, target)`` pair or a
    Dataset (or None), a Dataset's weight total, the ``spec`` with what was learned, and ``learned``."""

    spec: Spec
    learned: Learned
    x: Any
    target: Any = None
    weight_host: np.ndarray | None = None
    val: Any = None
    weight_total: float | None = None


Weights = Callable[[Spec, Any, int], "np.ndarray | None"]


def prepare(
    spec: Spec, known: Learned, X: Any, y: Any, validation_data: Any, *, first: bool, copy: bool = True,
    sample_weight: Any = None, class_weight: Any = None, weights: Weights | None = None,
) -> Prepared:  # fmt: skip
    """Check, learn from and place a fit's data for a model of ``spec`` that knows ``known``.

    ``first`` is True when the model has not trained yet (a regression's target scaling is learned then only, and
    a classifier's y must hold two classes then: a later fit takes a batch of one class, as online learning does);
    ``weights(spec, y, n)`` gives the host sample weights (default: ``sample_weight`` and ``class_weight`` as
    :func:`gpunn.feed.sample_weights` combines them)."""
    weight_total = w_host = t = x = None
    if isinstance(X, Dataset):
        learn.check_dataset(spec, X, "X")
        spec, classes, target_scaling = _targets(spec, known, X, y, first)
        if y is not None:
            raise InputError("a Dataset brings its own targets (its target column): call fit(dataset, y=None)")
        if sample_weight is not None or class_weight is not None:
            raise ConfigError(
                "sample_weight and class_weight are not arguments of fit on a Dataset: its rows' weights are "
                "a column of the file, named by Dataset(path, target, weight=COLUMN)"
            )
        weight_total = X.weight_total() if X.has_weight else None  # one pass, which checks every weight
        if weight_total is not None and not weight_total > 0:
            raise InputError(f"{X.path}: the weights ({X.weight_name!r}) sum to 0 over the rows trained on: "
                             "there is nothing to train on")  # fmt: skip
    else:
        x = check_x(spec, X, "X")
        spec, classes, target_scaling = _targets(spec, known, X, y, first)
        t = targets(spec, y, x.shape[0], "y", fitting=first)
        # the training rows only (a Dataset's training batches are smoothed by Streamed)
        t = losses.smooth_targets(spec.output, spec.loss, t, spec.label_smoothing)
        if weights is None:
            w_host = sample_weights(spec, sample_weight, class_weight, y, x.shape[0])
        else:
            w_host = weights(spec, y, x.shape[0])
    xv = tv = None
    if isinstance(validation_data, Dataset):
        xv = learn.check_dataset(spec, validation_data, "validation_data")
    elif validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise InputError("validation_data must be a pair (X_val, y_val) or a gpunn.data.Dataset")
        xv = check_x(spec, validation_data[0], "validation X")
        tv = targets(spec, validation_data[1], xv.shape[0], "validation y")
    # Everything is valid: what the fit learns of its features, then the data placed.
    names = known.feature_names
    if names is None:  # a data frame's or Parquet file's columns name the features
        names = X.feature_names if isinstance(X, Dataset) else frame_columns(X)
        if spec.encoding is not None:
            names = list(spec.encoding.names)
        spec = dataclasses.replace(spec, feature_names=None if names is None else tuple(names))
    scaling = known.scaling
    if spec.standardize and scaling is None:
        scaling = X.scaling() if isinstance(X, Dataset) else fit_scaling(x)
        if spec.encoding is not None:  # one-hot and empty-cell columns stay 0/1: an unseen category stays zeros
            binary = spec.encoding.binary()
            scaling = (np.where(binary, 0.0, scaling[0]), np.where(binary, 1.0, scaling[1]))
    learned = Learned(classes, target_scaling, names, scaling, spec.encoding)
    val: Any = xv
    if xv is not None and not isinstance(xv, Dataset):
        val = (place_x(spec, xv, scaling), tv)  # before X may be scaled in place
    if isinstance(X, Dataset):
        return Prepared(spec, learned, X, val=val, weight_total=weight_total)
    return Prepared(spec, learned, place_x(spec, x, scaling, in_place=not copy), t, w_host, val)


def _targets(spec: Spec, known: Learned, X: Any, y: Any, first: bool) -> tuple[Spec, Any, Any]:
    return learn.targets(spec, X, y, classes=known.classes, target_scaling=known.target_scaling, first=first)
