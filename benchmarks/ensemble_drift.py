"""How far an Ensemble member ends from the lone MLP: ``python -m benchmarks.ensemble_drift [--epochs N]``.

The run: ``Ensemble([2, 16, 16, 1], members=8, seed=0)`` on ``make_moons(1000)``, Adam with lr 0.01, 300
epochs, full batch and batch_size=64; member k against ``MLP([2, 16, 16, 1], seed=k)`` fitted alone with the
same settings. Printed per namespace (NumPy, PyTorch and JAX on the CPU, each with ``compile="auto"``: JAX
compiled, the others eager; NumPy once more with its fast paths off, ``gpunn._backend.NUMPY_FAST_PATHS``) and
dtype: the largest absolute difference over the members of the weights and of
``predict_proba`` on the training rows.

The stacked step computes what the lone step computes, in another summation order (a batched matmul, sums over
a leading axis; on NumPy, sums taken as products with ones), so float64 agrees to rounding while float32's
rounding, amplified by 300 epochs of training, moves a member's weights measurably away from the lone network's.
The full run takes about half an hour on 2 busy CPU cores, most of it PyTorch's eager steps: ``--namespaces``
picks some.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform

import numpy as np

import gpunn
from gpunn import _backend
from gpunn.data import make_moons

SIZES = [2, 16, 16, 1]
MEMBERS = 8


def _namespaces() -> list[tuple[str, dict]]:
    out = [("numpy", {"device": "cpu"}), ("numpy-generic", {"device": "cpu"})]
    if importlib.util.find_spec("torch") is not None:
        import torch

        out.append(("torch", {"xp": torch, "device": "cpu"}))
    if importlib.util.find_spec("jax") is not None:
        import jax

        jax.config.update("jax_enable_x64", True)  # for float64; float32 runs stay float32
        out.append(("jax", {"xp": jax.numpy, "device": jax.devices("cpu")[0]}))
    return out


def _host(a) -> np.ndarray:
    return np.asarray(_backend.to_numpy(a), dtype=np.float64)


def drift(where: dict, dtype: str, batch_size: int | None, epochs: int) -> tuple[float, float]:
    """(max |member - lone| of the weights, of predict_proba) over the members."""
    X, y = make_moons(1000)
    fit = dict(epochs=epochs, optimizer="adam", lr=0.01, batch_size=batch_size, verbose=0)
    ens = gpunn.Ensemble(SIZES, members=MEMBERS, seed=0, dtype=dtype, **where)
    ens.fit(X, y, **fit)
    weights = proba = 0.0
    for k, member in enumerate(ens.members):
        lone = gpunn.MLP(SIZES, seed=k, dtype=dtype, **where)
        lone.fit(X, y, **fit)
        weights = max(weights, float(np.abs(_host(member.params) - _host(lone.params)).max()))
        proba = max(proba, float(np.abs(_host(member.predict_proba(X)) - _host(lone.predict_proba(X))).max()))
    return weights, proba


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ensemble_drift", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--namespaces", nargs="+", choices=["numpy", "numpy-generic", "torch", "jax"])
    args = parser.parse_args(argv)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.epochs} epochs of Adam")
    print("| namespace | dtype | batch | max abs weights | max abs predict_proba |")
    print("|---|---|---|---|---|")
    for name, where in _namespaces():
        if args.namespaces and name not in args.namespaces:
            continue
        _backend.NUMPY_FAST_PATHS = name != "numpy-generic"
        for dtype in ("float64", "float32"):
            for batch_size in (None, 64):
                w, p = drift(where, dtype, batch_size, args.epochs)
                print(f"| {name} | {dtype} | {batch_size or 'full'} | {w:.1e} | {p:.1e} |", flush=True)


if __name__ == "__main__":
    main()
