"""Named sets of default settings: ``MLP(preset="tabular")`` and ``gpunn train --preset``.

``tutorial`` is the course's network and plain gradient descent (what ``MLP()`` and ``gpunn train`` on a built-in
dataset do); ``tabular`` is the recipe ``gpunn train --data FILE`` uses for a file of rows and columns. Each
setting of a preset is only a default: an argument or a flag given explicitly wins. The numbers of ``tabular``
were measured on the datasets of ``python -m benchmarks.tabular`` (docs/performance.md says what was tried).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import schedules
from .errors import ConfigError

PRESETS = ("tabular", "tutorial")
MODEL_SETTINGS = ("hidden", "activation", "standardize", "label_smoothing", "dropout")  # MLP(...) arguments


@dataclass(frozen=True)
class Preset:
    """The defaults of one preset."""

    name: str
    hidden: tuple[int, ...]
    epochs: int
    lr: float
    optimizer: str
    weight_decay: float | None
    schedule: str  # a name of gpunn.schedules.SCHEDULES
    validation_split: float | None  # rows of the training data held out to pick the best epoch (None: none)
    patience: int | None  # early stopping on val_loss, restoring the best epoch (None: none)
    label_smoothing: float  # for classifiers
    dropout: float
    standardize: bool
    max_batch: int | None  # None: full batch; else minibatches sized to the data, at most this many rows

    def batch_size(self, rows: int) -> int | None:
        """The minibatch size for ``rows`` training rows: about a tenth of them (so that a small file still
        takes ten steps an epoch), a power of two from 16 up to ``max_batch``."""
        if self.max_batch is None:
            return None
        size = 16
        while size * 2 <= min(rows / 10, self.max_batch):
            size *= 2
        return min(size, rows)

    def schedule_of(self, lr: float, epochs: int) -> schedules.Schedule:
        """The learning-rate schedule named by ``schedule``, from ``lr`` over ``epochs``."""
        if self.schedule == "cosine":
            return schedules.cosine(lr, max(1, epochs))
        return schedules.constant(lr)


TUTORIAL = Preset(
    "tutorial", hidden=(10, 10, 10), epochs=100, lr=0.1, optimizer="sgd", weight_decay=None, schedule="constant",
    validation_split=None, patience=None, label_smoothing=0.0, dropout=0.0, standardize=False, max_batch=None,
)  # fmt: skip
TABULAR = Preset(
    "tabular", hidden=(128, 128), epochs=200, lr=1e-3, optimizer="adamw", weight_decay=0.01, schedule="cosine",
    validation_split=0.1, patience=40, label_smoothing=0.1, dropout=0.1, standardize=True, max_batch=256,
)  # fmt: skip


def get(name: str | None) -> Preset | None:
    """The preset named ``name`` (None: none)."""
    if name is None:
        return None
    if name == "tabular":
        return TABULAR
    if name == "tutorial":
        return TUTORIAL
    raise ConfigError(f"preset {name!r} is not known; use one of {', '.join(PRESETS)}")
