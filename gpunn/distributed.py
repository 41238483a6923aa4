"""Data-parallel training over MPI: one process per device, gradients averaged in one allreduce per step.

Launch with ``mpiexec -n N gpunn train --distributed ...`` or, from Python::

    comm = gpunn.distributed.Communicator()          # after MPI starts: one per process
    m = MLP(sizes, device=comm.device(), seed=0)
    m.fit(X, y, batch_size=256, comm=comm)            # batch_size is the global batch

Every rank starts from the same weights (rank 0's are broadcast), draws the same sample order, and computes the
gradients of its shard of every global batch. The gradients already sit in one flat buffer, summed with a
single collective per step: mpi4py ``Allreduce`` on host buffers for CPU namespaces, NCCL (``cupy.cuda.nccl``)
for CuPy. NCCL needs every rank on a GPU of its own: where ranks share a GPU (more ranks than GPUs on a node) or
some train on the CPU, every rank sums its gradients through MPI on the host instead, with a warning. The result
equals a single process training on the same global batches, up to float summation order.

At the start of ``fit`` the ranks check that they agree on the network, the settings and the data
(:meth:`Communicator.check_agreement`), and every MPI collective runs under a timeout (``Communicator(timeout=)``,
``GPUNN_MPI_TIMEOUT``, 600 s by default) so that a stopped rank ends the job instead of hanging it. The timeout
covers the start too: MPI's initialisation and a first meeting of every rank in ``Communicator()``, where a rank
that cannot start (:func:`fail_to_start`) tells the others, and a rank that never arrives ends the job.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from typing import Any, NoReturn

import numpy as np

from . import _backend, losses
from .errors import ConfigError, InputError
from .feed.sparse import Placed

TIMEOUT_ENV = "GPUNN_MPI_TIMEOUT"
DEFAULT_TIMEOUT = 600.0  # seconds one collective may wait for the other ranks, unless told otherwise
FINGERPRINT_BYTES = 64 << 20  # data up to this size is hashed whole, larger data by evenly spaced rows
TIMEOUT_EXIT = 3  # the MPI_Abort error code of a collective that timed out
FORWARD_SECONDS = 0.2  # a pause between a rank's last line and the end of the job, for the launcher to forward it
MEETING = "the start-up meeting of every rank (after MPI's initialisation)"


def part(n: int, parts: int, index: int) -> tuple[int, int]:
    """Part ``index`` [lo, hi) of n items split into ``parts`` contiguous parts whose sizes differ by at most one:
    a rank's rows of a batch (:meth:`Communicator.shard`), or its members of an ensemble."""
    base, extra = divmod(n, parts)
    lo = index * base + min(index, extra)
    return lo, lo + base + (1 if index < extra else 0)


class Communicator:
    """A group of processes training one model together (wraps an mpi4py communicator).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Defaults to ``MPI.COMM_WORLD``.
    abort_on_error : bool
        Install an exception hook that aborts every rank when one raises, so that no rank waits forever
        in a collective. An error that every rank raises together (ranks that disagree at the start of
        ``fit``) is printed by rank 0 alone and ends every rank without an abort.
    timeout : float, optional
        Seconds that one collective (the broadcast of the weights, a step's gradient allreduce, an epoch's
        metrics) may wait for the other ranks before this rank prints which collective timed out and aborts
        the job: a rank that was stopped (SIGSTOP), hangs or died without MPI noticing would otherwise leave
        the others waiting forever. The start is timed as one collective: from before MPI's initialisation to
        the end of a first meeting of every rank here, so that a rank that failed or exited before it joined
        ends the job too (see :func:`fail_to_start` for a rank that knows it cannot start). None (the default)
        reads ``GPUNN_MPI_TIMEOUT`` and falls back to 600; 0 (or ``GPUNN_MPI_TIMEOUT=none``) waits forever.
        NCCL's allreduce runs on the GPU's stream and is not timed.
    """

    def __init__(self, comm: Any = None, *, abort_on_error: bool = True, timeout: float | None = None):
        # the timeout first: a bad setting is an error before MPI is touched
        self._join(comm, _timeout_seconds(timeout), None, abort_on_error)
        self.node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)  # the ranks on this machine
        self.local_rank = self.node.Get_rank()
        self._nccl: Any = None
        self._nccl_ok: bool | None = None  # whether gradients go through NCCL, decided at the first allreduce

    def _join(self, comm: Any, timeout: float | None, failure: str | None, abort_on_error: bool) -> None:
        """Initialise MPI (unless done) and meet every rank in one ``allgather`` of ``failure`` (None, or why this
        rank cannot start): every rank raises the same ConfigError if any rank failed. Both wait for the other
        ranks, so both are timed, from before MPI's initialisation, by a :class:`_StartWatch` process: MPI_Init
        holds the GIL, so the watchdog thread could not run while a rank waits there for one that never comes."""
        self.timeout = timeout
        watch = _StartWatch.begin(timeout, failure)
        try:
            try:
                from mpi4py import MPI
            except ImportError:
                raise ConfigError("distributed training needs mpi4py: pip install 'gpunn[mpi]'") from None
            self.MPI = MPI
            self.comm = comm if comm is not None else MPI.COMM_WORLD
            self.rank = self.comm.Get_rank()
            self.size = self.comm.Get_size()
            self._watchdog = _Watchdog(self, timeout) if timeout is not None and self.size > 1 else None
            self._steps = self._epochs = 0  # collectives counted, to name the one that timed out
            if abort_on_error:
                self._abort_on_error()
            if watch is not None:
                watch.initialised()
                every = self.comm.allgather(failure)
            else:  # a launch _StartWatch does not recognise: the meeting alone is timed, by the thread
                every = self._collective(MEETING, self.comm.allgather, failure)
        finally:
            if watch is not None:
                watch.stop()
        problem = _start_failures(every, self.size)
        if problem is not None:
            exc: Any = ConfigError(problem)
            exc.every_rank, exc.rank = True, self.rank  # every rank raises it: rank 0 tells, no MPI_Abort needed
            raise exc

    def _abort_on_error(self) -> None:
        previous = sys.excepthook

        def abort(kind, value, tb):
            if getattr(value, "every_rank", False):  # the same error on every rank: each ends on its own
                if self.rank == 0:
                    previous(kind, value, tb)
                return
            previous(kind, value, tb)
            sys.stderr.flush()
            time.sleep(FORWARD_SECONDS)  # the launcher forwards the traceback before the abort ends the job
            self.comm.Abort(1)

        sys.excepthook = abort

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"

    def device(self) -> str:
        """This rank's device: ``cuda:<local rank>`` when GPUs are usable (modulo their number: ranks beyond it
        share GPUs, and their gradients go through the host), else ``cpu``."""
        count = _backend.gpu_status()[0]
        if count == 0:
            return "cpu"
        return f"cuda:{self.local_rank % count}"

    # ------------------------------------------------------------------------------------------ sharding
    def shard(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's part [lo, hi) of the global batch [start, stop): contiguous, sizes differing by at most 1."""
        lo, hi = part(stop - start, self.size, self.rank)
        return start + lo, start + hi

    # ------------------------------------------------------------------------------------------ agreement
    def check_agreement(
        self, spec: Any, x: Any, t: Any, weight: Any = None, *, dropout_rate: float = 0.0, generator: Any = None,
        scaling: Any = None, **settings: Any,
    ) -> None:  # fmt: skip
        """Check, at the start of ``fit``, that every rank trains the same network on the same data with the same
        settings; raise the same one-line error on every rank if not, naming the ranks that differ and what.

        Compared: the feature count, row count, network (sizes, activation, dropout, dtype), output and loss,
        number of outputs, the classes present in the targets, ``settings`` (epochs, batch size, optimizer...),
        the shuffling generator's state where it is used (minibatches or dropout), and a SHA-256 fingerprint of
        the placed X, targets, sample weights and feature scaling (all rows up to 64 MiB, else evenly spaced
        rows; a streamed Dataset by its rows, columns, weight total and scaling). One ``allgather`` of these
        short descriptions; every rank compares them, so every rank raises, or none.
        """
        mine = describe(spec, x, t, weight, settings, dropout_rate=dropout_rate, generator=generator, scaling=scaling)
        every = self._collective("the agreement check at the start of fit", self.comm.allgather, mine)
        problem = disagreement(every)
        if problem is not None:
            data = {"feature count", "row count", "classes", "data fingerprint"}
            kind = InputError if problem[1] & data else ConfigError
            exc: Any = kind(problem[0])
            exc.every_rank = True  # every rank raises it: no MPI_Abort needed
            raise exc

    # ------------------------------------------------------------------------------------------ collectives
    def _collective(self, what: str | tuple[str, int], call: Any, *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)``, a blocking MPI collective, under the timeout: ``what`` names it if it
        times out."""
        watchdog = self._watchdog
        if watchdog is None:
            return call(*args, **kwargs)
        watchdog.arm(what)
        try:
            return call(*args, **kwargs)
        finally:
            watchdog.waiting = None

    def broadcast_arrays(self, arrays: list[Any], xp: Any, device: Any) -> list[Any]:
        """Rank 0's arrays on every rank (once, when training starts)."""
        host = [np.ascontiguousarray(_backend.to_numpy(a)) for a in arrays]
        flat = np.concatenate([h.reshape(-1) for h in host]) if host else np.zeros(0)
        self._collective("the broadcast of rank 0's weights at the start of fit", self.comm.Bcast, flat, root=0)
        out, offset = [], 0
        for h in host:
            out.append(_backend.from_numpy(flat[offset : offset + h.size].reshape(h.shape), xp, device))
            offset += h.size
        return out

    def allreduce_sum(self, flat: Any, xp: Any, device: Any) -> Any:
        """Element-wise sums of a flat buffer (a step's gradients) over the ranks, in one collective."""
        self._steps += 1
        if self._uses_nccl(flat):
            return self._nccl_allreduce(flat)
        host = np.ascontiguousarray(_backend.to_numpy(flat))
        if not host.flags.writeable or host is flat:  # never write into the caller's array
            host = host.copy()
        watchdog = self._watchdog
        if watchdog is not None:  # _collective, unrolled: this is the one collective of every step
            watchdog.arm(("the gradient allreduce of step", self._steps))
        try:
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        finally:
            if watchdog is not None:
                watchdog.waiting = None
        return _backend.from_numpy(host, xp, device)

    def sum_scalars(self, values: list[float]) -> list[float]:
        """Sums of a few host numbers over the ranks (the epoch's metrics)."""
        self._epochs += 1
        buf = np.asarray(values, dtype=np.float64)
        what = ("the sum of the metrics at the end of epoch", self._epochs)
        self._collective(what, self.comm.Allreduce, self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf.tolist()

    def _uses_nccl(self, flat: Any) -> bool:
        """NCCL when every rank holds its gradients on a GPU of its own; else MPI on the host, for every rank.
        Decided once, at the first allreduce, with every rank taking part, so that all take the same path."""
        if self._nccl_ok is None:
            on_gpu = _on_gpu(flat)
            what = "the exchange of devices before the first gradient allreduce"
            here = self._collective(what, self.node.allgather, _gpu_identity(flat) if on_gpu else None)
            gpus = [g for g in here if g is not None]
            everyone = self._collective(what, self.comm.allgather, (on_gpu, len(set(gpus)) < len(gpus)))
            all_gpu, shared = all(g for g, _ in everyone), any(s for _, s in everyone)
            self._nccl_ok = all_gpu and not shared
            if self.rank == 0 and any(g for g, _ in everyone) and not self._nccl_ok:
                why = (f"ranks share a GPU (on one node, ranks hold GPUs {', '.join(map(str, gpus))}): NCCL needs a "
                       "GPU of its own per rank" if shared else "some ranks hold their gradients on a GPU and some "
                       "on the CPU")  # fmt: skip
                warnings.warn(
                    f"{why}, so gradients are summed through MPI on the host, a copy to and from the GPU each step; "
                    "start at most one rank per GPU, every rank on a GPU, for NCCL",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return self._nccl_ok

    def _nccl_allreduce(self, flat: Any) -> Any:
        nccl, memory = _nccl_api()
        if self._nccl is None:
            # NCCL's communicator is created after this rank's GPU is current (the model's device scope).
            uid = nccl.get_unique_id() if self.rank == 0 else None
            uid = self._collective("the broadcast of NCCL's unique id", self.comm.bcast, uid, root=0)  # once
            self._nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        kinds = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}
        out = memory.empty_like(flat)
        self._nccl.allReduce(
            memory.pointer(flat), memory.pointer(out), flat.size, kinds[np.dtype(flat.dtype)], nccl.NCCL_SUM,
            memory.stream(),
        )  # fmt: skip
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        self._collective("a barrier", self.comm.Barrier)


class _Watchdog:
    """A daemon thread that ends the job when one blocking collective has waited more than ``timeout`` seconds.

    mpi4py's blocking collectives have no timeout, and nonblocking ones would need a polling loop in the step.
    Instead each collective sets ``waiting`` before it starts and clears it after (two attribute writes), and
    this thread, started with the first collective, looks at it a few times a second; mpi4py releases the GIL
    while a collective waits. On a timeout it prints which collective and calls ``MPI_Abort``, which ends every
    rank (a stopped one too: the launcher kills it)."""

    def __init__(self, owner: Communicator, timeout: float):
        self.owner, self.timeout = owner, timeout
        self.waiting: tuple[Any, float] | None = None  # (what, when it started)
        self.poll = min(1.0, max(0.01, timeout / 20))
        self.thread: threading.Thread | None = None

    def arm(self, what: Any) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._watch, name="gpunn-mpi-timeout", daemon=True)
            self.thread.start()
        self.waiting = (what, time.monotonic())

    def _watch(self) -> None:
        while True:
            time.sleep(self.poll)
            waiting = self.waiting
            if waiting is not None and time.monotonic() - waiting[1] > self.timeout:
                self.expire(waiting[0])

    def expire(self, what: Any) -> None:
        owner = self.owner
        if isinstance(what, tuple):  # ("the gradient allreduce of step", 57): formatted only now
            what = " ".join(map(str, what))
        print(
            f"gpunn: error: rank {owner.rank} of {owner.size} waited more than {self.timeout:g} s for the other ranks "
            f"in {what}: a rank has stopped, hangs or died; stopping every rank (Communicator(timeout=) or "
            f"{TIMEOUT_ENV} sets the limit)",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(FORWARD_SECONDS)  # the launcher forwards the line before the abort ends the job
        try:
            owner.comm.Abort(TIMEOUT_EXIT)
        finally:
            os._exit(TIMEOUT_EXIT)


# The start-up watch: a separate process, since the rank's own threads cannot run while MPI_Init holds the GIL.
# It reads its standard input: "i" once MPI is initialised, "d" (or the end of the input: the rank ended) when
# the meeting is over, and the number of a signal the rank received (Python's wakeup fd, written by its C-level
# handler even while MPI_Init holds the GIL). Past the deadline it prints its line and kills the rank, and the
# launcher ends the job; after Ctrl-C, which a rank waiting for the others cannot answer, it does so at once.
_WATCH = """
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the rank answers Ctrl-C; this process ends with the rank
pid, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
line = 3
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        break
    if select.select([0], [], [], left)[0]:
        said = os.read(0, 64)
        if not said or b"d" in said:
            sys.exit(0)
        if b"i" in said:
            line = 4
        if bytes([signal.SIGINT]) in said and line != 5:  # a moment for a rank that is not waiting to answer
            line, deadline = 5, time.monotonic() + 0.5
if sys.argv[line]:
    sys.stderr.write(sys.argv[line] + "\\n")
    sys.stderr.flush()
    time.sleep(float(sys.argv[6]))  # the launcher forwards the line before the kill ends the job
os.kill(pid, signal.SIGKILL)
"""
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_NTASKS")


class _StartWatch:
    """Ends a rank that waits longer than the timeout at the start: in MPI's initialisation for a rank that never
    comes (one that failed or exited before it joined), or in the first meeting for one that stopped there; and
    a rank that Ctrl-C reached while it waited there. The rank is told apart by its launcher's variables, before
    MPI is initialised. Rank r waits (r + 1) s more (10 s at most), so that the lowest waiting rank alone
    reports (the launcher ends the others when it is killed), and a rank that could not start first."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.wakeup: int | None = None  # the wakeup fd this one replaced, while it is set
        assert process.stdin is not None
        fd = process.stdin.fileno()
        os.set_blocking(fd, False)  # as Python's wakeup fd must be; one byte at a time fits the pipe
        try:
            self.wakeup = signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: Ctrl-C is not relayed
            pass

    @classmethod
    def begin(cls, timeout: float | None, failure: str | None) -> _StartWatch | None:
        rank, size = _launch_position()
        if timeout is None or size < 2 or os.name != "posix" or not sys.executable:
            return None
        who = f"rank {rank} of {size}" if rank is not None else f"a rank of {size}"
        limit = f"stopping every rank (Communicator(timeout=) or {TIMEOUT_ENV} sets the limit)"
        if failure is not None:  # this rank's reason goes first: it is what the user needs to read
            grace = 0.0
            lines = [f"gpunn: error: {who} could not start: {failure}; the other ranks did not join within {timeout:g} "
                     f"s to hear it; {limit}"] * 2  # fmt: skip
        else:
            grace = 1.0 * min((rank or 0) + 1, 10)
            waited = f"gpunn: error: {who} waited more than {timeout:g} s for the other ranks"
            lines = [
                f"{waited} to start (in MPI's initialisation): a rank failed or exited before it joined, or has not "
                f"started; {limit}",
                f"{waited} in {MEETING}: a rank has stopped, hangs or died; {limit}",
            ]
        # after Ctrl-C: rank 0 says it (the others are interrupted too, and say nothing, as gpunn train's do)
        lines.append(f"\ngpunn: interrupted while {who} waited for the other ranks to start" if rank == 0 else "")
        command = [sys.executable, "-I", "-S", "-c", _WATCH, str(os.getpid()), str(timeout + grace), *lines,
                   str(FORWARD_SECONDS)]  # fmt: skip
        try:
            return cls(subprocess.Popen(command, stdin=subprocess.PIPE))
        except OSError:  # no process to spare: the meeting is still timed, by the thread
            return None

    def _say(self, what: bytes) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(what)
            stdin.flush()
        except (OSError, ValueError):  # it has ended already
            pass

    def initialised(self) -> None:
        self._say(b"i")

    def stop(self) -> None:
        if self.wakeup is not None:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(self.wakeup)
        self._say(b"d")
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        self.process.wait()


def _launch_position() -> tuple[int | None, int]:
    """This process's rank (None if not told) and the number of ranks, from the launcher's variables: known
    before MPI is initialised."""
    size = next((v for v in map(os.environ.get, _SIZE_VARIABLES) if v and v.isdigit()), "1")
    rank = next((v for v in map(os.environ.get, _RANK_VARIABLES) if v and v.isdigit()), None)
    return (int(rank) if rank is not None else None), int(size)


def _start_failures(every: list[Any], size: int) -> str | None:
    """One line naming the ranks that could not start and why (their messages, in order), else None."""
    failed: dict[str, list[int]] = {}
    for rank, message in enumerate(every):
        if message is not None:
            failed.setdefault(" ".join(str(message).split()), []).append(rank)
    if not failed:
        return None
    parts = []
    for message, ranks in failed.items():
        if len(ranks) == size:
            who = f"every rank of {size}" if size > 1 else "the rank"
        elif len(ranks) == 1:
            who = f"rank {ranks[0]} of {size}"
        else:
            shown = ", ".join(map(str, ranks[:8]))
            who = f"ranks {shown} of {size}" if len(ranks) <= 8 else f"{len(ranks)} ranks of {size} ({shown}, ...)"
        parts.append(f"{who} could not start: {message}")
    return "; ".join(parts) + "; stopping every rank"


def fail_to_start(message: str, *, timeout: float | None = None) -> NoReturn:
    """Tell the other ranks of an MPI job that this one cannot start (a refused argument, a bad setting) so that
    they end at once instead of waiting for it: this rank initialises MPI and takes part in the first meeting of
    ``Communicator()`` with ``message``, and every rank raises the same one-line ConfigError naming the ranks
    that could not start and why (marked ``every_rank``, with this process's ``rank``: print it on rank 0).
    The meeting is timed as the start of ``Communicator`` is (``timeout``, else ``GPUNN_MPI_TIMEOUT``, or 600 s
    where that setting is what failed). Raises ConfigError without mpi4py."""
    try:
        seconds = _timeout_seconds(timeout)
    except ConfigError:
        seconds = DEFAULT_TIMEOUT
    Communicator.__new__(Communicator)._join(None, seconds, message, abort_on_error=False)
    raise AssertionError("the meeting raises on every rank when one could not start")  # pragma: no cover


def _timeout_seconds(timeout: Any) -> float | None:
    """The collective timeout in seconds, None for none: ``timeout``, else ``GPUNN_MPI_TIMEOUT``, else 600."""
    source = "timeout"
    if timeout is None:
        text = os.environ.get(TIMEOUT_ENV, "").strip()
        if not text:
            return DEFAULT_TIMEOUT
        if text.lower() in ("none", "off", "inf"):
            return None
        source = f"{TIMEOUT_ENV}={text!r}"
        try:
            timeout = float(text)
        except ValueError:
            timeout = None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout) or timeout < 0:
        forever = "0 to wait forever" if source == "timeout" else "none to wait forever"
        raise ConfigError(
            f"{source}: give the seconds one MPI collective may wait for the other ranks (like 600), or {forever}"
        )
    return None if timeout == 0 or math.isinf(timeout) else float(timeout)


# ---------------------------------------------------------------------------------------------- agreement
def describe(
    spec: Any, x: Any, t: Any, weight: Any, settings: dict[str, Any], *, dropout_rate: float = 0.0,
    generator: Any = None,
    scaling: Any = None,
) -> dict[str, str]:  # fmt: skip
    """What this rank is about to train, as short strings that every rank can compare: see
    :meth:`Communicator.check_agreement`. ``spec`` is the model's :class:`gpunn.feed.Spec`, ``x`` the placed X
    (or the streamed Dataset), ``t`` the placed targets (None when streamed), ``weight`` the host sample weights
    or None, ``dropout_rate`` the network's dropout rate (an ensemble's member 0's), ``generator`` its shuffling
    generator's state and ``scaling`` its feature scaling."""
    if isinstance(x, Placed):  # its fingerprint would densify it whole on every rank
        raise ConfigError("training on several ranks (comm=) takes a dense X or a gpunn.data.Dataset; densify a "
                          "sparse X, or train it in one process")  # fmt: skip
    streamed = hasattr(x, "dataset")
    rows, features = (x.n_rows, x.dataset.n_features) if streamed else (int(x.shape[0]), int(x.shape[1]))
    d = {
        "feature count": str(features),
        "row count": str(rows),
        "network": f"{list(spec.sizes)} {_named(spec.activation)} dropout={dropout_rate:g} {spec.dtype}",
        "output": f"{spec.output} ({spec.loss})",
        "number of outputs": str(spec.n_outputs),
        "classes": _classes(spec, None if streamed else t),
    }
    d.update({name: repr(value) for name, value in settings.items()})
    batch = settings.get("batch_size")
    if dropout_rate or (settings.get("shuffle", True) and batch is not None and batch < rows):
        # each rank draws the same sample order (and dropout mask) from its own generator
        d["shuffling generator (the MLP's seed)"] = _digest(repr(generator).encode())
    d["data fingerprint"] = _fingerprint(spec, x, t, weight, streamed, scaling)
    return d


def _named(activation: Any) -> str:
    return activation if isinstance(activation, str) else repr(list(activation))


def _classes(spec: Any, t: Any) -> str:
    """The classes present in the placed targets ``t`` (two reductions on the device), and their labels."""
    named = "" if spec.classes is None else f", named {_short(spec.classes)}"
    if spec.output in losses.REGRESSION or t is None:
        return f"-{named}"
    xp = spec.xp
    lo, hi = _backend.to_numpy(xp.min(t, axis=0)), _backend.to_numpy(xp.max(t, axis=0))
    k = spec.n_outputs
    if spec.output == "softmax":  # one-hot rows
        present = np.flatnonzero(hi == 1).tolist()
        return (f"all {k}" if len(present) == k else f"{len(present)} of {k}: {_short(present)}") + named
    a, b = (losses.encode_targets(spec.output, spec.loss, v) for v in (lo, hi))  # its own inverse
    lo, hi = np.minimum(a, b), np.maximum(a, b)  # 0/1 targets per column
    one = [j for j in range(k) if not (lo[j] == 0 and hi[j] == 1)]
    if not one:
        return ("0 and 1" if k == 1 else "0 and 1 in every column") + named
    return ", ".join(f"column {j} only {int(lo[j])}" for j in one[:5]) + (", ..." if len(one) > 5 else "") + named


def _short(values: Any) -> str:
    values = list(values)
    return repr(values) if len(values) <= 8 else f"[{', '.join(map(repr, values[:8]))}, ... ({len(values)})]"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _fingerprint(spec: Any, x: Any, t: Any, weight: Any, streamed: bool, scaling: Any) -> str:
    """SHA-256 of the data a rank trains on, as placed on its device (scaled, in the model's dtype): all rows
    up to FINGERPRINT_BYTES, else evenly spaced rows (first and last included); the sample weights; the feature
    scaling, which sums over every row. A streamed Dataset is not read: its rows, columns, weight total and
    scaling stand for it."""
    h = hashlib.sha256()
    if streamed:
        ds = x.dataset
        h.update(repr((x.n_rows, ds.n_features, ds.feature_names, ds.target_name, ds.weight_name)).encode())
        h.update(np.float64(x.weight_total if x.weight_total is not None else np.nan).tobytes())
        scaling = x.scaling
    else:
        n = int(x.shape[0])
        row_bytes = max(1, (math.prod(x.shape[1:]) + math.prod(t.shape[1:])) * np.dtype(spec.dtype).itemsize)
        rows = None
        if n * row_bytes > FINGERPRINT_BYTES:
            # fewer rows than n, so the steps are at least 1 and the rows distinct
            rows = np.linspace(0, n - 1, max(2, FINGERPRINT_BYTES // row_bytes)).astype(np.int64)
        for a in (x, t):
            if rows is not None:
                a = a[rows] if isinstance(a, np.ndarray) else _backend.take_rows(
                    a, _backend.from_numpy(rows, spec.xp, spec.device), spec.xp
                )  # fmt: skip
            host = np.ascontiguousarray(_backend.to_numpy(a))
            h.update(repr((host.shape, str(host.dtype))).encode())
            h.update(host.data)
        if weight is not None:
            h.update(np.ascontiguousarray(weight, dtype=np.float64).data)
    for s in scaling or ():
        h.update(np.ascontiguousarray(s, dtype=np.float64).data)
    return h.hexdigest()[:16]


def disagreement(every: list[dict[str, str]]) -> tuple[str, set[str]] | None:
    """``(one-line message, what differs)`` if the ranks' descriptions (by rank) are not all equal, else None.
    The ranks that differ are named against the most common description (on a tie, the lowest rank's)."""
    keys = list(dict.fromkeys(k for d in every for k in d))
    rows = [tuple(d.get(k, "-") for k in keys) for d in every]
    counts = Counter(rows)
    if len(counts) == 1:
        return None
    most = max(counts.values())
    ref = next(r for r, row in enumerate(rows) if counts[row] == most)
    odd = [r for r, row in enumerate(rows) if row != rows[ref]]
    differing: set[str] = set()
    parts: list[str] = []
    for r in odd:
        diff = [i for i, k in enumerate(keys) if rows[r][i] != rows[ref][i]]
        differing |= {keys[i] for i in diff}
        if len(parts) < 3:
            what = "; ".join(f"{keys[i]} {rows[r][i]} (rank {ref}: {rows[ref][i]})" for i in diff)
            parts.append(f"rank {r} has {what}")
    if len(odd) > 3:
        parts.append(f"and {len(odd) - 3} more ranks differ")
    hint = "; give every rank's MLP the same seed" if any(k.startswith("shuffling") for k in differing) else ""
    return (
        f"the ranks disagree at the start of fit: {'. '.join(parts)}. Every rank must call fit with the same "
        f"network, settings and data: each holds the whole data set and trains its shard of every batch{hint}",
        differing,
    )


class _CupyMemory:
    """What the NCCL allreduce needs of CuPy: an output buffer, device pointers, the current stream."""

    @staticmethod
    def empty_like(a: Any) -> Any:
        import cupy

        return cupy.empty_like(a)

    @staticmethod
    def pointer(a: Any) -> int:
        return a.data.ptr

    @staticmethod
    def stream() -> int:
        import cupy

        return cupy.cuda.get_current_stream().ptr


def _on_gpu(flat: Any) -> bool:
    """Whether a rank's gradients are a CuPy array (tests put a stand-in here)."""
    return _backend.is_cupy_array(flat)


def _gpu_identity(flat: Any) -> str:
    """The physical GPU holding a CuPy array: its PCI bus id, the same whatever CUDA_VISIBLE_DEVICES numbers it
    in each process (tests put a stand-in here)."""
    import cupy

    return str(cupy.cuda.Device(flat.device.id).pci_bus_id)


def _nccl_api() -> tuple[Any, Any]:
    """``(cupy.cuda.nccl, memory helpers)``; the tests put a stand-in for NCCL here to run this code path with
    two ranks on machines without two GPUs."""
    from cupy.cuda import nccl

    if not getattr(nccl, "available", True):  # CuPy imports without libnccl, then has none of its calls
        raise ConfigError(
            "distributed training of CuPy arrays needs NCCL, which CuPy cannot load: pip install nvidia-nccl-cu12 "
            "(or nvidia-nccl-cu13, matching CuPy's CUDA), or train with device='cpu'"
        )
    return nccl, _CupyMemory


def launched_with_mpi() -> bool:
    """True when this process was started by mpiexec/srun with more than one rank."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_NTASKS", "MPI_LOCALNRANKS"):
        if os.environ.get(var, "1") not in ("", "1"):
            return True
    return False
