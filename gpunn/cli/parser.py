"""The ``gpunn`` command's arguments: the parser and the option types that check them."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from .. import _backend, data, layers, losses, optim, presets, schedules
from .._version import __version__
from ..errors import InputError

MAX_SAMPLES = 10_000_000  # rows of a built-in dataset: 160 MB of float64 features, well short of a memory error


class Parser(argparse.ArgumentParser):
    """argparse, with an argument error as one line (``gpunn train: error: argument --epochs: ...``) and exit
    status 2, instead of the whole usage block above it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _layers(text: str) -> list[int]:
    if not text.strip():
        return []  # no hidden layer: a linear (or logistic) model
    try:
        widths = [int(w) for w in text.split(",")]  # an empty item (64,,32) is an error, not skipped
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 10,10,10; got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"every width must be at least 1; got {text!r}")
    return widths


def _columns(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"--features takes comma-separated column names like age,height; got {text!r}")
    return names


def _samples(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_SAMPLES:,} rows, got {value:,}")
    return value


def _fraction(text: str, low_inclusive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.2, got {text!r}") from None
    if not (0.0 <= value < 1.0 if low_inclusive else 0.0 < value < 1.0):
        raise argparse.ArgumentTypeError(f"expected a fraction in {'[0' if low_inclusive else '(0'}, 1), got {text}")
    return value


def _test_size(text: str) -> float:
    return _fraction(text, low_inclusive=True)


def _validation_split(text: str) -> float:
    return _fraction(text, low_inclusive=False)


def _delimiter(text: str) -> str:
    value = {"tab": "\t", "\\t": "\t"}.get(text, text)
    if len(value) != 1 or value in '\r\n"':
        raise argparse.ArgumentTypeError(f"expected one character such as ';' or tab, got {text!r}")
    return value


def _labels(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"--classes takes comma-separated labels like no,yes; got {text!r}")
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
    parser = Parser(prog="gpunn", description="Train and use dense neural networks on CPU (NumPy) or CUDA GPUs (CuPy).")
    parser.add_argument("--version", action="version", version=f"gpunn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,predict,export,plot,info}")
    sub.required = True

    train = sub.add_parser(
        "train",
        help="train a network (with no options: the tutorial network on 'moons')",
        description="Train a network. With no options: the tutorial network 2-10-10-10-1 on the built-in 'moons' "
        "dataset. With --data FILE, the defaults are the tabular preset's (see --preset). With --resume, options "
        "left out are taken from the checkpoint.",
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
    src.add_argument("--samples", type=_samples, help="rows of the built-in dataset (default: 1000)")
    src.add_argument("--test-size", type=_test_size,
                     help="fraction held out for testing, in [0, 1); 0 trains on every row (default: 0.2)")  # fmt: skip
    src.add_argument("--delimiter", type=_delimiter, metavar="CHAR",
                     help="the CSV field separator, such as ';' or tab (default: ',', tab for .tsv)")  # fmt: skip
    src.add_argument(
        "--max-categories", type=_positive_int, metavar="N",
        help="the most categories a text column may one-hot encode into (default: 32); categories seen once go "
        "into one 'other' column",
    )  # fmt: skip
    net = train.add_argument_group("network")
    net.add_argument("--layers", type=_layers, help="hidden widths (default: 10,10,10; tabular 128,128)")
    net.add_argument("--activation", choices=layers.ACTIVATIONS, help="hidden activation (default: relu)")
    net.add_argument(
        "--output", choices=(*losses.OUTPUTS, "auto"),
        help="output layer (default with --data: auto, from the target: two values sigmoid, a few whole numbers or "
        "text labels softmax, else identity; built-in datasets: softmax for 'spirals', else sigmoid; exp for counts: "
        "Poisson regression, trained on the Poisson deviance, predicting the mean)",
    )  # fmt: skip
    net.add_argument(
        "--dropout", type=float, metavar="RATE",
        help="drop this fraction of every hidden layer's outputs while training (default: 0; tabular 0.1)",
    )  # fmt: skip
    net.add_argument(
        "--members", type=_positive_int, metavar="K",
        help="train K networks of seeds --seed, --seed+1, ... together as one ensemble (gpunn.Ensemble): the "
        "test report gives the members' mean score and the ensemble's; --save writes the ensemble",
    )  # fmt: skip
    fit = train.add_argument_group(
        "training",
        "defaults: the tabular preset's with --data, the tutorial's on a built-in dataset (docs/cli.md)",
    )  # fmt: skip
    fit.add_argument(
        "--preset", choices=presets.PRESETS,
        help="defaults of every option below and of --layers and --dropout: tabular (with --data: 128,128 layers, "
        "dropout 0.1, adamw, lr 0.001 on a cosine schedule, weight decay 0.01, batches of about a tenth of the rows "
        "(16 to 256), 200 epochs, early stopping 40 on a 0.1 validation split, label smoothing 0.1) or tutorial "
        "(10,10,10 layers, sgd, lr 0.1, full batch, 1000 epochs)",
    )  # fmt: skip
    fit.add_argument("--epochs", type=_nonnegative_int, help="total epochs (default: 1000; tabular 200)")
    fit.add_argument("--lr", type=float, help="learning rate (default: 0.1; tabular 0.001)")
    fit.add_argument("--batch-size", type=_positive_int,
                     help="minibatch size (default: full batch; tabular: sized to the file)")  # fmt: skip
    fit.add_argument("--optimizer", choices=optim.OPTIMIZERS, help="(default: sgd; tabular adamw)")
    fit.add_argument(
        "--label-smoothing", type=_test_size, metavar="E",
        help="train a classifier on targets (1 - E) y + E / classes, in [0, 1) (default: 0; tabular 0.1)",
    )  # fmt: skip
    fit.add_argument("--clip-norm", type=float, help="clip the gradients' global L2 norm to this")
    fit.add_argument("--weight-decay", type=float, help="AdamW's decoupled weight decay (with --optimizer adamw)")
    fit.add_argument(
        "--schedule", choices=schedules.SCHEDULES,
        help="learning-rate schedule from --lr: step (x0.1 every third of the epochs), cosine (down to 0 at the "
        "last epoch), plateau (x0.1 after 10 epochs without a better validation loss, or training loss without "
        "--validation-split) (default: constant)",
    )  # fmt: skip
    fit.add_argument(
        "--early-stopping", type=_nonnegative_int, metavar="PATIENCE",
        help="stop after PATIENCE epochs without a better loss on a validation split of the training rows, "
        "and keep the best epoch",
    )  # fmt: skip
    fit.add_argument(
        "--validation-split", type=_validation_split, metavar="F",
        help="hold out this fraction of the training rows for validation (the val_* columns, --schedule plateau, "
        "--early-stopping; default: none, or 0.1 with --early-stopping)",
    )  # fmt: skip
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
    train.add_argument(
        "--parallel", choices=["rows", "members"],
        help="with --distributed and --members: 'rows' (the default) trains every member on every rank, on its "
        "shard of each batch; 'members' gives each rank its own members, trained on every row and gathered at the "
        "end (and for --checkpoint after every epoch)",
    )  # fmt: skip
    train.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    predict = sub.add_parser("predict", help="predict with a saved model")
    predict.add_argument("--model", required=True, metavar="PATH", help="a model written by 'gpunn train --save'")
    predict.add_argument("--data", required=True, metavar="FILE",
                         help="data file with the model's feature columns (any format of --data of train)")  # fmt: skip
    predict.add_argument("--out", metavar="FILE", help="write predictions here (default: standard output)")
    predict.add_argument("--delimiter", type=_delimiter, metavar="CHAR",
                         help="the CSV field separator of --data (default: ',', tab for .tsv)")  # fmt: skip
    predict.add_argument("--std", action="store_true",
                         help="an ensemble's spread too: the members' standard deviation of every output column, "
                         "named std_<column>")  # fmt: skip
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
        "outputs probabilities and label (classifiers) or values (regression); an ensemble's graph computes every "
        "member and outputs their mean, and std, their standard deviation; see docs/export.md.",
    )
    export.add_argument("--model", required=True, metavar="PATH",
                        help="a model or ensemble written by 'gpunn train --save'")  # fmt: skip
    export.add_argument("--onnx", required=True, metavar="PATH", help="the ONNX file to write")
    export.add_argument("--opset", type=_positive_int, help="ONNX operator set, 13 or newer (default: 17)")
    export.add_argument(
        "--classes", type=_labels, metavar="A,B",
        help="the labels the graph's label output gives, in class order (default: the model's own, as it was "
        "trained on them)",
    )  # fmt: skip
    export.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    info = sub.add_parser("info", help="versions, array namespaces, CUDA devices and BLAS")
    info.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def check_settings(stored: Any, source: str) -> dict[str, Any]:
    """The training settings a checkpoint holds (``model.metadata["train"]``), each put through the check of its
    command-line option: a checkpoint is not signed, so an edited one is refused as a bad flag would be."""
    if not isinstance(stored, dict):
        raise InputError(f"{source}: its training settings are not a mapping: {type(stored).__name__}")
    train = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    actions = {a.dest: a for a in train._actions}
    checked = {}
    for key, value in stored.items():
        if key in actions and value is not None:  # others are not options (nothing reads them) or at their default
            checked[key] = _check_setting(actions[key], value, source)
    return checked


def _check_setting(action: argparse.Action, value: Any, source: str) -> Any:
    why = None
    if isinstance(value, bool) != (action.nargs == 0):  # only a switch (--stream) holds a bool
        why = "a switch is true or false" if action.nargs == 0 else "expected a value, not true or false"
    elif action.nargs == 0:
        return value
    elif not isinstance(value, (str, int, float, list)) or (isinstance(value, list) and action.dest != "layers"
                                                            and action.dest != "features"):  # fmt: skip
        why = f"expected a {'number' if action.type else 'name'}, not {type(value).__name__}"
    else:
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        try:
            converted = action.type(text) if callable(action.type) else text
        except (argparse.ArgumentTypeError, ValueError) as exc:
            why = str(exc) or "not a valid value"
        else:
            if action.choices is None or converted in action.choices:
                return converted
            why = f"expected one of {', '.join(map(str, action.choices))}"
    raise InputError(f"{source}: the stored training setting {action.option_strings[-1]} {value!r} is refused: {why}")
