"""``gpunn train``: settings (given, resumed or default), the data plan, training and what is written."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

import numpy as np

from .. import __version__, _backend, data, schedules
from .. import callbacks as gpunn_callbacks
from ..errors import ConfigError, InputError, NonFiniteError

# Settings of `gpunn train` that a checkpoint remembers, with their defaults.
TRAIN_DEFAULTS: dict[str, Any] = {
    "data": None, "target": None, "features": None, "dataset": "moons", "samples": None, "test_size": 0.2,
    "layers": [10, 10, 10], "activation": "relu", "output": None, "dtype": "float32",
    "epochs": 1000, "lr": 0.1, "batch_size": None, "optimizer": "sgd", "clip_norm": None, "seed": 0,
    "weight_decay": None, "schedule": "constant", "early_stopping": None, "validation_split": 0.1,
    "class_weight": None, "dropout": 0.0, "stream": False, "sample_weight": None,
}  # fmt: skip
ARCHITECTURE = ("layers", "activation", "output", "dtype", "dropout", "features")


def _train_settings(args: argparse.Namespace, stored: dict[str, Any]) -> dict[str, Any]:
    """Each option as given, else as the resumed checkpoint had it, else its default."""
    settings = {}
    for key, default in TRAIN_DEFAULTS.items():
        given = getattr(args, key)
        if given is not None and key in ARCHITECTURE and key in stored and given != stored[key]:
            raise InputError(f"--{key.replace('_', '-')} {given} differs from the resumed checkpoint's {stored[key]}")
        settings[key] = given if given is not None else stored.get(key, default)
    if settings["output"] is None:
        if settings["data"] is not None:
            settings["output"] = "auto"
        else:
            settings["output"] = "softmax" if settings["dataset"] == "spirals" else "sigmoid"
    return settings


def _output_for(y: np.ndarray, output: str, source: str) -> tuple[str, np.ndarray, list[Any] | None]:
    """(output layer, targets as the model takes them, the original class labels or None).

    "auto" reads the target: two distinct values make a binary classifier, more integer values several classes,
    anything else a regression. Class labels other than 0..k-1 (say 3 and 7) are trained as their indices and
    kept, so that predictions are written back as the labels they were. A non-numeric target (yes/no, species
    names) is read as class labels the same way."""
    if y.dtype.kind in "OUS":  # text labels
        text = y.astype(str)
        values = np.unique(text).astype(object)  # Python str, so that messages show 'no', not np.str_('no')
        if output == "identity":
            raise InputError(f"{source}: output 'identity' needs numbers in the target, which holds text such as "
                             f"{values[0]!r}")  # fmt: skip
        if values.size < 2:
            raise InputError(f"{source}: the target holds a single class ({values[0]!r}); a classifier needs two")
        if output == "auto":
            output = "sigmoid" if values.size == 2 else "softmax"
        if output == "sigmoid" and values.size > 2:
            raise InputError(f"{source}: output 'sigmoid' needs two classes; the target has {values.size}")
        return output, np.searchsorted(values, text).astype(np.int64), values.tolist()
    whole = bool(np.all(y == np.round(y)))
    values = np.unique(y)
    if output == "auto":
        output = "identity" if not whole or values.size < 2 else "sigmoid" if values.size == 2 else "softmax"
    if output == "identity":
        return output, y, None
    if not whole:
        raise InputError(f"{source}: output {output!r} needs class labels in the target, which holds fractions")
    canonical = values.min() >= 0 and (values.max() <= 1 if output == "sigmoid" else True)
    if canonical:
        return output, y, None
    if output == "sigmoid" and values.size > 2:
        raise InputError(f"{source}: output 'sigmoid' needs two classes; the target has {values.size}")
    return output, np.searchsorted(values, y).astype(y.dtype), [int(v) for v in values]


def _schedule(s: dict[str, Any]) -> Any:
    """The learning rate of the settings: a number, or the schedule named by --schedule."""
    lr, epochs = s["lr"], max(1, s["epochs"])
    return {
        "constant": lambda: lr,
        "step": lambda: schedules.step(lr, every=max(1, epochs // 3)),
        "cosine": lambda: schedules.cosine(lr, epochs),
        "plateau": lambda: schedules.plateau(lr),
    }[s["schedule"]]()


def _describe(asked: str, output: str) -> str:
    return f"{output} output, chosen from the target" if asked == "auto" else output


def _load_training_data(
    s: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str, list[str] | None]:
    """``(X, y, sample weights or None, source, feature names)``."""
    if s["data"] is None:
        for option in ("target", "features", "sample_weight"):
            if s[option] is not None:
                raise InputError(f"--{option.replace('_', '-')} needs --data FILE")
        X, y = data.make_dataset(s["dataset"], s["samples"], seed=s["seed"])
        return X, y, None, f"built-in dataset '{s['dataset']}'", None
    if s["target"] is None:
        raise InputError(f"--data {s['data']} needs --target COLUMN to name the column to predict")
    # .csv, .csv.gz, .parquet, .feather/.arrow, .npy, .npz; X straight in the model's dtype, no float64 copy
    (X, target, names, _), w = data.readers._read(s["data"], s["target"], s["features"], s["dtype"], s["sample_weight"])
    assert target is not None  # read returns the target column when it is asked for one
    return X, target, w, s["data"], names


@dataclasses.dataclass
class _Plan:
    """The data of one ``gpunn train``: (X, y) pairs held in memory, or streamed Datasets with y None."""

    train: tuple[Any, Any]
    weight: np.ndarray | None  # the training rows' sample weights, in memory (a streamed Dataset has its own)
    test: tuple[Any, Any]
    validation: Any  # (X, y), or a Dataset
    output: str
    n_outputs: int
    classes: list[Any] | None
    source: str
    names: list[str] | None
    n_features: int

    @staticmethod
    def rows(part: Any) -> int:
        return len(part[0]) if isinstance(part, tuple) else len(part)


def _weights_split(w: np.ndarray | None, test_size: float, seed: int) -> np.ndarray | None:
    """The weights of the rows that ``data.train_test_split`` with this seed keeps for training (its order
    depends on the row count and the seed only)."""
    return None if w is None else data.train_test_split(w, w, test_size=test_size, seed=seed)[0]


def _in_memory_data(s: dict[str, Any]) -> _Plan:
    X, y, w, source, names = _load_training_data(s)
    output, y, classes = _output_for(y, s["output"], source)
    n_outputs = max(int(y.max()) + 1, 2) if output == "softmax" else 1
    # In place, as fit(copy=False) scales X_train: a large CSV is held once, not three times.
    X_train, X_test, y_train, y_test = data.train_test_split(X, y, test_size=s["test_size"], seed=s["seed"], copy=False)
    w = _weights_split(w, s["test_size"], s["seed"])  # the test rows are evaluated unweighted
    validation: Any = (X_test, y_test)
    if s["early_stopping"] is not None:  # its own split of the training rows: the test rows stay unseen
        X_train, X_val, y_train, y_val = data.train_test_split(
            X_train, y_train, test_size=s["validation_split"], seed=s["seed"], copy=False
        )
        w = _weights_split(w, s["validation_split"], s["seed"])
        validation = (X_val, y_val)
    return _Plan((X_train, y_train), w, (X_test, y_test), validation, output, n_outputs, classes, source, names,
                 X.shape[1])  # fmt: skip


def _streamed_data(s: dict[str, Any]) -> _Plan:
    """--stream: the file read a block at a time; test (and validation) rows are whole blocks drawn at random."""
    if s["data"] is None or s["target"] is None:
        raise InputError("--stream trains from a file: give --data FILE.parquet (or .npy) and --target COLUMN")
    target: Any = s["target"]
    features: Any = s["features"]
    weight: Any = s["sample_weight"]
    if s["data"].lower().endswith(".npy"):  # columns by number
        target = _npy_column("target", target)
        if features is not None:
            if not all(f.lstrip("-").isdigit() for f in features):
                raise InputError(f"--features of an .npy file are column numbers; got {','.join(features)}")
            features = [int(f) for f in features]
        if weight is not None:
            weight = _npy_column("sample-weight", weight)
    if s["class_weight"] is not None:
        raise ConfigError("--class-weight is not available with --stream: give the file a column of each row's "
                         "weight and name it with --sample-weight COLUMN")  # fmt: skip
    ds = data.Dataset(s["data"], target, features, weight=weight)
    train, test = ds.split(s["test_size"], seed=s["seed"])
    validation: Any = test
    if s["early_stopping"] is not None:
        train, validation = train.split(s["validation_split"], seed=s["seed"])
    output, n_outputs = _stream_output(ds, s["output"], s["data"])
    return _Plan((train, None), None, (test, None), validation, output, n_outputs, None, s["data"],
                 ds.feature_names, ds.n_features)  # fmt: skip


def _npy_column(option: str, text: str) -> int:
    if not text.lstrip("-").isdigit():
        raise InputError(f"--{option} of an .npy file is a column number; got {text!r}")
    return int(text)


def _stream_output(ds: Any, output: str, source: str) -> tuple[str, int]:
    """The output layer and its width from one pass over the target column (its distinct values, up to a few
    hundred). Streamed class labels are taken as they are: 0/1, or 0..k-1."""
    values: set[float] = set()
    whole = True
    for y in ds.target_blocks():
        if y.dtype.kind not in "biuf":
            raise InputError(f"{source}: --stream needs a numeric target column; {ds.target_name!r} is {y.dtype}")
        whole = whole and bool(np.all(y == np.round(y)))
        if len(values) <= 256:
            values |= set(np.unique(y).tolist())
    if output == "auto":
        output = "identity" if not whole or len(values) > 256 or len(values) < 2 else (
            "sigmoid" if len(values) == 2 else "softmax")  # fmt: skip
    if output == "identity":
        return output, 1
    labels = sorted(values)
    wanted = [0, 1] if output == "sigmoid" else list(range(int(max(labels)) + 1))
    if not whole or not set(labels) <= set(wanted):
        raise InputError(
            f"{source}: with --stream, class labels are used as they are: 0/1 for sigmoid, 0..k-1 for softmax; "
            f"the target holds {labels[:10]}{'...' if len(labels) > 10 else ''}"
        )
    return output, max(len(wanted), 2) if output == "softmax" else 1


def cmd_train(args: argparse.Namespace) -> int:
    """``gpunn train``."""
    from ..checkpoint import load
    from ..model import MLP

    comm = getattr(args, "comm", None)
    lead = comm is None or comm.rank == 0  # only rank 0 prints and writes files
    device = comm.device() if comm is not None and args.device == "auto" else args.device
    quiet = args.quiet or not lead
    if lead:
        _check_outputs(args)  # before training: a path that cannot be written must not cost the trained model
    resumed = load(args.resume, device=device) if args.resume else None
    s = _train_settings(args, resumed.metadata.get("train", {}) if resumed else {})
    if s["stream"]:
        plan = _streamed_data(s)
    else:
        plan = _in_memory_data(s)
    output, n_outputs, classes, source = plan.output, plan.n_outputs, plan.classes, plan.source
    if args.plot and (plan.n_features != 2 or output == "identity" or s["stream"]):
        raise InputError(f"--plot draws a decision boundary, which needs a classifier on 2 features held in memory; "
                         f"{source} has {plan.n_features} feature(s) and output {output!r}")  # fmt: skip
    sizes = [plan.n_features, *s["layers"], n_outputs]
    if resumed is not None:
        if resumed.sizes != sizes:
            raise InputError(f"{source} gives a network of sizes {sizes} but {args.resume} holds {resumed.sizes}")
        model = resumed
    else:
        model = MLP(
            sizes, activation=s["activation"], output=output, seed=s["seed"], device=device,
            dtype=s["dtype"], standardize=True, dropout=s["dropout"],
        )  # fmt: skip
        model.feature_names, model.target_name = plan.names, s["target"]
    model.metadata["train"] = s
    if classes is not None:
        model.metadata["classes"] = classes
    remaining = max(s["epochs"] - model.epoch, 0)
    if resumed is not None and lead:
        if not remaining:
            print(f"gpunn: note: {args.resume} has trained {model.epoch} epochs, --epochs {s['epochs']}: nothing to "
                  f"train (raise --epochs to continue)", file=sys.stderr)  # fmt: skip
        elif not (args.save or args.checkpoint):
            print(f"gpunn: note: the resumed training is not saved: add --save PATH or --checkpoint PATH "
                  f"({args.resume} itself is left as it is)", file=sys.stderr)  # fmt: skip
    if not quiet:
        held_out = f"{plan.rows(plan.validation)} validation / " if s["early_stopping"] is not None else ""
        done = f", resuming at epoch {model.epoch}" if resumed is not None else ""
        if comm is not None:
            done += f", data-parallel over {comm.size} ranks"
        print(
            f"gpunn {__version__}: training {model.sizes} ({s['activation']}, {_describe(s['output'], output)}"
            f"{f', dropout {model.dropout:g}' if model.dropout else ''}) "
            f"on {source}{', streamed' if s['stream'] else ''}, "
            f"{plan.rows(plan.train)} train / {held_out}{plan.rows(plan.test)} test rows, "
            f"{_backend.namespace_name(model.xp)} on {model.device}, {s['dtype']}{done}"
        )
    X_train, y_train = plan.train
    X_test, y_test = plan.test
    callbacks: list[Any] = [lambda m, record: m.save(args.checkpoint)] if args.checkpoint and lead else []
    stopping = None
    if s["early_stopping"] is not None:  # before the checkpoint: a stop restores the best epoch, then it is saved
        stopping = gpunn_callbacks.EarlyStopping(patience=s["early_stopping"])
        if resumed is not None and "early_stopping" in resumed.metadata.get("callbacks", {}):
            stopping.load_state_dict(resumed.metadata["callbacks"]["early_stopping"])
        if lead and (args.checkpoint or args.save):  # its state is saved with the model: a resume stops as this run
            callbacks.insert(0, stopping.store_state)
        callbacks.insert(0, stopping)
    try:
        model.fit(
            X_train, y_train, epochs=remaining, lr=_schedule(s), batch_size=s["batch_size"],
            optimizer=s["optimizer"], clip_norm=s["clip_norm"], weight_decay=s["weight_decay"],
            class_weight=s["class_weight"], sample_weight=plan.weight, validation_data=plan.validation,
            verbose=0 if quiet else 1,
            callbacks=callbacks, comm=comm, copy=False,
        )  # fmt: skip
    except KeyboardInterrupt:
        path = args.checkpoint or args.save
        if not lead:
            return 130
        if path:
            model.save(path)
            print(f"\ngpunn: interrupted after epoch {model.epoch}; saved to {path} (continue with --resume {path})",
                  file=sys.stderr)  # fmt: skip
        else:
            print(f"\ngpunn: interrupted after epoch {model.epoch}; nothing saved (use --checkpoint PATH)",
                  file=sys.stderr)  # fmt: skip
        return 130
    except NonFiniteError as exc:
        if lead:  # every rank sees the same divergence; one reports it
            kept = f"; {args.checkpoint} holds the last good epoch" if args.checkpoint and model.epoch else ""
            print(f"gpunn: {exc}{kept}", file=sys.stderr)
        return 1
    if not lead:
        return 0
    if stopping is not None and stopping.stopped_epoch is not None and not quiet:
        print(f"stopped early after epoch {stopping.stopped_epoch}: val_loss did not improve for {stopping.patience} "
              f"epochs; restored epoch {stopping.best_epoch} (val_loss {stopping.best:.4f})")  # fmt: skip
    result = model.evaluate(X_test, y_test)
    if "accuracy" in result:
        print(f"test accuracy {result['accuracy']:.4f}  (test loss {result['loss']:.4f})")
    else:
        print(f"test mse {result['loss']:.6g}")
    if args.save:  # the model before the other files: it is what the run was for
        model.save(args.save)
        if not args.quiet:
            print(f"model saved to {args.save}")
    if args.history:
        model.history.save(args.history)
    if args.plot:
        from .. import plot

        plot.save(plot.decision_boundary(model, X_test, y_test), args.plot)
        if not args.quiet:
            print(f"decision boundary drawn to {args.plot}")
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Every file ``gpunn train`` will write goes into a folder that exists and can be written, and --plot has
    matplotlib: checked before training, not found out after it."""
    import importlib.util

    for option, path in (("--save", args.save), ("--checkpoint", args.checkpoint), ("--history", args.history),
                         ("--plot", args.plot)):  # fmt: skip
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise InputError(f"{option} {path}: is a folder; give a file path")
        if not os.path.isdir(folder):
            raise InputError(f"{option} {path}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise InputError(f"{option} {path}: the folder {folder} cannot be written")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("--plot needs matplotlib: pip install 'gpunn[plot]'")
