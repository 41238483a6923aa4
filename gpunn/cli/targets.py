"""What ``gpunn train --data`` makes of the target column: the output layer, the classes and why.

A target is read as class labels only when that is plausible, in the spirit of scikit-learn's
``type_of_target`` but stricter about numbers: text labels are classes; whole numbers are classes when there are
few of them (at most ``FEW_CLASSES``, or one distinct value per ``ROWS_PER_CLASS`` rows); anything else is a
regression, and the opening line says why. More than ``CLASS_CAP`` plausible classes is refused: ``--output``
decides."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .. import losses
from ..errors import InputError

CLASS_CAP = 100  # more classes than this are too many to guess: --output softmax (or identity) says which
FEW_CLASSES = 10  # up to this many distinct whole numbers are classes, however few the rows
ROWS_PER_CLASS = 20  # beyond FEW_CLASSES, whole numbers are classes when each one has this many rows on average


@dataclasses.dataclass
class Target:
    """The output layer, the targets as the model takes them (a regression's values, a classifier's labels), the
    classes (the sorted labels) and why."""

    output: str
    y: np.ndarray
    classes: list[Any] | None  # the label of each class index, in sorted order
    why: str  # how "auto" chose (empty when the output was given)
    held: np.ndarray | None = None  # the classes as the model holds them (model.classes): predict gives these

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.output == "softmax" and self.classes is not None else 1


def _shown(values: list[Any], k: int, most: int = 10) -> str:
    listed = ", ".join(repr(v) for v in values[:most])
    return listed + (f", ... ({k} values)" if k > most else "")


def plausible_classes(k: int, rows: int) -> bool:
    """Whether ``k`` distinct whole numbers in ``rows`` rows look like class labels (not measured values)."""
    return k <= FEW_CLASSES or k * ROWS_PER_CLASS <= rows


def choose(values: list[Any], k: int, whole: bool, text: bool, rows: int, output: str, source: str) -> tuple[str, str]:
    """(output layer, why) for a target of ``k`` distinct values over ``rows`` rows, ``values`` the first of them
    in sorted order (for messages), or an error."""
    if text and output in losses.REGRESSION:
        raise InputError(f"{source}: output {output!r} needs numbers in the target, which holds text such as "
                         f"{values[0]!r}")  # fmt: skip
    if output not in losses.REGRESSION and k < 2:
        raise InputError(
            f"{source}: the target holds a single value ({values[0]!r}) in all {rows} rows; a classifier needs two "
            f"classes at least" + ("" if text else ", and a regression a target that varies")
        )
    if output in ("sigmoid", "softmax") and not whole:
        raise InputError(f"{source}: output {output!r} needs class labels in the target, which holds fractions")
    if output == "sigmoid" and k > 2:
        raise InputError(f"{source}: output 'sigmoid' needs two classes; the target has {k}: {_shown(values, k)}")
    if output != "auto":
        return output, ""
    kind = "labels" if text else "whole numbers"
    if not whole:
        return "identity", "the target holds fractions"
    if not text and not plausible_classes(k, rows):
        return "identity", (f"{k} distinct {kind} in {rows} rows are too many to be classes "
                            "(--output softmax to train them as classes)")  # fmt: skip
    if k > CLASS_CAP:
        raise InputError(
            f"{source}: the target holds {k} distinct {kind}, more than the {CLASS_CAP} classes gpunn takes for "
            f"granted: give --output softmax to train {k} classes, or --output identity for a regression"
        )
    if k == 2:
        return "sigmoid", f"two classes: {_shown(values, k)}"
    return "softmax", f"{k} classes" + (f": {_shown(values, k)}" if k <= FEW_CLASSES else "")


def target_of(y: np.ndarray, output: str, source: str) -> Target:
    """The :class:`Target` of a column read in memory (float64 numbers, or text labels as an object array).

    Classes, numbers or text, are the model's classes (``held``): it trains label ``classes[i]`` as output i and
    predicts the labels they were: {0, 5, 1000} is three classes, not 1001."""
    text = y.dtype.kind in "OUS"
    if text:
        labels = y.astype(str)
        values = np.unique(labels).astype(object)  # Python str, so that messages show 'no', not np.str_('no')
        out, why = choose(values[:10].tolist(), len(values), True, True, len(y), output, source)
        return Target(out, labels, values.tolist(), why, values.astype(str))
    values = np.unique(y)
    whole = bool(np.all(values == np.round(values)))
    shown = [int(v) for v in values[:10]] if whole else values[:10].tolist()
    out, why = choose(shown, len(values), whole, False, len(y), output, source)
    if out in losses.REGRESSION:
        return Target(out, y, None, why)
    held = values.astype(np.int64) if np.all(np.abs(values) < 2.0**63) else values  # beyond int64: as read
    return Target(out, y, [int(v) for v in values], why, held)


def streamed_target(ds: Any, output: str, source: str) -> Target:
    """The :class:`Target` of a streamed file, from one pass over its target column (its distinct values, up to
    ``CLASS_CAP`` + 1). A stream cannot renumber its labels: classes must be 0/1 (sigmoid) or 0..k-1 (softmax)."""
    values: set[float] = set()
    whole = True
    for y in ds.target_blocks():
        if y.dtype.kind not in "biuf":
            raise InputError(f"{source}: --stream needs a numeric target column; {ds.target_name!r} is {y.dtype}")
        whole = whole and bool(np.all(y == np.round(y)))
        if len(values) <= CLASS_CAP:
            values |= set(np.unique(y).tolist())
    labels = sorted(values)
    shown = [int(v) for v in labels] if whole else labels
    out, why = choose(shown, len(labels), whole, False, ds.n_rows, output, source)
    if out in losses.REGRESSION:
        return Target(out, np.empty(0), None, why)
    wanted = [0, 1] if out == "sigmoid" else list(range(int(max(labels)) + 1))
    if not set(labels) <= set(wanted):
        raise InputError(
            f"{source}: with --stream, class labels are used as they are: 0/1 for sigmoid, 0..k-1 for softmax; "
            f"the target holds {_shown(shown, len(labels))}"
        )
    k = max(len(wanted), 2)
    return Target(out, np.empty(0), list(range(k)), why, np.arange(k))


def regression_scores(y: np.ndarray, predicted: np.ndarray, output: str = "identity") -> dict[str, float]:
    """R², MSE and MAE of ``predicted`` against ``y``, as scikit-learn's r2_score, mean_squared_error and
    mean_absolute_error compute them (for a constant ``y``, R² is 1 when predicted exactly, else 0, as there);
    for a Poisson model (output "exp") also the mean Poisson deviance, the loss it trains."""
    y, predicted = np.asarray(y, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    residual = float(np.sum((y - predicted) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else 0.0)
    out = {"r2": r2, "mse": residual / len(y), "mae": float(np.mean(np.abs(y - predicted)))}
    if output == "exp":
        with np.errstate(divide="ignore"):
            ratio = np.log(np.where(y > 0, y, 1.0) / predicted)
        out["deviance"] = float(np.mean(2.0 * (y * ratio - y + predicted)))
    return out
