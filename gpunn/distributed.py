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
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import numpy as np

from . import _backend
from .errors import ConfigError


class Communicator:
    """A group of processes training one model together (wraps an mpi4py communicator).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Defaults to ``MPI.COMM_WORLD``.
    abort_on_error : bool
        Install an exception hook that aborts every rank when one raises, so that no rank waits forever
        in a collective.
    """

    def __init__(self, comm: Any = None, *, abort_on_error: bool = True):
        try:
            from mpi4py import MPI
        except ImportError:
            raise ConfigError("distributed training needs mpi4py: pip install 'gpunn[mpi]'") from None
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks on this machine
        self.local_rank = self.node.Get_rank()
        self._nccl: Any = None
        self._nccl_ok: bool | None = None  # whether gradients go through NCCL, decided at the first allreduce
        if abort_on_error:
            previous = sys.excepthook

            def abort(kind, value, tb):
                previous(kind, value, tb)
                sys.stderr.flush()
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
        n = stop - start
        base, extra = divmod(n, self.size)
        lo = start + self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    # ------------------------------------------------------------------------------------------ collectives
    def broadcast_arrays(self, arrays: list[Any], xp: Any, device: Any) -> list[Any]:
        """Rank 0's arrays on every rank (once, when training starts)."""
        host = [np.ascontiguousarray(_backend.to_numpy(a)) for a in arrays]
        flat = np.concatenate([h.reshape(-1) for h in host]) if host else np.zeros(0)
        self.comm.Bcast(flat, root=0)
        out, offset = [], 0
        for h in host:
            out.append(_backend.from_numpy(flat[offset : offset + h.size].reshape(h.shape), xp, device))
            offset += h.size
        return out

    def allreduce_sum(self, flat: Any, xp: Any, device: Any) -> Any:
        """Element-wise sums of a flat buffer (a step's gradients) over the ranks, in one collective."""
        if self._uses_nccl(flat):
            return self._nccl_allreduce(flat)
        host = np.ascontiguousarray(_backend.to_numpy(flat))
        if not host.flags.writeable or host is flat:  # never write into the caller's array
            host = host.copy()
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        return _backend.from_numpy(host, xp, device)

    def sum_scalars(self, values: list[float]) -> list[float]:
        """Sums of a few host numbers over the ranks (the epoch's metrics)."""
        buf = np.asarray(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf.tolist()

    def _uses_nccl(self, flat: Any) -> bool:
        """NCCL when every rank holds its gradients on a GPU of its own; else MPI on the host, for every rank.
        Decided once, at the first allreduce, with every rank taking part, so that all take the same path."""
        if self._nccl_ok is None:
            on_gpu = _on_gpu(flat)
            here = self.node.allgather(_gpu_identity(flat) if on_gpu else None)
            gpus = [g for g in here if g is not None]
            everyone = self.comm.allgather((on_gpu, len(set(gpus)) < len(gpus)))
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
            uid = self.comm.bcast(uid, root=0)  # once, at set-up: not in the hot path
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
        self.comm.Barrier()


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
