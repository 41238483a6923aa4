"""Callbacks for :meth:`gpunn.MLP.fit`: called as ``callback(model, record)`` after every committed epoch; one
that returns False stops training after that epoch."""

from __future__ import annotations

from typing import Any

from . import _validation as check
from .errors import ConfigError

MONITORS = ("val_loss", "loss", "val_accuracy", "accuracy")


class EarlyStopping:
    """Stop when the monitored metric has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : {"val_loss", "loss", "val_accuracy", "accuracy"}
        Losses improve by going down, accuracies by going up.
    patience : int
        Epochs without improvement after which training stops.
    min_delta : float
        An epoch improves only if it beats the best value so far by more than this.
    restore_best : bool
        When training stops, return the model to its best epoch's weights and optimizer state, so that
        evaluating it gives that epoch's metrics. (An epoch is the weights *after* it; the history keeps every
        epoch that ran.)

    ``best_epoch`` (1-based, as in the progress lines), ``best`` and ``stopped_epoch`` (None until it stops) tell
    what happened.
    """

    def __init__(
        self, monitor: str = "val_loss", patience: int = 10, min_delta: float = 0.0, restore_best: bool = True
    ):
        if monitor not in MONITORS:
            raise ConfigError(f"monitor {monitor!r} is not known; use one of {', '.join(MONITORS)}")
        self.patience = check.integer(patience, "patience", 0)
        self.min_delta = check.non_negative_float(min_delta, "min_delta")
        self.monitor = monitor
        self.requires = (monitor,)  # fit checks that it records this before training starts
        self.restore_best = bool(restore_best)
        self.sign = 1.0 if monitor.endswith("loss") else -1.0  # minimize sign * value
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self._best_state: tuple[Any, Any] | None = None
        self._waited = 0

    def __call__(self, model: Any, record: dict[str, float]) -> bool:
        value = record[self.monitor]
        if self.best is None or self.sign * value < self.sign * self.best - self.min_delta:
            self.best, self.best_epoch, self._waited = value, model.epoch, 0
            # References, not copies: the step never writes into parameters or optimizer state it was given.
            self._best_state = (model.params, model.optimizer_state)
            return True
        self._waited += 1
        if self._waited < self.patience:
            return True
        self.stopped_epoch = model.epoch
        if self.restore_best and self._best_state is not None:
            model._params, model.optimizer_state = self._best_state
            model._previous = None
        return False
