"""Learning-rate schedules for :meth:`gpunn.MLP.fit` (``lr=``): a rate per epoch.

A schedule is an immutable description (name and numbers); what it learns while training (``plateau``'s best
loss and current rate) is a small state the model keeps, commits with each epoch and saves in checkpoints, so a
resumed run follows the same rates as an uninterrupted one. The epoch counts from the model's first ``fit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from . import _validation as check
from .errors import ConfigError

SCHEDULES = ("constant", "step", "cosine", "plateau")


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule; build one with :func:`constant`, :func:`step`, :func:`cosine` or :func:`plateau`."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params.items()))))

    def init(self) -> dict[str, Any]:
        """The state before the first epoch."""
        if self.name == "plateau":
            return {"lr": self.params["lr"], "best": None, "bad": 0}
        return {}

    def rate(self, epoch: int, state: dict[str, Any]) -> float:
        """The learning rate of epoch ``epoch`` (0-based)."""
        p = self.params
        if self.name == "constant":
            return p["lr"]
        if self.name == "step":
            return p["lr"] * p["gamma"] ** (epoch // p["every"])
        if self.name == "cosine":
            if epoch < p["warmup"]:
                return p["lr"] * (epoch + 1) / p["warmup"]
            t = min(1.0, (epoch - p["warmup"]) / max(1, p["epochs"] - p["warmup"]))
            return p["final"] + 0.5 * (p["lr"] - p["final"]) * (1.0 + math.cos(math.pi * t))
        return state["lr"]

    def update(self, state: dict[str, Any], record: dict[str, float]) -> dict[str, Any]:
        """The state after an epoch with metrics ``record`` (a new dict; ``state`` is not changed)."""
        if self.name != "plateau":
            return state
        value = record.get("val_loss", record["loss"])
        if state["best"] is None or value < state["best"]:
            return {**state, "best": value, "bad": 0}
        if state["bad"] + 1 > self.params["patience"]:
            return {**state, "lr": state["lr"] * self.params["factor"], "bad": 0}
        return {**state, "bad": state["bad"] + 1}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        """Inverse of :meth:`to_dict`."""
        if data.get("name") not in SCHEDULES or not isinstance(data.get("params"), dict):
            raise ValueError(f"not a learning-rate schedule: {data!r}")
        return cls(data["name"], dict(data["params"]))


def constant(lr: float) -> Schedule:
    """The same rate every epoch (what ``fit(lr=0.1)`` means)."""
    return Schedule("constant", {"lr": check.positive_float(lr, "lr")})


def step(lr: float, every: int, gamma: float = 0.1) -> Schedule:
    """``lr * gamma ** (epoch // every)``: the rate multiplied by ``gamma`` every ``every`` epochs."""
    gamma = check.positive_float(gamma, "gamma")
    return Schedule(
        "step", {"lr": check.positive_float(lr, "lr"), "every": check.integer(every, "every", 1), "gamma": gamma}
    )


def cosine(lr: float, epochs: int, warmup: int = 0, final: float = 0.0) -> Schedule:
    """A linear warm-up over ``warmup`` epochs, then a half cosine from ``lr`` down to ``final`` at ``epochs``
    (and ``final`` after it)."""
    epochs, warmup = check.integer(epochs, "epochs", 1), check.integer(warmup, "warmup", 0)
    if warmup >= epochs:  # the rate would jump from the warm-up's end straight to `final`
        raise ConfigError(f"warmup ({warmup}) must be below epochs ({epochs}): the cosine decays over the epochs after "
                          "the warm-up")  # fmt: skip
    final_rate = check.non_negative_float(final, "final")
    return Schedule(
        "cosine", {"lr": check.positive_float(lr, "lr"), "epochs": epochs, "warmup": warmup, "final": final_rate}
    )


def plateau(lr: float, factor: float = 0.1, patience: int = 10) -> Schedule:
    """Multiply the rate by ``factor`` after ``patience`` epochs in a row without a new best ``val_loss`` (or
    ``loss`` when there is no validation data)."""
    factor = check.positive_float(factor, "factor")
    if factor >= 1:
        raise ConfigError(f"factor must be below 1; got {factor!r}")
    patience = check.integer(patience, "patience", 0)
    return Schedule("plateau", {"lr": check.positive_float(lr, "lr"), "factor": factor, "patience": patience})


def get(lr: Any) -> Schedule:
    """A :class:`Schedule` from a number (constant) or a Schedule itself."""
    return lr if isinstance(lr, Schedule) else constant(lr)
