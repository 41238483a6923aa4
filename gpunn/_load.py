"""``gpunn.load``: a file written by ``MLP.save`` or ``Ensemble.save``, rebuilt as what it holds."""

from __future__ import annotations

import os
from typing import Any

from . import ensemble, model


def load(path: str | os.PathLike[str], *, device: Any = "auto", xp: Any = None) -> model.MLP | ensemble.Ensemble:
    """Rebuild the model (an :class:`~gpunn.MLP`, or an :class:`~gpunn.Ensemble`) saved at ``path`` on ``device``
    (and ``xp``), ready to predict or continue training; save + load + fit equals an uninterrupted fit."""
    if ensemble.is_ensemble_file(path):
        return ensemble.load(path, device=device, xp=xp)
    return model.load(path, device=device, xp=xp)
