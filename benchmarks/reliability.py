"""Reliability figures: bad inputs rejected, checkpoint faults detected, resume drift.

Run from the repository root: ``python -m benchmarks.reliability`` (needs the test extra). Prints a markdown
report; docs/reliability.md shows the latest one.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import random
import tempfile
from pathlib import Path

import numpy as np

import gpunn
from gpunn import _backend
from tests.test_validation import BAD_FIT, BAD_MODEL, X, Y


def bad_inputs() -> tuple[int, int, list[str]]:
    tried = rejected = 0
    misses = []
    for name, override, error, _ in BAD_FIT:
        args = {"X": X, "y": Y, "epochs": 1, "verbose": 0, **override}
        m = gpunn.MLP([3, 4, 1], device="cpu")
        before = [np.array(a) for pair in m.weights for a in pair]
        tried += 1
        try:
            m.fit(args.pop("X"), args.pop("y"), **args)
        except error:
            unchanged = all(np.array_equal(a, b) for a, b in zip(before, (a for p in m.weights for a in p)))
            rejected += unchanged
            if not unchanged:
                misses.append(f"{name}: model changed")
            continue
        except Exception as exc:  # the wrong error type
            misses.append(f"{name}: {type(exc).__name__}")
            continue
        misses.append(f"{name}: accepted")
    for override, _ in BAD_MODEL:
        kwargs = {"sizes": [3, 4, 1], "device": "cpu", **override}
        tried += 1
        try:
            gpunn.MLP(kwargs.pop("sizes"), **kwargs)
            misses.append(f"MLP({override}): accepted")
        except gpunn.ConfigError:
            rejected += 1
    return tried, rejected, misses


def checkpoint_faults(folder: Path, flips: int = 500) -> dict[str, tuple[int, int]]:
    rng = np.random.default_rng(0)
    Xp = rng.normal(size=(64, 3))
    m = gpunn.MLP([3, 16, 16, 1], device="cpu", standardize=True)
    m.fit(Xp, (Xp[:, 0] > 0).astype(int), epochs=2, optimizer="adam", batch_size=16, verbose=0)
    path = folder / "m.safetensors"
    m.save(path)
    data = path.read_bytes()
    ref = [np.array(a) for p in m.weights for a in p]
    bad = folder / "bad.safetensors"
    results = {}

    detected = 0
    for cut in range(len(data)):
        bad.write_bytes(data[:cut])
        try:
            gpunn.load(bad, device="cpu")
        except gpunn.CheckpointError:
            detected += 1
    results[f"truncation at every offset (0..{len(data) - 1})"] = (len(data), detected)

    detected = harmless = 0
    rnd = random.Random(0)
    for _ in range(flips):
        flipped = bytearray(data)
        pos = rnd.randrange(len(data))
        flipped[pos] ^= 1 << rnd.randrange(8)
        bad.write_bytes(bytes(flipped))
        try:
            loaded = gpunn.load(bad, device="cpu")
        except gpunn.CheckpointError:
            detected += 1
            continue
        same = all(np.array_equal(a, np.asarray(b)) for a, b in zip(ref, (a for p in loaded.weights for a in p)))
        harmless += same
    results["single bit flips anywhere (detected)"] = (flips, detected)
    results["single bit flips accepted with an identical model"] = (flips - detected, harmless)

    import pickle

    canary = folder / "canary"

    class Exploit:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    bad.write_bytes(pickle.dumps(Exploit()))
    try:
        gpunn.load(bad, device="cpu")
        caught = 0
    except gpunn.CheckpointError:
        caught = int(not canary.exists())
    results["pickle payload (rejected, nothing executed)"] = (1, caught)
    return results


def resume_drift() -> list[tuple[str, str, float]]:
    rng = np.random.default_rng(1)
    Xr = rng.normal(size=(200, 4))
    yr = (Xr[:, 0] * Xr[:, 1] > 0).astype(int)
    rows = []
    namespaces = [("numpy", None, None)]
    for name, module in (("array_api_strict", "array_api_strict"), ("torch", "torch"), ("jax", "jax.numpy")):
        if importlib.util.find_spec(module.split(".")[0]):
            namespaces.append((name, importlib.import_module(module), None))
    with tempfile.TemporaryDirectory() as tmp:
        for name, xp, device in namespaces:
            for opt in ("sgd", "momentum", "adam"):
                kw = dict(lr=0.01, batch_size=32, optimizer=opt, verbose=0)
                a = gpunn.MLP([4, 16, 16, 1], xp=xp, device=device, seed=2)
                a.fit(Xr, yr, epochs=3, **kw)
                a.save(Path(tmp) / "a.safetensors")
                a = gpunn.load(Path(tmp) / "a.safetensors", xp=xp, device=device)
                a.fit(Xr, yr, epochs=3, **kw)
                b = gpunn.MLP([4, 16, 16, 1], xp=xp, device=device, seed=2)
                b.fit(Xr, yr, epochs=6, **kw)
                drift = max(
                    float(np.max(np.abs(_backend.to_numpy(p) - _backend.to_numpy(q))))
                    for pa, pb in zip(a.weights, b.weights)
                    for p, q in zip(pa, pb)
                )
                rows.append((name, opt, drift))
    return rows


def main() -> None:
    if importlib.util.find_spec("jax"):
        import jax

        jax.config.update("jax_enable_x64", True)
    print(f"# gpunn {gpunn.__version__} reliability figures\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}\n")
    tried, rejected, misses = bad_inputs()
    print("## Bad inputs\n")
    print(f"{rejected} of {tried} bad inputs rejected with the intended gpunn error, model unchanged.")
    for miss in misses:
        print(f"- MISSED: {miss}")
    print("\n## Checkpoint faults\n\n| fault | injected | detected |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for fault, (n, d) in checkpoint_faults(Path(tmp)).items():
            print(f"| {fault} | {n} | {d} |")
    print("\n## Resume drift (save + load + fit 3 vs fit 6, float32, minibatch)\n")
    print("| namespace | optimizer | largest weight difference |\n|---|---|---|")
    for name, opt, drift in resume_drift():
        print(f"| {name} | {opt} | {drift:.3g} |")


if __name__ == "__main__":
    main()
