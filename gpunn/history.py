"""Per-epoch training records and their reporting (a progress bar on a terminal, plain lines otherwise)."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class History:
    """Loss and accuracy per epoch, as Python floats.

    ``accuracy`` and ``val_accuracy`` stay empty for regression (identity output); the ``val_*`` lists stay
    empty without validation data. ``lr`` is the learning rate each epoch used. ``weighted_loss`` is the loss
    weighted by the sample (and class) weights, sum(w l) / sum(w), recorded only when ``fit`` had them;
    ``loss`` is the plain mean over the rows.
    """

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    weighted_loss: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        # How many programs the fit that returned this History compiled (XLA's on JAX, graphs under torch.compile)
        # and the seconds spent making them (JAX's), so that a recompilation shows; 0 for a History no fit returned.
        self.compiles = 0
        self.compile_seconds = 0.0

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling: a History pickled before a field existed (``lr``) gets it empty."""
        self.__dict__.update({key: [] for key in self.__dataclass_fields__} | {"compiles": 0, "compile_seconds": 0.0}
                             | state)  # fmt: skip

    @property
    def epochs(self) -> int:
        """Number of epochs recorded."""
        return len(self.loss)

    def __repr__(self) -> str:
        """The epoch count and the last epoch's values: the dataclass's own repr printed every list in full (a
        1000-epoch fit with validation, some 100,000 characters for ``print(history)``)."""
        recorded = [(key, values) for key in self.__dataclass_fields__ if (values := getattr(self, key))]
        last = ", ".join(f"{key}={values[-1]:.6g}" for key, values in recorded)
        return f"History(epochs={self.epochs}{'; last: ' + last if last else ''})"

    def append(self, record: dict[str, float]) -> None:
        """Add one epoch; ``record`` maps field names to that epoch's values."""
        for key, value in record.items():
            getattr(self, key).append(value)

    def truncate(self, epochs: int) -> None:
        """Keep only the first ``epochs`` epochs."""
        for key in self.__dataclass_fields__:
            del getattr(self, key)[epochs:]

    def since(self, epoch: int) -> History:
        """The epochs from index ``epoch`` on, as a new History."""
        return History(**{key: getattr(self, key)[epoch:] for key in self.__dataclass_fields__})

    def to_dict(self) -> dict[str, list[float]]:
        """A JSON-ready dict of the lists."""
        return {key: list(getattr(self, key)) for key in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict`."""
        return cls(**{key: [float(v) for v in data.get(key, [])] for key in cls.__dataclass_fields__})

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the history as JSON."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")


def format_epoch(epoch: int, total: int, record: dict[str, float]) -> str:
    """One plain line: ``epoch 10/100  loss 0.3412  accuracy 0.8750 ...``."""
    width = len(str(total))
    parts = [f"epoch {epoch:>{width}}/{total}"]
    parts += [_format(key, value) for key, value in record.items()]
    return "  ".join(parts)


def _format(key: str, value: float) -> str:
    if not math.isfinite(value):
        return f"{key} {value}"
    return f"{key} {value:.3g}" if key == "lr" else f"{key} {value:.4f}"


class Reporter:
    """Prints training progress: verbose 0 silent, 1 a bar on a terminal or every ~10% of epochs, 2 every epoch."""

    def __init__(self, verbose: int, first: int, total: int, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.verbose, self.total = verbose, total
        self.every = 1 if verbose >= 2 else max(1, (total - first) // 10)
        self.bar = None
        if verbose == 1 and self.stream.isatty() and total > first:
            from tqdm.auto import tqdm

            # A terminal that reports a zero size would get an invisible bar: fall back to 100 x 24.
            size = shutil.get_terminal_size((100, 24))
            self.bar = tqdm(
                total=total, initial=first, unit="epoch", file=self.stream, ncols=size.columns, nrows=size.lines
            )

    def due(self, epoch: int) -> bool:
        """True when finishing epoch ``epoch`` (1-based) shows a line (or moves a bar by a line's worth): the
        training loop reads metrics back from the device then, and only then when nothing else needs them."""
        return epoch % self.every == 0 or epoch >= self.total

    def epoch(self, epoch: int, record: dict[str, float]) -> None:
        """Report a finished epoch (1-based)."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: _format(k, v).partition(" ")[2] for k, v in record.items()}, refresh=False)
        elif self.verbose and (epoch % self.every == 0 or epoch == self.total):
            print(format_epoch(epoch, self.total, record), file=self.stream, flush=True)

    def close(self) -> None:
        """Finish the bar, if any."""
        if self.bar is not None:
            self.bar.close()
