"""Largest difference between NumPy and CuPy (and torch CUDA, JAX on a GPU) after the same short training run,
as JSON. Every namespace computes float32 matrix products in float32 (JAX's GPU default, TF32, is switched off)."""

from __future__ import annotations

import json

import numpy as np

import gpunn
from gpunn import _backend


def main() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2048, 20))
    y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(np.int64)
    kw = dict(epochs=5, lr=0.01, batch_size=64, optimizer="adam", verbose=0)
    out = {}
    targets = {"cupy": {"device": "cuda"}}
    try:
        import torch

        if torch.cuda.is_available():
            targets["torch-cuda"] = {"xp": torch, "device": "cuda"}
    except ImportError:
        pass
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_default_matmul_precision", "highest")
        targets["jax-gpu"] = {"xp": jax.numpy, "device": jax.devices("gpu")[0]}
    except (ImportError, RuntimeError):
        pass
    for dtype in ("float32", "float64"):
        ref = gpunn.MLP([20, 64, 64, 1], device="cpu", dtype=dtype)
        ref.fit(X, y, **kw)
        for name, where in targets.items():
            m = gpunn.MLP([20, 64, 64, 1], dtype=dtype, **where)
            m.fit(X, y, **kw)
            diff = max(
                float(np.max(np.abs(_backend.to_numpy(a) - np.asarray(b))))
                for pa, pb in zip(m.weights, ref.weights)
                for a, b in zip(pa, pb)
            )
            out[f"{name} {dtype}"] = diff
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
