"""``gpunn predict``, ``export``, ``plot`` and ``info``."""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Any

import numpy as np

from .. import _backend, data, feed, losses
from .._version import __version__
from ..errors import InputError


def cmd_predict(args: argparse.Namespace) -> int:
    """``gpunn predict``."""
    from .._load import load
    from .ensemble import is_ensemble

    model = load(args.model, device=args.device)
    if args.std and not is_ensemble(model):
        raise InputError(f"--std is the spread of an ensemble's members; {args.model} holds one network (train "
                         "one with gpunn train --members K)")  # fmt: skip
    X, y = _predict_data(model, args)
    predicted = _backend.to_numpy(model.predict(X))  # an ensemble's: from its members' mean
    if model.output in losses.REGRESSION:  # values, (n, k): predict gives them (predict_proba is for classifiers)
        labels = proba = predicted
        cols = [predicted[:, j] for j in range(model.n_outputs)]
        names = ["prediction"] if model.n_outputs == 1 else [f"prediction_{j}" for j in range(model.n_outputs)]
    else:
        classes = model.metadata.get("classes")  # labels a file lists without the model holding them
        held = getattr(model, "classes", None)  # the labels a model fitted on them holds (predict gives them)
        if held is not None and not feed.checks.are_indices(held):
            labels, classes = predicted, held.tolist()
        elif classes is not None:
            labels = np.asarray(classes)[predicted]  # the labels they were
        else:
            labels = predicted
        proba = _backend.to_numpy(model.predict_proba(X))
        k = model.n_outputs
        if model.output == "sigmoid" and k == 1:
            cols, names = [labels, proba[:, 0]], ["prediction", "probability"]
        else:
            label_cols = [labels] if labels.ndim == 1 else [labels[:, j] for j in range(k)]
            label_names = ["prediction"] if labels.ndim == 1 else [f"prediction_{j}" for j in range(k)]
            # a column per class, named after it: p_setosa, p_5; p_0..p_k-1 when the model holds no labels
            named = classes if classes is not None and labels.ndim == 1 else range(k)
            cols, names = label_cols + [proba[:, j] for j in range(k)], label_names + [f"p_{c}" for c in named]
    if args.std:  # the members' spread of every output column: values, or probabilities
        every = model.predict_proba(X, members=True)  # type: ignore[call-arg]
        spread = _backend.to_numpy(model.xp.std(every, axis=0))
        shown = names[-model.n_outputs :]
        cols, names = cols + [spread[:, j] for j in range(model.n_outputs)], names + [f"std_{c}" for c in shown]
    data.write_csv(args.out, names, cols)
    if args.out:
        print(f"{len(X)} predictions written to {args.out}", file=sys.stderr)
    if y is not None:
        print(_score(model, y, labels, proba), file=sys.stderr)
    return 0


def _predict_data(model: Any, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's feature columns by name, in its order (every column when it has no names; others are not
    read), and the target column too when the file holds it (the score is then reported)."""
    target = model.target_name

    def read(**columns: Any) -> Any:
        if getattr(model, "encoding", None) is not None:  # a table: text and empty cells, encoded by the model
            return data.read_table(args.data, features=model.feature_names, delimiter=args.delimiter, **columns)[0]
        return data.read(args.data, features=model.feature_names, dtype=model.dtype, delimiter=args.delimiter,
                         **columns)  # fmt: skip

    if target is not None and not args.data.lower().endswith(".npy"):  # .npy columns have numbers, not names
        try:
            X, y, _, _ = read(target=target)
            return X, y
        except InputError as exc:
            message = str(exc)
            if (f"target column {target!r} is not in" not in message and f"no array {target!r}" not in message
                    and f"the target {target!r} is empty on" not in message):  # fmt: skip
                raise
    return read().X, None


def _score(model: Any, y: np.ndarray, labels: np.ndarray, proba: np.ndarray) -> str:
    """One line: accuracy (classes) or R², MSE and MAE (regression) of the predictions against the file's target."""
    where = f"on {len(y)} rows with target {model.target_name!r}"
    if model.output in losses.REGRESSION:
        from .targets import regression_scores

        if y.dtype == object:
            return f"no score {where}: it holds text, and the model predicts numbers"

        scores = regression_scores(y, proba[:, 0], model.output)
        return "  ".join(f"{k} {v:.6g}" for k, v in scores.items()) + f"  {where}"
    if labels.ndim != 1:
        return f"no score {where}: a multi-label model"
    truth = y.astype(str) if y.dtype == object else y
    predicted = labels.astype(str) if y.dtype == object else labels.astype(np.float64)
    return f"accuracy {float(np.mean(predicted == truth)):.4f} {where}"


def cmd_export(args: argparse.Namespace) -> int:
    """``gpunn export``."""
    from .._load import load
    from ..ensemble import Ensemble
    from ..export import to_onnx

    model = load(args.model, device="cpu")  # the weights go to the host anyway: no GPU needed; an ensemble too
    classes = args.classes
    if classes is not None and all(c.lstrip("-").isdigit() for c in classes):
        classes = [int(c) for c in classes]  # --classes 0,5,1000: integer labels
    if classes is None and model.output not in losses.REGRESSION:
        classes = model.metadata.get("classes")  # the labels the model was trained on: label gives those
    path = to_onnx(model, args.onnx, opset=args.opset, classes=classes)
    outputs = "values" if model.output in losses.REGRESSION else "probabilities, label"
    if isinstance(model, Ensemble):  # one graph computing every member: their mean, and their spread in std
        outputs += f", std; {len(model)} members"
    shown = f" ({', '.join(map(str, classes))})" if classes is not None else ""
    inputs = f"input X: batch x {model.n_features} {model.dtype}"
    encoding = getattr(model, "encoding", None)
    if encoding is not None:
        inputs = f"inputs: one batch x 1 per column, {len(encoding.features)} named after them"
    print(f"{args.model} exported to {path} ({inputs}; outputs {outputs}{shown})")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``gpunn plot``."""
    from .. import plot

    written = plot.save(plot.history(args.history, title=args.history), args.out)
    print(f"curves drawn to {written}")
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
