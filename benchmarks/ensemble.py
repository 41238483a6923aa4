"""Many networks at once: ``python -m benchmarks.ensemble [--quick] [--namespaces ...] [--members K]``.

K seed networks of the tiny cell (10 -> 10 -> 10 -> 10 -> 1, a full batch of 1000 rows, SGD, float32) trained as
one ``gpunn.Ensemble`` against K separate ``gpunn.MLP`` fits, on each namespace, interleaved: every repeat times
the ensemble and then the K fits, namespace after namespace, so that a machine busy with other work slows both
alike. Reported: milliseconds per epoch (all K networks), the median over repeats, and their ratio (issue 18's
targets on 2 CPU cores: at most 1.1x on NumPy, 0.6x on torch and JAX). JAX compiles both (``compile="auto"``).
``--versus-one --members 256 --namespaces cupy torch-cuda jax-gpu`` times the ensemble against one network's fit
instead, on the GPU (issue 18's GPU target: at most 3x); ``benchmarks/gpu.sh`` runs it as its ``ensemble`` step.
``--ranks 2`` times ``Ensemble.fit(comm=, parallel="members")`` of 64 members of 8-32-32-1 (NumPy, float32) on 2
MPI ranks against the same fit in one process, interleaved (issue 31's target on 2 CPU cores: at most 0.6x): see
:func:`main_ranks`.

``--versus-vmap`` times 64 networks 10-32-32-1 (1000 rows, full batch, SGD, 100 epochs, one thread, medians of 3
interleaved repeats) against what an expert writes by hand with each namespace's own tools, from the same
weights to the same weights: ``torch.func.vmap(grad_and_value(loss))`` over stacked weights against
``gpunn.Ensemble`` on torch's CPU, and ``jax.vmap(jax.value_and_grad(loss))`` inside one jitted ``lax.scan`` over
the epochs against ``gpunn.Ensemble`` on JAX (compilation outside the clock on both sides); wall and CPU seconds,
and the load average. ``--namespaces jax`` (or ``torch``) times one of the two; ``--repeats N`` sets the repeats.

This machine sets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which halve NumPy's matrix products; run
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.ensemble`` for NumPy's own kernels (the
BLAS that ran is printed). On a machine whose cores are busy with other work, torch's intra-op threads wait
on each other (tens of times slower); ``--torch-threads 1`` avoids that.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.worker import CELLS, LR, make_data

RESULTS = Path(__file__).parent / "results" / "ensemble.json"
SIZES = CELLS["tiny"]["sizes"]


NAMESPACES = ["numpy", "torch", "jax", "cupy", "torch-cuda", "jax-gpu"]


def _namespace(name: str) -> dict[str, Any]:
    if name == "numpy":
        return {"device": "cpu"}
    if name == "cupy":
        return {"device": "cuda"}
    if name.startswith("torch"):
        import torch

        return {"xp": torch, "device": "cuda" if name == "torch-cuda" else "cpu"}
    import jax
    import jax.numpy as jnp

    return {"xp": jnp, "device": jax.devices("gpu" if name == "jax-gpu" else "cpu")[0]}


def _available(name: str) -> bool:
    module = {"torch-cuda": "torch", "jax-gpu": "jax"}.get(name, name)
    if name != "numpy" and importlib.util.find_spec(module) is None:
        return False
    if name in ("cupy", "torch-cuda", "jax-gpu"):
        try:
            _namespace(name)
            from gpunn import _backend

            return _backend.gpu_usable() if name == "cupy" else True
        except Exception:
            return False
    return True


def _sync(model: Any) -> None:
    from gpunn import _backend

    _backend.synchronize(model.params)


def time_ensemble(kw: dict[str, Any], X: Any, y: Any, members: int, epochs: int) -> float:
    """Seconds per epoch of one Ensemble of ``members`` networks."""
    import gpunn

    ens = gpunn.Ensemble(SIZES, members, seed=0, **kw)
    ens.fit(X, y, epochs=2, lr=LR, verbose=0)  # warm-up: compilation, caches
    _sync(ens.members[-1])
    start = time.perf_counter()
    ens.fit(X, y, epochs=epochs, lr=LR, verbose=0)
    _sync(ens.members[-1])
    return (time.perf_counter() - start) / epochs


def time_separate(kw: dict[str, Any], X: Any, y: Any, members: int, epochs: int) -> float:
    """Seconds per epoch of ``members`` MLPs fitted one after the other."""
    import gpunn

    models = [gpunn.MLP(SIZES, seed=k, **kw) for k in range(members)]
    models[0].fit(X, y, epochs=2, lr=LR, verbose=0)  # warm-up: the compiled step is shared by all of them
    _sync(models[0])
    start = time.perf_counter()
    for m in models:
        m.fit(X, y, epochs=epochs, lr=LR, verbose=0)
        _sync(m)
    return (time.perf_counter() - start) / epochs


def time_one(kw: dict[str, Any], X: Any, y: Any, epochs: int) -> float:
    """Seconds per epoch of one MLP (the ``--versus-one`` baseline)."""
    return time_separate(kw, X, y, 1, epochs)


# ------------------------------------------------------------------- --versus-vmap: against hand-written stacks
VMAP_SIZES = [10, 32, 32, 1]
VMAP_LR = 0.1


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    """Wall seconds and the process's CPU seconds (every thread's: XLA computes on its own) since ``start``. On a
    machine shared with other work the CPU time moves less than the wall time: a process waiting for a core
    is not charged for the wait."""
    return time.perf_counter() - start[0], time.process_time() - start[1]


def _vmap_torch(weights: list[list[Any]], X: Any, y: Any, epochs: int) -> tuple[tuple[float, float], Any]:
    """The hand-written PyTorch ensemble: ``torch.func.vmap(grad_and_value(loss))`` over stacked weights (K, out,
    in), one SGD update per epoch, each epoch's losses kept on the device and read once at the end."""
    import torch
    from torch.func import grad_and_value, vmap

    params = [torch.tensor(np.stack([w[i] for w in weights])) for i in range(len(weights[0]))]
    x, t = torch.tensor(X), torch.tensor(y.reshape(-1, 1).astype(np.float32))

    def loss(p: list[Any], x: Any, t: Any) -> Any:
        a = x
        for i in range(0, len(p) - 2, 2):
            a = torch.relu(a @ p[i].T + p[i + 1])
        z = a @ p[-2].T + p[-1]
        return torch.nn.functional.binary_cross_entropy_with_logits(z, t)

    step = vmap(grad_and_value(loss), in_dims=(0, None, None))
    step(params, x, t)  # warm-up (vmap's first call sets up its rules), outside the clock
    start = _clock()
    losses = []
    for _ in range(epochs):
        grads, value = step(params, x, t)
        params = [p - VMAP_LR * g for p, g in zip(params, grads)]
        losses.append(value)
    torch.stack(losses).numpy()  # the epochs' losses on the host, as gpunn reads its records
    return _since(start), [p.numpy() for p in params]


def _vmap_jax(weights: list[list[Any]], X: Any, y: Any, epochs: int) -> tuple[tuple[float, float], Any]:
    """The hand-written JAX ensemble: ``jax.vmap(jax.value_and_grad(loss))`` inside one jitted ``lax.scan`` over
    the epochs (compiled before the clock starts), each epoch's losses stacked by the scan."""
    import jax
    import jax.numpy as jnp

    params = [jnp.asarray(np.stack([w[i] for w in weights])) for i in range(len(weights[0]))]
    x, t = jnp.asarray(X), jnp.asarray(y.reshape(-1, 1).astype(np.float32))

    def loss(p: list[Any], x: Any, t: Any) -> Any:
        a = x
        for i in range(0, len(p) - 2, 2):
            a = jax.nn.relu(a @ p[i].T + p[i + 1])
        z = a @ p[-2].T + p[-1]
        return jnp.mean(jnp.logaddexp(0.0, z) - t * z)

    step = jax.vmap(jax.value_and_grad(loss), in_axes=(0, None, None))

    @jax.jit
    def train(params: list[Any]) -> tuple[list[Any], Any]:
        def epoch(p: list[Any], _: Any) -> tuple[list[Any], Any]:
            value, grads = step(p, x, t)
            return [a - VMAP_LR * g for a, g in zip(p, grads)], value

        return jax.lax.scan(epoch, params, None, length=epochs)

    jax.block_until_ready(train(params))  # compiled outside the clock
    start = _clock()
    params, losses = train(params)
    np.asarray(losses)
    return _since(start), [np.asarray(p) for p in params]


def _vmap_gpunn(kw: dict[str, Any], X: Any, y: Any, members: int, epochs: int) -> tuple[tuple[float, float], Any]:
    """gpunn.Ensemble of the same networks, from the same weights, compiled where gpunn compiles (JAX) before
    the clock starts; its per-epoch records (loss, accuracy) kept as always."""
    import gpunn

    warm = gpunn.Ensemble(VMAP_SIZES, members, seed=0, **kw)
    warm.fit(X, y, epochs=2, lr=VMAP_LR, verbose=0)  # compilation and caches
    _sync(warm.members[-1])
    ens = gpunn.Ensemble(VMAP_SIZES, members, seed=0, **kw)
    start = _clock()
    ens.fit(X, y, epochs=epochs, lr=VMAP_LR, verbose=0)
    _sync(ens.members[-1])
    elapsed = _since(start)
    assert len(ens.members[0].history.loss) == epochs
    return elapsed, [np.stack([m.numpy_weights()[i // 2][i % 2] for m in ens.members]) for i in range(6)]


VMAP_NAMESPACES = ("torch", "jax")  # the CPU namespaces with a hand-written side (_vmap_torch, _vmap_jax)


def versus_vmap(members: int, epochs: int, repeats: int, json_path: Path, namespaces: list[str]) -> None:
    """``--versus-vmap``: gpunn.Ensemble against the stack an expert writes by hand with each namespace's own
    tools (issue 28.6), on one thread, interleaved, on those of ``namespaces`` that have a hand-written side
    (torch, jax); every pair starts from the same weights and must end at the same weights (float32, 1e-4), so
    that both sides did the same work."""
    import gpunn

    names = [n for n in VMAP_NAMESPACES if n in namespaces and _available(n)]
    skipped = sorted(set(namespaces) - set(names))
    if skipped:
        print(f"skipped (no hand-written side, or not installed): {', '.join(skipped)}")
    if not names:
        raise SystemExit(f"--versus-vmap times {' and '.join(VMAP_NAMESPACES)}; none of {namespaces} is one")

    X, y = make_data({"sizes": VMAP_SIZES, "n": 1000})
    init = gpunn.Ensemble(VMAP_SIZES, members, seed=0, device="cpu")
    weights = [[a for pair in m.numpy_weights() for a in pair] for m in init.members]
    sides = {
        "torch": (lambda: _vmap_torch(weights, X, y, epochs), lambda: _vmap_gpunn(_namespace("torch"), X, y,
                                                                                  members, epochs)),
        "jax": (lambda: _vmap_jax(weights, X, y, epochs), lambda: _vmap_gpunn(_namespace("jax"), X, y, members,
                                                                              epochs)),
    }  # fmt: skip
    times: dict[str, dict[str, list[tuple[float, float]]]] = {n: {"hand": [], "gpunn": []} for n in names}
    for _ in range(repeats):
        for n in names:
            for side, run in zip(("hand", "gpunn"), sides[n]):
                elapsed, final = run()
                times[n][side].append(elapsed)
                if side == "hand":
                    reference = final
                else:
                    for a, b in zip(final, reference):
                        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    load = [round(v, 1) for v in os.getloadavg()]
    print(f"{members} networks {VMAP_SIZES}, full batch of 1000 rows, SGD, float32, {epochs} epochs, one thread, "
          f"median of {repeats} interleaved repeats: wall seconds (and the process's CPU seconds); load average "
          f"at the end {load} on {os.cpu_count()} cores\n")  # fmt: skip
    print("| namespace | hand-written | gpunn.Ensemble | ratio, wall | ratio, CPU |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for n in names:
        (hand, hand_cpu), (ours, ours_cpu) = (
            tuple(statistics.median(t[i] for t in times[n][k]) for i in (0, 1)) for k in ("hand", "gpunn")
        )
        rows.append({"namespace": n, "hand_s": hand, "gpunn_s": ours, "ratio": ours / hand, "hand_cpu_s": hand_cpu,
                     "gpunn_cpu_s": ours_cpu, "ratio_cpu": ours_cpu / hand_cpu, "runs": times[n]})  # fmt: skip
        print(
            f"| {n} | {hand:.2f} ({hand_cpu:.2f}) | {ours:.2f} ({ours_cpu:.2f}) | {ours / hand:.2f}x | "
            f"{ours_cpu / hand_cpu:.2f}x |"
        )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"members": members, "epochs": epochs, "repeats": repeats, "load_average": load,
                                     "rows": rows}, indent=1) + "\n")  # fmt: skip
    print(f"\nWrote {json_path}")


def _one_thread(torch: bool = True) -> None:
    """One thread for every library, set before any of them starts its pools (torch's only when it is timed)."""
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                               "intra_op_parallelism_threads=1").strip()  # fmt: skip
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    if torch:
        import torch as module

        module.set_num_threads(1)


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i.get('internal_api')} {i.get('architecture', '')} x{i.get('num_threads')}"
                         for i in threadpool_info() if i.get("user_api") == "blas")  # fmt: skip
    except ImportError:
        return "unknown (threadpoolctl not installed)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ensemble", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats (a smoke run)")
    parser.add_argument("--members", type=int, default=64, help="networks (default 64)")
    parser.add_argument(
        "--namespaces",
        nargs="+",
        default=["numpy", "torch", "jax"],
        choices=NAMESPACES,
        help="where to train (cupy, torch-cuda and jax-gpu need a GPU; unavailable ones are skipped)",
    )
    parser.add_argument("--versus-one", action="store_true",
                        help="compare the ensemble with ONE network's fit instead of K separate fits (issue 18's GPU "
                             "target: 256 networks in at most 3x the time of one)")  # fmt: skip
    parser.add_argument("--versus-vmap", action="store_true",
                        help="64 networks 10-32-32-1 against a hand-written torch.func.vmap and jax.vmap + lax.scan "
                             "ensemble, one thread, 100 epochs (issue 28.6)")  # fmt: skip
    parser.add_argument("--repeats", type=int, help="interleaved repeats of --versus-vmap (default 3, 1 with --quick)")
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads (on a busy 2-core machine, 1)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write the results (default {RESULTS})")
    parser.add_argument("--ranks", type=int, help="time the members split over this many MPI ranks (main_ranks)")
    args = parser.parse_args(argv)
    if args.ranks:
        return main_ranks(args.ranks, args.quick, args.json.with_name("ensemble_ranks.json"))
    if args.versus_vmap:
        _one_thread("torch" in args.namespaces)
        json_path = args.json if args.json != RESULTS else RESULTS.with_name("ensemble_vmap.json")
        repeats = args.repeats or (1 if args.quick else 3)
        versus_vmap(args.members, 10 if args.quick else 100, repeats, json_path, args.namespaces)
        return
    epochs, repeats = (5, 2) if args.quick else (30, 5)
    if args.torch_threads and "torch" in args.namespaces:
        import torch

        torch.set_num_threads(args.torch_threads)
    names = [n for n in args.namespaces if _available(n)]
    skipped = sorted(set(args.namespaces) - set(names))
    if skipped:
        print(f"skipped (not installed, or no GPU): {', '.join(skipped)}")
    X, y = make_data(CELLS["tiny"])
    times: dict[str, dict[str, list[float]]] = {n: {"ensemble": [], "separate": []} for n in names}
    kws = {n: _namespace(n) for n in names}
    for _ in range(repeats):
        for n in names:
            times[n]["ensemble"].append(time_ensemble(kws[n], X, y, args.members, epochs))
            if args.versus_one:
                times[n]["separate"].append(time_one(kws[n], X, y, epochs))
            else:
                times[n]["separate"].append(time_separate(kws[n], X, y, args.members, epochs))
    rows = []
    for n in names:
        ens, sep = (statistics.median(times[n][k]) for k in ("ensemble", "separate"))
        rows.append({"namespace": n, "members": args.members, "ensemble_ms": ens * 1e3, "separate_ms": sep * 1e3,
                     "ratio": ens / sep, "epochs": epochs, "repeats": repeats, "runs": times[n],
                     "baseline": "one MLP" if args.versus_one else f"{args.members} MLPs"})  # fmt: skip
    env = {v: os.environ.get(v) for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"{args.members} networks {SIZES}, full batch of 1000, SGD, float32, per epoch (median of {repeats} "
          f"interleaved repeats of {epochs} epochs); BLAS: {_blas()}; {env}\n")  # fmt: skip
    baseline = "one MLP" if args.versus_one else "separate MLPs"
    print(f"| namespace | one Ensemble (ms/epoch) | {baseline} (ms/epoch) | ratio |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['namespace']} | {r['ensemble_ms']:.2f} | {r['separate_ms']:.2f} | {r['ratio']:.2f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"blas": _blas(), "env": env, "rows": rows}, indent=1) + "\n")
    print(f"\nWrote {args.json}")


# ------------------------------------------------------------------------------------------ members over ranks
RANKS_SIZES = [8, 32, 32, 1]
RANKS_FIT = {"batch_size": 256, "optimizer": "adam", "lr": 0.01}
_RANK_WORKER = """
import json, sys, time
import numpy as np
import gpunn
cfg = json.loads(sys.argv[1])
comm = None
if cfg["ranks"] > 1:
    from gpunn.distributed import Communicator
    comm = Communicator()
rng = np.random.default_rng(0)
X = rng.normal(size=(cfg["rows"], cfg["sizes"][0])).astype(np.float32)
y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
kw = {} if comm is None else {"comm": comm, "parallel": "members"}
ens = gpunn.Ensemble(cfg["sizes"], cfg["members"], seed=0, device="cpu")
ens.fit(X, y, epochs=1, verbose=0, **cfg["fit"], **kw)  # warm-up: caches, the first gather
if comm is not None:
    comm.barrier()
start = time.perf_counter()
ens.fit(X, y, epochs=cfg["epochs"], verbose=0, **cfg["fit"], **kw)  # the one gather included
if comm is None or comm.rank == 0:
    print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def time_ranks(ranks: int, members: int, rows: int, epochs: int) -> float:
    """Seconds of one ``Ensemble.fit`` of ``members`` networks of RANKS_SIZES for ``epochs`` epochs, timed inside
    the process (rank 0's, from a barrier to the end of the gather): in one process for ``ranks=1``, else with
    the members split over ``ranks`` ranks of ``mpiexec``, each rank's BLAS on cores // ranks threads."""
    import subprocess
    import sys

    cfg = json.dumps({"ranks": ranks, "members": members, "rows": rows, "epochs": epochs, "sizes": RANKS_SIZES,
                      "fit": RANKS_FIT})  # fmt: skip
    command = [sys.executable, "-c", _RANK_WORKER, cfg]
    env = dict(os.environ)
    if ranks > 1:
        local = Path(sys.executable).with_name("mpiexec")
        command = [str(local) if local.exists() else "mpiexec", "-n", str(ranks), *command]
        threads = str(max(1, (os.cpu_count() or 1) // ranks))
        env.update({v: threads for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True, timeout=900)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def main_ranks(ranks: int, quick: bool, path: Path) -> None:
    """``--ranks N``: 64 members of 8-32-32-1 (NumPy, float32, 4096 rows, Adam, batches of 256) in one process and
    split over N ranks (``parallel="members"``), interleaved: every repeat times one process, then N ranks."""
    members, rows = 64, 4096
    epochs, repeats = (2, 2) if quick else (10, 5)
    times: dict[str, list[float]] = {"one process": [], f"{ranks} ranks": []}
    for _ in range(repeats):
        times["one process"].append(time_ranks(1, members, rows, epochs))
        times[f"{ranks} ranks"].append(time_ranks(ranks, members, rows, epochs))
    one, split = (statistics.median(v) for v in times.values())
    print(f"{members} networks {RANKS_SIZES}, {rows} rows, {RANKS_FIT}, float32, NumPy, {epochs} epochs per fit "
          f"(median of {repeats} interleaved repeats); {os.cpu_count()} cores; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}\n")  # fmt: skip
    print("| run | fit (s) | ratio |")
    print("|---|---:|---:|")
    print(f"| one process | {one:.3f} | 1.00 |")
    print(f'| {ranks} ranks, parallel="members" | {split:.3f} | {split / one:.2f} |')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"members": members, "sizes": RANKS_SIZES, "rows": rows, "fit": RANKS_FIT,
                                "epochs": epochs, "repeats": repeats, "ranks": ranks, "runs": times,
                                "ratio": split / one, "load_average": os.getloadavg()}, indent=1) + "\n")  # fmt: skip
    print(f"\nWrote {path}")


if __name__ == "__main__":
    main()
