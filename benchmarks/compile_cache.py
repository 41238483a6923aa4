"""The persistent compilation cache, cold and warm: ``python -m benchmarks.compile_cache [--repeats R]``.

Each repeat makes an empty cache folder and runs the same first fit in two fresh processes with
``GPUNN_COMPILE_CACHE`` pointing at it: **cold** (the folder is empty, every program is compiled and saved) and
**warm** (a second process, the programs loaded from the folder). A third process without the variable is the
baseline (**off**). Each process reports the fit's wall time (imports excluded, compilation or loading
included), the programs XLA compiled (``jax.monitoring``'s backend-compile events less the cache's hits) and
the hits. The cells: a lone MLP (the seed network, 2-10-10-10-1, moons 1000 rows, 20 epochs, full batch) and
the same with ``batch_size=100``; the three modes interleaved, their order turned every repeat; medians.
Results go to ``benchmarks/results/compile_cache.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "compile_cache.json"
EPOCHS = 20
CELLS = {"full batch": {}, "batch 100": {"batch_size": 100}}
MODES = ("off", "cold", "warm")

SCRIPT = """
import sys, time, json
sys.path.insert(0, {root!r})
import jax, jax.numpy as jnp
compiles, hits = [], []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: compiles.append(duration)
    if event == "/jax/core/compile/backend_compile_duration" else None)
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(1) if event == "/jax/compilation_cache/cache_hits" else None)
import gpunn
from benchmarks.jax_loop import data
X, y = data("seed")
t0 = time.perf_counter()
m = gpunn.MLP([2, 10, 10, 10, 1], xp=jnp, device=None, compile=True, seed=0)
m.fit(X, y, epochs={epochs}, lr=0.1, verbose=0, **{fit!r})
wall = time.perf_counter() - t0
print(json.dumps({{"wall_s": wall, "compiles": len(compiles) - len(hits), "hits": len(hits)}}))
"""


def run(fit: dict, cache: str | None) -> dict:
    """One fresh process's first fit, with the cache folder ``cache`` (None: no cache)."""
    env = {k: v for k, v in os.environ.items() if k != "GPUNN_COMPILE_CACHE"}
    if cache is not None:
        env["GPUNN_COMPILE_CACHE"] = cache
    code = SCRIPT.format(root=str(Path(__file__).resolve().parent.parent), epochs=EPOCHS, fit=fit)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_cache", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="cold/warm/off triples per cell")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs: dict[str, dict[str, list[dict]]] = {cell: {mode: [] for mode in MODES} for cell in CELLS}
    for r in range(args.repeats):
        for cell, fit in CELLS.items():
            with tempfile.TemporaryDirectory(prefix="gpunn-cache-") as folder:
                order = ["off", "cold"] if r % 2 == 0 else ["cold", "off"]  # warm needs cold's folder: always after
                for mode in order + ["warm"]:
                    runs[cell][mode].append(run(fit, None if mode == "off" else folder))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"First fit in a fresh process, {EPOCHS} epochs, medians of {args.repeats} (load average {load}):\n")
    print("| cell | cache | programs compiled | loaded from the cache | wall |")
    print("|---|---|---:|---:|---:|")
    table = []
    for cell in CELLS:
        for mode in MODES:
            rs = runs[cell][mode]
            row = {"cell": cell, "mode": mode, "compiles": statistics.median(x["compiles"] for x in rs),
                   "hits": statistics.median(x["hits"] for x in rs),
                   "wall_s": statistics.median(x["wall_s"] for x in rs), "runs": rs}  # fmt: skip
            table.append(row)
            print(f"| {cell} | {mode} | {row['compiles']:g} | {row['hits']:g} | {row['wall_s']:.2f} s |")
    import jax

    meta = {"jax": jax.__version__, "machine": platform.machine(), "cpus": os.cpu_count(), "load": load}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**meta, "rows": table}, indent=1) + "\n")
    print(f"\nWrote {args.json}")


if __name__ == "__main__":
    main()
