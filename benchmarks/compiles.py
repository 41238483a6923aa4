"""What a fit compiles: ``python -m benchmarks.compiles [--label after] [--repeats R] [--no-torch] [--search-only]``.

Counts, on the seed network (2-10-10-10-1, ReLU, sigmoid + binary cross-entropy, moons, 1000 rows), the XLA
programs each ``fit`` compiles on JAX (``compile=True``), as JAX itself reports them through ``jax.monitoring``
(``/jax/core/compile/backend_compile_duration`` events, less those loaded from a persistent cache), and the
graphs ``torch.compile`` makes on PyTorch (``torch._dynamo``'s ``unique_graphs`` counter). Each row is a fresh
``MLP`` in the same process, in order, so a row shows what its change of settings costs after the rows above:
the first fit, the same fit again, a new learning rate, l2 turned on and then a new l2, minibatches, Adam,
AdamW and momentum with clipping, each first and then with a new value. Then the same for an ``Ensemble`` of 4
(``--ensemble-only``: those rows alone): its first fit, new values, validation data, minibatches and a new row
count in the same power-of-two bucket.

Then ``MLPSearchCV`` on the same data as JAX arrays, in a fresh process (``--search-only``: those rows alone): a
first search of 3 learning rates x 2 alphas (the seed network's hidden layers, SGD, 5-fold: 30 members of
one ensemble), a second with 5 rates and another with 3-fold cross-validation, each row's programs split into the
set-up (the folds' rows, every candidate's checks, encoding and initial weights), the training (the stacked
ensembles' fits) and the scoring (the estimators' predictions on the test folds).

Then the first fit's wall time in a fresh process (imports excluded, compilation included) against a
hand-written ``jax.jit`` loop's first call on the same cell (:func:`benchmarks.jax_loop.hand_written`), the two
interleaved over ``--repeats`` fresh processes each; medians.

It uses gpunn's public API only, so the same script measures another checkout: ``PYTHONPATH=/path/to/it python
-m benchmarks.compiles --label before``. Results go to ``benchmarks/results/compiles.json`` under the label.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "compiles.json"
EPOCHS = 20
ROWS = [  # (what changes, the fit's arguments)
    ("first fit, SGD, lr 0.1", dict(lr=0.1)),
    ("same fit again", dict(lr=0.1)),
    ("new lr 0.05", dict(lr=0.05)),
    ("l2 on (0.01)", dict(lr=0.05, l2=0.01)),
    ("new l2 0.02", dict(lr=0.05, l2=0.02)),
    ("batch 100, new lr", dict(lr=0.07, batch_size=100)),
    ("batch 100, another lr", dict(lr=0.08, batch_size=100)),
    ("Adam", dict(optimizer="adam", lr=0.01)),
    ("Adam, new lr", dict(optimizer="adam", lr=0.02)),
    ("AdamW", dict(optimizer="adamw", lr=0.01, weight_decay=0.01)),
    ("AdamW, new weight_decay", dict(optimizer="adamw", lr=0.01, weight_decay=0.1)),
    ("momentum, clip 1", dict(optimizer="momentum", clip_norm=1.0)),
    ("momentum, new clip_norm", dict(optimizer="momentum", clip_norm=2.0)),
]
TORCH_ROWS = ROWS[:5]
# An Ensemble of 4 of the same network (compile=True), each row a fresh one, after the rows above: what its first
# fit, a new rate, validation data, minibatches and a new row count in the same power-of-two bucket compile.
ENSEMBLE_ROWS = [
    ("Ensemble of 4: first fit, lr 0.1", dict(lr=0.1)),
    ("Ensemble: new lr 0.05", dict(lr=0.05)),
    ("Ensemble: l2 0.01, per-member lrs", dict(lr=[0.1, 0.2, 0.3, 0.4], l2=0.01)),
    ("Ensemble: new l2 0.02", dict(lr=[0.1, 0.2, 0.3, 0.4], l2=0.02)),
    ("Ensemble: validation data", dict(lr=0.05, validation=True)),
    ("Ensemble: batch 100", dict(lr=0.07, batch_size=100)),
    ("Ensemble: batch 100, another lr", dict(lr=0.08, batch_size=100)),
    ("Ensemble: batch 100, 900 rows", dict(lr=0.08, batch_size=100, rows=900)),
    ("Ensemble: full batch, 900 rows", dict(lr=0.08, rows=900)),
]
# MLPSearchCV's rows, in order in one fresh process: (what changes, the grid, the folds)
SEARCH_ROWS = [
    ("MLPSearchCV: 3 lrs x 2 alphas, cv=5", {"learning_rate_init": [0.01, 0.03, 0.1], "alpha": [1e-4, 1e-2]}, 5),
    ("MLPSearchCV: 5 lrs x 2 alphas, cv=5", {"learning_rate_init": [0.02, 0.05, 0.2, 0.3, 0.5],
                                              "alpha": [1e-4, 1e-2]}, 5),
    ("MLPSearchCV: 3 lrs x 2 alphas, cv=3", {"learning_rate_init": [0.01, 0.03, 0.1], "alpha": [1e-4, 1e-2]}, 3),
]  # fmt: skip
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT = "/jax/compilation_cache/cache_hits"


def data():
    from benchmarks.jax_loop import data as cell_data

    return cell_data("seed")


@functools.lru_cache(maxsize=1)
def _events() -> tuple[list[float], list[int]]:
    """Every XLA compilation's seconds and every persistent-cache hit in this process, from the first call on."""
    import jax

    seconds: list[float] = []
    hits: list[int] = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: seconds.append(duration) if event == COMPILE_EVENT else None
    )
    jax.monitoring.register_event_listener(lambda event, **kw: hits.append(1) if event == CACHE_HIT else None)
    return seconds, hits


def _counted(name: str, fit: Callable[[], Any]) -> dict:
    """A row: the programs ``fit()`` compiled (less those loaded from the cache), their seconds and its wall time."""
    seconds, hits = _events()
    n0, h0, s0 = len(seconds), len(hits), sum(seconds)
    t0 = time.perf_counter()
    fit()
    wall = time.perf_counter() - t0
    compiles = len(seconds) - n0 - (len(hits) - h0)
    print(f"jax   {name:34s} {compiles:3d} programs  {sum(seconds) - s0:6.2f} s compiling  {wall:6.2f} s wall",
          flush=True)  # fmt: skip
    return {"row": name, "compiles": compiles, "compile_s": sum(seconds) - s0, "wall_s": wall}


def jax_rows() -> list[dict]:
    import jax.numpy as jnp

    import gpunn

    X, y = data()

    def fit(kw: dict) -> None:
        gpunn.MLP([2, 10, 10, 10, 1], xp=jnp, device=None, compile=True, seed=0).fit(X, y, epochs=EPOCHS,
                                                                                      verbose=0, **kw)  # fmt: skip

    return [_counted(name, functools.partial(fit, kw)) for name, kw in ROWS]


def ensemble_rows() -> list[dict]:
    import jax.numpy as jnp

    import gpunn

    X, y = data()

    def fit(row: dict) -> None:
        kw = dict(row)
        n = kw.pop("rows", len(X))
        if kw.pop("validation", False):
            kw["validation_data"] = (X[:200], y[:200])
        ens = gpunn.Ensemble([2, 10, 10, 10, 1], 4, xp=jnp, device=None, compile=True, seed=0)
        ens.fit(X[:n], y[:n], epochs=EPOCHS, verbose=0, **kw)

    return [_counted(name, functools.partial(fit, row)) for name, row in ENSEMBLE_ROWS]


def torch_rows() -> list[dict]:
    import torch
    from torch._dynamo.utils import counters

    import gpunn

    X, y = data()
    out = []
    for name, fit in TORCH_ROWS:
        before = counters["stats"]["unique_graphs"]
        t0 = time.perf_counter()
        m = gpunn.MLP([2, 10, 10, 10, 1], xp=torch, device="cpu", compile=True, seed=0)
        m.fit(X, y, epochs=EPOCHS, verbose=0, **fit)
        wall = time.perf_counter() - t0
        graphs = counters["stats"]["unique_graphs"] - before
        out.append({"row": name, "graphs": graphs, "wall_s": wall})
        print(f"torch {name:28s} {graphs:3d} graphs    {wall:6.2f} s wall", flush=True)
    return out


def search_rows() -> list[dict]:
    """MLPSearchCV's rows, each search's programs split by phase: those compiled inside ``Ensemble.fit`` (the
    training), inside the scorer (the scoring) and the rest (the set-up)."""
    import warnings

    import jax.numpy as jnp

    import gpunn
    from gpunn.sklearn import MLPClassifier, MLPSearchCV

    seconds, hits = _events()
    X, y = data()
    X, y = jnp.asarray(X), jnp.asarray(y)
    inside: dict[str, float] = {}

    def counted(phase: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        n0, h0, s0 = len(seconds), len(hits), sum(seconds)
        try:
            return fn(*args, **kwargs)
        finally:
            inside[phase] += len(seconds) - n0 - (len(hits) - h0)
            inside[f"{phase}_s"] += sum(seconds) - s0

    real_fit = gpunn.Ensemble.fit
    gpunn.Ensemble.fit = lambda ens, *a, **kw: counted("training", real_fit, ens, *a, **kw)  # type: ignore[method-assign]
    estimator = MLPClassifier(hidden_layer_sizes=(10, 10, 10), solver="sgd", max_iter=EPOCHS, random_state=0)
    out = []
    try:
        for name, grid, cv in SEARCH_ROWS:
            inside.update(training=0, scoring=0, training_s=0.0, scoring_s=0.0)
            search = MLPSearchCV(estimator, grid, cv=cv, refit=False,
                                 scoring=lambda est, X, y: counted("scoring", est.score, X, y))  # fmt: skip

            def fit(search: Any = search) -> None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
                    search.fit(X, y)

            row = _counted(name, fit)
            row.update(inside, set_up=row["compiles"] - inside["training"] - inside["scoring"])
            row["set_up_s"] = row["compile_s"] - inside["training_s"] - inside["scoring_s"]
            print("      " + ", ".join(f"{phase} {row[key]:.0f} ({row[key + '_s']:.2f} s)" for phase, key in
                                      (("set-up", "set_up"), ("training", "training"), ("scoring", "scoring"))),
                  flush=True)  # fmt: skip
            out.append(row)
    finally:
        gpunn.Ensemble.fit = real_fit  # type: ignore[method-assign]
    return out


SEARCH = """
import json, sys
sys.path.insert(0, {root!r})
from benchmarks.compiles import search_rows
print(json.dumps(search_rows()))
"""


def fresh_search_rows() -> list[dict]:
    """:func:`search_rows` in a fresh process (nothing compiled before it), its lines passed on."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k != "GPUNN_COMPILE_CACHE"}
    done = subprocess.run([sys.executable, "-c", SEARCH.format(root=root)], capture_output=True, text=True, env=env,
                          check=True)  # fmt: skip
    lines = done.stdout.strip().splitlines()
    print("\n".join(lines[:-1]), flush=True)
    return json.loads(lines[-1])


FIRST_GPUNN = """
import time, sys
sys.path.insert(0, {root!r})
import numpy as np, jax, jax.numpy as jnp, gpunn
from benchmarks.jax_loop import data
X, y = data("seed")
t0 = time.perf_counter()
m = gpunn.MLP([2, 10, 10, 10, 1], xp=jnp, device=None, compile=True, seed=0)
m.fit(X, y, epochs={epochs}, lr=0.1, verbose=0)
print(time.perf_counter() - t0)
"""
FIRST_LOOP = """
import time, sys
sys.path.insert(0, {root!r})
import numpy as np, jax, jax.numpy as jnp
from benchmarks.jax_loop import data, hand_written
X, y = data("seed")
t0 = time.perf_counter()
hand_written("seed", X, y)({epochs})
print(time.perf_counter() - t0)
"""


def first_fits(repeats: int) -> dict:
    """Medians of the first fit's wall time in fresh processes, gpunn and the hand-written loop interleaved."""
    root = str(Path(__file__).resolve().parent.parent)
    times: dict[str, list[float]] = {"gpunn": [], "jax.jit loop": []}
    scripts = {"gpunn": FIRST_GPUNN, "jax.jit loop": FIRST_LOOP}
    env = {k: v for k, v in os.environ.items() if k != "GPUNN_COMPILE_CACHE"}
    for r in range(repeats):
        for name in list(scripts) if r % 2 == 0 else list(scripts)[::-1]:
            code = scripts[name].format(root=root, epochs=EPOCHS)
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            times[name].append(float(done.stdout.split()[-1]))
    return {name: {"median_s": statistics.median(ts), "all_s": ts} for name, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compiles", description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="the key the results are kept under (before, after)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="fresh processes per contender for the first fit (0: leave it out)")  # fmt: skip
    parser.add_argument("--no-torch", action="store_true", help="leave out torch.compile's rows")
    parser.add_argument("--ensemble-only", action="store_true", help="only the Ensemble's rows")
    parser.add_argument("--search-only", action="store_true", help="only MLPSearchCV's rows")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import jax

    import gpunn

    result: dict = {"gpunn": gpunn.__file__}
    only = args.ensemble_only or args.search_only
    if not only:
        result["jax_rows"] = jax_rows()
    if not args.search_only:
        result["ensemble_rows"] = ensemble_rows()
    if not (args.no_torch or only):
        result["torch_rows"] = torch_rows()
    if not args.ensemble_only:
        result["search_rows"] = fresh_search_rows()
    if args.repeats > 0 and not only:
        result["first_fit"] = first_fits(args.repeats)
        first = result["first_fit"]
        print(f"\nfirst fit in a fresh process ({EPOCHS} epochs, compilation included, medians of {args.repeats}): "
              f"gpunn {first['gpunn']['median_s']:.2f} s, hand-written jax.jit loop "
              f"{first['jax.jit loop']['median_s']:.2f} s")  # fmt: skip
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    meta = {"jax": jax.__version__, "machine": platform.machine(), "cpus": os.cpu_count(), "load": load}
    stored = json.loads(args.json.read_text()) if args.json.exists() else {}
    stored[args.label] = {**meta, **result}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(stored, indent=1) + "\n")
    print(f"Wrote {args.json} [{args.label}]")


if __name__ == "__main__":
    main()
