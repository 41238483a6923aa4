"""Peak memory of gpunn training on the mid cell: ``python -m benchmarks.memory`` prints one JSON object.

Two measurements, each against what training must hold: the dataset, the parameters, Adam's two slots, the
gradients, and one batch's activations.

- ``cli``: ``gpunn train`` on a CSV file of the mid cell (60,000 rows of 784 features and a label), in its own
  process: peak RSS over that process's RSS once gpunn is imported, and RSS after every epoch (read when the
  command prints the epoch's line) to show that it does not grow.
- ``api``: ``MLP.fit`` on the same data already in memory as float32, RSS after every epoch from a callback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks.worker import _status_mib, peak_rss_mib, rss_mib

SIZES = [784, 256, 256, 10]
SAMPLES, BATCH, EPOCHS = 60_000, 1024, 5


def needed_mib(X: np.ndarray, y: np.ndarray) -> float:
    params = sum(w * i + w for i, w in zip(SIZES[:-1], SIZES[1:]))
    activations = BATCH * (SIZES[0] + 2 * sum(SIZES[1:]))  # the gathered batch, then z/a and delta per layer
    return (X.nbytes + y.nbytes + 4 * (3 * params + params + activations)) / 2**20  # params, 2 Adam slots, grads


def dataset():
    rng = np.random.default_rng(0)
    return rng.standard_normal(size=(SAMPLES, SIZES[0]), dtype=np.float32), rng.integers(0, SIZES[-1], SAMPLES)


def api() -> dict:
    import gpunn

    baseline = rss_mib()
    X, y = dataset()
    m = gpunn.MLP(SIZES, output="softmax", device="cpu")
    per_epoch = []
    m.fit(X, y, epochs=EPOCHS, lr=1e-3, batch_size=BATCH, optimizer="adam", verbose=0,
          callbacks=[lambda model, record: per_epoch.append(rss_mib())])  # fmt: skip
    peak = peak_rss_mib() - baseline
    need = needed_mib(X, y)
    return {"needed_mib": need, "peak_over_baseline_mib": peak, "ratio": peak / need,
            "rss_per_epoch_mib": [v - baseline for v in per_epoch]}  # fmt: skip


def _run_train(args: list[str]) -> None:
    """``gpunn train ARGS`` in this process, then its baseline and peak RSS as a JSON line on stderr."""
    import gpunn.cli

    baseline = rss_mib()  # the interpreter with gpunn imported, before any work
    code = gpunn.cli.main(["train", *args])
    print(json.dumps({"baseline_mib": baseline, "peak_mib": peak_rss_mib()}), file=sys.stderr)
    raise SystemExit(code)


def cli() -> dict:
    X, y = dataset()
    need = needed_mib(X, y)  # as gpunn train holds it: float32 features, float64 labels
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mid.csv")
        with open(path, "w") as f:
            f.write(",".join([f"x{j}" for j in range(SIZES[0])] + ["label"]) + "\n")
            for s in range(0, SAMPLES, 2000):
                block = np.column_stack([X[s : s + 2000], y[s : s + 2000]])
                np.savetxt(f, block, fmt=["%.5g"] * SIZES[0] + ["%d"], delimiter=",")
        size_mib = os.path.getsize(path) / 2**20
        del X, y
        per_epoch: list[float] = []
        argv = [sys.executable, "-m", "benchmarks.memory", "--train", "--data", path, "--target", "label",
                "--output", "softmax", "--layers", "256,256", "--batch-size", str(BATCH), "--epochs", str(EPOCHS),
                "--optimizer", "adam", "--lr", "0.001", "--device", "cpu", "--test-size", "0.2"]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        last = ""
        for line in proc.stdout:
            if line.startswith("epoch "):  # printed once the epoch is done
                per_epoch.append(_status_mib("VmRSS", proc.pid))
            last = line.strip() or last
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"gpunn train failed ({proc.returncode}): {err.strip()[-500:]}")
    rss = json.loads(err.strip().splitlines()[-1])
    peak = rss["peak_mib"] - rss["baseline_mib"]
    return {"csv_mib": size_mib, "needed_mib": need, "peak_over_baseline_mib": peak, "ratio": peak / need,
            "baseline_mib": rss["baseline_mib"], "rss_per_epoch_mib": [v - rss["baseline_mib"] for v in per_epoch],
            "output": last}  # fmt: skip


def main() -> None:
    if sys.argv[1:2] == ["--train"]:
        _run_train(sys.argv[2:])
    measured = {"api": api()}  # first: it reads this process's own peak, which generating the CSV would raise
    measured["cli"] = cli()
    print(json.dumps({"samples": SAMPLES, "batch": BATCH, "epochs": EPOCHS, **measured}))


if __name__ == "__main__":
    main()
