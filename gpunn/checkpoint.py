"""Checkpoints in the safetensors format: validated before anything is built, written atomically.

A file holds the parameters (``layers.{i}.weight`` of shape (out, in), ``layers.{i}.bias``) and the optimizer
slots (``optimizer.{slot}.{j}``) as tensors, and everything else as JSON in the header's metadata: the
architecture, dtype, feature scaling, optimizer hyper-parameters and step, the shuffling RNG state, the epoch
and the history. A SHA-256 over that JSON and the tensors detects corruption. Nothing in a file is executed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors.numpy

from . import _backend, layers, optim, schedules
from .errors import CheckpointError, DeviceError, GpunnError
from .history import History

if TYPE_CHECKING:
    from .model import MLP

FORMAT = "gpunn.mlp"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 16 * 1024 * 1024
_DTYPES = {"float32": ("F32", 4), "float64": ("F64", 8)}


@dataclass
class Checkpoint:
    """A validated checkpoint: its JSON config and its tensors as NumPy arrays."""

    config: dict[str, Any]
    tensors: dict[str, np.ndarray]

    def weight_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(W, b), ...]`` as stored."""
        n_layers = len(self.config["sizes"]) - 1
        return [(self.tensors[f"layers.{i}.weight"], self.tensors[f"layers.{i}.bias"]) for i in range(n_layers)]


def _digest(config_json: str, tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(config_json.encode())
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(tensors[name]).tobytes())
    return h.hexdigest()


def _expected_tensors(config: dict[str, Any]) -> dict[str, tuple[list[int], str, int]]:
    """Name -> (shape, safetensors dtype code, item size) of every tensor the config implies."""
    sizes = config["sizes"]
    if not isinstance(sizes, list) or len(sizes) < 2 or not all(type(s) is int and s >= 1 for s in sizes):
        raise ValueError(f"sizes {sizes!r} is not a list of layer widths")
    code, itemsize = _DTYPES[config["dtype"]]
    shapes = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        shapes += [[fan_out, fan_in], [fan_out]]
    expected = {}
    for j, shape in enumerate(shapes):
        kind = "weight" if j % 2 == 0 else "bias"
        expected[f"layers.{j // 2}.{kind}"] = (shape, code, itemsize)
    opt = config.get("optimizer")
    if opt is not None:
        for slot in optim.SLOTS[opt["name"]]:
            for j, shape in enumerate(shapes):
                expected[f"optimizer.{slot}.{j}"] = (shape, code, itemsize)
    return expected


def save(model: MLP, path: str | os.PathLike[str]) -> None:
    """Write ``model`` to ``path`` from host memory, atomically (temp file, fsync, rename, fsync folder)."""
    tensors = {}
    for i, (w, b) in enumerate(model.numpy_weights()):
        tensors[f"layers.{i}.weight"], tensors[f"layers.{i}.bias"] = w, b
    opt = None
    if model.optimizer is not None and model.optimizer_state is not None:
        step = int(model.optimizer_state["step"])
        opt = {"name": model.optimizer.name, "hyper": model.optimizer.hyper, "step": step}
        for slot in optim.SLOTS[model.optimizer.name]:
            flat = _backend.to_numpy(model.optimizer_state[slot])
            for i, (w, b) in enumerate(layers.unflatten(flat, model.sizes, np)):
                tensors[f"optimizer.{slot}.{2 * i}"], tensors[f"optimizer.{slot}.{2 * i + 1}"] = w, b
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    config = {
        "sizes": model.sizes,
        "activation": model.activation,
        "output": model.output,
        "loss": model.loss,
        "dtype": model.dtype,
        "seed": model.seed,
        "standardize": model.standardize,
        "dropout": model.dropout,
        "scaling": None if model.scaling is None else [s.tolist() for s in model.scaling],
        "feature_names": model.feature_names,
        "target_name": model.target_name,
        "metadata": model.metadata,
        "optimizer": opt,
        "schedule": None if model.schedule is None else model.schedule.to_dict(),
        "schedule_state": model.schedule_state,
        "rng": model.rng.bit_generator.state,
        "epoch": model.epoch,
        "fitted": model.fitted,
        "history": model.history.to_dict(),
    }
    config_json = json.dumps(config, sort_keys=True)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "gpunn": config_json,
        "sha256": _digest(config_json, tensors),
    }
    atomic_write(path, safetensors.numpy.save(tensors, metadata=metadata))


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash at any point leaves the old file or the new one, whole."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    _remove_orphans(folder, prefix)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=".tmp", dir=folder)
    except OSError as exc:  # name the file the user asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every platform can fsync a folder
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _remove_orphans(folder: str, prefix: str) -> None:
    """Delete temporary files that a killed save left behind (their writer's process no longer exists)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        pid = name[len(prefix) :].partition(".")[0]
        if not (name.startswith(prefix) and name.endswith(".tmp") and pid.isdigit()):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))
        except OSError:
            pass  # alive under another user, or unknowable: leave it


def read(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint; any problem is a :class:`CheckpointError` naming the file."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot read checkpoint ({exc.strerror or exc})") from None
    try:
        return _parse(data)
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {exc}") from None


def _parse(data: bytes) -> Checkpoint:
    if len(data) < 8:
        raise CheckpointError(f"file is truncated ({len(data)} bytes; a safetensors header needs 8)")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"not a safetensors file, or a corrupt one: its first 8 bytes give a header of {n} bytes, over the "
            f"{MAX_HEADER_BYTES}-byte limit (gpunn.load reads what MLP.save and 'gpunn train --save' write)"
        )
    if 8 + n > len(data):
        raise CheckpointError(f"file is truncated: header claims {n} bytes but only {len(data) - 8} follow")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"header is not valid JSON: corrupt file ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError("header is not a JSON object: corrupt file")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError("not a gpunn checkpoint (no gpunn metadata in the safetensors header)")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"format version {meta.get('format_version')!r} is not supported; this gpunn reads version "
            f"{FORMAT_VERSION} (a newer gpunn may have written it)"
        )
    config_json = meta.get("gpunn")
    if not isinstance(config_json, str):
        raise CheckpointError("the header has no gpunn model description: corrupt file")
    try:
        config = json.loads(config_json)
        expected = _expected_tensors(config)
    except Exception as exc:
        raise CheckpointError(f"model description in the header is invalid ({type(exc).__name__}: {exc})") from None

    missing = sorted(set(expected) - set(header))
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        raise CheckpointError(f"tensors do not match the architecture: missing {missing}, unexpected {extra}")
    body = len(data) - 8 - n
    end_max = 0
    for key, (shape, code, itemsize) in expected.items():
        info = header[key]
        if not isinstance(info, dict) or info.get("dtype") != code or info.get("shape") != shape:
            raise CheckpointError(f"tensor {key} is {info} but the architecture needs {code} of shape {shape}")
        offsets = info.get("data_offsets")
        size = int(np.prod(shape)) * itemsize
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or offsets[1] - offsets[0] != size
            or offsets[0] < 0
        ):
            raise CheckpointError(f"tensor {key} has invalid data offsets {offsets}: corrupt file")
        end_max = max(end_max, offsets[1])
    if end_max != body:
        raise CheckpointError(f"file is truncated or padded: tensors need {end_max} bytes of data, file has {body}")
    try:
        tensors = safetensors.numpy.load(data)
    except Exception as exc:
        raise CheckpointError(f"safetensors could not read the tensors ({exc})") from None
    if _digest(config_json, tensors) != meta.get("sha256"):
        raise CheckpointError("checksum mismatch: the file is corrupt")
    return Checkpoint(config, tensors)


def load(path: str | os.PathLike[str], *, device: Any = "auto", xp: Any = None) -> MLP:
    """Rebuild the model saved at ``path`` on ``device`` (and ``xp``), ready to predict or continue training."""
    from .model import MLP

    ckpt = read(path)
    c = ckpt.config
    try:
        m = MLP(
            c["sizes"], activation=c["activation"], output=c["output"], loss=c["loss"], seed=c["seed"],
            device=device, dtype=c["dtype"], xp=xp, standardize=c["standardize"], dropout=c.get("dropout", 0.0),
        )  # fmt: skip
        m.set_weights(ckpt.weight_pairs())
        m.fitted = bool(c["fitted"])
        if c["scaling"] is not None:
            mean, scale = (np.asarray(s, dtype=np.float64) for s in c["scaling"])
            m.scaling = (mean, scale)
        m.feature_names, m.target_name, m.metadata = c["feature_names"], c["target_name"], dict(c["metadata"])
        opt = c["optimizer"]
        if opt is not None:
            m.optimizer = optim.Optimizer(opt["name"], dict(opt["hyper"]))
            state: dict[str, Any] = {"step": int(opt["step"])}
            n = 2 * (len(m.sizes) - 1)
            for slot in optim.SLOTS[opt["name"]]:
                flat = np.concatenate([ckpt.tensors[f"optimizer.{slot}.{j}"].reshape(-1) for j in range(n)])
                state[slot] = _backend.from_numpy(flat, m.xp, m.device)
            m.optimizer_state = state
        if c.get("schedule") is not None:  # checkpoints from before schedules have none
            m.schedule, m.schedule_state = schedules.Schedule.from_dict(c["schedule"]), dict(c["schedule_state"])
        m.rng.bit_generator.state = c["rng"]
        m.epoch = int(c["epoch"])
        m.history = History.from_dict(c["history"])
    except (CheckpointError, DeviceError):
        raise
    except GpunnError as exc:
        raise CheckpointError(f"{os.fspath(path)}: invalid model description ({exc})") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{os.fspath(path)}: invalid model description ({type(exc).__name__}: {exc})") from None
    return m
