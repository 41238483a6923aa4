"""An ensemble in one safetensors file: the mapping between an ensemble's members and the state map of
:mod:`gpunn.checkpoint`'s ensemble format, which reads and writes the file (the same bounded reading and
validation as a lone MLP's file).

The header's metadata says ``format: gpunn.ensemble`` (a lone MLP's file says ``gpunn.mlp``), so a loader tells
the two apart from the header alone (:func:`is_ensemble_file`). Tensors are ``members.{k}.params`` (P,) and
``members.{k}.optimizer.{slot}`` (P,), each laid out as :attr:`gpunn.MLP.params`; the JSON holds the settings the
members share and, per member, what :mod:`gpunn.checkpoint` keeps of a lone MLP (seed, dropout, optimizer,
schedule and its state, generator, epoch, history, and the state of its callbacks, such as the early
stopping of ``gpunn train --members``, whose best weights are tensors ``members.{k}.callbacks.early_stopping.*``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _backend, checkpoint, optim

if TYPE_CHECKING:
    from . import Ensemble


def save(ens: Ensemble, path: str | os.PathLike[str]) -> None:
    """Write ``ens`` to ``path`` from host memory, atomically."""
    m0 = ens.members[0]
    tensors: dict[str, np.ndarray] = {}
    members = []
    for k, m in enumerate(ens.members):
        callbacks = None
        if m.metadata.get("callbacks"):  # its best weights as tensors, named in the JSON as a lone MLP's file does
            split, held = checkpoint.split_callback_state({"callbacks": m.metadata["callbacks"]})
            callbacks = split["callbacks"]
            tensors.update({f"members.{k}.{name}": array for name, array in held.items()})
        tensors[f"members.{k}.params"] = np.ascontiguousarray(_backend.to_numpy(m.params))
        opt = None
        if m.optimizer is not None and m.optimizer_state is not None:
            opt = {"name": m.optimizer.name, "hyper": m.optimizer.hyper, "step": int(m.optimizer_state["step"])}
            for slot in optim.slots(m.optimizer.name, m.optimizer.hyper):
                tensors[f"members.{k}.optimizer.{slot}"] = np.ascontiguousarray(
                    _backend.to_numpy(m.optimizer_state[slot])
                )
        members.append({
            "seed": m.seed, "dropout": m.dropout, "optimizer": opt,
            "schedule": None if m.schedule is None else m.schedule.to_dict(), "schedule_state": m.schedule_state,
            "rng": m.rng.bit_generator.state, "epoch": m.epoch, "fitted": m.fitted, "history": m.history.to_dict(),
            "scaling": None if m.scaling is None else [s.tolist() for s in m.scaling], "callbacks": callbacks,
            "classes": None if m.classes is None else np.asarray(m.classes).tolist(),
            "target_scaling": None if m.target_scaling is None else [s.tolist() for s in m.target_scaling],
            "diverged": ens.diverged[k],
        })  # fmt: skip
    config = {**{key: getattr(m0, key) for key in checkpoint.ENSEMBLE_SHARED}, "members": members}
    if m0.encoding is not None:  # one for every member, as they were trained together
        config["encoding"] = m0.encoding.to_dict()
    config["metadata"] = {key: v for key, v in config["metadata"].items() if key != "callbacks"}  # per member
    checkpoint.write(path, config, tensors, format=checkpoint.ENSEMBLE_FORMAT)


def is_ensemble_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a safetensors file that :meth:`Ensemble.save` wrote (read from its header alone; a
    FIFO or a device is not read)."""
    return checkpoint.file_format(path) == checkpoint.ENSEMBLE_FORMAT


def load(path: str | os.PathLike[str], *, device: Any = "auto", xp: Any = None, compile: Any = "auto") -> Ensemble:
    """Rebuild the ensemble saved at ``path`` on ``device`` (and ``xp``), ready to predict or continue training:
    save + load + fit equals an uninterrupted fit."""
    return from_checkpoint(checkpoint.read(path, formats=(checkpoint.ENSEMBLE_FORMAT,)), path, device, xp, compile)


def from_checkpoint(
    ckpt: checkpoint.Checkpoint, path: str | os.PathLike[str], device: Any, xp: Any, compile: Any = "auto"
) -> Ensemble:
    """The ensemble that an ensemble file read from ``path`` holds, on ``device`` (and ``xp``)."""
    from ..model import MLP
    from . import Ensemble

    models = []
    with checkpoint.rebuilding(path, "ensemble"):
        for k, description in enumerate(ckpt.members):  # each validated as a lone model's checkpoint is
            optimizer = description["optimizer"]
            names = () if optimizer is None else optim.slots(optimizer["name"], optimizer["hyper"])
            slots = {slot: ckpt.tensors[f"members.{k}.optimizer.{slot}"] for slot in names}
            params = ckpt.tensors[f"members.{k}.params"]
            models.append(MLP.restore(description, params, slots, device, xp, compile))
    ens = Ensemble.from_members(models)
    ens.diverged = [description.get("diverged") for description in ckpt.members]
    return ens
