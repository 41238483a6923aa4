"""Streamed training: a :class:`gpunn.data.Dataset`'s batches standardized, encoded and placed on the model's
device, with the next batch prepared while the step runs (:class:`Prefetcher`).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any

import array_api_compat as aac
import numpy as np

from .. import _backend, losses
from .. import _validation as check
from ..data.dataset import BLOCK_ROWS, SHUFFLE_BUFFER, Dataset
from ..data.moments import scale_rows
from . import evaluate
from .batch import Batch
from .checks import targets
from .spec import Spec

__all__ = ["BLOCK_ROWS", "PREFETCH", "SHUFFLE_BUFFER", "Dataset", "Prefetcher", "Streamed", "to_device"]

# Batches prepared ahead of the step in a background thread; 0 prepares them in the training thread, and None
# (the default) prefetches 2 on an accelerator, where the host is free while the device computes, and none on
# the CPU, where the reading thread competes with the step for the same cores (benchmarks.streaming measured a
# 2-core machine's epoch 25% slower with it).
PREFETCH: int | None = None


# ------------------------------------------------------------------------------------------------ training
class Streamed:
    """A feed of a :class:`Dataset`'s rows for a model described by ``spec``: its batches standardized with
    ``scaling``, targets encoded, and placed on the model's device (``PREFETCH`` batches ahead of the step). With
    ``weight_total`` (the sum of the view's weights) the batches carry the rows' weights, as in-memory training's
    do."""

    def __init__(
        self, spec: Spec, dataset: Dataset, scaling: tuple[np.ndarray, np.ndarray] | None, name: str,
        weight_total: float | None = None,
    ):  # fmt: skip
        self.spec, self.dataset, self.scaling, self.name = spec, dataset, scaling, name
        self.n_rows = dataset.n_rows
        self.weight_total = weight_total  # None: unweighted
        # standardized in float64, as in-memory training does, then cast; else read straight into the dtype
        self.read_dtype = np.float64 if scaling is not None else np.dtype(spec.dtype)

    def _place(self, xb: np.ndarray, yb: np.ndarray, consumer: Any = None) -> tuple[Any, Any]:
        """A batch, checked as its blocks were read (:meth:`_check_targets`), scaled and on the device."""
        m = self.spec
        if self.scaling is not None:
            xb = scale_rows(xb, self.scaling, np.empty(xb.shape, m.dtype))
        with _backend.device_scope(m.xp, m.device):
            return to_device(np.ascontiguousarray(xb, dtype=m.dtype), m.xp, m.device, consumer), targets(
                m, yb, len(yb), f"{self.name} targets"
            )

    def _check_targets(self, y: np.ndarray, file: str, row: int, where: str) -> None:
        """A block's targets checked against the model as it is read (before the rows are shuffled), so an
        error names the file, the block and the file row: class labels in the model's classes, values that fit
        its dtype (the Dataset has checked them finite)."""
        m = self.spec
        name = f"{file} ({where}), target column {self.dataset.target_name!r},"
        if m.output in losses.REGRESSION:
            with np.errstate(over="ignore"):
                cast = y.astype(m.dtype, copy=False)
            columns = self.dataset.target_columns(y)
            check.finite(y, file, columns, row, where, cast=cast if cast is not y else None)
        check.labels_host(y, m.output, m.n_outputs, name, row)

    def _place_weights(self, wb: np.ndarray, number: int, epoch: int, consumer: Any) -> Any:
        """A batch's weights as a (rows, 1) column on the device, as in-memory training holds them."""
        m = self.spec
        check.batch_weights(  # on the host, before the batch goes to the device
            [wb.sum()],
            lambda _: (
                f"{self.dataset.path}: the weights ({self.dataset.weight_name!r}) sum to 0 over batch "
                f"{number} of epoch {epoch + 1}: every batch needs some weight; use larger batches"
            ),
        )
        with _backend.device_scope(m.xp, m.device):
            return to_device(np.ascontiguousarray(wb.reshape(-1, 1), dtype=m.dtype), m.xp, m.device, consumer)

    def _produce(
        self, batch_size: int | None, rng: Any, comm: Any, epoch: int, consumer: Any = None
    ) -> Generator[Batch, None, None]:
        weighted = self.weight_total is not None
        batches = self.dataset.batches(batch_size, rng, self.read_dtype, weighted, self._check_targets)
        for number, batch in enumerate(batches, 1):
            xb, yb = batch[0], batch[1]
            rows = len(xb)
            lo, hi = (0, rows) if comm is None else comm.shard(0, rows)
            x, t = self._place(xb[lo:hi], yb[lo:hi], consumer)
            if self.spec.label_smoothing:  # training batches only: evaluate_sums sees the labels as given
                with _backend.device_scope(self.spec.xp, self.spec.device):
                    t = losses.smooth_targets(self.spec.output, self.spec.loss, t, self.spec.label_smoothing)
            if not weighted:
                yield Batch(x, t, rows, hi - lo, None, lo, None)
                continue
            w = self._place_weights(batch[2], number, epoch, consumer)
            if comm is None:  # the step divides by the batch's weight total itself
                yield Batch(x, t, rows, rows, w, 0, None)
                continue
            # Each rank divides by the global batch's weight total, summed on the device as in-memory training
            # sums it, on the step's stream.
            step_stream = contextlib.nullcontext() if consumer is None else consumer
            with _backend.device_scope(self.spec.xp, self.spec.device), step_stream:
                total = self.spec.xp.sum(w)
            yield Batch(x, t, rows, hi - lo, w[lo:hi, ...], lo, total)

    def batches(
        self, batch_size: int | None, rng: Any, comm: Any = None, epoch: int = 0, padded: bool = False
    ) -> Prefetcher | Generator[Batch, None, None]:
        """One epoch's placed :class:`Batch` es, their rows read, scaled and copied to the device ahead of the
        step; ``epoch`` (counted from 0) is for messages. ``padded`` is for in-memory feeds (a stream's blocks are
        never padded)."""
        consumer = None  # the stream the step runs on, taken in the training thread
        depth = PREFETCH
        if depth is None:
            depth = 2 if _backend.on_accelerator(self.spec.xp, self.spec.device) else 0
        gpu = _gpu_streams(self.spec.xp)
        if gpu is not None:
            cupy = gpu[0]
            with _backend.device_scope(self.spec.xp, self.spec.device):
                consumer = cupy.cuda.get_current_stream()
            if consumer.ptr == cupy.cuda.runtime.streamPerThread:
                depth = 0  # a per-thread default stream means another stream in the prefetch thread: no ordering
        produce = self._produce(batch_size, rng, comm, epoch, consumer)
        return Prefetcher(produce, depth) if depth > 0 else produce

    def evaluate_sums(self, params: Any, compiled: bool = False) -> tuple[list[Any], list[Any]]:
        """Summed loss and correct count of every block (0-d arrays on the device); ``compiled``: see
        :func:`gpunn.feed.evaluate.block_sums`."""
        loss_sums: list[Any] = []
        corrects: list[Any] = []
        blocks = self.dataset.batches(evaluate.EVAL_ROWS, None, self.read_dtype, check_targets=self._check_targets)
        for xb, yb in blocks:
            x, t = self._place(xb, yb)
            more_loss, more_correct = evaluate.block_sums(self.spec, params, x, t, compiled)
            loss_sums += more_loss
            corrects += more_correct
        return loss_sums, corrects


# ------------------------------------------------------------------------------------------------ prefetch
class Prefetcher:
    """Runs ``produce`` (an iterator of prepared batches) ``depth`` items ahead in a background thread, so that
    reading, standardizing and copying the next batch overlap the step on the current one. Errors raised while
    producing are raised to the consumer; closing stops the thread."""

    _DONE = object()

    def __init__(self, produce: Iterator[Any], depth: int = 2):
        self._produce, self._stop = produce, threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
        self._thread = threading.Thread(target=self._run, name="gpunn-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._produce:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(_Failure(exc))

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _gpu_streams(xp: Any) -> tuple[Any, Any] | None:
    """CuPy and its pinned-memory allocator where ``xp`` is CuPy (batches then go through a copy stream of their
    own), else None. A test stands a NumPy-backed stand-in here, so that the branch runs on a machine without a
    GPU and is held to the plain one."""
    if not aac.is_cupy_namespace(xp):
        return None
    import cupy
    import cupyx

    return cupy, cupyx.empty_pinned


_copy_streams: dict[tuple[str, int], Any] = {}  # CuPy copy streams by (GPU, the step's stream), made once
_copy_streams_lock = threading.Lock()


def to_device(a: np.ndarray, xp: Any, device: Any, consumer: Any = None) -> Any:
    """``a`` on the device, for a background thread: on CuPy through pinned host memory on a copy stream of the
    device's own, synchronized before the array is handed over, so the copy overlaps the step running on
    ``consumer`` (the training thread's stream; default: this thread's current stream).

    The batch's device memory comes from CuPy's pool, where it may be a block that the step freed while kernels
    queued on ``consumer`` still read it. So the copy waits for what ``consumer`` holds once the block is
    allocated: any kernel reading a freed block was queued before the free."""
    gpu = _gpu_streams(xp)
    if gpu is not None:
        cupy, empty_pinned = gpu
        with _backend.device_scope(xp, device):
            if consumer is None:
                consumer = cupy.cuda.get_current_stream()
            pinned = empty_pinned(a.shape, a.dtype)  # from CuPy's pinned memory pool
            pinned[...] = a
            # One copy stream per GPU and step stream: a block freed by one model's step is reused only by a
            # copy that waits for that step's stream (two models training at once in two threads each have theirs).
            key = (str(device), consumer.ptr)
            with _copy_streams_lock:
                stream = _copy_streams.get(key)
                if stream is None:
                    stream = _copy_streams[key] = cupy.cuda.Stream(non_blocking=True)
            with stream:
                out = cupy.empty(a.shape, a.dtype)
                stream.wait_event(consumer.record())
                out.set(pinned, stream=stream)
            stream.synchronize()
        return xp.asarray(out)
    return _backend.from_numpy(a, xp, device)
