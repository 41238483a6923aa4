"""The ``gpunn`` command's arguments: the parser and the option types that check them."""

from __future__ import annotations

import argparse

from .. import __version__, _backend, data, layers, losses, optim, schedules


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
