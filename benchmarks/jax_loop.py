"""gpunn on JAX (compiled step) against a hand-written ``jax.jit`` training loop doing the same math:
``python -m benchmarks.jax_loop [--repeats R] [--epochs E] [--cells seed mid-128]``.

Both train the same network from the same weights (gpunn's He initialization for seed 0) on the same data with
plain SGD, and record every epoch's mean loss and accuracy:

- ``seed``: the seed network 2-10-10-10-1 (ReLU, sigmoid + binary cross-entropy) on moons, 1000 rows, full batch
  (one step per epoch), lr 0.1;
- ``mid-128``: 784-256-256-10 (ReLU, softmax + cross-entropy) on 8192 random rows, batches of 128 in a new
  shuffled order every epoch, lr 0.01.

The hand-written loop is what a JAX user writes: a jitted step that gathers its batch by index, computes the
loss, takes ``jax.grad`` and updates the parameters, returning the batch's summed loss and correct count; a
Python loop over the batches; the metrics kept on the device and read back once, at the end. gpunn's fit reads
them back once per progress line (``verbose=0``: every tenth of the epochs).

The two run in one process, interleaved (gpunn, loop, gpunn, loop, ...), after a warm-up that compiles; the
figure is the median over the repeats of the time per epoch. Results go to ``benchmarks/results/jax_loop.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "jax_loop.json"
CELLS = {
    "seed": {"sizes": [2, 10, 10, 10, 1], "n": 1000, "batch": None, "lr": 0.1},
    "mid-128": {"sizes": [784, 256, 256, 10], "n": 8192, "batch": 128, "lr": 0.01},
}


def data(cell: str):
    """The cell's (X float32, y int) on the host."""
    c = CELLS[cell]
    if cell == "seed":
        from sklearn.datasets import make_moons

        X, y = make_moons(c["n"], noise=0.2, random_state=0)
        return X.astype(np.float32), y.astype(np.int64)
    rng = np.random.default_rng(0)
    X = rng.standard_normal(size=(c["n"], c["sizes"][0]), dtype=np.float32)
    return X, rng.integers(0, c["sizes"][-1], size=c["n"])


def hand_written(cell: str, X: np.ndarray, y: np.ndarray):
    """A hand-written jax.jit loop: returns ``run(epochs) -> (losses, accuracies)`` continuing from its state."""
    import jax
    import jax.numpy as jnp

    from benchmarks.worker import initial_weights

    c = CELLS[cell]
    sizes, lr, n = c["sizes"], c["lr"], c["n"]
    bs = n if c["batch"] is None else c["batch"]
    softmax = sizes[-1] > 1
    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in initial_weights(sizes)]
    Xd, yd = jnp.asarray(X), jnp.asarray(y.astype(np.int32))

    def loss_sum(params, x, t):
        h = x
        for w, b in params[:-1]:
            h = jnp.maximum(h @ w.T + b, 0)
        w, b = params[-1]
        z = h @ w.T + b
        if softmax:
            logp = jax.nn.log_softmax(z)
            loss = -jnp.sum(jnp.take_along_axis(logp, t[:, None], axis=1))
            correct = jnp.sum(jnp.argmax(z, axis=1) == t)
        else:
            tf = t[:, None].astype(z.dtype)
            loss = jnp.sum(jnp.logaddexp(0.0, z) - tf * z)
            correct = jnp.sum((z > 0) == (tf > 0.5))
        return loss, correct

    @jax.jit
    def step(params, idx):
        x, t = (Xd, yd) if idx is None else (Xd[idx], yd[idx])
        rows = x.shape[0]
        (loss, correct), grads = jax.value_and_grad(loss_sum, has_aux=True)(params, x, t)
        params = jax.tree_util.tree_map(lambda p, g: p - (lr / rows) * g, params, grads)
        return params, loss, correct

    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(0).spawn(2)[1]))  # gpunn's, for seed 0
    state = {"params": params}

    def run(epochs: int):
        params, losses, corrects = state["params"], [], []
        for _ in range(epochs):
            if bs >= n:
                params, loss, correct = step(params, None)
                losses.append([loss])
                corrects.append([correct])
                continue
            order = jnp.asarray(rng.permutation(n).astype(np.int32))
            epoch_losses, epoch_corrects = [], []
            for start in range(0, n, bs):
                params, loss, correct = step(params, order[start : start + bs])
                epoch_losses.append(loss)
                epoch_corrects.append(correct)
            losses.append(epoch_losses)
            corrects.append(epoch_corrects)
        state["params"] = params
        host_losses, host_corrects = jax.device_get((losses, corrects))
        labels = n * (1 if softmax else sizes[-1])
        return [float(np.sum(v)) / labels for v in host_losses], [float(np.sum(v)) / labels for v in host_corrects]

    return run


def gpunn_jax(cell: str, X: np.ndarray, y: np.ndarray):
    """gpunn.MLP on jax.numpy with compile=True: ``run(epochs) -> (losses, accuracies)``."""
    import jax.numpy as jnp

    import gpunn

    c = CELLS[cell]
    output = "softmax" if c["sizes"][-1] > 1 else "sigmoid"
    m = gpunn.MLP(c["sizes"], output=output, xp=jnp, device=None, compile=True, seed=0)

    def run(epochs: int):
        h = m.fit(X, y, epochs=epochs, lr=c["lr"], batch_size=c["batch"], verbose=0)
        return h.loss, h.accuracy

    return run


def measure(cell: str, epochs: int, repeats: int) -> dict:
    from benchmarks.worker import jax_matmul_precision

    jax_matmul_precision()
    X, y = data(cell)
    contenders = {"gpunn-jax": gpunn_jax(cell, X, y), "jax.jit loop": hand_written(cell, X, y)}
    first = {name: run(2) for name, run in contenders.items()}  # compiles; both start from the same weights
    np.testing.assert_allclose(first["gpunn-jax"][0], first["jax.jit loop"][0], rtol=1e-4)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(repeats):
        names = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
        for name in names:
            t0 = time.perf_counter()
            contenders[name](epochs)
            times[name].append((time.perf_counter() - t0) / epochs)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    c = CELLS[cell]
    return {
        "cell": cell, "sizes": c["sizes"], "n": c["n"], "batch": c["batch"], "epochs": epochs, "repeats": repeats,
        "median_s_per_epoch": med, "all_s_per_epoch": times, "ratio": med["gpunn-jax"] / med["jax.jit loop"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jax_loop", description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", choices=sorted(CELLS), default=list(CELLS))
    parser.add_argument("--epochs", type=int, help="epochs per timed run (default: seed 200, mid-128 3)")
    parser.add_argument("--repeats", type=int, default=11, help="interleaved timed runs of each contender")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import jax

    rows = [measure(c, args.epochs or (200 if c == "seed" else 3), args.repeats) for c in args.cells]
    print(f"gpunn-jax (compile=True) against a hand-written jax.jit loop, {jax.devices()[0].platform}, "
          f"{os.cpu_count()} CPUs; medians of {args.repeats} interleaved runs\n")  # fmt: skip
    print("| cell | sizes | batch | gpunn-jax per epoch | jax.jit loop per epoch | ratio |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        g, h = r["median_s_per_epoch"]["gpunn-jax"], r["median_s_per_epoch"]["jax.jit loop"]
        batch = r["batch"] or f"full ({r['n']})"
        print(f"| {r['cell']} | {r['sizes']} | {batch} | {g * 1e3:.3f} ms | {h * 1e3:.3f} ms | {r['ratio']:.2f}x |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"jax": jax.__version__, "machine": platform.machine(), "cpus": os.cpu_count()}
    args.json.write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    print(f"\nWrote {args.json}")


if __name__ == "__main__":
    main()
