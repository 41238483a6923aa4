"""One benchmark measurement in a fresh process: ``python -m benchmarks.worker CONTENDER CELL JSON_OPTIONS``.

Prints one JSON object: per-step times of every timed epoch, peak RSS, and what ran. Run in its own process so
that peak memory belongs to one contender alone.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings

import numpy as np

CELLS = {
    "tiny": {"sizes": [10, 10, 10, 10, 1], "n": 1000, "batch": None},
    "mid-128": {"sizes": [784, 256, 256, 10], "n": 8192, "batch": 128},
    "mid-1024": {"sizes": [784, 256, 256, 10], "n": 8192, "batch": 1024},
    "wide": {"sizes": [4096, 4096, 4096, 10], "n": 4096, "batch": 1024},
}
LR = 0.01


def _status_mib(field: str, pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib() -> float:
    """This process's resident memory now."""
    return _status_mib("VmRSS")


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would carry the parent's peak across exec)."""
    return _status_mib("VmHWM")


def make_data(cell: dict, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes, n = cell["sizes"], cell["n"]
    X = rng.standard_normal(size=(n, sizes[0]), dtype=np.float32)
    k = sizes[-1]
    y = rng.integers(0, max(k, 2), size=n)
    return X, y


def initial_weights(sizes):
    """The weights every contender starts from: gpunn's He initialization for seed 0."""
    import gpunn

    return [(np.asarray(w), np.asarray(b)) for w, b in gpunn.MLP(sizes, device="cpu", seed=0).weights]


def epoch_times(run_epoch, epochs: int, sync=lambda: None) -> list[float]:
    times = []
    for _ in range(epochs):
        sync()
        t0 = time.perf_counter()
        run_epoch()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def jax_matmul_precision() -> None:
    """JAX multiplies float32 matrices in TF32 on recent GPUs by default, CuPy and PyTorch do not: every
    contender computes in float32, unless the run asks for TF32 (CUPY_TF32=1, as gpu.sh's TF32 pass sets)."""
    import os

    import jax

    jax.config.update(
        "jax_default_matmul_precision", "tensorfloat32" if os.environ.get("CUPY_TF32") == "1" else "highest"
    )


# --------------------------------------------------------------------------------------------- contenders
def run_gpunn(cell, X, y, bs, epochs, namespace):
    import importlib

    import gpunn
    from gpunn import _backend

    kwargs: dict = {"device": "cpu"}
    if namespace == "cupy":
        kwargs = {"device": "cuda"}
    elif namespace in ("torch-cuda", "torch-cuda-compile"):
        kwargs = {"xp": importlib.import_module("torch"), "device": "cuda"}
    elif namespace != "numpy":
        module = "jax.numpy" if namespace.startswith("jax") else "torch"
        if namespace.startswith("jax"):
            jax_matmul_precision()
        kwargs = {"xp": importlib.import_module(module), "device": None}
    # gpunn-jax compiles its step (compile="auto"); gpunn-jax-eager and gpunn-torch do not; *-compile asks for it.
    kwargs["compile"] = True if namespace.endswith("-compile") else False if namespace.endswith("eager") else "auto"
    sizes = cell["sizes"]
    m = gpunn.MLP(sizes, output="softmax" if sizes[-1] > 1 else "sigmoid", seed=0, **kwargs)
    # Data already on the device, as a GPU user would hold it; host NumPy data for the CPU namespaces.
    on_gpu = namespace == "cupy" or namespace.startswith("torch-cuda")
    Xd = _backend.from_numpy(X, m.xp, m.device) if on_gpu else X
    yd = _backend.from_numpy(y, m.xp, m.device) if on_gpu else y
    stamps = []

    def mark(model, record):
        _backend.synchronize(model.params)
        stamps.append(time.perf_counter())

    start = time.perf_counter()
    m.fit(Xd, yd, epochs=epochs, lr=LR, batch_size=bs, verbose=0, callbacks=[mark])
    stamps.insert(0, start)
    return list(np.diff(stamps))


def naive_epoch(cell, X, y, bs):
    """A callable that runs one epoch of the naive loop, from gpunn's initial weights, on ``X, y``."""
    from benchmarks import naive

    k = cell["sizes"][-1]
    Y = np.eye(k, dtype=np.float32)[y] if k > 1 else y[:, None].astype(np.float32)
    params = [[w.copy(), b.copy()] for w, b in initial_weights(cell["sizes"])]
    rng = np.random.default_rng(0)
    return lambda: naive.train_epoch(params, X, Y, LR, bs or len(X), rng, k > 1)


def run_naive(cell, X, y, bs, epochs):
    return epoch_times(naive_epoch(cell, X, y, bs), epochs)


def run_sklearn(cell, X, y, bs, epochs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    sizes = cell["sizes"]
    clf = MLPClassifier(
        hidden_layer_sizes=sizes[1:-1], activation="relu", solver="sgd", momentum=0.0, alpha=0.0, tol=0.0,
        learning_rate_init=LR, batch_size=bs or len(X), max_iter=1, shuffle=True, random_state=0, warm_start=True,
        n_iter_no_change=10**9, early_stopping=False,
    )  # fmt: skip
    warnings.simplefilter("ignore", ConvergenceWarning)
    clf.fit(X, y)  # builds the network; then start from the shared initial weights
    weights = initial_weights(sizes)
    clf.coefs_ = [w.T.copy() for w, _ in weights]
    clf.intercepts_ = [b.copy() for _, b in weights]
    # One fit over all timed epochs, as a user runs it (a fit per epoch would add input validation each time).
    clf.set_params(max_iter=epochs - 1)
    total = epoch_times(lambda: clf.fit(X, y), 1)[0]
    return [float("nan")] + [total / (epochs - 1)] * (epochs - 1)


def run_torch(cell, X, y, bs, epochs, device="cpu"):
    import os

    import torch

    # TF32 only when the run asks for it (gpu.sh's TF32 pass sets CUPY_TF32=1 for both libraries).
    torch.backends.cuda.matmul.allow_tf32 = os.environ.get("CUPY_TF32") == "1"

    sizes = cell["sizes"]
    layers = []
    for (w, b), last in zip(initial_weights(sizes), [False] * (len(sizes) - 2) + [True]):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers += [lin] if last else [lin, torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    k = sizes[-1]
    Xt = torch.from_numpy(X).to(device)
    yt = torch.from_numpy(y).to(device) if k > 1 else torch.from_numpy(y.astype(np.float32)[:, None]).to(device)
    loss_fn = torch.nn.CrossEntropyLoss() if k > 1 else torch.nn.BCEWithLogitsLoss()
    n = len(X)
    size = bs or n
    rng = np.random.default_rng(0)

    def epoch():
        order = torch.from_numpy(rng.permutation(n)).to(device) if size < n else None
        total = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for start in range(0, n, size):
            if order is None:
                xb, yb = Xt, yt
            else:
                idx = order[start : start + size]
                xb, yb = Xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            z = net(xb)
            loss = loss_fn(z, yb)
            loss.backward()
            opt.step()
            with torch.no_grad():
                total += loss.detach() * xb.shape[0]
                correct += ((z.argmax(1) == yb) if k > 1 else ((z > 0) == (yb > 0.5))).sum()
        float(total)  # one read per epoch, as gpunn does

    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    return epoch_times(epoch, epochs, sync)


def run_jax(cell, X, y, bs, epochs):
    import jax
    import jax.numpy as jnp

    jax_matmul_precision()
    sizes = cell["sizes"]
    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in initial_weights(sizes)]
    k = sizes[-1]
    T = jnp.asarray(np.eye(k, dtype=np.float32)[y] if k > 1 else y[:, None].astype(np.float32))
    Xj = jnp.asarray(X)

    def loss_fn(params, xb, tb):
        a = xb
        for w, b in params[:-1]:
            a = jax.nn.relu(a @ w.T + b)
        w, b = params[-1]
        z = a @ w.T + b
        if k > 1:
            return -jnp.mean(jnp.sum(tb * jax.nn.log_softmax(z), axis=1)), z
        return jnp.mean(jax.nn.softplus(z) - tb * z), z

    @jax.jit
    def step(params, xb, tb):
        (loss, z), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, xb, tb)
        new = jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)
        return new, loss

    n = len(X)
    size = bs or n
    rng = np.random.default_rng(0)
    state = {"params": params}

    def epoch():
        order = jnp.asarray(rng.permutation(n)) if size < n else None
        total = 0.0
        p = state["params"]
        for start in range(0, n, size):
            if order is None:
                xb, tb = Xj, T
            else:
                idx = order[start : start + size]
                xb, tb = jnp.take(Xj, idx, axis=0), jnp.take(T, idx, axis=0)
            p, loss = step(p, xb, tb)
            total = total + loss * xb.shape[0]
        state["params"] = p
        float(total)

    return epoch_times(epoch, epochs)


def paired(cell, X, y, bs, epochs) -> dict:
    """gpunn-numpy and the naive loop in one process, epoch by epoch in turn (a naive epoch runs inside gpunn's
    epoch callback, outside gpunn's timing), so that the machine's drift hits both alike: the ratio of each
    pair of epochs, for the target that the abstraction costs nothing over the naive loop."""
    import gpunn

    naive = naive_epoch(cell, X, y, bs)
    ours, theirs = [], []
    clock = [0.0]

    def interleave(model, record):
        ours.append(time.perf_counter() - clock[0])
        start = time.perf_counter()
        naive()
        theirs.append(time.perf_counter() - start)
        clock[0] = time.perf_counter()

    sizes = cell["sizes"]
    m = gpunn.MLP(sizes, output="softmax" if sizes[-1] > 1 else "sigmoid", seed=0, device="cpu")
    clock[0] = time.perf_counter()
    m.fit(X, y, epochs=epochs, lr=LR, batch_size=bs, verbose=0, callbacks=[interleave])
    ratios = [a / b for a, b in zip(ours[1:], theirs[1:])]  # the first pair warms up
    steps = steps_per_epoch(len(X), bs)
    return {"pairs": len(ratios), "median_ratio": statistics.median(ratios), "ratio_iqr": middle_half(ratios),
            "gpunn_step_s": statistics.median(ours[1:]) / steps,
            "naive_step_s": statistics.median(theirs[1:]) / steps}  # fmt: skip


def steps_per_epoch(n: int, batch: int | None) -> int:
    return -(-n // (batch or n))


def middle_half(values: list[float]) -> list[float]:
    """The 25th and 75th percentiles (the value itself when there is only one)."""
    if len(values) < 2:
        return [values[0], values[0]]
    quartiles = statistics.quantiles(values, n=4)
    return [quartiles[0], quartiles[2]]


def main() -> None:
    contender, cell_name, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    cell = dict(CELLS[cell_name], n=options.get("n", CELLS[cell_name]["n"]))
    baseline = rss_mib()
    X, y = make_data(cell)
    bs = cell["batch"]
    epochs = options["epochs"]
    if contender == "paired":
        print(json.dumps({"cell": cell_name, **paired(cell, X, y, bs, epochs)}))
        return
    if contender.startswith("gpunn-"):
        times = run_gpunn(cell, X, y, bs, epochs, contender[len("gpunn-") :])
    elif contender == "naive-numpy":
        times = run_naive(cell, X, y, bs, epochs)
    elif contender == "sklearn":
        times = run_sklearn(cell, X, y, bs, epochs)
    elif contender == "torch-cpu":
        times = run_torch(cell, X, y, bs, epochs)
    elif contender == "torch-cuda":
        times = run_torch(cell, X, y, bs, epochs, device="cuda")
    elif contender == "jax-jit":
        times = run_jax(cell, X, y, bs, epochs)
    else:
        raise SystemExit(f"unknown contender {contender}")
    steps = steps_per_epoch(cell["n"], bs)
    out = {
        "contender": contender,
        "cell": cell_name,
        "steps_per_epoch": steps,
        "epoch_seconds": times,
        "peak_rss_mib": peak_rss_mib(),
        "baseline_rss_mib": baseline,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
