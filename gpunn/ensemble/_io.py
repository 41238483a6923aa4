"""An ensemble in one safetensors file: every member's parameters and optimizer slots as tensors, the rest as JSON.

The header's metadata says ``format: gpunn.ensemble`` (a lone MLP's file says ``gpunn.mlp``), so a loader tells
the two apart from the header alone (:func:`is_ensemble_file`). Tensors are ``members.{k}.params`` (P,) and
``members.{k}.optimizer.{slot}`` (P,), each laid out as :attr:`gpunn.MLP.params`; the JSON holds the settings the
members share and, per member, what :mod:`gpunn.checkpoint` keeps of a lone MLP (seed, dropout, optimizer,
schedule and its state, generator, epoch, history, and the state of its callbacks, such as the early
stopping of ``gpunn train --members``, whose best weights are tensors ``members.{k}.callbacks.early_stopping.*``).
A SHA-256 over the JSON and the tensors detects corruption.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors.numpy

from .. import _backend, layers, optim
from ..checkpoint import (
    MAX_HEADER_BYTES,
    _attach_callback_state,
    _callback_tensor_names,
    _validate_callbacks,
    _validate_classes,
    _validate_target_scaling,
    atomic_write,
    split_callback_state,
)
from ..errors import CheckpointError, DeviceError, GpunnError

if TYPE_CHECKING:
    from . import Ensemble

FORMAT = "gpunn.ensemble"
FORMAT_VERSION = 1
SHARED = ("sizes", "activation", "output", "loss", "dtype", "standardize", "feature_names", "target_name", "metadata")


def _digest(config_json: str, tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(config_json.encode())
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(tensors[name]).tobytes())
    return h.hexdigest()


def save(ens: Ensemble, path: str | os.PathLike[str]) -> None:
    """Write ``ens`` to ``path`` from host memory, atomically."""
    m0 = ens.members[0]
    tensors: dict[str, np.ndarray] = {}
    members = []
    for k, m in enumerate(ens.members):
        callbacks = None
        if m.metadata.get("callbacks"):  # its best weights as tensors, named in the JSON as a lone MLP's file does
            split, held = split_callback_state({"callbacks": m.metadata["callbacks"]})
            callbacks = split["callbacks"]
            tensors.update({f"members.{k}.{name}": array for name, array in held.items()})
        tensors[f"members.{k}.params"] = np.ascontiguousarray(_backend.to_numpy(m.params))
        opt = None
        if m.optimizer is not None and m.optimizer_state is not None:
            opt = {"name": m.optimizer.name, "hyper": m.optimizer.hyper, "step": int(m.optimizer_state["step"])}
            for slot in optim.SLOTS[m.optimizer.name]:
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
        })  # fmt: skip
    config = {**{key: getattr(m0, key) for key in SHARED}, "members": members}
    config["metadata"] = {key: v for key, v in config["metadata"].items() if key != "callbacks"}  # per member
    config_json = json.dumps(config, sort_keys=True)
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "gpunn": config_json,
                "sha256": _digest(config_json, tensors)}  # fmt: skip
    atomic_write(path, safetensors.numpy.save(tensors, metadata=metadata))


def _header(data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise CheckpointError(f"file is truncated ({len(data)} bytes; a safetensors header needs 8)")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise CheckpointError("not a safetensors file, or a truncated or corrupt one")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"header is not valid JSON: corrupt file ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError("header is not a JSON object: corrupt file")
    return header


def is_ensemble_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a safetensors file that :meth:`Ensemble.save` wrote (read from its header alone)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device is not opened here: read() refuses it
            return False
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            if not 0 < n <= MAX_HEADER_BYTES:
                return False
            meta = json.loads(f.read(n).decode("utf-8")).get("__metadata__")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The validated JSON config and tensors of an ensemble file; any problem is a CheckpointError naming it."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot read ensemble ({exc.strerror or exc})") from None
    try:
        header = _header(data)
        meta = header.pop("__metadata__", None)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError("not a gpunn ensemble file (a lone MLP's file loads with gpunn.load)")
        if meta.get("format_version") != str(FORMAT_VERSION):
            raise CheckpointError(f"format version {meta.get('format_version')!r} is not supported; this gpunn reads "
                                  f"version {FORMAT_VERSION}")  # fmt: skip
        config_json = meta.get("gpunn")
        if not isinstance(config_json, str):
            raise CheckpointError("the header has no gpunn ensemble description: corrupt file")
        try:
            config = json.loads(config_json)
            p = layers.n_params(config["sizes"])
            expected = {}
            for k, member in enumerate(config["members"]):
                expected[f"members.{k}.params"] = [p]
                if member["optimizer"] is not None:
                    for slot in optim.SLOTS[member["optimizer"]["name"]]:
                        expected[f"members.{k}.optimizer.{slot}"] = [p]
                if member.get("callbacks") is not None:
                    _validate_callbacks(member["callbacks"], member)
                    for name in _callback_tensor_names({"metadata": {"callbacks": member["callbacks"]}}):
                        expected[f"members.{k}.{name}"] = [p]
        except CheckpointError as exc:
            raise CheckpointError(f"ensemble member {k}: {exc}") from None
        except Exception as exc:
            raise CheckpointError(
                f"ensemble description in the header is invalid ({type(exc).__name__}: {exc})"
            ) from None
        if set(header) != set(expected):
            missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
            raise CheckpointError(f"tensors do not match the members: missing {missing}, unexpected {extra}")
        code = {"float32": "F32", "float64": "F64"}.get(config.get("dtype"))
        for key, shape in expected.items():
            info = header[key]
            if not isinstance(info, dict) or info.get("dtype") != code or info.get("shape") != shape:
                raise CheckpointError(f"tensor {key} is {info} but the members need {code} of shape {shape}")
        try:
            tensors = safetensors.numpy.load(data)
        except Exception as exc:
            raise CheckpointError(f"safetensors could not read the tensors ({exc})") from None
        if _digest(config_json, tensors) != meta.get("sha256"):
            raise CheckpointError("checksum mismatch: the file is corrupt")
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    return config, tensors


def load(path: str | os.PathLike[str], *, device: Any = "auto", xp: Any = None, compile: Any = "auto") -> Ensemble:
    """Rebuild the ensemble saved at ``path`` on ``device`` (and ``xp``), ready to predict or continue training:
    save + load + fit equals an uninterrupted fit."""
    from ..model import MLP
    from . import Ensemble

    config, tensors = read(path)
    models = []
    try:
        for k, c in enumerate(config["members"]):
            # the labels and target scaling a member learned (files from before them hold none), checked as a lone
            # model's checkpoint's are
            _validate_classes(c.get("classes"), config["output"], config["sizes"][-1], "classes")
            _validate_target_scaling(c.get("target_scaling"), config["output"], config["sizes"][-1])
            optimizer = c["optimizer"]
            slots = {} if optimizer is None else {
                slot: tensors[f"members.{k}.optimizer.{slot}"] for slot in optim.SLOTS[optimizer["name"]]
            }  # fmt: skip
            # a member is a lone model's description: the shared fields and its own
            m = MLP._from_config({**config, **c}, tensors[f"members.{k}.params"], slots, device, xp, compile)
            if c.get("callbacks") is not None:
                prefix = f"members.{k}."
                held = {key[len(prefix) :]: v for key, v in tensors.items() if key.startswith(prefix)}
                callbacks = {"metadata": {"callbacks": json.loads(json.dumps(c["callbacks"]))}}
                _attach_callback_state(callbacks, held)
                m.metadata["callbacks"] = callbacks["metadata"]["callbacks"]
            models.append(m)
    except (CheckpointError, DeviceError):
        raise
    except GpunnError as exc:
        raise CheckpointError(f"{os.fspath(path)}: invalid ensemble description ({exc})") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{os.fspath(path)}: invalid ensemble description ({type(exc).__name__}: {exc})"
        ) from None
    return Ensemble.from_members(models)
