"""Callbacks for :meth:`gpunn.MLP.fit`: called as ``callback(model, record)`` after every committed epoch; one
that returns False stops training after that epoch."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _backend
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
    what happened. :meth:`state_dict` and :meth:`load_state_dict` carry all of it, the best epoch's weights
    included, across a checkpoint, so that a resumed run stops and restores where an unbroken one does.
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
        self.restore_best = check.boolean(restore_best, "restore_best")
        self.sign = 1.0 if monitor.endswith("loss") else -1.0  # minimize sign * value
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self._best_state: tuple[Any, Any] | None = None  # (params, optimizer state), on the device or the host
        self._host: tuple[Any, tuple[np.ndarray, dict[str, Any] | None]] | None = None  # _best_state, read back
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
            params, opt_state = self._best_state
            if isinstance(params, np.ndarray):  # from load_state_dict: moved to the model's device once, here
                params = _backend.from_numpy(params, model.xp, model.device)
                if opt_state is not None:
                    opt_state = {
                        k: v if k == "step" else _backend.from_numpy(v, model.xp, model.device)
                        for k, v in opt_state.items()
                    }
            model.set_state(params, opt_state)
        return False

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as JSON-ready values except ``best_params`` (the best epoch's flat
        parameters) and the slots of ``best_optimizer`` (its optimizer state, with ``step``), which are NumPy
        arrays. The best weights are read back from the device only when they change."""
        best_params = best_optimizer = None
        if self._best_state is not None:
            if self._host is None or self._host[0] is not self._best_state:
                params, opt_state = self._best_state
                host_opt = None
                if opt_state is not None:
                    host_opt = {k: int(v) if k == "step" else _backend.to_numpy(v) for k, v in opt_state.items()}
                self._host = (self._best_state, (_backend.to_numpy(params), host_opt))
            best_params, best_optimizer = self._host[1]
        return {
            "monitor": self.monitor,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "restore_best": self.restore_best,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
            "waited": self._waited,
            "best_params": best_params,
            "best_optimizer": None if best_optimizer is None else dict(best_optimizer),
        }

    def store_state(self, model: Any, record: dict[str, float]) -> None:
        """A callback, placed after this one, that keeps :meth:`state_dict` in ``model.metadata["callbacks"]``,
        where :meth:`gpunn.MLP.save` writes it (the best weights as tensors); ``gpunn train`` passes it."""
        model.metadata["callbacks"] = {**model.metadata.get("callbacks", {}), "early_stopping": self.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s ``state``. The monitor must be the same; ``patience``,
        ``min_delta`` and ``restore_best`` stay as this instance was built (a resumed run may change them)."""
        if state.get("monitor") != self.monitor:
            raise ConfigError(
                f"the saved early-stopping state monitors {state.get('monitor')!r}, this one {self.monitor!r}"
            )
        best_params, best_optimizer = state.get("best_params"), state.get("best_optimizer")
        if (best_params is None) != (state.get("best") is None):
            raise ConfigError("the saved early-stopping state has a best value without weights, or weights without one")
        self.best = None if state["best"] is None else float(state["best"])
        self.best_epoch, self.stopped_epoch = state.get("best_epoch"), state.get("stopped_epoch")
        self._waited = check.integer(state.get("waited", 0), "waited", 0)
        self._host = None
        self._best_state = None
        if best_params is not None:
            opt = None if best_optimizer is None else {
                k: int(v) if k == "step" else np.asarray(v) for k, v in best_optimizer.items()
            }  # fmt: skip
            self._best_state = (np.asarray(best_params), opt)
