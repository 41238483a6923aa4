"""Built-in datasets (two moons, circles, spirals) and the seeded train/test split."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _validation as check
from ..errors import InputError

DATASETS = ("moons", "circles", "spirals")


def make_moons(n_samples: int = 1000, *, noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles in 2-D with Gaussian noise: labels 0 and 1, half each."""
    rng = _generator(n_samples, noise, seed)
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
    """A small circle (label 1) inside a large one (label 0) in 2-D, with Gaussian noise; ``factor`` in [0, 1) is
    the small circle's radius."""
    rng = _generator(n_samples, noise, seed)
    factor = check.unit_interval(factor, "factor")
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
    rng = _generator(n_samples, noise, seed)
    n_classes = check.integer(n_classes, "n_classes", 2)
    labels = np.arange(n_samples) % n_classes
    r = np.tile(np.linspace(0.05, 1.0, -(-n_samples // n_classes)), n_classes)[:n_samples]
    r = np.sort(r)
    theta = labels * (2 * np.pi / n_classes) + r * 4.0 + rng.normal(0.0, noise, n_samples)
    X = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    order = rng.permutation(n_samples)
    return X[order], labels[order].astype(np.int64)


def _generator(n_samples: Any, noise: Any, seed: Any) -> np.random.Generator:
    """The toy datasets' checks (NumPy's own refusals, or a NaN noise that made every point NaN, came from
    inside them) and their seeded generator."""
    check.integer(n_samples, "n_samples", 1)
    check.non_negative_float(noise, "noise")
    return np.random.default_rng(check.integer(seed, "seed", 0))


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
