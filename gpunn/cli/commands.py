"""``gpunn predict``, ``export``, ``plot`` and ``info``."""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Any

import numpy as np

from .. import __version__, _backend, data


def cmd_predict(args: argparse.Namespace) -> int:
    """``gpunn predict``."""
    from ..checkpoint import load

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
    from ..checkpoint import load
    from ..export import to_onnx

    model = load(args.model, device="cpu")  # the weights go to the host anyway: no GPU needed
    path = to_onnx(model, args.onnx, opset=args.opset)
    outputs = "values" if model.output == "identity" else "probabilities, label"
    print(f"{args.model} exported to {path} (input X: batch x {model.n_features} {model.dtype}; outputs {outputs})")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``gpunn plot``."""
    from .. import plot

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
