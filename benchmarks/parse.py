"""Parsing the CSV file `gpunn train --data` reads: ``python -m benchmarks.parse [--rows N] [--runs R]``.

Writes the mid cell's data as ``benchmarks.memory`` writes it for ``gpunn train``: float32 standard-normal
features (784 of them, ``%.5g``) and an integer label, ``--rows`` rows (default: the mid cell's 8192; the
memory benchmark's file has 60,000). Then times, in turn and ``--runs`` times each, the readers into a float32
``X`` with the label as target:

- ``read_csv (NumPy)``: ``gpunn.data.read_csv``, the pure-NumPy reader (``np.loadtxt`` a block of rows at a
  time), which ``read`` falls back to without pyarrow;
- ``read (pyarrow)``: ``gpunn.data.read``, pyarrow's multi-threaded CSV parser a segment at a time;
- for reference, ``read`` of the same rows written as Parquet and as Feather.

pyarrow parses on every CPU (``--threads`` sets how many); the NumPy reader on one.

Every reader's ``X`` and target are checked equal to the NumPy reader's. Prints the medians as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.worker import CELLS


def generate(path: str, rows: int, features: int, seed: int = 0) -> None:
    """The mid cell's data as ``benchmarks.memory`` writes it, a block of rows at a time."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write(",".join([f"x{j}" for j in range(features)] + ["label"]) + "\n")
        for s in range(0, rows, 2000):
            m = min(2000, rows - s)
            block = np.column_stack([rng.standard_normal((m, features), dtype=np.float32), rng.integers(0, 10, m)])
            np.savetxt(f, block, fmt=["%.5g"] * features + ["%d"], delimiter=",")


def reader(data: Any, path: str) -> Callable[[], Any]:
    return lambda: data.read(path, target="label", dtype="float32")[:2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.parse", description=__doc__.splitlines()[0])
    mid: dict[str, Any] = CELLS["mid-1024"]
    parser.add_argument("--rows", type=int, default=mid["n"], help=f"rows of the CSV file (default {mid['n']})")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each reader (default 5)")
    parser.add_argument("--threads", type=int, help="pyarrow's CPU threads (default: one per CPU)")
    args = parser.parse_args(argv)

    from gpunn import data

    features = mid["sizes"][0]
    have_arrow = data.readers._pyarrow() is not None
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = os.path.join(tmp, "mid.csv")
        t0 = time.perf_counter()
        generate(csv_path, args.rows, features)
        mib = os.path.getsize(csv_path) / 2**20
        print(f"wrote {args.rows} x {features + 1} CSV ({mib:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
        readers: dict[str, Callable[[], Any]] = {
            "read_csv (NumPy)": lambda: data.read_csv(csv_path, target="label", dtype="float32")[:2],
        }
        if have_arrow:
            import pyarrow.csv
            import pyarrow.feather
            import pyarrow.parquet

            if args.threads:
                pyarrow.set_cpu_count(args.threads)
            table = pyarrow.csv.read_csv(csv_path)  # the same rows, as the other files
            pyarrow.parquet.write_table(table, os.path.join(tmp, "mid.parquet"), write_page_checksum=True)
            pyarrow.feather.write_feather(table, os.path.join(tmp, "mid.feather"))
            del table
            for label, name in [("read (pyarrow)", "mid.csv"), ("read, Parquet", "mid.parquet"),
                                ("read, Feather (lz4)", "mid.feather")]:  # fmt: skip
                readers[label] = reader(data, os.path.join(tmp, name))
        else:
            print("pyarrow is not installed (pip install 'gpunn[data]'): timing the NumPy reader only")
        reference: tuple = ()
        runs: dict[str, list[float]] = {label: [] for label in readers}
        for r in range(args.runs):  # the readers in turn, so that drift on a shared machine hits them alike
            for label, fn in readers.items():
                t0 = time.perf_counter()
                X, y = fn()
                runs[label].append(time.perf_counter() - t0)
                if not reference:
                    reference = (X, y)
                elif r == 0:  # the same X and target as the NumPy reader
                    assert np.array_equal(X, reference[0]) and np.array_equal(y, reference[1]), label
                del X, y
        medians = {label: statistics.median(seconds) for label, seconds in runs.items()}

    base = medians["read_csv (NumPy)"]
    cores = os.cpu_count()
    if have_arrow:
        import pyarrow

        print(f"pyarrow {pyarrow.__version__}, {pyarrow.cpu_count()} threads; {cores} CPUs; NumPy {np.__version__}")
    print(f"\n{args.rows} x {features} features + label, {mib:.1f} MiB of CSV, float32 X, median of {args.runs} runs\n")
    print("| reader | median s | min s | MiB/s of CSV | vs NumPy reader |")
    print("|---|---:|---:|---:|---:|")
    for label, seconds in runs.items():
        median = medians[label]
        speed = f"{mib / median:.0f}" if "Parquet" not in label and "Feather" not in label else "-"
        print(f"| {label} | {median:.3f} | {min(seconds):.3f} | {speed} | {base / median:.1f}x |")


if __name__ == "__main__":
    main()
