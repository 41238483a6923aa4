"""gpunn's benchmark suite: ``python -m benchmarks`` (from the repository root, with ``pip install ".[bench]"``).

Measures gpunn side by side with the tools users would pick instead (a naive NumPy loop, scikit-learn's
MLPClassifier, PyTorch eager, JAX jit), each contender in its own process, on the same architecture, float32,
initial weights, plain SGD, batch size and epochs, shuffling every epoch. Writes JSON, a markdown table and a
PNG chart under benchmarks/results/.

This machine's OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE halve NumPy's matmul speed; the command removes both
from its own environment (never the tests' or CI's) and reports which BLAS kernel ran.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _BLAS_VARS):  # before NumPy loads OpenBLAS
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    env["GPUNN_BENCH_UNSET"] = ",".join(v for v in _BLAS_VARS if v in os.environ)
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *sys.argv[1:]], env)

import numpy as np  # noqa: E402

from benchmarks.worker import CELLS, middle_half  # noqa: E402

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
PEERS = ("naive-numpy", "sklearn", "torch-cpu", "torch-cuda", "jax-jit")
PAIRED_EPOCHS = {"tiny": 401, "mid-128": 31, "mid-1024": 31, "wide": 7}  # gpunn-numpy and naive, in turn


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def gpu_available() -> bool:
    from gpunn import _backend

    return _backend.gpu_usable()


def contenders(gpu: bool) -> list[str]:
    out = ["gpunn-numpy"]
    if have("torch"):
        out += ["gpunn-torch", "gpunn-torch-compile"]
    if have("jax"):
        out.append("gpunn-jax")
    if gpu:
        out.append("gpunn-cupy")
        if have("torch"):
            out.append("gpunn-torch-cuda")
    out.append("naive-numpy")
    if have("sklearn"):
        out.append("sklearn")
    if have("torch"):
        out.append("torch-cpu")
        if gpu:
            out.append("torch-cuda")
    if have("jax"):
        out.append("jax-jit")
    return out


def step_gemms(sizes: list[int], batch: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product in one training step: forward, dW, and dX except for the input."""
    shapes = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes.append((batch, fan_in, fan_out))  # A @ W.T
        shapes.append((fan_out, batch, fan_in))  # delta.T @ A
        if i:
            shapes.append((batch, fan_out, fan_in))  # delta @ W
    return shapes


def step_flops(sizes: list[int], batch: int) -> int:
    return sum(2 * m * k * n for m, k, n in step_gemms(sizes, batch))


def gemm_seconds(sizes: list[int], batch: int, repeats: int, gpu: bool = False) -> float:
    """Best time of the step's matrix products alone, in float32: the roofline floor of a step. In NumPy, or in
    CuPy with the device synchronized when ``gpu`` (a GPU run's contenders are measured against the GPU).

    The minimum over repeats, not the median: a floor is what the hardware can do, and on a shared machine
    every disturbance only adds time."""
    xp, sync = np, lambda: None
    if gpu:
        import cupy

        xp, sync = cupy, cupy.cuda.Device().synchronize
    rng = np.random.default_rng(0)
    pairs = [
        (xp.asarray(rng.normal(size=(m, k)), dtype=np.float32), xp.asarray(rng.normal(size=(k, n)), dtype=np.float32))
        for m, k, n in step_gemms(sizes, batch)
    ]
    for a, b in pairs:
        a @ b
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a, b in pairs:
            a @ b
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine() -> dict:
    info: dict = {"python": platform.python_version(), "machine": platform.machine(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    from threadpoolctl import threadpool_info

    info["blas"] = [
        {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "threading_layer")}
        for p in threadpool_info()
        if p.get("user_api") == "blas"
    ]
    info["unset_for_benchmark"] = os.environ.get("GPUNN_BENCH_UNSET", "")
    versions = {}
    for name in ("gpunn", "numpy", "array_api_compat", "sklearn", "torch", "jax", "cupy"):
        if have(name):
            try:
                versions[name] = __import__(name).__version__
            except Exception as exc:
                versions[name] = f"unusable ({type(exc).__name__})"
    info["versions"] = versions
    return info


def run_worker(contender: str, cell: str, options: dict) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.worker", contender, cell, json.dumps(options)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT.parent, timeout=3600)
    if r.returncode != 0:
        return {"contender": contender, "cell": cell, "error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def profile_step(cell_name: str) -> list[tuple[str, float]]:
    """Where a gpunn-numpy step's time goes, by function (cProfile, own time)."""
    import cProfile
    import pstats

    import gpunn
    from benchmarks.worker import make_data

    cell = CELLS[cell_name]
    X, y = make_data(cell)
    m = gpunn.MLP(cell["sizes"], output="softmax", device="cpu")
    m.fit(X, y, epochs=1, lr=0.01, batch_size=cell["batch"], verbose=0)
    prof = cProfile.Profile()
    prof.runcall(m.fit, X, y, epochs=5, lr=0.01, batch_size=cell["batch"], verbose=0)
    stats = pstats.Stats(prof).stats
    total = sum(v[2] for v in stats.values())
    by_name: dict[str, float] = {}
    for (filename, _, func), (_, _, tottime, _, _) in stats.items():
        where = f"gpunn.{Path(filename).stem}.{func}" if "gpunn" in filename else "numpy/other: " + func
        by_name[where] = by_name.get(where, 0.0) + tottime
    rows = sorted(by_name.items(), key=lambda kv: -kv[1])[:8]
    return [(name, t / total) for name, t in rows]


def memory_check() -> dict:
    """gpunn on the mid cell with 60,000 samples: peak RSS against the data it must hold, per epoch."""
    r = subprocess.run([sys.executable, "-m", "benchmarks.memory"], capture_output=True, text=True, cwd=ROOT.parent)
    if r.returncode != 0:
        return {"error": r.stderr.strip()[-500:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated cells (default: all)")
    parser.add_argument("--contenders", help="comma-separated contenders (default: all available)")
    parser.add_argument("--quick", action="store_true", help="fewer epochs (a smoke run, not for publishing)")
    parser.add_argument("--tag", default="cpu", help="name of the result files (default: cpu)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per cell (default: 5)")
    parser.add_argument("--reference", default="gpunn-numpy", help="the contender others are compared with")
    parser.add_argument("--no-memory", action="store_true", help="skip the CPU memory check and step profile")
    args = parser.parse_args()

    gpu = gpu_available()
    names = args.contenders.split(",") if args.contenders else contenders(gpu)
    epochs = {"tiny": 201, "mid-128": 6, "mid-1024": 11, "wide": 3}
    if args.quick:
        epochs = {"tiny": 21, "mid-128": 2, "mid-1024": 3, "wide": 2}
    info = machine()
    info["gpu"] = None
    if gpu:
        import cupy

        info["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        info["cupy_tf32"] = os.environ.get("CUPY_TF32", "0")
    print(f"gpunn benchmarks on {info['cpu']} ({info['cores']} cores), BLAS {info['blas']}", flush=True)

    results: list[dict] = []
    paired: dict[str, dict] = {}
    for cell_name in args.cells.split(","):
        cell = dict(CELLS[cell_name])
        batch = cell["batch"] or cell["n"]
        floor = gemm_seconds(cell["sizes"], batch, repeats=30 if cell_name != "wide" or gpu else 5, gpu=gpu)
        flops = step_flops(cell["sizes"], batch)
        # wide's short CPU run: torch.compile's compilation would take longer than the run
        todo = [n for n in names if not (cell_name == "wide" and not gpu and n == "gpunn-torch-compile")]
        # Machines drift: run the contenders in rounds, alternating their order, and pool the timed epochs.
        rounds = 1 if args.quick else min(args.rounds, 3) if cell_name == "wide" else args.rounds
        sized = {"n": 2048} if cell_name == "wide" and not gpu else {}  # wide's short CPU run: two steps an epoch
        runs: dict[str, list[dict]] = {n: [] for n in todo}
        for k in range(rounds):
            for name in todo if k % 2 == 0 else todo[::-1]:
                runs[name].append(run_worker(name, cell_name, {"epochs": epochs[cell_name], **sized}))
        for name in todo:
            r = next((x for x in runs[name] if "error" in x), None) or dict(runs[name][0])
            r.update({"gemm_floor_s": floor, "flops_per_step": flops, "batch": batch, "rounds": rounds})
            if "error" not in r:
                timed = [t for x in runs[name] for t in x["epoch_seconds"][1:]]  # the first epoch warms up
                r["epoch_seconds"] = timed
                r["step_s"] = statistics.median(timed) / r["steps_per_epoch"]
                r["step_iqr_s"] = [q / r["steps_per_epoch"] for q in middle_half(timed)]
                r["samples_per_s"] = batch / r["step_s"]
                r["roofline_pct"] = 100.0 * floor / r["step_s"]
                r["memory_mib"] = max(x["peak_rss_mib"] - x["baseline_rss_mib"] for x in runs[name])
                print(f"{cell_name:9s} {name:12s} {r['step_s'] * 1e3:9.3f} ms/step  "
                      f"{r['roofline_pct']:5.1f}% of GEMM floor  {r['memory_mib']:7.1f} MiB", flush=True)  # fmt: skip
            else:
                print(f"{cell_name:9s} {name:12s} failed: {r['error']}", flush=True)
            results.append(r)
        if {"gpunn-numpy", "naive-numpy"} <= set(todo):
            pair = run_worker(
                "paired", cell_name, {"epochs": (epochs if args.quick else PAIRED_EPOCHS)[cell_name], **sized}
            )
            paired[cell_name] = pair
            if "error" not in pair:
                print(f"{cell_name:9s} paired gpunn-numpy / naive-numpy: median ratio {pair['median_ratio']:.2f} "
                      f"over {pair['pairs']} pairs of epochs", flush=True)  # fmt: skip

        # Written after every cell, so that a run cut short keeps the cells it finished.
        write(report_of(info, args, gpu, results, paired), args.tag)

    report = report_of(info, args, gpu, results, paired)
    report["memory"] = memory_check() if not (args.quick or args.no_memory) else None
    report["profile_mid_1024"] = profile_step("mid-1024") if not (args.quick or args.no_memory) else None
    table = write(report, args.tag)
    chart(report, RESULTS / f"{args.tag}.png")
    if (RESULTS / f"{args.tag}.png").exists():  # the docs site shows the latest chart
        (ROOT.parent / "docs" / "assets").mkdir(exist_ok=True)
        (ROOT.parent / "docs" / "assets" / f"benchmark-{args.tag}.png").write_bytes(
            (RESULTS / f"{args.tag}.png").read_bytes()
        )
    print(table)


def report_of(info: dict, args: argparse.Namespace, gpu: bool, results: list[dict], paired: dict) -> dict:
    return {
        "date": datetime.date.today().isoformat(),
        "machine": info,
        "lr": 0.01,
        "dtype": "float32",
        "reference": args.reference,
        "gemm_floor_on": "cupy" if gpu else "numpy",
        "results": results,
        "paired": paired,
        "memory": None,
        "profile_mid_1024": None,
    }


def write(report: dict, tag: str) -> str:
    """The report as benchmarks/results/<tag>.json and its table as <tag>.md; returns the table."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{tag}.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (RESULTS / f"{tag}.md").write_text(table)
    return table


def markdown(report: dict) -> str:
    info = report["machine"]
    reference = report.get("reference", "gpunn-numpy")
    blas = "; ".join(
        f"{b['internal_api']} {b['version']} {b['architecture']} x{b['num_threads']}" for b in info["blas"]
    )
    lines = [
        f"Measured {report['date']} on {info['cpu']}, {info['cores']} cores"
        + (f", GPU {info['gpu']} (CUPY_TF32={info.get('cupy_tf32')})" if info.get("gpu") else ", no GPU")
        + f"; BLAS: {blas}; unset for the run: {info['unset_for_benchmark'] or 'nothing'}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".",
        "",
        f"| cell | contender | ms / step (median) | middle half | samples / s | {reference} speed-up "
        "| % of GEMM floor | speed-up ceiling | peak RSS over baseline (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_cell: dict[str, dict[str, dict]] = {}
    for r in report["results"]:
        by_cell.setdefault(r["cell"], {})[r["contender"]] = r
    for cell, rows in by_cell.items():
        ref = rows.get(reference, {}).get("step_s")
        for name, r in rows.items():
            if "error" in r:
                lines.append(f"| {cell} | {name} | failed: {r['error'][:60]} | | | | | | |")
                continue
            ratio = f"{r['step_s'] / ref:.2f}x" if ref else ""
            lines.append(
                f"| {cell} | {name} | {r['step_s'] * 1e3:.3f} | {r['step_iqr_s'][0] * 1e3:.3f}-"
                f"{r['step_iqr_s'][1] * 1e3:.3f} | {r['samples_per_s']:,.0f} | {ratio} | "
                f"{r['roofline_pct']:.0f}% | {100 / r['roofline_pct']:.2f}x | {r['memory_mib']:.0f} |"
            )
    lines.append("")
    lines.append(
        f"Speed-up: the contender's median time per step divided by {reference}'s (above 1: gpunn is faster). "
        "Middle half: the 25th-75th percentile of the timed epochs, per step. % of GEMM floor: the time of the "
        f"step's matrix products alone in {report.get('gemm_floor_on', 'numpy')}, float32, measured in the same run, "
        "over the step's time. Speed-up ceiling: "
        "the contender's time over the GEMM floor, the most that any library running the same matrix products "
        "could be faster than this contender. Peak RSS counts "
        "everything the contender's process loaded after NumPy, its framework included."
    )
    paired = report.get("paired") or {}
    if paired:
        lines += [
            "",
            "gpunn-numpy over the naive loop, paired: both in one process, an epoch of each in turn, the median "
            "ratio of their times over the pairs (below 1: gpunn is faster) and its middle half. Drift of the "
            "machine hits both alike here, so this is the figure for the target that the abstraction costs nothing:",
            "",
        ]
        for cell, p in paired.items():
            if "error" in p:
                lines.append(f"- {cell}: failed: {p['error'][:80]}")
            else:
                lines.append(f"- {cell}: {p['median_ratio']:.2f}x (middle half {p['ratio_iqr'][0]:.2f}-"
                             f"{p['ratio_iqr'][1]:.2f}, {p['pairs']} pairs)")  # fmt: skip
    mem = report.get("memory")
    if mem and "error" not in mem:
        cli, api = mem["cli"], mem["api"]
        lines += [
            "",
            f"Memory on the mid cell, {mem['samples']:,} samples, Adam, batch {mem['batch']}, {mem['epochs']} epochs, "
            f"against the {cli['needed_mib']:.0f} MiB that training must hold (dataset + parameters + optimizer "
            "state + gradients + one batch's activations):",
            "",
            f"- `gpunn train` on a {cli['csv_mib']:.0f} MiB CSV file: peak RSS {cli['peak_over_baseline_mib']:.0f} MiB "
            f"over the process's RSS with gpunn imported ({cli['ratio']:.2f}x); RSS after each epoch (MiB): "
            + ", ".join(f"{v:.0f}" for v in cli["rss_per_epoch_mib"])
            + ";",
            f"- `MLP.fit` on the same data in memory (float32): peak {api['peak_over_baseline_mib']:.0f} MiB "
            f"({api['ratio']:.2f}x); after each epoch: "
            + ", ".join(f"{v:.0f}" for v in api["rss_per_epoch_mib"])
            + ".",
        ]
    prof = report.get("profile_mid_1024")
    if prof:
        lines += ["", "Where a gpunn-numpy step goes (mid, batch 1024, cProfile own time):", ""]
        lines += [f"- {name}: {share * 100:.0f}%" for name, share in prof]
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    by_cell: dict[str, dict[str, float]] = {}
    for r in report["results"]:
        if "samples_per_s" in r:
            by_cell.setdefault(r["cell"], {})[r["contender"]] = r["samples_per_s"]
    names = sorted({n for rows in by_cell.values() for n in rows}, key=lambda n: (not n.startswith("gpunn"), n))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [j + i * width for j, cell in enumerate(by_cell) if name in by_cell[cell]]
        ys = [by_cell[cell][name] for cell in by_cell if name in by_cell[cell]]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(by_cell))], list(by_cell))
    ax.set_yscale("log")
    ax.set_ylabel("training samples per second (log)")
    ax.set_title(f"gpunn vs peers, float32 SGD — {report['machine']['cpu']}, {report['date']}")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
