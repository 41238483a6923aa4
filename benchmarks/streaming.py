"""Streaming from a file larger than the shuffle buffer: ``python -m benchmarks.streaming [--rows N] [--features D]
[--format parquet|npy] [--device cpu|cuda]``.

Generates a Parquet file (default 2,097,152 rows of 32 float64 features and a label, 8x the default shuffle
buffer of 262,144 rows; row groups of 65,536 rows) and trains one epoch on it with ``MLP.fit(Dataset(...))``,
each measurement in a process of its own:

- ``memory``: peak anonymous memory (``RssAnon``, sampled every 5 ms) while a standardizing float32 model trains
  an epoch from the file, against the target of 256 MiB plus the shuffle buffer (8 bytes a value, since a
  standardizing model buffers float64 rows).
- ``prefetch``: the same epoch with the batches prepared in the training thread (``PREFETCH = 0``) and ahead of
  it in a background thread (``PREFETCH = 2``), against reading alone (every batch of the epoch read, shuffled and
  standardized, no step) and training alone (the same rows in memory, the same batches): how much of reading the
  epoch no longer adds.

Prints a Markdown table and writes ``benchmarks/results/streaming.json``. Run it with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE unset, as the other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "streaming.json"
SIZES_HIDDEN = [64, 64]
BATCH = 1024


def rss_anon_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def generate(path: Path, rows: int, features: int) -> None:
    """A Parquet file (row groups of 65,536 rows) or, for a path ending in .npy, one (rows, features + 1) float64
    array whose last column is the label."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=features)
    if path.suffix == ".npy":
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(rows, features + 1))
        for start in range(0, rows, 65536):
            n = min(65536, rows - start)
            X = rng.normal(size=(n, features))
            out[start : start + n, :features] = X
            out[start : start + n, features] = X @ w + 0.5 * rng.normal(size=n) > 0
        out.flush()
        del out
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([*(pa.field(f"f{j}", pa.float64()) for j in range(features)), pa.field("label", pa.int64())])
    with pq.ParquetWriter(path, schema, write_page_checksum=True) as writer:  # verified as streamed
        for start in range(0, rows, 65536):
            n = min(65536, rows - start)
            X = rng.normal(size=(n, features))
            y = (X @ w + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
            columns = {f"f{j}": X[:, j] for j in range(features)} | {"label": y}
            writer.write_table(pa.table(columns, schema=schema))


def child(mode: str, path: str, features: int, buffer: int, device: str) -> dict:
    import gpunn
    from gpunn import stream
    from gpunn.data import Dataset

    if path.endswith(".npy"):
        ds = Dataset(path, target=features, shuffle_buffer=buffer, block_rows=65536)
    else:
        ds = Dataset(path, "label", shuffle_buffer=buffer)
    if device != "cpu":  # a GPU's first-use costs (context, cuBLAS, kernels) paid before anything is measured
        x, y = ds.read(ds.blocks[0], np.float32)
        gpunn.MLP([features, *SIZES_HIDDEN, 1], device=device, seed=0).fit(
            x[:BATCH], y[:BATCH], epochs=1, batch_size=BATCH, optimizer="adam", verbose=0
        )
        del x, y
    baseline = rss_anon_mib()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_anon_mib())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    m = gpunn.MLP([features, *SIZES_HIDDEN, 1], device=device, standardize=True, seed=0)
    out: dict = {"mode": mode, "rows": ds.n_rows, "baseline_rss_anon_mib": baseline}
    if mode == "memory":
        start = time.perf_counter()
        m.fit(ds, epochs=1, batch_size=BATCH, optimizer="adam", lr=1e-3, verbose=0)
        out["epoch_s"] = time.perf_counter() - start
    elif mode.startswith("prefetch"):
        stream.PREFETCH = int(mode.removeprefix("prefetch"))
        m.scaling = ds.scaling()  # the statistics pass is timed apart from the epoch
        m.standardize = True
        start = time.perf_counter()
        m.fit(ds, epochs=1, batch_size=BATCH, optimizer="adam", lr=1e-3, verbose=0)
        out["epoch_s"] = time.perf_counter() - start
    elif mode == "read":
        scaling = ds.scaling()
        streamed = stream.Streamed(m, ds, scaling, "X")
        start = time.perf_counter()
        for _ in streamed._produce(BATCH, np.random.default_rng(0), None):
            pass
        out["epoch_s"] = time.perf_counter() - start
    elif mode == "memory-only":
        parts = [ds.read(b, np.float32) for b in ds.blocks]
        X = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        m.fit(X[:BATCH], y[:BATCH], epochs=1, batch_size=BATCH, verbose=0)  # placement and first-call costs
        m = gpunn.MLP([features, *SIZES_HIDDEN, 1], device=device, standardize=True, seed=0)
        m.scaling = ds.scaling()
        start = time.perf_counter()
        m.fit(X, y, epochs=1, batch_size=BATCH, optimizer="adam", lr=1e-3, verbose=0, copy=False)
        out["epoch_s"] = time.perf_counter() - start
    done.set()
    sampler.join()
    out["peak_rss_anon_mib"] = peak[0]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streaming", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1 << 21)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--buffer", type=int, default=1 << 18, help="shuffle buffer rows")
    parser.add_argument("--format", choices=["parquet", "npy"], default="parquet", help="file to stream from")
    parser.add_argument("--device", default="cpu", help="the model's device (cpu, cuda, ...; default cpu)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write the results (default {RESULTS})")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.path, args.features, args.buffer, args.device)))
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"big.{args.format}"
        start = time.perf_counter()
        generate(path, args.rows, args.features)
        file_mib = path.stat().st_size / 2**20
        print(f"generated {path.name}: {args.rows} rows x {args.features} features, {file_mib:.0f} MiB "
              f"in {time.perf_counter() - start:.0f} s")  # fmt: skip
        results = []
        for mode in ["memory", "read", "memory-only", "prefetch0", "prefetch2"]:
            cmd = [sys.executable, "-m", "benchmarks.streaming", "--child", mode, "--path", str(path),
                   "--features", str(args.features), "--buffer", str(args.buffer), "--device", args.device]  # fmt: skip
            r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if r.returncode:
                sys.exit(f"the {mode} run failed:\n{r.stderr.strip()}")
            results.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(results[-1])
    buffer_mib = args.buffer * args.features * 8 / 2**20
    by = {r["mode"]: r for r in results}
    memory = by["memory"]
    train_only, read_only = by["memory-only"]["epoch_s"], by["read"]["epoch_s"]
    lines = [
        f"File: {args.rows} rows x {args.features} float64 features + label, {file_mib:.0f} MiB {args.format} "
        f"({file_mib / buffer_mib:.1f}x the shuffle buffer of {args.buffer} rows = {buffer_mib:.0f} MiB); "
        f"network {[args.features, *SIZES_HIDDEN, 1]}, batch {BATCH}, Adam, float32, standardized, on "
        f"{args.device}.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| peak RssAnon while training an epoch from the file | {memory['peak_rss_anon_mib']:.0f} MiB |",
        f"| RssAnon after imports (baseline) | {memory['baseline_rss_anon_mib']:.0f} MiB |",
        f"| target: 256 MiB + shuffle buffer | {256 + buffer_mib:.0f} MiB |",
        f"| epoch, data in memory (training alone) | {train_only:.2f} s |",
        f"| reading the epoch alone (read, shuffle, standardize, place) | {read_only:.2f} s |",
        f"| epoch streamed, batches prepared in the training thread | {by['prefetch0']['epoch_s']:.2f} s |",
        f"| epoch streamed, prefetched (2 batches ahead) | {by['prefetch2']['epoch_s']:.2f} s |",
    ]
    added0 = by["prefetch0"]["epoch_s"] - train_only
    added2 = by["prefetch2"]["epoch_s"] - train_only
    lines.append(f"| time reading adds to the epoch: without / with prefetch | {added0:.2f} s / {added2:.2f} s |")
    print("\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "file_mib": file_mib, "results": results}
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nWrote {args.json}")


if __name__ == "__main__":
    main()
