"""The ``backend`` fixture: every numeric test runs on every array namespace and device usable here.

numpy; array_api_strict on its default device and on its simulated "device1"; torch and jax on the CPU when
installed; cupy, torch and jax on CUDA when a GPU is usable. Unusable ones are skipped with the reason. Each
parameter names its device, so that a test means the same thing on a machine with a GPU as without one.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import signal
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

# Tests press Ctrl-C on gpunn processes (SIGINT), as a terminal does. A test run started in the background by a
# non-interactive shell (`cmd &`) has SIGINT ignored, and every process it starts would inherit the ignore and
# never see Ctrl-C; a handler here instead is reset to the default in each process the tests start.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# MPICH's ranks wait for each other by polling, yielding only every 1000 polls through sched_yield, which gives a
# busy 2-core machine nothing back: the MPI tests' waiting ranks took the CPU from the ranks they waited for (a doc
# example's 4 ranks used 28 s of CPU, 16 s with this). A nanosleep every 10 polls instead; how a rank waits, not
# what it computes or sends. The mpiexec jobs the tests start inherit it.
os.environ.setdefault("MPIR_CVAR_ENABLE_HEAVY_YIELD", "1")
os.environ.setdefault("MPIR_CVAR_POLLS_BEFORE_YIELD", "10")

# One thread a process for OpenBLAS and for OpenMP (PyTorch's CPU operations). Their idle threads spin before they
# sleep, and the suite's processes (2 xdist workers, MPI ranks, CLI processes) took the 2 cores from each other with
# them: docs/distributed.md's 4 ranks ran 21 s under load, 5 s with one thread each (test_docs.py: 108 -> 71 s of
# CPU), the torch-cpu cases of four test files 61 -> 28 s of CPU. How many threads compute, not what. The processes
# tests start inherit the variables, as PyTorch here does when it is first imported; this process's NumPy is loaded
# already, and is limited here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
if importlib.util.find_spec("threadpoolctl") is not None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]), user_api="blas")

if importlib.util.find_spec("jax") is not None:
    # XLA's LLVM backend at optimisation level 0: the suite compiles some thousand small programs and runs each a
    # few times, and LLVM's optimisation was a third of the JAX tests' time. It changes how fast the machine code
    # runs, not what it computes (no fast-math either way), nor which programs are compiled, which tests count.
    # Set before JAX starts its backend; the processes the tests start inherit it.
    if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    import jax

    # gpunn never relies on a default dtype; the float64 oracles need JAX's 64-bit mode.
    jax.config.update("jax_enable_x64", True)
    # JAX computes float32 matrix products in TF32 on recent GPUs unless told otherwise; CuPy and torch do not.
    # The float32 GPU tolerance is derived from float32 rounding, so every namespace computes in float32.
    jax.config.update("jax_default_matmul_precision", "highest")


@dataclass(frozen=True)
class Backend:
    """An array namespace and one of its devices, as handed to ``MLP(xp=..., device=...)``."""

    name: str
    xp: Any
    device: Any
    gpu: bool = False

    def kwargs(self) -> dict[str, Any]:
        return {"xp": self.xp, "device": self.device}


@functools.cache
def probe_gpus() -> tuple[int, str]:
    """(CUDA devices CuPy can run a kernel on, why none when 0), probed here rather than by gpunn's own
    ``gpu_status``, which the device tests check. CuPy may be absent, or installed on a machine without a GPU:
    a real kernel, not only the device count, tells."""
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        cupy.zeros(1).sum().get()
    except Exception as exc:  # ImportError, CUDARuntimeError, missing driver libraries, ...
        return 0, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    return count, "" if count else "CuPy sees no CUDA device"


@pytest.fixture
def gpu_count() -> int:
    """The number of usable CUDA devices, as :func:`probe_gpus` finds them."""
    return probe_gpus()[0]


def _torch_cuda_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    return None if torch.cuda.is_available() else "torch sees no usable CUDA device"


def _jax_gpu_reason() -> str | None:
    if importlib.util.find_spec("jax") is None:
        return "jax is not installed"
    try:
        jax.devices("gpu")
    except RuntimeError as exc:
        return f"jax has no GPU backend ({type(exc).__name__})"
    return None


def _backends() -> list[Any]:
    params = [pytest.param(("numpy", "numpy", None, None), id="numpy")]
    for id_, module, device in [
        ("strict", "array_api_strict", None),
        ("strict-device1", "array_api_strict", "device1"),
        ("torch-cpu", "torch", "cpu"),
        ("jax", "jax.numpy", "cpu"),
    ]:
        root = module.split(".")[0]
        reason = None if importlib.util.find_spec(root) else f"{root} is not installed"
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param((id_, module, device, None), id=id_, marks=marks))
    count, why = probe_gpus()
    params.append(
        pytest.param(("cupy", "cupy", None, "gpu"), id="cupy", marks=[pytest.mark.gpu]
                     + ([] if count else [pytest.mark.skip(reason=f"no GPU for cupy: {why}")]))
    )  # fmt: skip
    reason = _torch_cuda_reason()
    params.append(
        pytest.param(("torch-cuda", "torch", "cuda", "gpu"), id="torch-cuda", marks=[pytest.mark.gpu]
                     + ([pytest.mark.skip(reason=f"no GPU for torch: {reason}")] if reason else []))
    )  # fmt: skip
    reason = _jax_gpu_reason()
    params.append(
        pytest.param(("jax-gpu", "jax.numpy", "gpu", "gpu"), id="jax-gpu", marks=[pytest.mark.gpu]
                     + ([pytest.mark.skip(reason=f"no GPU for jax: {reason}")] if reason else []))
    )  # fmt: skip
    return params


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest) -> Backend:
    name, module, device, gpu = request.param
    if module == "jax.numpy":
        device = jax.devices(device)[0]  # a jax Device: "cpu" here even where JAX's default device is a GPU
    return Backend(name, importlib.import_module(module), device, gpu == "gpu")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
