"""The only module that knows array libraries by name.

Everything else in gpunn receives a namespace ``xp`` (as array-api-compat resolves it) and a device of that
namespace, and uses only the Python Array API standard on them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import operator
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

import array_api_compat as aac
import numpy as np

from .errors import DeviceError, OutOfMemoryError

DTYPES = ("float32", "float64")


@functools.cache
def gpu_status() -> tuple[int, str]:
    """(number of usable CUDA devices through CuPy, why none when it is 0)."""
    if importlib.util.find_spec("cupy") is None:
        return 0, "CuPy is not installed (pip install 'gpunn[cuda12]' or 'gpunn[cuda13]')"
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        if count:
            cupy.zeros(1).sum().get()  # a real kernel proves the driver and runtime work
        return count, "" if count else "CuPy sees no CUDA device"
    except Exception as exc:  # CUDARuntimeError, missing driver libraries, ...
        first_line = (str(exc).splitlines() or [""])[0]
        return 0, f"CuPy is installed but no CUDA device is usable ({type(exc).__name__}: {first_line})"


def gpu_usable() -> bool:
    """True when CuPy can run kernels on at least one CUDA device."""
    return gpu_status()[0] > 0


def _cupy_device(index: int) -> Any:
    count, why = gpu_status()
    if count == 0:
        raise DeviceError(f"device 'cuda:{index}' was requested but {why}")
    if not 0 <= index < count:
        raise DeviceError(f"device 'cuda:{index}' was requested but only {count} CUDA device(s) are usable")
    import cupy

    return cupy.cuda.Device(index)


def resolve(device: Any = "auto", xp: Any = None) -> tuple[Any, Any]:
    """Return ``(xp, device)``: an array-api-compat namespace and a device object of it.

    Without ``xp``, ``device`` is "auto" (CuPy when a GPU is usable, else NumPy), "cpu" (NumPy), or "cuda" /
    "cuda:N" (CuPy). With ``xp``, ``device`` is "auto" (the namespace's GPU when usable, else its default
    device), a device of that namespace, or None for its default.
    """
    if xp is None:
        if device is None or device == "auto":
            if gpu_usable():
                gpu = _cupy_device(0)
                return _compat("cupy"), gpu
            return _compat("numpy"), "cpu"
        if device == "cpu":
            return _compat("numpy"), "cpu"
        if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")):
            index = device.partition(":")[2] or "0"
            if not index.isdigit():
                raise DeviceError(f"device {device!r} is not valid: use 'cuda' or 'cuda:N' with N a number")
            gpu = _cupy_device(int(index))  # checked before CuPy's compat module is imported
            return _compat("cupy"), gpu
        raise DeviceError(
            f"device {device!r} is not known: use 'auto', 'cpu', 'cuda' or 'cuda:N', "
            "or pass xp= to pick another array namespace"
        )
    ns = canonical_namespace(xp)
    if aac.is_cupy_namespace(ns) and not (isinstance(device, str) and device == "auto"):
        return ns, _cupy_named(device)
    if isinstance(device, str) and device == "auto":
        return ns, _auto_device(ns)
    return ns, _device_in(ns, device)


def _cupy_named(device: Any) -> Any:
    """A CuPy device from None (the current one), "cuda" (GPU 0, as without ``xp``), "cuda:N", N or a
    ``cupy.cuda.Device``: CuPy's ``zeros(device=...)`` does not check what it is given, so gpunn does."""
    import cupy

    if device is None:
        return _cupy_device(cupy.cuda.runtime.getDevice() if gpu_usable() else 0)
    if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")):
        return resolve(device)[1]  # parsed as without xp
    if isinstance(device, cupy.cuda.Device):
        return _cupy_device(int(device.id))
    if not isinstance(device, (bool, np.bool_)):
        try:
            return _cupy_device(operator.index(device))  # int, numpy integers
        except TypeError:
            pass
    raise DeviceError(f"device {device!r} is not a CuPy device: use None, 'cuda', 'cuda:N', N or a cupy.cuda.Device")


def _auto_device(xp: Any) -> Any:
    """The device "auto" means in ``xp``: its accelerator when one is usable, else its default device."""
    if aac.is_cupy_namespace(xp):
        return _cupy_device(0)
    if aac.is_torch_namespace(xp):
        import torch

        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    return _device_in(xp, None)  # JAX puts its default device on a GPU when it has one


def device_name(xp: Any, device: Any) -> str:
    """A string naming ``device`` of ``xp`` that :func:`resolve_by_name` turns back into the same device."""
    if aac.is_numpy_namespace(xp):
        return "cpu"
    if aac.is_cupy_namespace(xp):
        return f"cuda:{device.id}"
    if aac.is_array_api_strict_namespace(xp):
        return repr(device).rpartition("(")[2].strip("')\"")  # Device('device1') -> device1
    return str(device)  # torch: "cpu", "cuda:1"; JAX: "TFRT_CPU_0", "cuda:0"


def resolve_by_name(name: str, device: Any) -> tuple[Any, Any]:
    """``resolve`` from a namespace's short name (as :func:`namespace_name` gives it) and a device name (as
    :func:`device_name` gives it; None for the namespace's default device)."""
    if name == "numpy":
        return resolve("cpu")
    if name == "cupy":
        # "cuda:N"; models pickled before device_name existed saved str(cupy.cuda.Device(N)): "<CUDA Device N>"
        digits = re.findall(r"\d+", str(device))
        return resolve(f"cuda:{digits[-1] if digits else 0}")
    module = {"torch": "torch", "jax": "jax.numpy", "array_api_strict": "array_api_strict"}.get(name, name)
    return resolve(device, importlib.import_module(module))


def _compat(name: str) -> Any:
    return importlib.import_module(f"array_api_compat.{name}")


def canonical_namespace(xp: Any) -> Any:
    """The namespace array-api-compat returns for arrays of ``xp`` (accepts raw modules and compat wrappers)."""
    try:
        if aac.is_jax_namespace(xp):  # asked of an array moved from the host: an eager zeros compiles a program
            import jax

            return jax.device_put(np.zeros(0, dtype=np.float32)).__array_namespace__()
        return aac.array_namespace(xp.zeros(0))
    except Exception as exc:
        raise DeviceError(
            f"xp={getattr(xp, '__name__', xp)!r} is not an array namespace gpunn can use "
            f"(numpy, cupy, torch, jax.numpy, array_api_strict or their array-api-compat wrappers): {exc}"
        ) from None


def _device_in(xp: Any, device: Any) -> Any:
    try:
        if aac.is_jax_namespace(xp):  # an array moved from the host: an eager zeros compiles a program
            import jax

            if isinstance(device, str):
                raise TypeError(f"JAX takes a device object, not {device!r}")
            return aac.device(jax.device_put(np.zeros(0, dtype=np.float32), device))
        if device is None:
            return aac.device(xp.zeros(0))
        return aac.device(xp.zeros(0, device=device))
    except Exception as exc:
        if isinstance(device, str):
            # Namespaces such as array_api_strict and JAX only take device objects: match them by name.
            for candidate in _devices(xp):
                names = {str(candidate), repr(candidate), str(candidate).split(":")[0]}
                names.add(repr(candidate).rpartition("(")[2].strip("')\""))
                if device in names:
                    return candidate
        raise DeviceError(f"device {device!r} is not usable with {namespace_name(xp)}: {exc}") from None


def _devices(xp: Any) -> list[Any]:
    try:
        found = [d for d in xp.__array_namespace_info__().devices() if d is not None]
    except Exception:
        found = []
    if aac.is_jax_namespace(xp):  # its info lists the default backend's devices only (the GPUs, where there are)
        import jax

        found += [d for d in jax.devices("cpu") if d not in found]
    return found


def namespace_name(xp: Any) -> str:
    """A short name: numpy, cupy, torch, jax, array_api_strict, or the module's own name."""
    for name in ("numpy", "cupy", "torch", "jax", "array_api_strict"):
        if getattr(aac, f"is_{name}_namespace")(xp):
            return name
    return getattr(xp, "__name__", str(xp))


# NumPy fast paths (in-place ufuncs on temporaries) sit behind the generic functions; tests switch them off
# to check that both paths agree.
NUMPY_FAST_PATHS = True


def numpy_fast_path(xp: Any) -> bool:
    """True when ``xp`` is NumPy and its fast paths are on."""
    return NUMPY_FAST_PATHS and aac.is_numpy_namespace(xp)


# Namespaces' own ReLU, where the standard's form is slow: on PyTorch, where(z > 0, z, 0) and where(mask, da, 0)
# take about ten times as long as torch.relu and its backward kernel (a (64, 1000, 32) float32 array on a CPU),
# and cost one operation more per layer. Turned off by tests that hold the fast form to the generic one.
TORCH_RELU = True


def relu_form(xp: Any) -> Any:
    """The namespace's own ReLU as ``z -> (a, backprop)`` (as :func:`gpunn.layers.activate` returns it), or None
    where the standard's form is what runs: torch.relu and PyTorch's ReLU backward kernel
    (``threshold_backward``: da where the output is above 0, else 0) on PyTorch."""
    if TORCH_RELU and aac.is_torch_namespace(xp):
        return _torch_relu
    return None


def _torch_relu(z: Any) -> tuple[Any, Any]:
    import torch

    a = torch.relu(z)
    return a, lambda da: torch.ops.aten.threshold_backward(da, a, 0)


def take_rows(x: Any, idx: Any, xp: Any) -> Any:
    """The rows ``idx`` of ``x`` (a gather). PyTorch indexes directly: array-api-compat's ``take`` spends three
    more operations wrapping negative indices, which gpunn never passes."""
    if aac.is_torch_namespace(xp):
        return x[idx]
    return xp.take(x, idx, axis=0)


def concat_into(parts: list[Any], xp: Any) -> Any:
    """``xp.concat(parts)`` of 1-D arrays. JAX writes them into a zero buffer slice by slice instead: XLA on the
    CPU runs a step whose gradients end in a concatenate about ten times slower (the matrix products feeding it
    lose their fast kernels), while dynamic-update-slices keep them."""
    if aac.is_jax_namespace(xp):
        out = xp.zeros(sum(p.shape[0] for p in parts), dtype=parts[0].dtype)
        offset = 0
        for p in parts:
            out = out.at[offset : offset + p.shape[0]].set(p)
            offset += p.shape[0]
        return out
    return xp.concat(parts)


def compiler(xp: Any, required: bool = False) -> Any:
    """The function that compiles a pure step for ``xp``, or None where gpunn has none: ``jax.jit`` on JAX, and
    on PyTorch ``torch.compile`` when ``required`` (``compile=True``; its first compilation takes seconds to
    tens of seconds, more than a short ``fit`` gains, so "auto" leaves PyTorch eager)."""
    if aac.is_jax_namespace(xp):
        import jax

        _jax_ready()
        return jax.jit
    if required and aac.is_torch_namespace(xp):
        return _torch_compile
    return None


# The environment variable that turns on JAX's persistent compilation cache in the folder it names (as
# gpunn.compile_cache does), read when gpunn first compiles on JAX.
COMPILE_CACHE_ENV = "GPUNN_COMPILE_CACHE"
# XLA programs made in this process since gpunn first compiled on JAX: [compiled or loaded, seconds, loaded from
# the persistent cache]. JAX reports a program loaded from that cache as a compilation too.
_COMPILES: list[Any] = [0, 0.0, 0]


@functools.cache
def _jax_ready() -> None:
    """Once per process, before gpunn's first compilation on JAX: count programs, and turn on the persistent cache
    where the environment asks for it."""
    import jax

    def duration(event: str, duration_secs: float, **kwargs: str | int) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            _COMPILES[0] += 1
            _COMPILES[1] += duration_secs

    def hit(event: str, **kwargs: str | int) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            _COMPILES[2] += 1

    jax.monitoring.register_event_duration_secs_listener(duration)
    jax.monitoring.register_event_listener(hit)
    path = os.environ.get(COMPILE_CACHE_ENV, "")
    if path:
        compile_cache(path)


def compiles() -> tuple[int, float]:
    """``(programs, seconds)``: the XLA programs compiled in this process since gpunn first compiled on JAX
    (those loaded from the persistent cache left out) and the time spent making or loading them, and the graphs
    torch.compile made."""
    programs = _COMPILES[0] - _COMPILES[2]
    dynamo = sys.modules.get("torch._dynamo.utils")
    if dynamo is not None:  # torch.compile's graphs (its compile time is not reported to gpunn)
        programs += int(dynamo.counters["stats"]["unique_graphs"])
    return programs, _COMPILES[1]


def compile_cache(path: Any) -> None:
    """Turn on JAX's persistent compilation cache in the folder ``path``: a program compiled once is saved there,
    and a later process that needs it (the same network, shapes and structure) loads it instead of compiling."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", str(path))
    # gpunn's programs are small: every one is worth keeping, however fast it compiled.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    compilation_cache.reset_cache()  # JAX decides once per process whether it caches: a late path counts too


def scan(xp: Any) -> Any:
    """The compiler's loop, ``scan(body, carry, xs) -> (carry, stacked outputs)``, where a whole run of steps
    compiles into one call (``jax.lax.scan`` on JAX), or None."""
    if aac.is_jax_namespace(xp):
        import jax

        return jax.lax.scan
    return None


def cond(xp: Any) -> Any:
    """The compiler's branch, ``cond(predicate, if_true, if_false, operand)``, which runs one of the two
    (``jax.lax.cond`` on JAX), or None (see :func:`scan`)."""
    if aac.is_jax_namespace(xp):
        import jax

        return jax.lax.cond
    return None


def zeros_of(f: Any, *args: Any) -> Any:
    """Zeros shaped as what ``f(*args)`` returns, found without running it (``jax.eval_shape``; JAX only): what a
    compiled branch that skips ``f`` gives in its place (see :func:`cond`)."""
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(f, *args))


def bucket(rows: int) -> int:
    """The rows a compiled step pads ``rows`` to: the next power of two, so that data of a new size compiles
    again only when it crosses one."""
    return 1 << max(0, rows - 1).bit_length()


def pad_rows(a: Any, rows: int, xp: Any, device: Any) -> Any:
    """``a`` with rows of zeros appended up to ``rows`` rows, through the host: on JAX, where padding on the device
    would compile a program for each size it is asked for."""
    return from_numpy(pad_host(to_numpy(a), rows), xp, device)


def pad_host(a: np.ndarray, rows: int, axis: int = 0) -> np.ndarray:
    """The host array ``a`` with zeros appended along ``axis`` up to ``rows`` (``a`` itself where it has them)."""
    if a.shape[axis] == rows:
        return a
    shape = list(a.shape)
    shape[axis] = rows
    out = np.zeros(shape, dtype=a.dtype)
    out[(slice(None),) * axis + (slice(0, a.shape[axis]),)] = a
    return out


def slices_copy(xp: Any) -> bool:
    """True where a compiled step copies every slice it reads of a flat buffer (XLA: JAX), so that a run of
    compiled steps is faster on the parameters' segments (see gpunn.layers.segments)."""
    return aac.is_jax_namespace(xp)


def _torch_compile(fn: Any, static_argnums: Any = None) -> Any:
    import warnings

    import torch

    # Dynamo notes that it traces through functools caches (array-api-compat's namespace checks, gpunn's layer
    # layout); both are pure, so the note is no news to a gpunn user.
    warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`", category=UserWarning)
    return torch.compile(fn)


def on_accelerator(xp: Any, device: Any) -> bool:
    """True when ``device`` of ``xp`` is a GPU (or another accelerator), not the host's CPU."""
    if aac.is_cupy_namespace(xp):
        return True
    if aac.is_torch_namespace(xp):
        return getattr(device, "type", str(device)) != "cpu"
    if aac.is_jax_namespace(xp):
        return getattr(device, "platform", "cpu") != "cpu"
    return False


def is_traced(x: Any) -> bool:
    """True for an abstract array being traced by a compiler (``jax.jit``, ``grad``, ``vmap``): it has a shape and
    a dtype but no values to read back and no device to check."""
    if not aac.is_jax_array(x):
        return False
    import jax

    return isinstance(x, jax.core.Tracer)


def is_cupy_array(x: Any) -> bool:
    """True for a CuPy array."""
    return aac.is_cupy_array(x)


def is_host_data(x: Any) -> bool:
    """True for NumPy arrays, Python sequences and scalars: data gpunn moves to the model's device itself."""
    return isinstance(x, np.ndarray) or not aac.is_array_api_obj(x)


def to_numpy(x: Any) -> np.ndarray:
    """Copy an array of any namespace to host memory as a NumPy array (one explicit transfer)."""
    if isinstance(x, (np.ndarray, np.generic)):  # NumPy's reductions return scalars
        return np.asarray(x)
    if aac.is_cupy_array(x):
        return x.get()
    if aac.is_torch_array(x):
        return x.detach().cpu().numpy()
    if aac.is_jax_array(x):
        return np.asarray(x)
    return np.array(np.from_dlpack(x), copy=True)


def from_numpy(a: np.ndarray, xp: Any, device: Any) -> Any:
    """Move a host array onto ``device`` of ``xp``, keeping its dtype."""
    if aac.is_cupy_namespace(xp):
        with device:
            return xp.asarray(a)
    if aac.is_jax_namespace(xp):  # a transfer; asarray(device=) compiles a program for each new shape
        import jax

        return jax.device_put(a, device)
    return xp.asarray(a, device=device)


def compiles_eagerly(xp: Any) -> bool:
    """True where every eager operation compiles a program of its own for each new shape (JAX): set-up work
    is then done on the host and moved (:func:`from_numpy`), or folded into a compiled program."""
    return aac.is_jax_namespace(xp)


def on_host(fn: Any, a: Any, xp: Any, device: Any) -> Any:
    """``fn(namespace, a)``, a small operation whose result stays on ``device``: with NumPy on the host and moved
    back where each eager operation would compile a program for each new shape (JAX, ``a`` not traced), else with
    ``xp`` where ``a`` is."""
    if compiles_eagerly(xp) and not is_traced(a):
        host = to_numpy(a)
        return from_numpy(fn(aac.array_namespace(host), host), xp, device)
    return fn(xp, a)


def finite_rows(a: Any, xp: Any) -> np.ndarray:
    """Whether every value of each row of ``a`` (K, P) is finite ((), for a 1-D ``a``), read back to the host: K
    booleans, or ``a`` itself where an eager reduction would compile a program for its shape (JAX)."""
    if compiles_eagerly(xp):
        return np.isfinite(to_numpy(a)).all(axis=-1)
    return to_numpy(xp.all(xp.isfinite(a), axis=-1))


def stack(arrays: list[Any], xp: Any, device: Any) -> Any:
    """``xp.stack(arrays)``; on JAX stacked on the host and moved in one transfer instead, where an eager
    ``stack`` (and the conversions around it) compiles a program for each new shape."""
    if compiles_eagerly(xp):
        return from_numpy(np.stack([to_numpy(a) for a in arrays]), xp, device)
    return xp.stack(arrays)


def flat_concat(arrays: list[Any], xp: Any, device: Any) -> Any:
    """The arrays flattened and concatenated into one (P,) buffer; on JAX on the host, as :func:`stack`."""
    if compiles_eagerly(xp):
        return from_numpy(np.concatenate([to_numpy(a).reshape(-1) for a in arrays]), xp, device)
    return xp.concat([xp.reshape(a, (-1,)) for a in arrays])


def unstack(a: Any, xp: Any, device: Any) -> list[Any]:
    """``xp.unstack(a)``, the rows of ``a``; on JAX read back once and moved in one transfer instead (as
    :func:`stack`: an eager ``unstack`` or row slice compiles a program for each new shape)."""
    if compiles_eagerly(xp):
        import jax

        return list(jax.device_put(list(to_numpy(a)), device))
    return list(xp.unstack(a))


def zeros_like(x: Any, xp: Any) -> Any:
    """``xp.zeros_like(x)``; on JAX moved from the host instead, where an eager ``zeros_like`` compiles a program
    for each new shape."""
    if aac.is_jax_namespace(xp) and not is_traced(x):
        import jax

        return jax.device_put(np.zeros(x.shape, dtype=x.dtype), aac.device(x))
    return xp.zeros_like(x)


@contextlib.contextmanager
def device_scope(xp: Any, device: Any) -> Iterator[None]:
    """Where gpunn computes: ``device`` made current where the namespace needs it (CuPy launches kernels on the
    current GPU), and NumPy's floating-point warnings off, since gpunn checks for non-finite values itself and
    reports them with their epoch and batch."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if aac.is_cupy_namespace(xp):
            with device:  # cupy.cuda.Device is a context manager
                yield
        else:
            yield


def same_device(a: Any, b: Any) -> bool:
    """Device equality that tolerates libraries whose device objects compare by identity."""
    return a == b or str(a) == str(b)


def index_dtype(xp: Any, device: Any) -> Any:
    """The namespace's default integer dtype for indices and labels on ``device``."""
    return xp.__array_namespace_info__().default_dtypes(device=device)["indexing"]


def float_dtype(xp: Any, name: str) -> Any:
    """``xp.float32`` or ``xp.float64`` from its name."""
    return getattr(xp, name)


def synchronize(x: Any) -> None:
    """Block until the work that produces ``x`` has finished (for timing only, never inside a step)."""
    if aac.is_cupy_array(x):
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    elif aac.is_torch_array(x) and x.device.type == "cuda":
        import torch

        torch.cuda.synchronize(x.device)
    elif aac.is_jax_array(x):
        x.block_until_ready()


def available_namespaces() -> dict[str, str]:
    """Map each array library gpunn can use here to its version, without importing the heavy ones twice."""
    found = {"numpy": np.__version__, "array_api_compat": aac.__version__}
    for name in ("array_api_strict", "torch", "jax", "cupy"):
        if importlib.util.find_spec(name) is not None:
            try:
                found[name] = getattr(importlib.import_module(name), "__version__", "?")
            except Exception as exc:  # an installed but broken library
                found[name] = f"unusable ({type(exc).__name__})"
    return found


@contextlib.contextmanager
def memory_guard(device: Any, batch_size: int | None) -> Iterator[None]:
    """Turn a device's out-of-memory error (CuPy, PyTorch, NumPy) into one that suggests a smaller batch."""
    try:
        yield
    except MemoryError as exc:
        raise OutOfMemoryError(_oom_message(device, batch_size, exc)) from exc
    except Exception as exc:
        if type(exc).__name__ != "OutOfMemoryError":  # cupy.cuda.memory / torch.cuda OutOfMemoryError
            raise
        raise OutOfMemoryError(_oom_message(device, batch_size, exc)) from exc


def _oom_message(device: Any, batch_size: int | None, exc: BaseException) -> str:
    batch = "the full batch (batch_size=None)" if batch_size is None else f"batch_size={batch_size}"
    first = (str(exc).splitlines() or [""])[0]
    return f"out of memory on {device} with {batch}: try a smaller batch_size ({type(exc).__name__}: {first})"


def host_memory_available() -> int | None:
    """Bytes of host memory available to a new allocation (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
