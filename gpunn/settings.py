"""The arguments of a model and of its ``fit``, checked once, for one network and for every member of many.

:class:`gpunn.MLP` and :class:`gpunn.Ensemble` both call these, so each refusal reads the same; an ensemble
takes one value for every member or a list of K values, each checked as a lone network's (``lr[2]`` names
the member).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _validation as check
from . import losses, optim, schedules
from .errors import ConfigError

# The divergence check's default factor (see gpunn.train.DivergenceGuard).
DIVERGE_FACTOR = 1e4
# The most members one Ensemble holds: far more than one device trains at a useful speed, and few enough that
# a typo (members=10**9) is refused before anything is allocated.
MAX_MEMBERS = 65536


@dataclass(frozen=True)
class FitSettings:
    """A fit's checked settings; the per-member ones as tuples of K values (one for a lone network)."""

    epochs: int
    schedules: tuple[schedules.Schedule, ...]
    batch_size: int | None
    optimizers: tuple[optim.Optimizer, ...]
    l2: tuple[float, ...]
    clip_norm: float | None
    verbose: int
    shuffle: bool
    diverge_factor: float | None


def fit_settings(
    members: int | None, *, epochs: Any, lr: Any, batch_size: Any, optimizer: Any, weight_decay: Any, l2: Any,
    clip_norm: Any, verbose: Any, shuffle: Any, diverge_factor: Any, comm: Any = None, convert: Any = False,
    copy: Any = True,
) -> FitSettings:  # fmt: skip
    """Every setting of a fit checked; ``members`` is K for an ensemble (lists of K values allowed) or None."""
    communicator(comm)
    check.boolean(convert, "convert")  # (a string such as "no" would be truthy)
    check.boolean(copy, "copy")
    epochs = check.integer(epochs, "epochs", 0)
    rates = per_member(lr, members, "lr", rate)
    batch_size = None if batch_size is None else check.integer(batch_size, "batch_size", 1)
    decays = per_member(weight_decay, members, "weight_decay", decay)
    opts = tuple(optim.get(optimizer, d) for d in decays)
    clip_norm = None if clip_norm is None else check.positive_float(clip_norm, "clip_norm")
    verbose = check.integer(verbose, "verbose", 0)
    if diverge_factor is not None:
        diverge_factor = check.positive_float(diverge_factor, "diverge_factor")
        if diverge_factor <= 1:
            raise ConfigError(f"diverge_factor must be above 1 (or None); got {diverge_factor!r}")
    l2s = per_member(l2, members, "l2", penalty)
    shuffle = check.boolean(shuffle, "shuffle")
    return FitSettings(epochs, tuple(rates), batch_size, opts, tuple(l2s), clip_norm, verbose, shuffle,
                       diverge_factor)  # fmt: skip


def communicator(comm: Any) -> None:
    """``comm`` is None or a :class:`gpunn.distributed.Communicator` (known by its methods: this floor sits below
    that module), else a ConfigError: comm=3 was an AttributeError from the first collective."""
    if comm is not None and not callable(getattr(comm, "check_agreement", None)):
        raise ConfigError(f"comm must be a gpunn.distributed.Communicator (or None); got {type(comm).__name__}")


def per_member(value: Any, k: int | None, name: str, convert: Callable[[Any, str], Any]) -> list[Any]:
    """One value for every member, or (an ensemble of K) a list of K values, each checked by ``convert`` under
    ``name[i]``; for a lone network (``k`` None) one value, as a list of one."""
    if k is not None and isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != k:
            raise ConfigError(f"{name} lists {len(value)} values; the ensemble has {k} members (give one, or {k})")
        return [convert(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return [convert(value, name)] * (1 if k is None else k)


def rate(value: Any, name: str) -> schedules.Schedule:
    """A learning rate or a schedule of rates."""
    if isinstance(value, schedules.Schedule):
        return value
    return schedules.constant(check.positive_float(value, name))


def penalty(value: Any, name: str) -> float:
    """An L2 penalty: 0, or a positive number (-0.0 is 0.0)."""
    return check.non_negative_float(value, name) or 0.0


def decay(value: Any, name: str) -> float | None:
    return None if value is None else check.non_negative_float(value, name)


def dropout_rate(value: Any, name: str = "dropout") -> float:
    """A dropout rate, in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{name} must be a number in [0, 1); got {value!r}")
    if not 0.0 <= float(value) < 1.0:  # also rejects NaN
        raise ConfigError(f"{name} must be in [0, 1) (the fraction of hidden units dropped); got {value!r}")
    return float(value)


def fraction(value: Any, name: str) -> float:
    """A number in [0, 1) (label smoothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{name} must be a number in [0, 1); got {value!r}")
    if not 0.0 <= float(value) < 1.0:  # also rejects NaN
        raise ConfigError(f"{name} must be in [0, 1); got {value!r}")
    return float(value)


def members(value: Any) -> int:
    """An ensemble's member count: an integer from 1 to MAX_MEMBERS (checked before anything is allocated)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"members must be an integer from 1 to {MAX_MEMBERS}; got {value!r}")
    if not 1 <= int(value) <= MAX_MEMBERS:
        raise ConfigError(f"members must be from 1 to {MAX_MEMBERS}; got {int(value)}")
    return int(value)


def recorded(output: str, validating: bool, weighted: bool) -> set[str]:
    """The metrics a fit records every epoch."""
    keys = {"loss", "lr"} | ({"accuracy"} if output not in losses.REGRESSION else set())
    if validating:
        keys |= {f"val_{key}" for key in keys - {"lr"}}
    if weighted:
        keys.add("weighted_loss")
    return keys


def check_callbacks(callbacks: Iterable[Any], output: str, validating: bool, weighted: bool) -> None:
    """Every callback finds the metrics it monitors (its ``requires``) among those the fit records."""
    keys = recorded(output, validating, weighted)
    for callback in callbacks:
        missing = set(getattr(callback, "requires", ())) - keys
        if missing:
            raise ConfigError(
                f"{type(callback).__name__} needs {', '.join(sorted(missing))}, which this fit does not record "
                f"(it records {', '.join(sorted(keys))}); pass validation_data= or monitor another metric"
            )


def callables(callbacks: Any) -> Sequence[Any]:
    """A lone network's callbacks: a sequence of callables (None for none)."""
    if callbacks is None:
        return ()
    if (
        isinstance(callbacks, (str, bytes))
        or not isinstance(callbacks, Sequence)
        or not all(callable(c) for c in callbacks)
    ):
        raise ConfigError("callbacks must be a sequence of callables callback(model, record)")
    return callbacks
