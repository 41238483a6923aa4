"""Checkpoints in the safetensors format: validated before anything is built, written atomically.

A one-network file (format ``gpunn.mlp``) holds the parameters (``layers.{i}.weight`` of shape (out, in),
``layers.{i}.bias``) and the optimizer slots (``optimizer.{slot}.{j}``) as tensors, and everything else as JSON
in the header's metadata: the architecture, dtype, feature scaling, optimizer hyper-parameters and step, the
shuffling RNG state, the epoch and the history. An ensemble file (format ``gpunn.ensemble``, which
:mod:`gpunn.ensemble` maps to and from its members) holds the fields its members share and, under
``members``, each member's own; its tensors are ``members.{k}.params``, ``members.{k}.optimizer.{slot}`` and
``members.{k}.callbacks.*``. A SHA-256 over that JSON and the tensors detects corruption. Nothing in a file is
executed. One reader and one writer serve both formats: the same bounded reading, and every member of an
ensemble validated as a one-network file is.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import feed, layers, losses, optim, presets, schedules
from .data.readers import read_into
from .errors import CheckpointError, DeviceError, GpunnError, InputTypeError
from .history import History

FORMAT = "gpunn.mlp"
ENSEMBLE_FORMAT = "gpunn.ensemble"
FORMAT_VERSION = 1  # of both formats
MAX_HEADER_BYTES = 16 * 1024 * 1024
# JSON nesting a file may hold (gpunn writes 6 levels, plus what a user nests in a model's metadata): Python's
# decoder recurses once per level, so a header of 100,000 '[' would end in a RecursionError instead of a refusal.
MAX_NESTING = 200
# The fields of an ensemble file's description that its members share; the rest are each member's own.
ENSEMBLE_SHARED = (
    "sizes", "activation", "output", "loss", "dtype", "standardize", "feature_names", "target_name", "metadata",
)  # fmt: skip
_DTYPES = {"float32": ("F32", 4), "float64": ("F64", 8)}


@dataclass
class Checkpoint:
    """A validated checkpoint: its JSON config and its tensors as NumPy arrays (an early-stopping state's best
    weights, stored as tensors, are put back as arrays in ``config["metadata"]["callbacks"]``).

    For an ensemble file (``format`` :data:`ENSEMBLE_FORMAT`), ``config`` is the file's ensemble description and
    ``members`` each member's one-network description (the shared fields and its own, with its early-stopping
    arrays put back in its metadata), as :func:`validate_config` checked it; member k's tensors are
    ``members.{k}.params`` and ``members.{k}.optimizer.{slot}``."""

    config: dict[str, Any]
    tensors: dict[str, np.ndarray]
    format: str = FORMAT
    members: list[dict[str, Any]] = field(default_factory=list)

    def weight_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(W, b), ...]`` as stored."""
        n_layers = len(self.config["sizes"]) - 1
        return [(self.tensors[f"layers.{i}.weight"], self.tensors[f"layers.{i}.bias"]) for i in range(n_layers)]


def _digest(config_json: str, tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(config_json.encode())
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(tensors[name]).reshape(-1).view(np.uint8).data)  # the bytes, not a copy of them
    return h.hexdigest()


# Fields every checkpoint has; "dropout", "schedule", "schedule_state", "label_smoothing" and "preset" came later
# and may be absent.
_REQUIRED = (
    "sizes", "activation", "output", "loss", "dtype", "seed", "standardize", "scaling", "feature_names",
    "target_name", "metadata", "optimizer", "rng", "epoch", "fitted", "history",
)  # fmt: skip
# The hyper-parameters of each optimizer: (name, test, what the test asks).
_HYPER = {
    "beta": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "nesterov": (lambda v: isinstance(v, bool), "true or false"),
    "beta1": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "beta2": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "eps": (lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "weight_decay": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "history": (lambda v: _is_int(v) and 1 <= v <= 1000, "an integer from 1 to 1000"),
    "tol": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "ftol": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "max_fun": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
}
_SCHEDULE_STATE = {"lr", "best", "bad"}  # a plateau schedule's; the others keep none


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    """A finite JSON number (a bool is not one)."""
    return type(value) in (int, float) and math.isfinite(value)


def _invalid(field: str, problem: str) -> CheckpointError:
    return CheckpointError(f"invalid model description: {field} {problem}")


def validate_config(config: Any) -> None:
    """Check every field of a checkpoint's JSON model description, with what each field must be on its own and
    against the architecture; a problem is a :class:`CheckpointError` naming the field.

    The checksum detects corruption, not editing: anyone can rewrite the JSON and its digest, so nothing in it is
    trusted. A zero scale or a class list of the wrong length would otherwise load and print NaN or fail later."""
    if not isinstance(config, dict):
        raise _invalid("the model description", f"is {type(config).__name__}, not a JSON object")
    missing = [key for key in _REQUIRED if key not in config]
    if missing:
        raise _invalid("the model description", f"lacks {', '.join(missing)}")
    sizes = config["sizes"]
    if not isinstance(sizes, list) or len(sizes) < 2 or not all(_is_int(s) and s >= 1 for s in sizes):
        raise _invalid("sizes", f"is {sizes!r}; it must list at least two layer widths >= 1")
    _validate_architecture(config, sizes)
    _validate_inputs(config, sizes[0])
    if not isinstance(config["metadata"], dict):
        raise _invalid("metadata", f"is {config['metadata']!r}, not a JSON object")
    _validate_classes(config["metadata"].get("classes"), config["output"], sizes[-1])
    _validate_classes(config.get("classes"), config["output"], sizes[-1], "classes")  # absent before gpunn kept them
    _validate_target_scaling(config.get("target_scaling"), config["output"], sizes[-1])
    _validate_training_state(config)
    if "callbacks" in config["metadata"]:
        _validate_callbacks(config["metadata"]["callbacks"], config)


def _validate_architecture(config: dict[str, Any], sizes: list[int]) -> None:
    activation, n_hidden = config["activation"], len(sizes) - 2
    names = activation if isinstance(activation, list) and n_hidden and len(activation) == n_hidden else [activation]
    if not all(isinstance(a, str) and a in layers.ACTIVATIONS for a in names):
        raise _invalid(
            "activation",
            f"is {activation!r}; it must be one of {', '.join(layers.ACTIVATIONS)}, or a list of one per hidden layer",
        )
    output, loss = config["output"], config["loss"]
    if output not in losses.OUTPUTS:
        raise _invalid("output", f"is {output!r}; it must be one of {', '.join(losses.OUTPUTS)}")
    if (output, loss) not in losses.PAIRS:
        raise _invalid("loss", f"is {loss!r}, which output {output!r} is not trained with")
    if output == "softmax" and sizes[-1] < 2:
        raise _invalid("sizes", f"is {sizes}: output 'softmax' needs at least 2 output units")
    if config["dtype"] not in _DTYPES:
        raise _invalid("dtype", f"is {config['dtype']!r}; it must be one of {', '.join(_DTYPES)}")
    if not (_is_int(config["seed"]) and config["seed"] >= 0):
        raise _invalid("seed", f"is {config['seed']!r}; it must be an integer >= 0")
    for key in ("standardize", "fitted"):
        if not isinstance(config[key], bool):
            raise _invalid(key, f"is {config[key]!r}; it must be true or false")
    dropout = config.get("dropout", 0.0)
    if not (_is_number(dropout) and 0 <= dropout < 1):
        raise _invalid("dropout", f"is {dropout!r}; it must be a number in [0, 1)")
    smoothing = config.get("label_smoothing", 0.0)
    if not (_is_number(smoothing) and 0 <= smoothing < 1):
        raise _invalid("label_smoothing", f"is {smoothing!r}; it must be a number in [0, 1)")
    if config["output"] in losses.REGRESSION:  # a regression ignored it (earlier files may hold one), now refuses it
        config["label_smoothing"] = 0.0
    if config.get("preset") not in (None, *presets.PRESETS):
        raise _invalid("preset", f"is {config.get('preset')!r}; it must be one of {', '.join(presets.PRESETS)} or null")


def _validate_inputs(config: dict[str, Any], n_features: int) -> None:
    """Feature scaling and names: one entry per input feature; every scale finite and > 0."""
    if config["scaling"] is not None:
        _validate_mean_and_scale(config["scaling"], "scaling", n_features, "input features", "feature")
    names = config["feature_names"]
    if config.get("encoding") is not None:  # absent before encodings: the names are then the inputs themselves
        try:
            feed.encode.from_dict(config["encoding"], n_features, names)
        except ValueError as exc:
            raise _invalid("encoding", str(exc)) from None
    elif names is not None and not (
        isinstance(names, list) and len(names) == n_features and all(isinstance(v, str) for v in names)
    ):
        raise _invalid("feature_names", f"is {names!r}; it must list {n_features} column names, or be null")
    if config["target_name"] is not None and not isinstance(config["target_name"], str):
        raise _invalid("target_name", f"is {config['target_name']!r}; it must be a column name or null")


def _validate_classes(classes: Any, output: str, n_outputs: int, field: str = "metadata classes") -> None:
    """(metadata) classes: the labels of a classifier's outputs, one per class, distinct."""
    if classes is None:
        return
    if output in losses.REGRESSION:
        raise _invalid(field, f"is {classes!r}, but a regression ({output} output) has no classes")
    expected = n_outputs if output == "softmax" else 2
    if (output == "sigmoid" and n_outputs != 1) or not isinstance(classes, list) or len(classes) != expected:
        raise _invalid(field, f"is {classes!r}; the model's {output} output with {n_outputs} unit(s) has {expected}")
    if not all(isinstance(c, str) or _is_number(c) for c in classes) or len({repr(c) for c in classes}) != expected:
        raise _invalid(field, f"is {classes!r}; it must list distinct numbers or strings")
    if field == "classes" and len({type(c) is str for c in classes}) != 1:
        raise _invalid(field, f"is {classes!r}; it must list numbers or strings, not both")


def _validate_target_scaling(scaling: Any, output: str, n_outputs: int) -> None:
    """A regression's target mean and standard deviation: one of each per output, every scale finite and > 0."""
    if scaling is None:
        return
    if output != "identity":
        raise _invalid("target_scaling", f"is {scaling!r}, but only a regression (identity output) scales its target")
    _validate_mean_and_scale(scaling, "target_scaling", n_outputs, "output(s)", "output")


def _validate_mean_and_scale(scaling: Any, field: str, count: int, counted: str, each: str) -> None:
    """A standardization ``[mean, scale]``: two lists of ``count`` finite numbers, every scale > 0."""
    if not isinstance(scaling, list) or len(scaling) != 2:
        raise _invalid(field, "must be a pair [mean, scale] of lists, or null")
    for part, values in zip(("mean", "scale"), scaling):
        if not isinstance(values, list) or len(values) != count:
            got = f"{len(values)} values" if isinstance(values, list) else repr(values)
            raise _invalid(f"{field} {part}", f"has {got}; the model has {count} {counted}")
        for j, v in enumerate(values):
            if not _is_number(v) or (part == "scale" and v <= 0):
                need = "a finite number > 0" if part == "scale" else "a finite number"
                raise _invalid(f"{field} {part}", f"of {each} {j} is {v!r}; it must be {need}")


def _validate_training_state(config: dict[str, Any]) -> None:
    """Optimizer, schedule, shuffling generator, epoch and history."""
    opt = config["optimizer"]
    if opt is not None:
        if not isinstance(opt, dict) or opt.get("name") not in optim.SLOTS:
            raise _invalid("optimizer", f"is {opt!r}; its name must be one of {', '.join(optim.SLOTS)}")
        hyper, wanted = opt.get("hyper"), set(optim._DEFAULTS[opt["name"]])
        if not isinstance(hyper, dict) or set(hyper) != wanted:
            raise _invalid("optimizer hyper", f"is {hyper!r}; {opt['name']} has {sorted(wanted) or 'none'}")
        for key, value in hyper.items():
            test, need = _HYPER[key]
            if not test(value):
                raise _invalid(f"optimizer hyper {key}", f"is {value!r}; it must be {need}")
        if not (_is_int(opt.get("step")) and opt["step"] >= 0):
            raise _invalid("optimizer step", f"is {opt.get('step')!r}; it must be an integer >= 0")
    schedule = config.get("schedule")
    if schedule is not None:
        _validate_schedule(schedule, config.get("schedule_state"))
    rng = config["rng"]
    try:
        if not isinstance(rng, dict) or rng.get("bit_generator") != "PCG64":
            raise ValueError("not a PCG64 state")
        generator: Any = np.random.PCG64()
        generator.state = rng
    except Exception as exc:
        raise _invalid("rng", f"is not a PCG64 generator state ({exc})") from None
    if not (_is_int(config["epoch"]) and config["epoch"] >= 0):
        raise _invalid("epoch", f"is {config['epoch']!r}; it must be an integer >= 0")
    history = config["history"]
    if not isinstance(history, dict):
        raise _invalid("history", f"is {history!r}, not a JSON object")
    for key, values in history.items():
        if key not in History.__dataclass_fields__:
            raise _invalid("history", f"has an unknown record {key!r}")
        if not isinstance(values, list) or not all(type(v) in (int, float) for v in values):
            raise _invalid(f"history {key}", "must be a list of numbers")


def _validate_schedule(schedule: Any, state: Any) -> None:
    if not isinstance(schedule, dict) or schedule.get("name") not in schedules.SCHEDULES:
        raise _invalid("schedule", f"is {schedule!r}; its name must be one of {', '.join(schedules.SCHEDULES)}")
    params = schedule.get("params")
    try:  # the schedule's own constructor checks its numbers, as for a schedule passed to fit
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise TypeError("its params are not a JSON object")
        getattr(schedules, schedule["name"])(**params)
    except (GpunnError, TypeError) as exc:
        raise _invalid("schedule", f"{schedule!r} is not valid ({exc})") from None
    plateau = schedule["name"] == "plateau"
    if not isinstance(state, dict) or set(state) != (_SCHEDULE_STATE if plateau else set()):
        raise _invalid("schedule_state", f"is {state!r}; a {schedule['name']} schedule's state is not that")
    if plateau and not (
        _is_number(state["lr"])
        and state["lr"] >= 0
        and (state["best"] is None or type(state["best"]) in (int, float))
        and _is_int(state["bad"])
        and state["bad"] >= 0
    ):
        raise _invalid("schedule_state", f"is {state!r}; it needs a rate >= 0, a best loss and a count >= 0")


def validate_ensemble(config: Any) -> list[dict[str, Any]]:
    """Check an ensemble file's JSON description and return its members' one-network descriptions: the fields
    they share and each member's own (``{**shared, **member}``, the member's ``callbacks`` in its metadata), each
    checked by :func:`validate_config`, so that every refusal a one-network file gets, a member gets too. A
    problem is a :class:`CheckpointError` naming the member (a shared field's, member 0, the first to hold it)."""
    if not isinstance(config, dict):
        raise CheckpointError(f"invalid ensemble description: is {type(config).__name__}, not a JSON object")
    missing = [key for key in (*ENSEMBLE_SHARED, "members") if key not in config]
    if missing:
        raise CheckpointError(f"invalid ensemble description: lacks {', '.join(missing)}")
    members = config["members"]
    if not isinstance(members, list) or not members:
        got = "[]" if isinstance(members, list) else f"{type(members).__name__}, not a JSON list"
        raise CheckpointError(f"invalid ensemble description: members is {got}; an ensemble has at least one member")
    shared = {key: config[key] for key in ENSEMBLE_SHARED}
    if "encoding" in config:  # one for every member (absent before encodings)
        shared["encoding"] = config["encoding"]
    descriptions = []
    for k, member in enumerate(members):
        try:
            if not isinstance(member, dict):
                raise _invalid("the model description", f"is {type(member).__name__}, not a JSON object")
            # A copy per member: its early-stopping arrays are put back in it, and members share no mutable state.
            description = json.loads(json.dumps({**shared, **member}))
            callbacks = description.pop("callbacks", None)
            if callbacks is not None and isinstance(description["metadata"], dict):
                description["metadata"]["callbacks"] = callbacks
            validate_config(description)
            diverged = description.get("diverged")  # why the member was set aside (absent in older files)
            if diverged is not None and not (isinstance(diverged, str) and 0 < len(diverged) <= 10_000):
                raise _invalid("diverged", f"is {diverged!r}; it must be null or the message of the divergence")
            own = [key for key in (*ENSEMBLE_SHARED, "encoding") if key in member]
            if own:  # checked after validate_config, so that a bad value is named as in a one-network file
                raise CheckpointError(f"holds its own {', '.join(own)}; the members share the ensemble's")
        except CheckpointError as exc:
            raise CheckpointError(f"ensemble member {k}: {exc}") from None
        descriptions.append(description)
    return descriptions


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
        for slot in optim.slots(opt["name"], opt["hyper"]):
            for j, shape in enumerate(shapes):
                expected[f"optimizer.{slot}.{j}"] = (shape, code, itemsize)
    n_params = sum(math.prod(shape) for shape in shapes)
    for name in _callback_tensor_names(config):  # the best weights of an early-stopping state: flat buffers
        expected[name] = ([n_params], code, itemsize)
    return expected


def _expected_ensemble_tensors(
    config: dict[str, Any], members: list[dict[str, Any]]
) -> dict[str, tuple[list[int], str, int]]:
    """Name -> (shape, safetensors dtype code, item size) of every tensor a validated ensemble description implies:
    each member's flat parameters, optimizer slots and early-stopping buffers, all of the members' size."""
    code, itemsize = _DTYPES[config["dtype"]]
    n_params = layers.n_params(config["sizes"])
    expected = {}
    for k, member in enumerate(members):
        opt = member["optimizer"]
        names = ["params"] + (
            [] if opt is None else [f"optimizer.{slot}" for slot in optim.slots(opt["name"], opt["hyper"])]
        )
        for name in names + _callback_tensor_names(member):
            expected[f"members.{k}.{name}"] = ([n_params], code, itemsize)
    return expected


# ------------------------------------------------------------------------------------- callback state
# A callback's state (``gpunn train`` saves its EarlyStopping's in metadata["callbacks"]["early_stopping"]) holds
# the best epoch's parameters and optimizer slots. They are stored as tensors, not JSON (a 270k-parameter Adam
# network would give a 16 MB header); the JSON names them, and read() puts the arrays back in their place.
_EARLY_STOPPING = "early_stopping"
_EARLY_STOPPING_KEYS = {
    "monitor", "patience", "min_delta", "restore_best", "best", "best_epoch", "stopped_epoch", "waited",
    "best_params", "best_optimizer",
}  # fmt: skip


def _early_stopping_state(config: dict[str, Any]) -> Any:
    metadata = config.get("metadata")
    callbacks = metadata.get("callbacks") if isinstance(metadata, dict) else None
    return callbacks.get(_EARLY_STOPPING) if isinstance(callbacks, dict) else None


def _callback_tensor_names(config: dict[str, Any]) -> list[str]:
    """The tensors a (validated) config's callback state declares."""
    state = _early_stopping_state(config)
    if state is None or state.get("best_params") is None:
        return []
    names = [state["best_params"]]
    if state.get("best_optimizer") is not None:
        names += [v for k, v in sorted(state["best_optimizer"].items()) if k != "step"]
    return names


def _tensor_name(slot: str | None) -> str:
    return f"callbacks.{_EARLY_STOPPING}." + ("params" if slot is None else f"optimizer.{slot}")


def split_callback_state(metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(metadata as JSON, tensors)``: the arrays of an early-stopping state replaced by the names of tensors."""
    state = (metadata.get("callbacks") or {}).get(_EARLY_STOPPING)
    if state is None or state.get("best_params") is None:
        return metadata, {}
    state = dict(state)
    tensors = {_tensor_name(None): np.ascontiguousarray(state["best_params"]).reshape(-1)}
    state["best_params"] = _tensor_name(None)
    if state.get("best_optimizer") is not None:
        opt = dict(state["best_optimizer"])
        for slot in [k for k in opt if k != "step"]:
            tensors[_tensor_name(slot)] = np.ascontiguousarray(opt[slot]).reshape(-1)
            opt[slot] = _tensor_name(slot)
        state["best_optimizer"] = opt
    return {**metadata, "callbacks": {**metadata["callbacks"], _EARLY_STOPPING: state}}, tensors


def _attach_callback_state(config: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """Inverse of :func:`split_callback_state`, in the config that read() returns."""
    state = _early_stopping_state(config)
    if state is None or state.get("best_params") is None:
        return
    state["best_params"] = tensors[state["best_params"]]
    opt = state.get("best_optimizer")
    if opt is not None:
        state["best_optimizer"] = {k: v if k == "step" else tensors[v] for k, v in opt.items()}


def _validate_callbacks(callbacks: Any, config: dict[str, Any]) -> None:
    """metadata callbacks: an early-stopping state whose numbers make sense and whose best weights are declared
    tensors of the model's size, with the slots of the model's optimizer."""
    if not isinstance(callbacks, dict) or set(callbacks) - {_EARLY_STOPPING}:
        raise _invalid("metadata callbacks", f"is {callbacks!r}; it may hold an {_EARLY_STOPPING} state only")
    state = callbacks.get(_EARLY_STOPPING)
    field = f"metadata callbacks {_EARLY_STOPPING}"
    if state is None:
        return
    if not isinstance(state, dict) or set(state) != _EARLY_STOPPING_KEYS:
        raise _invalid(field, f"must be an object with {', '.join(sorted(_EARLY_STOPPING_KEYS))}")
    from .callbacks import MONITORS

    epoch = config["epoch"] if _is_int(config["epoch"]) else 0
    checks = {
        "monitor": state["monitor"] in MONITORS,
        "patience": _is_int(state["patience"]) and state["patience"] >= 0,
        "min_delta": _is_number(state["min_delta"]) and state["min_delta"] >= 0,
        "restore_best": isinstance(state["restore_best"], bool),
        "best": state["best"] is None or _is_number(state["best"]),
        "best_epoch": state["best_epoch"] is None or (_is_int(state["best_epoch"]) and state["best_epoch"] >= 1),
        "stopped_epoch": state["stopped_epoch"] is None
        or (_is_int(state["stopped_epoch"]) and state["stopped_epoch"] >= 1),
        "waited": _is_int(state["waited"]) and state["waited"] >= 0,
        "best_params": state["best_params"] == (None if state["best"] is None else _tensor_name(None)),
    }
    for key, ok in checks.items():
        if not ok:
            raise _invalid(f"{field} {key}", f"is {state[key]!r}")
    for key in ("best_epoch", "stopped_epoch"):
        if state[key] is not None and state[key] > epoch:
            raise _invalid(f"{field} {key}", f"is {state[key]}, after the model's epoch {epoch}")
    opt, model_opt = state["best_optimizer"], config["optimizer"]
    if state["best_params"] is None or model_opt is None:
        if opt is not None:
            raise _invalid(f"{field} best_optimizer", f"is {opt!r} without best weights or a model optimizer")
        return
    step = opt.get("step") if isinstance(opt, dict) else None
    wanted = {"step": step, **{slot: _tensor_name(slot) for slot in optim.slots(model_opt["name"], model_opt["hyper"])}}
    if opt != wanted or not (isinstance(step, int) and _is_int(step) and step >= 0):
        raise _invalid(f"{field} best_optimizer", f"is {opt!r}; a {model_opt['name']} state is {wanted!r}")


def write(
    path: str | os.PathLike[str], config: dict[str, Any], tensors: dict[str, np.ndarray], *, format: str = FORMAT
) -> None:
    """Write a model's state map, or an ensemble's (``format`` :data:`ENSEMBLE_FORMAT`), to ``path`` as a
    safetensors file, atomically (temp file, fsync, rename, fsync folder): ``config`` (JSON-safe but for a
    model's early-stopping state's arrays in ``config["metadata"]``, which go out as tensors; an ensemble's
    members name theirs already) in the header's metadata with a SHA-256, and ``tensors`` packed end to end in
    the order given, so that a model's flat buffers (parameters, each optimizer slot) are each one run of bytes
    that :func:`flat` views without a copy when the file is read back."""
    if format not in (FORMAT, ENSEMBLE_FORMAT):
        raise ValueError(f"format must be {FORMAT!r} or {ENSEMBLE_FORMAT!r}, not {format!r}")
    _file_path(path)
    if format == FORMAT:
        metadata, callback_tensors = split_callback_state(config["metadata"])
        config, tensors = {**config, "metadata": metadata}, {**tensors, **callback_tensors}
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    config_json = json.dumps(config, sort_keys=True)
    depth = _nesting(config_json)
    if depth > MAX_NESTING:  # refused here rather than written into a file that read() would refuse
        raise CheckpointError(
            f"{os.fspath(path)}: not saved: the model description nests {depth} levels deep (in its metadata); a "
            f"file holds at most {MAX_NESTING}"
        )
    entries: dict[str, Any] = {
        "__metadata__": {
            "format": format,
            "format_version": str(FORMAT_VERSION),
            "gpunn": config_json,
            "sha256": _digest(config_json, tensors),
        }
    }
    offset = 0
    for name, a in tensors.items():
        code = {"f4": "F32", "f8": "F64"}[f"{a.dtype.kind}{a.dtype.itemsize}"]
        entries[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # as safetensors pads it: the tensors start 8-byte aligned
    data = b"".join(
        [len(header).to_bytes(8, "little"), header, *(a.reshape(-1).view(np.uint8).data for a in tensors.values())]
    )
    atomic_write(path, data)


def flat(tensors: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """The named tensors as one flat array, in order: a view, without a copy, where they lie end to end in one
    buffer (as :func:`read` gives the files :func:`write` packs), else a concatenation."""
    parts = [tensors[name].reshape(-1) for name in names]
    first = parts[0]
    base = first.base if first.base is not None else first
    start = first.__array_interface__["data"][0]
    end = start
    for a in parts:
        if a.__array_interface__["data"][0] != end or a.dtype != first.dtype:
            return np.concatenate(parts)
        end += a.nbytes
    if not isinstance(base, np.ndarray) or base.dtype != np.uint8:
        return np.concatenate(parts)
    offset = start - base.__array_interface__["data"][0]
    return base[offset : offset + end - start].view(first.dtype)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash at any point leaves the old file or the new one, whole."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    _remove_orphans(folder, prefix)
    try:
        fd, tmp = _create_temporary(folder, f"{prefix}{os.getpid()}.", path)
    except OSError as exc:  # name the file the user asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror or str(exc), path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # a full disk (ENOSPC) names the file the user asked for, as above
            raise OSError(exc.errno, exc.strerror or str(exc), path) from exc
        raise
    with contextlib.suppress(OSError):  # not every platform can fsync a folder
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _create_temporary(folder: str, prefix: str, target: str) -> tuple[int, str]:
    """A new file in ``folder`` for writing, with the permissions the saved file should end with: those of the
    file it replaces, else what the umask gives a new file (0666 & ~umask), as ``open(path, "w")`` would.
    (``tempfile.mkstemp`` makes every file 0600, so a save silently changed a 0644 checkpoint to 0600.)"""
    try:
        keep: int | None = stat.S_IMODE(os.stat(target).st_mode) & 0o777
    except OSError:
        keep = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        name = os.path.join(folder, f"{prefix}{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(name, flags, 0o666)  # the kernel applies the umask
        except FileExistsError:
            continue
        if keep is not None:
            try:
                os.chmod(fd if os.chmod in os.supports_fd else name, keep)
            except BaseException:
                os.close(fd)
                os.unlink(name)
                raise
        return fd, name
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", os.path.join(folder, prefix))


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


def read(path: str | os.PathLike[str], formats: Collection[str] = (FORMAT,)) -> Checkpoint:
    """Read and validate a checkpoint of one of ``formats`` (:data:`FORMAT`, :data:`ENSEMBLE_FORMAT`); any problem
    is a :class:`CheckpointError` naming the file.

    Nothing is read before it is known to be needed: the path must be a regular file (a symlink to /dev/zero, a
    FIFO or a device is refused without reading), the header length and nesting are capped, and the file size
    must equal what the validated header implies before the tensors are read, into one buffer that the arrays
    view."""
    name = _file_path(path)
    try:
        with _open_regular_file(name) as f:
            return _read_checkpoint(f, os.fstat(f.fileno()).st_size, formats)
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot read checkpoint ({exc.strerror or exc})") from None


def _file_path(path: Any) -> Any:
    """``os.fspath(path)``, or an :class:`InputTypeError` naming what was given instead of a path (None, a number,
    an open file), before anything is read or written."""
    try:
        return os.fspath(path)
    except TypeError:
        raise InputTypeError(
            f"a checkpoint path must be a str or os.PathLike; got {type(path).__name__} {path!r:.60}"
        ) from None


@contextlib.contextmanager
def rebuilding(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Errors raised while a validated description (``what``: "model", "ensemble") is rebuilt as a model, as a
    :class:`CheckpointError` naming the file; a device error stays what it is."""
    try:
        yield
    except (CheckpointError, DeviceError):
        raise
    except GpunnError as exc:
        raise CheckpointError(f"{os.fspath(path)}: invalid {what} description ({exc})") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{os.fspath(path)}: invalid {what} description ({type(exc).__name__}: {exc})") from None


def file_format(path: str | os.PathLike[str]) -> str | None:
    """The gpunn format (:data:`FORMAT`, :data:`ENSEMBLE_FORMAT`) that the safetensors header of ``path`` names, or
    None where there is none: read as :func:`read` reads, the header alone (a FIFO or a device is not read)."""
    try:
        with _open_regular_file(os.fspath(path)) as f:
            header = _json(_read_header(f, os.fstat(f.fileno()).st_size).decode("utf-8"), "header")
    except (OSError, CheckpointError, ValueError):  # a JSON or UTF-8 error is a ValueError
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    kind = meta.get("format") if isinstance(meta, dict) else None
    return kind if kind in (FORMAT, ENSEMBLE_FORMAT) else None


def _open_regular_file(name: str) -> io.FileIO:
    """``name`` opened for reading, after checking (on the open descriptor) that it is a regular file.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; on a regular file it has no
    effect. Symlinks are followed, so a link to a checkpoint loads and a link to /dev/zero is refused."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(name, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise CheckpointError(
                f"not a regular file but {_file_kind(mode)}; a checkpoint is a file written by MLP.save, "
                "Ensemble.save or 'gpunn train --save'"
            )
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((kind for test, kind in kinds if test(mode)), "a special file")


_NOT_SAFETENSORS = (
    "not a safetensors file, or a corrupt one: this is not a gpunn checkpoint (gpunn.load reads what MLP.save, "
    "Ensemble.save and 'gpunn train --save' write)"
)


def _read_header(f: io.FileIO, size: int) -> bytes:
    """The header of a safetensors file of ``size`` bytes open at its start, after checking its length against
    the cap and the file size: nothing beyond it is read."""
    if size < 8:
        raise CheckpointError(f"file is truncated ({size} bytes; a safetensors header needs 8)")
    first = bytearray(8)
    if read_into(f, memoryview(first)) < 8:
        raise CheckpointError("file is truncated (it shrank while being read)")
    n = int.from_bytes(first, "little")
    if n > MAX_HEADER_BYTES:  # a text file or another format: its first 8 bytes are no header length
        raise CheckpointError(_NOT_SAFETENSORS)
    raw = bytearray(min(n, size - 8))
    got = read_into(f, memoryview(raw))
    if n and got and raw[:1] not in (b"{", b" "):  # a safetensors header is a JSON object
        raise CheckpointError(_NOT_SAFETENSORS)
    if 8 + n > size:
        raise CheckpointError(f"file is truncated: header claims {n} bytes but only {size - 8} follow")
    if got < n:
        raise CheckpointError("file is truncated (it shrank while being read)")
    return bytes(raw)


def _read_checkpoint(f: io.FileIO, size: int, formats: Collection[str]) -> Checkpoint:
    """Parse and check the header, check the file size against it, then read the tensors and the checksum."""
    raw = _read_header(f, size)
    header, config_json, config, digest, kind = _parse_header(raw, formats)
    if kind == ENSEMBLE_FORMAT:
        members = validate_ensemble(config)
        expected = _expected_ensemble_tensors(config, members)
    else:
        validate_config(config)
        members, expected = [], _expected_tensors(config)
    layout = _tensor_layout(header, expected)
    body = layout[-1][2] if layout else 0
    if 8 + len(raw) + body != size:
        raise CheckpointError(
            f"file is truncated or padded: tensors need {body} bytes of data, file has {size - 8 - len(raw)}"
        )
    buffer = np.empty(body, dtype=np.uint8)  # one allocation; every tensor is a view into it
    if read_into(f, buffer.data) < body:
        raise CheckpointError("file is truncated (it shrank while being read)")
    tensors = {key: buffer[start:stop].view(f"<{dtype}").reshape(shape) for key, start, stop, shape, dtype in layout}
    if _digest(config_json, tensors) != digest:
        raise CheckpointError("checksum mismatch: the file is corrupt")
    if kind == FORMAT:
        _attach_callback_state(config, tensors)
    for k, member in enumerate(members):
        names = _callback_tensor_names(member)
        if names:
            _attach_callback_state(member, {name: tensors[f"members.{k}.{name}"] for name in names})
    return Checkpoint(config, tensors, kind, members)


# What a file of one format is called where another is wanted.
_WRONG_FORMAT = {
    FORMAT: "not a gpunn ensemble file but one network's (a lone MLP's file loads with gpunn.load)",
    ENSEMBLE_FORMAT: "holds an ensemble, not one network (gpunn.load and gpunn.ensemble.load read it)",
}


def _parse_header(raw: bytes, formats: Collection[str]) -> tuple[dict[str, Any], str, Any, Any, str]:
    """``(tensor entries, config JSON, config, stored SHA-256, format)`` of a safetensors header whose gpunn
    metadata names one of ``formats`` and the right version; the config is parsed, not yet validated."""
    try:
        header = _json(raw.decode("utf-8"), "header")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"header is not valid JSON: corrupt file ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError("header is not a JSON object: corrupt file")
    meta = header.pop("__metadata__", None)
    kind = meta.get("format") if isinstance(meta, dict) else None
    if kind not in (FORMAT, ENSEMBLE_FORMAT):
        raise CheckpointError("not a gpunn checkpoint (no gpunn metadata in the safetensors header)")
    if kind not in formats:
        raise CheckpointError(_WRONG_FORMAT[kind])
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"format version {meta.get('format_version')!r} is not supported; this gpunn reads version "
            f"{FORMAT_VERSION} (a newer gpunn may have written it)"
        )
    config_json = meta.get("gpunn")
    if not isinstance(config_json, str):
        raise CheckpointError("the header has no gpunn model description: corrupt file")
    try:
        config = _json(config_json, "model description in the header")
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"model description in the header is not valid JSON ({exc})") from None
    return header, config_json, config, meta.get("sha256"), kind


# A JSON string (one left open runs to the end, so that the pattern never backtracks), and what is not a bracket.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _nesting(text: str) -> int:
    """How deep the arrays and objects of the JSON ``text`` nest, in time linear in its length (in invalid JSON,
    at least as deep as a decoder gets before it stops at the first error)."""
    brackets = np.frombuffer(_NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode(), dtype=np.uint8)
    deepest = level = 0
    for start in range(0, brackets.size, 1 << 20):  # 8 MB of levels at a time, whatever the header's length
        chunk = brackets[start : start + (1 << 20)]
        levels = level + np.cumsum(np.where((chunk == ord("[")) | (chunk == ord("{")), 1, -1))
        deepest, level = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def _json(text: str, what: str) -> Any:
    """``json.loads(text)``, refused as a :class:`CheckpointError` where it nests deeper than MAX_NESTING."""
    depth = _nesting(text)
    if depth > MAX_NESTING:
        raise CheckpointError(f"{what} nests {depth} levels deep, more than the {MAX_NESTING} a gpunn file may hold: "
                              "corrupt or crafted file")  # fmt: skip
    return json.loads(text)


def _tensor_layout(
    header: dict[str, Any], expected: dict[str, tuple[list[int], str, int]]
) -> list[tuple[str, int, int, list[int], str]]:
    """``(name, start, end, shape, NumPy dtype)`` of every tensor in file order, after checking that the header
    lists exactly the expected tensors, with their dtypes and shapes, packed end to end from offset 0."""
    missing = sorted(set(expected) - set(header))
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        raise CheckpointError(f"tensors do not match the architecture: missing {missing}, unexpected {extra}")
    layout = []
    for key, (shape, code, itemsize) in expected.items():
        info = header[key]
        if not isinstance(info, dict) or info.get("dtype") != code or info.get("shape") != shape:
            raise CheckpointError(f"tensor {key} is {info} but the architecture needs {code} of shape {shape}")
        offsets = info.get("data_offsets")
        size = math.prod(shape) * itemsize
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int for o in offsets)
            or offsets[0] < 0
            or offsets[1] - offsets[0] != size
        ):
            raise CheckpointError(f"tensor {key} has invalid data offsets {offsets}: corrupt file")
        layout.append((key, offsets[0], offsets[1], shape, f"f{itemsize}"))
    layout.sort(key=lambda t: t[1])
    end = 0
    for key, start, stop, _, _ in layout:
        if start != end:  # a gap or an overlap: safetensors packs tensors end to end
            raise CheckpointError(f"tensor {key} has invalid data offsets [{start}, {stop}]: corrupt file")
        end = stop
    return layout
