"""The tiny cell against its kernel-launch floor on a CUDA GPU: ``python -m benchmarks.launch_floor`` prints JSON.

The floor of a step that is all launch overhead is the number of kernels it launches times the time of one
launch. Both are measured here, in one process, with gpunn on CuPy and the tiny cell's data on the device:

- kernels per step: the CUDA kernels that torch's profiler (CUPTI, which sees every kernel in the process,
  CuPy's and cuBLAS's included) records over two runs of different lengths; the difference divided by the
  difference in steps leaves out what a ``fit`` call does once. The tiny cell is full batch: a step is an epoch,
  its one read-back of the metrics included. Memory copies are counted apart.
- launch time: the median over repeats of back-to-back launches of an empty CuPy kernel from Python, then one
  synchronization, per launch.
- step time: the median epoch of a synchronized run, as ``python -m benchmarks`` measures it.

The issue's target is a step within 2x of ``kernels x launch``. Needs CuPy, a usable GPU, and torch with CUDA for
the count (without it the count is reported as unavailable).
"""

from __future__ import annotations

import json
import statistics
import time

from benchmarks.worker import CELLS, LR, make_data


def launch_seconds(repeats: int = 7, launches: int = 2000) -> float:
    import cupy as cp

    probe = cp.ElementwiseKernel("float32 x", "float32 y", "y = x", "gpunn_launch_probe")
    x = cp.zeros(1, dtype=cp.float32)
    y = cp.empty_like(x)
    probe(x, y)  # compile and load
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(launches):
            probe(x, y)
        cp.cuda.Device().synchronize()
        times.append((time.perf_counter() - start) / launches)
    return statistics.median(times)


def tiny_model():
    import cupy as cp

    import gpunn

    cell = CELLS["tiny"]
    X, y = make_data(cell)
    m = gpunn.MLP(cell["sizes"], output="sigmoid", seed=0, device="cuda")
    return m, cp.asarray(X), cp.asarray(y)


def step_seconds(epochs: int = 201) -> float:
    import cupy as cp

    m, X, y = tiny_model()
    stamps: list[float] = []

    def mark(model, record):
        cp.cuda.Device().synchronize()
        stamps.append(time.perf_counter())

    m.fit(X, y, epochs=5, lr=LR, verbose=0)  # warm-up: kernels compiled and cached
    cp.cuda.Device().synchronize()
    stamps.append(time.perf_counter())
    m.fit(X, y, epochs=epochs, lr=LR, verbose=0, callbacks=[mark])
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def count_activity(epochs: int) -> dict[str, int]:
    """CUDA kernels and memory copies/sets recorded while ``fit`` runs ``epochs`` full-batch epochs."""
    import cupy as cp
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.zeros(1, device="cuda")  # torch's CUDA context, so that its profiler records from the first kernel
    m, X, y = tiny_model()
    m.fit(X, y, epochs=2, lr=LR, verbose=0)
    cp.cuda.Device().synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        m.fit(X, y, epochs=epochs, lr=LR, verbose=0)
        cp.cuda.Device().synchronize()
    names = [e.name for e in prof.events() if e.device_type == DeviceType.CUDA]
    memory = sum(1 for n in names if n.lower().startswith(("memcpy", "memset")))
    return {"kernels": len(names) - memory, "memory_ops": memory}


def main() -> None:
    out: dict = {"cell": "tiny", "sizes": CELLS["tiny"]["sizes"], "samples": CELLS["tiny"]["n"]}
    out["launch_s"] = launch_seconds()
    out["step_s"] = step_seconds()
    try:
        short, long = count_activity(10), count_activity(60)
        out["kernels_per_step"] = (long["kernels"] - short["kernels"]) / 50
        out["memory_ops_per_step"] = (long["memory_ops"] - short["memory_ops"]) / 50
        if out["kernels_per_step"] <= 0:
            raise RuntimeError(f"the profiler recorded {short['kernels']} and {long['kernels']} kernels")
        out["floor_s"] = out["kernels_per_step"] * out["launch_s"]
        out["step_over_floor"] = out["step_s"] / out["floor_s"]
    except Exception as exc:  # no torch with CUDA, or its profiler saw nothing: say so, keep the timings
        out["count_error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
