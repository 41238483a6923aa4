"""``gpunn.load``: a file written by ``MLP.save`` or ``Ensemble.save``, rebuilt as what it holds."""

from __future__ import annotations

import os
from typing import Any

from . import checkpoint, ensemble, model


def load(path: str | os.PathLike[str], *, device: Any = "auto", xp: Any = None) -> model.MLP | ensemble.Ensemble:
    """Rebuild the model (an :class:`~gpunn.MLP`, or an :class:`~gpunn.Ensemble`) saved at ``path`` on ``device``
    (and ``xp``), ready to predict or continue training; save + load + fit equals an uninterrupted fit."""
    ckpt = checkpoint.read(path, formats=(checkpoint.FORMAT, checkpoint.ENSEMBLE_FORMAT))  # the file read once
    if ckpt.format == checkpoint.ENSEMBLE_FORMAT:
        return ensemble.from_checkpoint(ckpt, path, device, xp)
    return model.from_checkpoint(ckpt, path, device, xp)
