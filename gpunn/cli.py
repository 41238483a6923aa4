"""The ``gpunn`` command: train, predict, info."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import __version__, _backend, data, layers, losses, optim, schedules, stream
from . import callbacks as gpunn_callbacks
from .errors import ConfigError, GpunnError, InputError, NonFiniteError

EXIT_USAGE = 2


def _layers(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layers takes comma-separated integers like 10,10,10; got {text!r}"
        ) from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"every width in --layers must be at least 1; got {text!r}")
    return widths


def _columns(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"--features takes comma-separated column names like age,height; got {text!r}")
    return names


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gpunn`` command."""
    parser = argparse.ArgumentParser(
        prog="gpunn", description="Train and use dense neural networks on CPU (NumPy) or CUDA GPUs (CuPy)."
    )
    parser.add_argument("--version", action="version", version=f"gpunn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,predict,export,plot,info}")
    sub.required = True

    train = sub.add_parser(
        "train",
        help="train a network (with no options: the tutorial network on 'moons')",
        description="Train a network. With no options: the tutorial network 2-10-10-10-1 on the built-in 'moons' "
        "dataset. With --resume, options left out are taken from the checkpoint.",
    )
    src = train.add_argument_group("data")
    src.add_argument("--data", metavar="FILE", help="data file: .csv (header row), .csv.gz, .parquet, .feather, "
                     ".arrow, .npy or .npz (see gpunn.data.read)")  # fmt: skip
    src.add_argument("--target", metavar="COLUMN", help="the column to predict (required with --data; a .npy "
                     "file's by index, -1 the last; an .npz file's target array, such as y)")  # fmt: skip
    src.add_argument(
        "--features",
        type=_columns,
        metavar="COL,COL",
        help="the feature columns (default: every column but the target; others are not read)",
    )
    src.add_argument(
        "--sample-weight", metavar="COLUMN",
        help="the column of per-row weights of the training loss (a .npy file's by index; an .npz file's weight "
        "array); it is not a feature",
    )  # fmt: skip
    src.add_argument(
        "--stream", action="store_true", default=None,
        help="read --data (.parquet or .npy) a block at a time instead of loading it: for files larger than memory",
    )  # fmt: skip
    src.add_argument("--dataset", choices=data.DATASETS, help="built-in dataset (default: moons)")
    src.add_argument("--samples", type=_positive_int, help="rows of the built-in dataset (default: 1000)")
    src.add_argument("--test-size", type=float, help="fraction held out for testing (default: 0.2)")
    net = train.add_argument_group("network")
    net.add_argument("--layers", type=_layers, help="hidden widths (default: 10,10,10)")
    net.add_argument("--activation", choices=layers.ACTIVATIONS, help="hidden activation (default: relu)")
    net.add_argument(
        "--output", choices=(*losses.OUTPUTS, "auto"),
        help="output layer (default with --data: auto, from the target: two values sigmoid, more integer values "
        "softmax, else identity; built-in datasets: softmax for 'spirals', else sigmoid)",
    )  # fmt: skip
    net.add_argument(
        "--dropout", type=float, metavar="RATE",
        help="drop this fraction of every hidden layer's outputs while training (default: 0)",
    )  # fmt: skip
    fit = train.add_argument_group("training")
    fit.add_argument("--epochs", type=_nonnegative_int, help="total epochs (default: 1000)")
    fit.add_argument("--lr", type=float, help="learning rate (default: 0.1)")
    fit.add_argument("--batch-size", type=_positive_int, help="minibatch size (default: full batch)")
    fit.add_argument("--optimizer", choices=optim.OPTIMIZERS, help="(default: sgd)")
    fit.add_argument("--clip-norm", type=float, help="clip the gradients' global L2 norm to this")
    fit.add_argument("--weight-decay", type=float, help="AdamW's decoupled weight decay (with --optimizer adamw)")
    fit.add_argument(
        "--schedule", choices=schedules.SCHEDULES,
        help="learning-rate schedule from --lr: step (x0.1 every third of the epochs), cosine (down to 0 at the "
        "last epoch), plateau (x0.1 after 10 epochs without a better validation loss) (default: constant)",
    )  # fmt: skip
    fit.add_argument(
        "--early-stopping", type=_nonnegative_int, metavar="PATIENCE",
        help="stop after PATIENCE epochs without a better loss on a validation split of the training rows, "
        "and keep the best epoch",
    )  # fmt: skip
    fit.add_argument("--validation-split", type=float, help="training rows held out for --early-stopping (default 0.1)")
    fit.add_argument("--class-weight", choices=["balanced"], help="weight each class by n / (classes * count)")
    fit.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    fit.add_argument("--dtype", choices=_backend.DTYPES, help="(default: float32)")
    fit.add_argument("--seed", type=_nonnegative_int, help="seed of weights, split and shuffling (default: 0)")
    out = train.add_argument_group("output")
    out.add_argument("--save", metavar="PATH", help="write the trained model (safetensors)")
    out.add_argument("--checkpoint", metavar="PATH", help="save the model after every epoch (and on Ctrl-C)")
    out.add_argument("--resume", metavar="PATH", help="continue a checkpoint up to --epochs in total")
    out.add_argument("--history", metavar="PATH", help="write per-epoch loss and accuracy (JSON)")
    out.add_argument("--plot", metavar="PNG", help="draw the decision boundary over the test points (2 features)")
    out.add_argument("-q", "--quiet", action="store_true", help="print only the final result")
    train.add_argument(
        "--distributed", action="store_true",
        help="data-parallel over MPI ranks (launch with mpiexec -n N); --batch-size is the global batch",
    )  # fmt: skip
    train.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    predict = sub.add_parser("predict", help="predict with a saved model")
    predict.add_argument("--model", required=True, metavar="PATH", help="a model written by 'gpunn train --save'")
    predict.add_argument("--data", required=True, metavar="FILE",
                         help="data file with the model's feature columns (any format of --data of train)")  # fmt: skip
    predict.add_argument("--out", metavar="FILE", help="write predictions here (default: standard output)")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    predict.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    plot = sub.add_parser("plot", help="draw loss and accuracy curves from a history file")
    plot.add_argument("history", metavar="HISTORY.json", help="a file written by 'gpunn train --history'")
    plot.add_argument("-o", "--out", default="curves.png", metavar="PNG", help="image to write (default: curves.png)")
    plot.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    export = sub.add_parser(
        "export",
        help="write a saved model as an ONNX graph (pip install 'gpunn[onnx]')",
        description="Write a model saved by 'gpunn train --save' as an ONNX graph: input X (batch, features), "
        "outputs probabilities and label (classifiers) or values (regression); see docs/export.md.",
    )
    export.add_argument("--model", required=True, metavar="PATH", help="a model written by 'gpunn train --save'")
    export.add_argument("--onnx", required=True, metavar="PATH", help="the ONNX file to write")
    export.add_argument("--opset", type=_positive_int, help="ONNX operator set, 13 or newer (default: 17)")
    export.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    info = sub.add_parser("info", help="versions, array namespaces, CUDA devices and BLAS")
    info.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    comm = None
    try:
        if getattr(args, "distributed", False):
            from .distributed import Communicator

            comm = args.comm = Communicator(abort_on_error=False)
        commands = {
            "train": cmd_train, "predict": cmd_predict, "export": cmd_export, "plot": cmd_plot, "info": cmd_info
        }  # fmt: skip
        return commands[args.command](args)
    except BrokenPipeError:  # the reader went away (gpunn predict ... | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        if comm is None and (args.debug or not isinstance(exc, (GpunnError, OSError))):
            raise
        if isinstance(exc, NonFiniteError):
            code, message = 1, f"gpunn: {exc}"
        elif isinstance(exc, GpunnError):
            code, message = EXIT_USAGE, f"gpunn: error: {exc}"
        elif isinstance(exc, OSError):
            code, message = EXIT_USAGE, f"gpunn: error: {exc.filename or ''}: {exc.strerror or exc}"
        else:
            code, message = 1, f"gpunn: error: {type(exc).__name__}: {exc}"
        if comm is not None:
            # One rank failing stops them all: the others may be waiting in a collective.
            print(f"{message} (rank {comm.rank} of {comm.size}; stopping every rank)", file=sys.stderr, flush=True)
            comm.comm.Abort(code)
        print(message, file=sys.stderr)
        return code


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
    (X, target, names, _), w = data._read(s["data"], s["target"], s["features"], s["dtype"], s["sample_weight"])
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
    ds = stream.Dataset(s["data"], target, features, weight=weight)
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
    from .checkpoint import load
    from .model import MLP

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
        from . import plot

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


def cmd_predict(args: argparse.Namespace) -> int:
    """``gpunn predict``."""
    from .checkpoint import load

    model = load(args.model, device=args.device)
    # the model's feature columns by name, in its order (every column when it has no names); others are not read
    X = data.read(args.data, features=model.feature_names, dtype=model.dtype).X
    labels = _backend.to_numpy(model.predict(X))
    if model.metadata.get("classes") is not None:  # trained on labels other than 0..k-1: write those back
        labels = np.asarray(model.metadata["classes"])[labels]
    proba = _backend.to_numpy(model.predict_proba(X))
    if model.output == "identity":
        cols = [proba[:, j] for j in range(model.n_outputs)]
        names = ["prediction"] if model.n_outputs == 1 else [f"prediction_{j}" for j in range(model.n_outputs)]
    elif model.output == "sigmoid" and model.n_outputs == 1:
        cols, names = [labels, proba[:, 0]], ["prediction", "probability"]
    else:
        k = model.n_outputs
        label_cols = [labels] if labels.ndim == 1 else [labels[:, j] for j in range(k)]
        label_names = ["prediction"] if labels.ndim == 1 else [f"prediction_{j}" for j in range(k)]
        cols, names = label_cols + [proba[:, j] for j in range(k)], label_names + [f"p{j}" for j in range(k)]
    data.write_csv(args.out, names, cols)
    if args.out:
        print(f"{len(X)} predictions written to {args.out}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``gpunn export``."""
    from .checkpoint import load
    from .export import to_onnx

    model = load(args.model, device="cpu")  # the weights go to the host anyway: no GPU needed
    path = to_onnx(model, args.onnx, opset=args.opset)
    outputs = "values" if model.output == "identity" else "probabilities, label"
    print(f"{args.model} exported to {path} (input X: batch x {model.n_features} {model.dtype}; outputs {outputs})")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``gpunn plot``."""
    from . import plot

    plot.save(plot.history(args.history, title=args.history), args.out)
    print(f"curves drawn to {args.out}")
    return 0


def info_lines() -> list[str]:
    """What ``gpunn info`` prints."""
    lines = [f"gpunn {__version__}", f"python {platform.python_version()} ({platform.machine()})"]
    lines.append("array namespaces:")
    for name, version in _backend.available_namespaces().items():
        lines.append(f"  {name} {version}")
    count, why = _backend.gpu_status()
    if count:
        import cupy

        for i in range(count):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            lines.append(f"cuda:{i}: {props['name'].decode() if isinstance(props['name'], bytes) else props['name']}")
    else:
        lines.append(f"CUDA: none usable ({why})")
    lines.append(f"device 'auto' uses: {'cupy on cuda:0' if count else 'numpy on cpu'}")
    lines.append(f"BLAS: {_blas_description()}")
    return lines


def _blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            return "; ".join(
                f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')}, {p.get('num_threads')} threads)"
                for p in pools
            )
    except ImportError:
        pass
    try:
        config: Any = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')} (numpy build)"
    except Exception:
        return "unknown"


def cmd_info(args: argparse.Namespace) -> int:
    """``gpunn info``."""
    print("\n".join(info_lines()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
