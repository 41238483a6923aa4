"""Data-parallel training over MPI: 2 ranks on CPU equal 1 process; a failing rank stops the job."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import gpunn
from gpunn import distributed
from gpunn.distributed import Communicator
from gpunn.errors import ConfigError


def _mpiexec() -> str | None:
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec")


pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or _mpiexec() is None,
    reason="mpi4py and mpiexec are needed (pip install 'gpunn[mpi]')",
)

TRAIN = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import gpunn
    from gpunn.distributed import Communicator

    def fit_mlps(comm, cases, prefix):
        rng = np.random.default_rng(0)
        X = rng.normal(size=(103, 4))
        y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
        for i, cfg in enumerate(cases):  # one job, its ranks started (and JAX imported) once
            where = {"device": "cpu"}
            if cfg["xp"] == "jax":  # the compiled step, its two halves around the allreduce
                import jax
                jax.config.update("jax_enable_x64", True)
                where = {"xp": jax.numpy, "device": "cpu", "compile": True}
            weight = 0.5 + np.arange(103) % 3 if cfg["weighted"] else None
            m = gpunn.MLP([4, 8, 8, 1], dtype="float64", seed=3, dropout=cfg["dropout"], **where)
            m.fit(X, y, epochs=4, lr=cfg["lr"], batch_size=cfg["batch_size"], optimizer=cfg["optimizer"],
                  validation_data=(X[:20], y[:20]), verbose=0, comm=comm, sample_weight=weight)
            if comm.rank == 0:
                np.savez(f"{prefix}.{i}.npz", *[np.asarray(a) for pair in m.weights for a in pair])
                with open(f"{prefix}.{i}.json", "w") as f:
                    json.dump(m.history.to_dict(), f)
    """
)


def _run(ranks: int, script: str, *args: str, cwd, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [_mpiexec(), "-n", str(ranks), sys.executable, script, *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env,
    )  # fmt: skip


TRAIN_CASES = {  # (optimizer, batch_size, lr, xp, dropout, weighted)
    "full-batch-sgd": ("sgd", None, 0.3, "numpy", 0.0, False),
    "minibatch-sgd-weighted": ("sgd", 16, 0.1, "numpy", 0.0, True),
    "minibatch-adam-dropout": ("adam", 10, 0.01, "numpy", 0.3, False),
    "minibatch-adam-jax-compiled": ("adam", 10, 0.01, "jax", 0.0, False),
    "full-batch-momentum-jax-compiled-dropout-weighted": ("momentum", None, 0.1, "jax", 0.25, True),
}


def _mlp_cases(xp: str) -> dict:
    keys = ("optimizer", "batch_size", "lr", "xp", "dropout", "weighted")
    return {name: dict(zip(keys, case)) for name, case in TRAIN_CASES.items() if case[3] == xp}


def _two_ranks_equal_one_process(cases: dict, tmp_path) -> None:
    """Each rank draws its rows' part of the global dropout mask and divides by the global batch's weight
    total, so two ranks give the one-process weights (the job: test_two_ranks_equal_one_process_mlps_and_ensembles
    below)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(103, 4))
    y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
    for i, (name, cfg) in enumerate(cases.items()):
        got = np.load(tmp_path / f"w.{i}.npz")
        history = json.loads((tmp_path / f"w.{i}.json").read_text())
        weight = 0.5 + np.arange(103) % 3 if cfg["weighted"] else None
        ref = gpunn.MLP([4, 8, 8, 1], device="cpu", dtype="float64", seed=3, dropout=cfg["dropout"])
        ref.fit(X, y, epochs=4, lr=cfg["lr"], batch_size=cfg["batch_size"], optimizer=cfg["optimizer"],
                validation_data=(X[:20], y[:20]), verbose=0, sample_weight=weight)  # fmt: skip
        expected = [np.asarray(a) for pair in ref.weights for a in pair]
        for j, w in enumerate(expected):
            np.testing.assert_allclose(got[f"arr_{j}"], w, rtol=0, atol=1e-12, err_msg=f"{name}: array {j}")
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(history[key], getattr(ref.history, key), rtol=1e-12, err_msg=f"{name}: {key}")


STREAM = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import gpunn
    from gpunn.data import Dataset
    from gpunn.distributed import Communicator

    comm = Communicator()
    batch_size = json.loads(sys.argv[3])
    m = gpunn.MLP([4, 8, 1], dtype="float64", seed=3, device="cpu", standardize=True)
    m.fit(Dataset(sys.argv[1], "label", weight="w"), epochs=3, lr=0.05, batch_size=batch_size, optimizer="adam",
          verbose=0, comm=comm)
    if comm.rank == 0:
        np.save(sys.argv[2], np.asarray(m.params))
        with open(sys.argv[2] + ".json", "w") as f:
            json.dump(m.history.to_dict(), f)
    """
)


@pytest.mark.parametrize("batch_size", [16, None])
def test_two_ranks_streaming_weighted_rows_equal_one_process_in_memory(tmp_path, batch_size):
    """Each rank reads every batch of the file and divides by the global batch's weight total: the oracle is
    in-memory training with sample_weight in one process."""
    import json

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    X = rng.normal(size=(103, 4))
    y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
    weight = 0.5 + np.arange(103) % 3
    table = pa.table({**{f"f{j}": X[:, j] for j in range(4)}, "w": weight, "label": y})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=20)
    script = tmp_path / "stream.py"
    script.write_text(STREAM)
    r = _run(2, str(script), str(tmp_path / "d.parquet"), str(tmp_path / "p.npy"), json.dumps(batch_size),
             cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    ref = gpunn.MLP([4, 8, 1], device="cpu", dtype="float64", seed=3, standardize=True)
    ref.fit(X, y, epochs=3, lr=0.05, batch_size=batch_size, optimizer="adam", verbose=0, sample_weight=weight)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), ref.params, rtol=0, atol=1e-12)
    history = json.loads((tmp_path / "p.npy.json").read_text())
    for key in ("loss", "accuracy", "weighted_loss"):
        np.testing.assert_allclose(history[key], getattr(ref.history, key), rtol=1e-12)


FAIL = textwrap.dedent(
    """
    import numpy as np
    import gpunn
    from gpunn.distributed import Communicator

    comm = Communicator()
    X = np.random.default_rng(0).normal(size=(64, 3))
    y = (X[:, 0] > 0).astype(int)
    if comm.rank == 1:
        raise RuntimeError("rank 1 lost its data")
    gpunn.MLP([3, 4, 1], device="cpu").fit(X, y, epochs=50, batch_size=8, verbose=0, comm=comm)
    """
)


def test_a_failing_rank_stops_the_job_without_hanging(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAIL)
    r = _run(2, str(script), cwd=tmp_path, timeout=60)
    assert r.returncode != 0
    assert "rank 1 lost its data" in r.stderr


@pytest.mark.parametrize("extra", [[], ["--members", "3", "--dropout", "0.1"]], ids=["one-network", "ensemble-dropout"])
def test_cli_two_ranks_match_one_process(tmp_path, extra):
    common = ["train", "--epochs", "30", "--batch-size", "50", "--optimizer", "adam", "--lr", "0.01", "--device",
              "cpu", "--dtype", "float64", "-q", *extra]  # fmt: skip
    r = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-m", "gpunn", *common, "--distributed", "--save",
                        "d.safetensors"], capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("test accuracy") == (2 if extra else 1)  # only rank 0 prints (an ensemble: two lines)
    s = subprocess.run([sys.executable, "-m", "gpunn", *common, "--save", "s.safetensors"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert s.returncode == 0, s.stderr
    assert r.stdout == s.stdout
    a, b = gpunn.load(tmp_path / "d.safetensors", device="cpu"), gpunn.load(tmp_path / "s.safetensors", device="cpu")
    pairs = list(zip(a.members, b.members)) if extra else [(a, b)]
    assert len(pairs) == (3 if extra else 1)
    for ma, mb in pairs:
        for pa, pb in zip(ma.weights, mb.weights):
            for wa, wb in zip(pa, pb):
                np.testing.assert_allclose(wa, wb, rtol=0, atol=1e-10)


def test_shards_cover_the_batch_in_order():
    class Fake(Communicator):
        def __init__(self, rank, size):
            self.rank, self.size = rank, size

    for size in (1, 2, 3, 5):
        for start, stop in ((0, 10), (10, 13), (5, 7)):
            parts = [Fake(r, size).shard(start, stop) for r in range(size)]
            assert parts[0][0] == start and parts[-1][1] == stop
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1


NCCL = textwrap.dedent(
    """
    import sys
    import numpy as np
    import gpunn
    from gpunn import _backend
    from gpunn.distributed import Communicator

    comm = Communicator()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 8))
    y = (X[:, 0] > 0).astype(int)
    m = gpunn.MLP([8, 16, 1], device=comm.device(), seed=1)
    m.fit(X, y, epochs=3, batch_size=32, optimizer="adam", lr=0.01, verbose=0, comm=comm)
    assert comm._nccl is not None, "CuPy gradients must go through NCCL"
    np.savez(sys.argv[1], *[_backend.to_numpy(a) for pair in m.weights for a in pair])
    """
)


def _nccl_missing() -> str | None:
    if not gpunn._backend.gpu_usable():
        return "NCCL needs a usable GPU and CuPy"
    from cupy.cuda import nccl

    return None if getattr(nccl, "available", True) else "CuPy cannot load NCCL (pip install nvidia-nccl-cu12/-cu13)"


@pytest.mark.gpu
@pytest.mark.skipif(_nccl_missing() is not None, reason=str(_nccl_missing()))
def test_nccl_with_one_rank_equals_the_cupy_run(tmp_path):
    script = tmp_path / "nccl.py"
    script.write_text(NCCL)
    r = _run(1, str(script), str(tmp_path / "w.npz"), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "w.npz")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 8))
    y = (X[:, 0] > 0).astype(int)
    ref = gpunn.MLP([8, 16, 1], device="cuda", seed=1)
    ref.fit(X, y, epochs=3, batch_size=32, optimizer="adam", lr=0.01, verbose=0)
    for i, (w, b) in enumerate(ref.weights):
        np.testing.assert_allclose(got[f"arr_{2 * i}"], gpunn._backend.to_numpy(w), rtol=0, atol=1e-6)
        np.testing.assert_allclose(got[f"arr_{2 * i + 1}"], gpunn._backend.to_numpy(b), rtol=0, atol=1e-6)


NCCL_STANDIN = textwrap.dedent(
    """
    import ctypes, json, sys
    import numpy as np
    import gpunn
    from gpunn import distributed
    from gpunn.distributed import Communicator

    calls = []

    class StandInNccl:
        # cupy.cuda.nccl's constants and calls, carried out with MPI on host memory by pointer
        NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 7, 8, 0

        @staticmethod
        def get_unique_id():
            return tuple(np.random.default_rng().integers(0, 255, 128).tolist())

        class NcclCommunicator:
            def __init__(self, ndev, uid, rank):
                calls.append(("init", ndev, hash(uid), rank))

            def allReduce(self, send, recv, count, datatype, op, stream):
                assert op == StandInNccl.NCCL_SUM and stream == 0
                ctype = {StandInNccl.NCCL_FLOAT32: ctypes.c_float, StandInNccl.NCCL_FLOAT64: ctypes.c_double}[datatype]
                src = np.ctypeslib.as_array((ctype * count).from_address(send))
                dst = np.ctypeslib.as_array((ctype * count).from_address(recv))
                comm.comm.Allreduce(src, dst, op=comm.MPI.SUM)
                calls.append(("allReduce", count, datatype))

    class HostMemory:
        empty_like = staticmethod(np.empty_like)
        pointer = staticmethod(lambda a: a.ctypes.data)
        stream = staticmethod(lambda: 0)

    distributed._nccl_api = lambda: (StandInNccl, HostMemory)
    comm = Communicator()
    # NumPy gradients, as if on GPUs: each rank on a GPU of its own, both on one (then NCCL must not be used), or
    # rank 1 on the CPU (neither may NCCL)
    distributed._on_gpu = lambda flat: sys.argv[3] != "mixed" or comm.rank == 0
    bus = "0000:01:00.0" if sys.argv[3] == "shared" else f"0000:0{comm.rank + 1}:00.0"
    distributed._gpu_identity = lambda flat: bus
    rng = np.random.default_rng(0)
    X = rng.normal(size=(103, 4))
    y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
    m = gpunn.MLP([4, 8, 8, 1], dtype=sys.argv[2], device="cpu", seed=3)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m.fit(X, y, epochs=3, lr=0.01, batch_size=10, optimizer="adam", verbose=0, comm=comm)
    calls += [("warning", str(w.message)) for w in caught if "through MPI on the host" in str(w.message)]
    every = comm.comm.gather(calls, root=0)
    if comm.rank == 0:
        np.savez(sys.argv[1], *[np.asarray(a) for pair in m.weights for a in pair])
        with open(sys.argv[1] + ".json", "w") as f:
            json.dump(every, f)
    """
)


@pytest.mark.parametrize(
    ("dtype", "gpus"), [("float64", "own"), ("float32", "own"), ("float64", "shared"), ("float64", "mixed")]
)
def test_the_nccl_path_with_two_ranks_equals_one_process_on_a_stand_in_for_nccl(tmp_path, dtype, gpus):
    """The NCCL code (unique id from rank 0, one communicator per rank, one out-of-place allReduce of the flat
    gradients per step in the model's dtype) with two ranks, through a stand-in that carries NCCL's calls out
    with MPI on host memory: a machine with one GPU cannot run NCCL with two ranks (docs/distributed.md). With
    both ranks on one GPU, which NCCL refuses, or one rank on the CPU, no NCCL call is made: the gradients go
    through the host, with a warning, and training is the same."""
    import json

    script = tmp_path / "standin.py"
    script.write_text(NCCL_STANDIN)
    r = _run(2, str(script), str(tmp_path / "w.npz"), dtype, gpus, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    calls = json.loads((tmp_path / "w.npz.json").read_text())
    if gpus != "own":
        assert calls[1] == [] and len(calls[0]) == 1, calls  # no NCCL call on either rank; rank 0 warns once
        assert calls[0][0][0] == "warning"
        expected = "ranks hold GPUs 0000:01:00.0, 0000:01:00.0" if gpus == "shared" else "some ranks hold"
        assert expected in calls[0][0][1], calls[0][0][1]
    else:
        inits = [c[0] for c in calls]
        assert [i[1] for i in inits] == [2, 2] and sorted(i[3] for i in inits) == [0, 1]
        assert inits[0][2] == inits[1][2], "the ranks built their communicators from different unique ids"
        steps = 3 * 11  # 3 epochs of ceil(103 / 10) global batches
        n_params = 4 * 8 + 8 + 8 * 8 + 8 + 8 + 1
        kind = 8 if dtype == "float64" else 7
        for rank_calls in calls:
            assert rank_calls[1:] == [["allReduce", n_params, kind]] * steps
    rng = np.random.default_rng(0)
    X = rng.normal(size=(103, 4))
    y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
    ref = gpunn.MLP([4, 8, 8, 1], dtype=dtype, device="cpu", seed=3)
    ref.fit(X, y, epochs=3, lr=0.01, batch_size=10, optimizer="adam", verbose=0)
    got = np.load(tmp_path / "w.npz")
    atol = 1e-12 if dtype == "float64" else 1e-5
    for i, w in enumerate(a for pair in ref.weights for a in pair):
        np.testing.assert_allclose(got[f"arr_{i}"], w, rtol=0, atol=atol)


AGREE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import gpunn
    from gpunn.errors import GpunnError
    from gpunn.distributed import Communicator

    comm = Communicator()
    got = {}
    try:
        for case in sys.argv[1].split(","):  # one job for every case: a refused fit leaves the ranks in step
            rng = np.random.default_rng(0)
            X = rng.normal(size=(103, 4))
            y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
            seed, epochs = 3, 2
            if comm.rank == 1:
                if case == "data":  # the same shape, one value changed
                    X[57, 2] += 1e-9
                elif case == "rows":
                    X, y = X[:100], y[:100]
                elif case == "feature":  # an extra column, and a network built for it
                    X = np.hstack([X, X[:, :1]])
                elif case == "seed":
                    seed = 4
                elif case == "epochs":
                    epochs = 3
            m = gpunn.MLP([X.shape[1], 8, 1], device="cpu", dtype="float64", seed=seed)
            got[case] = {"type": None}
            try:
                m.fit(X, y, epochs=epochs, lr=0.1, batch_size=16, verbose=0, comm=comm)
            except GpunnError as e:
                got[case] = {"type": type(e).__name__, "message": str(e)}
                if sys.argv[2] == "raise":
                    raise
    finally:
        with open(f"{sys.argv[2]}.{comm.rank}.json", "w") as f:
            json.dump(got, f)
    """
)


DISAGREEMENTS = [  # (case, error, a piece of its message)
    ("same", None, None),
    ("data", "InputError", "rank 1 has data fingerprint "),
    ("rows", "InputError", "rank 1 has row count 100 (rank 0: 103); data fingerprint "),
    ("feature", "InputError", "rank 1 has feature count 5 (rank 0: 4); network [5, 8, 1] relu dropout=0 float64 "
                              "(rank 0: [4, 8, 1] relu dropout=0 float64); data fingerprint "),
    ("seed", "ConfigError", "rank 1 has shuffling generator (the MLP's seed) "),
    ("epochs", "ConfigError", "rank 1 has epochs 3 (rank 0: 2)."),
]  # fmt: skip


def test_ranks_that_disagree_raise_one_error_on_every_rank_naming_the_rank(tmp_path):
    """Different data of the same shape (which trained silently into different weights), different row counts
    (an MPICH abort after an epoch), an extra feature (a raw "Other MPI error"), another seed or epoch count:
    every rank raises the same one-line gpunn error before the first collective of training. The cases run one
    after another in one job."""
    script = tmp_path / "agree.py"
    script.write_text(AGREE)
    r = _run(2, str(script), ",".join(case for case, _, _ in DISAGREEMENTS), "out", cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    ranks = [json.loads((tmp_path / f"out.{rank}.json").read_text()) for rank in (0, 1)]
    for case, kind, expected in DISAGREEMENTS:
        got = [every[case] for every in ranks]
        assert {d["type"] for d in got} == {kind}, (case, got)
        if kind is not None:
            message = got[0]["message"]
            assert message == got[1]["message"] and "\n" not in message, case
            assert message.startswith("the ranks disagree at the start of fit: "), case
            assert expected in message, message


def test_an_uncaught_disagreement_ends_every_rank_with_one_traceback_and_no_abort(tmp_path):
    script = tmp_path / "agree.py"
    script.write_text(AGREE)
    r = _run(2, str(script), "rows", "raise", cwd=tmp_path, timeout=60)
    assert json.loads((tmp_path / "raise.1.json").read_text())["rows"]["type"] == "InputError"  # rank 1 raised it too
    assert r.returncode == 1
    assert r.stderr.count("Traceback") == 1  # rank 0's; rank 1 raised the same error silently
    assert "gpunn.errors.InputError: the ranks disagree at the start of fit: rank 1 has row count 100" in r.stderr
    assert "MPI_Abort" not in r.stderr


STOP = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import gpunn
    from gpunn.distributed import Communicator

    when = sys.argv[1]
    # MPI initialised before the Communicator: the 3 s then time the collective each case names, not how long a
    # loaded machine takes to start the other rank (the start's own timing has tests of its own)
    from mpi4py import MPI
    if when == "joined" and MPI.COMM_WORLD.Get_rank() == 1:  # stopped before the meeting in Communicator()
        os.kill(os.getpid(), signal.SIGSTOP)
    comm = Communicator(timeout=3) if when == "start" else Communicator()  # else GPUNN_MPI_TIMEOUT
    X = np.random.default_rng(0).normal(size=(64, 3))
    y = (X[:, 0] > 0).astype(int)

    def stop_rank_1(model, record):
        if comm.rank == 1:
            os.kill(os.getpid(), signal.SIGSTOP)

    if when == "start":
        stop_rank_1(None, None)
    gpunn.MLP([3, 4, 1], device="cpu").fit(X, y, epochs=50, batch_size=8, verbose=0, comm=comm,
                                           callbacks=[stop_rank_1])
    """
)


@pytest.mark.parametrize(
    ("when", "collective"),
    [
        ("joined", distributed.MEETING),
        ("start", "the agreement check at the start of fit"),
        ("epoch", "the gradient allreduce of step 9"),
    ],
)
def test_a_stopped_rank_ends_the_job_with_a_timeout_error_naming_the_collective(tmp_path, when, collective):
    """A rank stopped with SIGSTOP (after MPI's initialisation, before fit, or after its first epoch of 8 steps)
    used to hang the job forever; with a 3 s timeout (Communicator(timeout=3), or GPUNN_MPI_TIMEOUT=3) rank 0
    names the collective it waited in and ends the job, the stopped rank included. The test cannot hang: the
    launcher's process group is killed after 60 s."""
    script = tmp_path / "stop.py"
    script.write_text(STOP)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "GPUNN_MPI_TIMEOUT": "none" if when == "start" else "3"}
    start = time.monotonic()
    p = subprocess.Popen([_mpiexec(), "-n", "2", sys.executable, str(script), when], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env, start_new_session=True)  # fmt: skip
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail("the job hung although a rank waited past its collective timeout")
    elapsed = time.monotonic() - start
    assert p.returncode != 0
    assert f"gpunn: error: rank 0 of 2 waited more than 3 s for the other ranks in {collective}: " in err, err
    assert elapsed < 30, elapsed


def _launch(command: list[str], cwd, timeout: float, **env: str) -> tuple[int, str, float]:
    """``mpiexec`` with ``command``: (exit status, standard error, seconds). A job that outlives ``timeout``
    fails the test instead of hanging it: the launcher's process group is killed."""
    start = time.monotonic()
    p = subprocess.Popen([_mpiexec(), *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                         env={**os.environ, "PYTHONWARNINGS": "ignore", **env}, start_new_session=True)  # fmt: skip
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"the job still ran after {timeout} s: {command}")
    return p.returncode, err, time.monotonic() - start


@pytest.mark.parametrize(
    ("ranks", "expected"),
    [
        ([["--epochs", "3"], ["--epochs", "-5"]], "rank 1 of 2 could not start: argument --epochs: "),
        ([["--epochs", "-5"], ["--epochs", "-5"]], "every rank of 2 could not start: argument --epochs: "),
    ],
    ids=["rank-1", "every-rank"],
)  # fmt: skip
def test_a_rank_that_refuses_its_arguments_ends_the_job_at_once_naming_it(tmp_path, ranks, expected):
    """``--epochs -5`` on rank 1 used to leave rank 0 waiting in MPI's initialisation forever (rank 1 exited
    before it joined MPI). Now the refusing rank joins only to say why, and every rank ends at once (exit 2),
    well within GPUNN_MPI_TIMEOUT, with one line from rank 0."""
    command: list[str] = []
    for extra in ranks:
        command += [*([":"] if command else []), "-n", "1", sys.executable, "-m", "gpunn", "train", "--distributed",
                    "--device", "cpu", "-q", *extra]  # fmt: skip
    code, err, elapsed = _launch(command, tmp_path, 60, GPUNN_MPI_TIMEOUT="10")
    assert code == 2, err
    assert err.splitlines() == [
        f"gpunn: error: {expected}expected a number >= 0, got -5 (see gpunn train --help); stopping every rank"
    ]  # fmt: skip
    assert elapsed < 10, elapsed  # no rank waited for the timeout


def test_a_rank_that_exits_before_it_joins_ends_the_job_after_the_timeout(tmp_path):
    """Rank 0 of 3 exits before it joins MPI (as one that crashes while importing). MPICH does not end the job
    then: the other ranks waited in MPI_Init forever, which holds the GIL (no watchdog thread can run). Now a
    watch process of each waiting rank ends the job after GPUNN_MPI_TIMEOUT, and one line tells, one waiting rank's
    (the lowest reports first, by a stagger of 1 s a rank, which a very loaded machine could overrun; the launcher ends
    the others when it is killed)."""
    healthy = [sys.executable, "-m", "gpunn", "train", "--distributed", "--device", "cpu", "-q"]
    command = ["-n", "1", sys.executable, "-c", "raise SystemExit(1)", ":", "-n", "2", *healthy]
    code, err, elapsed = _launch(command, tmp_path, 60, GPUNN_MPI_TIMEOUT="2")
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0] in [
        f"gpunn: error: rank {r} of 3 waited more than 2 s for the other ranks to start (in MPI's initialisation): a "
        "rank failed or exited before it joined, or has not started; stopping every rank (Communicator(timeout=) "
        "or GPUNN_MPI_TIMEOUT sets the limit)" for r in (1, 2)
    ], err  # fmt: skip
    assert 2 < elapsed < 20, elapsed


def test_the_ranks_that_could_not_start_are_named():
    assert distributed._start_failures([None, None], 2) is None
    assert (
        distributed._start_failures([None, "no\ndata"], 2)
        == "rank 1 of 2 could not start: no data; stopping every rank"
    )
    got = distributed._start_failures(["a", None, "a", "b"], 4)
    assert got == "ranks 0, 2 of 4 could not start: a; rank 3 of 4 could not start: b; stopping every rank"
    assert distributed._start_failures(["a"] * 3, 3) == "every rank of 3 could not start: a; stopping every rank"
    many = distributed._start_failures([None] + ["a"] * 9, 10)
    assert many == "9 ranks of 10 (1, 2, 3, 4, 5, 6, 7, 8, ...) could not start: a; stopping every rank"


def test_the_collective_timeout_setting(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed._timeout_seconds(None) == 600.0
    assert distributed._timeout_seconds(2.5) == 2.5
    assert distributed._timeout_seconds(0) is None
    for text, seconds in (("30", 30.0), (" 0.5 ", 0.5), ("none", None), ("OFF", None), ("0", None), ("", 600.0)):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, text)
        assert distributed._timeout_seconds(None) == seconds
    assert distributed._timeout_seconds(7) == 7.0  # the argument wins over the variable
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "ten minutes")
    with pytest.raises(ConfigError, match="GPUNN_MPI_TIMEOUT='ten minutes': give the seconds"):
        distributed._timeout_seconds(None)
    for bad in (-1, float("nan"), "600", True):
        with pytest.raises(ConfigError, match="^timeout: give the seconds"):
            distributed._timeout_seconds(bad)


def test_the_disagreeing_ranks_are_named_against_the_majority():
    same = {"row count": "10", "data fingerprint": "aa"}
    every = [{"row count": "10", "data fingerprint": "bb"}, same, same, same]
    message, differing = distributed.disagreement(every)
    assert message.startswith("the ranks disagree at the start of fit: rank 0 has data fingerprint bb (rank 1: aa).")
    assert differing == {"data fingerprint"}
    assert distributed.disagreement([same, same]) is None
    many = [same, *({"row count": str(r), "data fingerprint": "aa"} for r in range(1, 6))]
    message, _ = distributed.disagreement(many)
    assert "rank 3 has row count 3 (rank 0: 10). and 2 more ranks differ." in message


def test_the_description_names_missing_classes_and_fingerprints_sampled_rows_of_large_data(monkeypatch):
    """A softmax rank without class 2 says so; data above FINGERPRINT_BYTES is hashed by evenly spaced rows (the
    first and last included): a change in a sampled row shows, one in a row between them does not."""
    from gpunn import feed

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(100, 3)), np.arange(100) % 3
    m = gpunn.MLP([3, 4, 3], output="softmax", device="cpu", dtype="float64")

    def describe(X, y):
        x, t = feed.check_x(m.spec, X, "X"), feed.targets(m.spec, y, len(X), "y", fitting=True)
        return distributed.describe(m.spec, x, t, None, {"batch_size": None})

    assert describe(X, y)["classes"] == "all 3"
    assert describe(X, np.where(y == 2, 0, y))["classes"] == "2 of 3: [0, 1]"
    monkeypatch.setattr(distributed, "FINGERPRINT_BYTES", 10 * 6 * 8)  # 10 rows of 3 features + 3 one-hot columns
    base = describe(X, y)["data fingerprint"]
    for row, seen in ((0, True), (99, True), (11, True), (5, False)):
        changed = X.copy()
        changed[row, 1] += 1.0
        assert (describe(changed, y)["data fingerprint"] != base) == seen, row


# ------------------------------------------------------------------------------------------ ensembles over MPI
ENSEMBLE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import gpunn
    from gpunn.callbacks import EarlyStopping
    from gpunn.distributed import Communicator

    def fit_ensembles(comm, cases, prefix):
        rng = np.random.default_rng(0)
        X = rng.normal(size=(103, 4))
        y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
        for i, cfg in enumerate(cases):  # one job, its ranks started (and JAX imported) once
            rows = None if cfg["rows"] is None else [np.asarray(r) for r in cfg["rows"]]
            weight = None if cfg["weight"] is None else np.asarray(cfg["weight"])
            callbacks = [EarlyStopping("val_loss", patience=cfg["patience"])] if cfg["patience"] is not None else None
            where = {"device": "cpu"}
            if cfg["xp"] == "jax":  # the compiled stacked step, its two halves around the allreduce
                import jax
                jax.config.update("jax_enable_x64", True)
                where = {"xp": jax.numpy, "device": "cpu", "compile": True}
            ens = gpunn.Ensemble([4, 6, 5, 1], members=3, seed=[3, 9, 4], dropout=cfg["dropout"], dtype="float64",
                                 **where)
            ens.fit(X, y, epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"], shuffle=cfg["shuffle"],
                    optimizer=cfg["optimizer"], validation_data=(X[:20], y[:20]), rows=rows, sample_weight=weight,
                    callbacks=callbacks, verbose=0, comm=comm)
            if comm.rank == 0:
                np.save(f"{prefix}.{i}.npy", np.asarray(ens.params))
                with open(f"{prefix}.{i}.json", "w") as f:
                    json.dump([h.to_dict() for h in ens.histories], f)
    """
)

_ROWS = [
    np.random.default_rng(5).integers(0, 103, size=71).tolist(),  # a bootstrap sample: rows repeat
    list(range(20, 103)),
    list(range(0, 103, 2)),
]
_MEMBER_WEIGHTS = np.random.default_rng(1).uniform(0.2, 2.0, size=(3, 103)).round(3).tolist()


ENSEMBLE_CASES = {
    "dropout-shuffled-adam": dict(dropout=0.3, batch_size=16, shuffle=True, optimizer="adam", lr=0.02),
    "dropout-per-member-full-batch": dict(dropout=[0.0, 0.25, 0.4], batch_size=None, shuffle=True, optimizer="sgd",
                                          lr=[0.3, 0.2, 0.3]),
    "dropout-per-member-in-order-one-row-batch": dict(dropout=[0.2, 0.0, 0.5], batch_size=17, shuffle=False,
                                                      optimizer="momentum", lr=0.05),
    "rows-shuffled-momentum": dict(rows=_ROWS, batch_size=16, shuffle=True, optimizer="momentum",
                                   lr=[0.05, 0.1, 0.02]),
    "rows-full-batch": dict(rows=_ROWS, batch_size=None, optimizer="sgd", lr=0.3),
    "rows-member-weights-dropout-adam": dict(rows=_ROWS, weight=_MEMBER_WEIGHTS, batch_size=20,
                                             dropout=[0.3, 0.0, 0.2], optimizer="adam", lr=0.02),
    "rows-member-weights-full-batch": dict(rows=_ROWS, weight=_MEMBER_WEIGHTS, batch_size=None, optimizer="sgd",
                                           lr=0.3),
    "rows-dropout-early-stopping": dict(rows=_ROWS, dropout=0.2, batch_size=12, optimizer="adam", lr=0.08,
                                        patience=1, epochs=8),
    "rows-one-row-batches-rank-1-idle": dict(rows=_ROWS, dropout=[0.0, 0.3, 0.0], batch_size=1, optimizer="sgd",
                                             lr=0.05, epochs=1),
    "jax-compiled-dropout-per-member-adam": dict(dropout=[0.0, 0.25, 0.4], batch_size=16, optimizer="adam",
                                                 lr=[0.02, 0.01, 0.03], xp="jax"),
    "jax-compiled-rows-member-weights-full-batch": dict(rows=_ROWS, weight=_MEMBER_WEIGHTS, batch_size=None,
                                                        optimizer="momentum", lr=0.1, xp="jax"),
}  # fmt: skip


JOB = textwrap.dedent(  # after TRAIN's and ENSEMBLE's functions
    """
    comm = Communicator()
    mlps, ensembles = json.loads(sys.argv[1])
    fit_mlps(comm, mlps, sys.argv[2])
    fit_ensembles(comm, ensembles, sys.argv[3])
    """
)


@pytest.mark.parametrize("xp", ["numpy", "jax"], ids=["numpy", "jax-compiled"])
def test_two_ranks_equal_one_process_mlps_and_ensembles(tmp_path, xp):
    """Lone MLPs and ensembles trained by two ranks equal one process's (_two_ranks_equal_one_process above and
    _two_ranks_train_each_ensemble_member_as_a_lone_mlp_in_one_process below). Each namespace's cases run in one
    job (on JAX each rank pays JAX's import once, not once a case or once a model kind)."""
    if xp == "jax":
        pytest.importorskip("jax")
    mlps, ensembles = _mlp_cases(xp), _ensemble_cases(xp)
    script = tmp_path / "job.py"
    script.write_text(TRAIN + ENSEMBLE + JOB)
    cases = json.dumps([list(mlps.values()), list(ensembles.values())])
    r = _run(2, str(script), cases, str(tmp_path / "w"), str(tmp_path / "p"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    _two_ranks_equal_one_process(mlps, tmp_path)
    _two_ranks_train_each_ensemble_member_as_a_lone_mlp_in_one_process(ensembles, tmp_path)


def _ensemble_cases(xp: str) -> dict:
    defaults = {"rows": None, "weight": None, "dropout": 0.0, "shuffle": True, "patience": None, "epochs": 3,
                "xp": "numpy"}  # fmt: skip
    cases = {name: {**defaults, **case} for name, case in ENSEMBLE_CASES.items()}
    return {name: cfg for name, cfg in cases.items() if cfg["xp"] == xp}


def _two_ranks_train_each_ensemble_member_as_a_lone_mlp_in_one_process(cases: dict, tmp_path) -> None:
    """Ensemble.fit(comm=) with dropout (each rank draws its shard's rows of every member's global mask table)
    and with rows= (each rank takes the same columns of every member's padded batch, the update using each
    member's global rows and weight totals): each member of the 2-rank ensemble equals a lone MLP fitted alone
    in one process with that member's seed, dropout, rows, weights and rate."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(103, 4))
    y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
    for i, (name, cfg) in enumerate(cases.items()):
        got = np.load(tmp_path / f"p.{i}.npy")
        histories = json.loads((tmp_path / f"p.{i}.json").read_text())
        stopped = False
        for k, seed in enumerate([3, 9, 4]):
            pick = np.arange(103) if cfg["rows"] is None else np.asarray(cfg["rows"][k])
            dropout = cfg["dropout"][k] if isinstance(cfg["dropout"], list) else cfg["dropout"]
            lr = cfg["lr"][k] if isinstance(cfg["lr"], list) else cfg["lr"]
            weight = None if cfg["weight"] is None else np.asarray(cfg["weight"][k])[pick]
            callbacks = None
            if cfg["patience"] is not None:
                callbacks = [gpunn.callbacks.EarlyStopping("val_loss", patience=cfg["patience"])]
            lone = gpunn.MLP([4, 6, 5, 1], seed=seed, dropout=dropout, dtype="float64", device="cpu")
            lone.fit(X[pick], y[pick], epochs=cfg["epochs"], lr=lr, batch_size=cfg["batch_size"],
                     shuffle=cfg["shuffle"], optimizer=cfg["optimizer"], validation_data=(X[:20], y[:20]),
                     sample_weight=weight, callbacks=callbacks, verbose=0)  # fmt: skip
            stopped |= lone.epoch < cfg["epochs"]
            np.testing.assert_allclose(got[k], lone.params, rtol=0, atol=1e-10, err_msg=f"{name}: member {k}")
            assert len(histories[k]["loss"]) == lone.epoch, name
            for key in ("loss", "accuracy", "val_loss", "val_accuracy", "weighted_loss", "lr"):
                np.testing.assert_allclose(histories[k][key], getattr(lone.history, key), rtol=1e-10, atol=1e-12,
                                           err_msg=f"{name}: member {k}: {key}")  # fmt: skip
        if cfg["patience"] is not None:
            assert stopped, f"{name}: no member stopped early: the case does not test early stopping"


ENSEMBLE_AGREE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import gpunn
    from gpunn.errors import GpunnError
    from gpunn.distributed import Communicator

    comm = Communicator()
    got = {}
    for case in sys.argv[1].split(","):  # one job for every case: a refused fit leaves the ranks in step
        rng = np.random.default_rng(0)
        X = rng.normal(size=(60, 3))
        y = (X[:, 0] > 0).astype(int)
        rows = [np.arange(40), np.arange(10, 60)]
        dropout = [0.0, 0.2]
        if comm.rank == 1:
            if case == "rows":  # the same lengths, one index changed
                rows[1] = rows[1].copy()
                rows[1][7] = 3
            elif case == "dropout":
                dropout = [0.0, 0.3]
        ens = gpunn.Ensemble([3, 4, 1], members=2, seed=1, dropout=dropout, dtype="float64", device="cpu")
        got[case] = {"type": None}
        try:
            ens.fit(X, y, epochs=1, batch_size=16, rows=rows, verbose=0, comm=comm)
        except GpunnError as e:
            got[case] = {"type": type(e).__name__, "message": str(e)}
    with open(f"{sys.argv[2]}.{comm.rank}.json", "w") as f:
        json.dump(got, f)
    """
)


def test_ensemble_ranks_with_other_member_rows_or_dropout_raise_one_error_on_every_rank(tmp_path):
    """Members' rows= and dropout rates are part of what the ranks agree on: different ones would train
    silently into different weights. The cases run one after another in one job."""
    script = tmp_path / "agree.py"
    script.write_text(ENSEMBLE_AGREE)
    cases = {"same": None, "rows": "rank 1 has rows ", "dropout": "rank 1 has dropout [0.0, 0.3]"}
    r = _run(2, str(script), ",".join(cases), "out", cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    ranks = [json.loads((tmp_path / f"out.{rank}.json").read_text()) for rank in (0, 1)]
    for case, expected in cases.items():
        got = [every[case] for every in ranks]
        if expected is None:
            assert got == [{"type": None}] * 2, case
            continue
        assert {d["type"] for d in got} == {"ConfigError"}, (case, got)
        assert got[0]["message"] == got[1]["message"], case
        assert expected in got[0]["message"], got[0]["message"]


# ------------------------------------------------------------------------------ an ensemble's members split over ranks
MEMBERS = textwrap.dedent(
    """
    import json, sys, warnings
    import numpy as np
    import gpunn
    from gpunn.callbacks import EarlyStopping
    from gpunn.distributed import Communicator

    comm = Communicator()
    cfg = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(103, 4))
    y = X[:, 0] * X[:, 1] + X[:, 2] if cfg["output"] == "identity" else (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
    rows = None if cfg["rows"] is None else [np.asarray(r) for r in cfg["rows"]]
    weight = None if cfg["weight"] is None else np.asarray(cfg["weight"])
    callbacks = [EarlyStopping("val_loss", patience=cfg["patience"])] if cfg["patience"] is not None else None
    ens = gpunn.Ensemble([4, 6, 5, 1], members=5, seed=[3, 9, 4, 7, 1], dropout=cfg["dropout"], dtype="float64",
                         output=cfg["output"], device="cpu")
    saved = []

    def on_epoch(e, records):  # a checkpoint on rank 0 alone, as gpunn train writes it
        e.save(sys.argv[2] + ".ckpt")
        saved.append([m.epoch for m in e.members])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ens.fit(X, y, epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"], optimizer=cfg["optimizer"],
                validation_data=(X[:20], y[:20]), rows=rows, sample_weight=weight, callbacks=callbacks, verbose=0,
                comm=comm, parallel="members", on_epoch=on_epoch if comm.rank == 0 else None)
    np.save(f"{sys.argv[2]}.{comm.rank}.npy", np.asarray(ens.params))
    with open(f"{sys.argv[2]}.{comm.rank}.json", "w") as f:
        json.dump({"histories": [h.to_dict() for h in ens.histories], "diverged": ens.diverged, "saved": saved,
                   "warnings": [str(w.message) for w in caught if "ensemble member" in str(w.message)]}, f)
    """
)
_FIVE_ROWS = [*_ROWS, list(range(50)), list(range(10, 90))]


@pytest.mark.parametrize(
    "case",
    [
        dict(dropout=[0.0, 0.25, 0.0, 0.3, 0.1], batch_size=16, optimizer="adam", lr=[0.02, 0.01, 0.03, 0.02, 0.05],
             patience=1, epochs=6),
        dict(rows=_FIVE_ROWS, weight=np.random.default_rng(1).uniform(0.2, 2.0, size=(5, 103)).round(3).tolist(),
             batch_size=20, optimizer="momentum", lr=0.05, epochs=4),
        dict(output="identity", batch_size=None, optimizer="sgd", lr=[0.01, 0.02, 0.01, 3.0, 0.02], epochs=30),
    ],
    ids=["dropout-early-stopping-adam", "rows-member-weights-momentum", "a-member-of-rank-1-diverges"],
)  # fmt: skip
def test_members_split_over_two_ranks_equal_one_process_and_lone_mlps(tmp_path, case):
    """parallel="members": rank 0 trains members 0-2, rank 1 members 3-4 (an uneven split), with no
    communication between the steps; then every rank holds the whole ensemble, each member equal to the member
    of a one-process fit (to 1e-12, histories too) and to a lone MLP with its settings. Rank 0's on_epoch
    checkpoint holds every member after every epoch, those rank 1 trains included; a member that diverges on
    rank 1 is marked and named as one process names it."""
    cfg = {"rows": None, "weight": None, "dropout": 0.0, "patience": None, "output": "sigmoid", **case}
    script = tmp_path / "members.py"
    script.write_text(MEMBERS)
    r = _run(2, str(script), json.dumps(cfg), str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr

    rng = np.random.default_rng(0)
    X = rng.normal(size=(103, 4))
    y = X[:, 0] * X[:, 1] + X[:, 2] if cfg["output"] == "identity" else (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
    seeds = [3, 9, 4, 7, 1]

    def each(value, k):
        return value[k] if isinstance(value, list) else value

    def stopping():
        return [gpunn.callbacks.EarlyStopping("val_loss", patience=cfg["patience"])] if cfg["patience"] else None

    fit = dict(epochs=cfg["epochs"], batch_size=cfg["batch_size"], optimizer=cfg["optimizer"],
               validation_data=(X[:20], y[:20]), verbose=0)  # fmt: skip
    one = gpunn.Ensemble([4, 6, 5, 1], members=5, seed=seeds, dropout=cfg["dropout"], dtype="float64",
                         output=cfg["output"], device="cpu")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one.fit(X, y, lr=cfg["lr"], rows=None if cfg["rows"] is None else [np.asarray(r) for r in cfg["rows"]],
                sample_weight=None if cfg["weight"] is None else np.asarray(cfg["weight"]), callbacks=stopping(),
                **fit)  # fmt: skip
    for rank in (0, 1):
        got = np.load(tmp_path / f"out.{rank}.npy")
        out = json.loads((tmp_path / f"out.{rank}.json").read_text())
        np.testing.assert_allclose(got, np.asarray(one.params), rtol=0, atol=1e-12)
        assert out["diverged"] == one.diverged
        for k in range(5):
            assert out["histories"][k].keys() == one.histories[k].to_dict().keys()
            for key, values in one.histories[k].to_dict().items():
                np.testing.assert_allclose(out["histories"][k][key], values, rtol=1e-12, atol=0, err_msg=f"{k} {key}")
    for k in range(5):  # the oracle that is not an ensemble: each member alone
        pick = np.arange(103) if cfg["rows"] is None else np.asarray(cfg["rows"][k])
        lone = gpunn.MLP([4, 6, 5, 1], seed=seeds[k], dropout=each(cfg["dropout"], k), dtype="float64",
                         output=cfg["output"], device="cpu")  # fmt: skip
        weight = None if cfg["weight"] is None else np.asarray(cfg["weight"][k])[pick]
        try:
            lone.fit(X[pick], y[pick], lr=each(cfg["lr"], k), sample_weight=weight, callbacks=stopping(), **fit)
        except gpunn.NonFiniteError:
            assert k == 3 and one.diverged[3] is not None
        np.testing.assert_allclose(np.load(tmp_path / "out.0.npy")[k], lone.params, rtol=0, atol=1e-10)
    saved = json.loads((tmp_path / "out.0.json").read_text())["saved"]
    assert (one.diverged[3] is not None) == (cfg["output"] == "identity"), one.diverged
    if one.diverged[3] is not None:
        assert one.diverged == [None, None, None, one.diverged[3], None] and one.diverged[3].startswith("member 3: ")
        assert json.loads((tmp_path / "out.1.json").read_text())["warnings"] == [
            f"gpunn: ensemble {one.diverged[3].rstrip('.')}. It is left out of the ensemble's predictions "
            "(Ensemble.diverged) while the other members train on."
        ]  # rank 1 trained it and warns of it as one process does, by its number in the ensemble
    else:
        assert len(saved) == cfg["epochs"] and saved[-1] == [m.epoch for m in one.members]
        if cfg["patience"]:
            assert min(saved[-1]) < cfg["epochs"], "no member stopped early: the case does not test it"
        back = gpunn.ensemble.load(tmp_path / "out.ckpt", device="cpu")
        np.testing.assert_array_equal(np.asarray(back.params), np.load(tmp_path / "out.0.npy"))
        assert [h.to_dict() for h in back.histories] == [h.to_dict() for h in one.histories]


MEMBERS_BAD = textwrap.dedent(
    """
    import json, os, signal, sys
    import numpy as np
    import gpunn
    from gpunn.errors import GpunnError
    from gpunn.distributed import Communicator

    comm = Communicator()
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    cases = {  # (members, parallel) of rank 0, then of rank 1
        "bogus": [(3, "bogus"), (3, "bogus")], "mixed": [(3, "members"), (3, "rows")],
        "members-differ": [(3, "members"), (4, "members")], "more-ranks": [(1, "members"), (1, "members")],
    }
    got = {}
    for case in sys.argv[2:]:
        k, parallel = cases[case][comm.rank]
        ens = gpunn.Ensemble([3, 4, 1], members=k, seed=1, dtype="float64", device="cpu")
        before = ens.params
        try:
            ens.fit(X, y, epochs=1, verbose=0, comm=comm, parallel=parallel)
            got[case] = None
        except GpunnError as e:
            got[case] = [type(e).__name__, str(e), bool(np.all(np.asarray(ens.params) == np.asarray(before)))]
    with open(f"{sys.argv[1]}.{comm.rank}.json", "w") as f:
        json.dump(got, f)
    """
)


def test_bad_parallel_settings_raise_one_error_on_every_rank_and_change_nothing(tmp_path):
    """parallel= other than "rows" or "members", ranks that disagree on it or on the members, more ranks than
    members: the same one-line ConfigError on every rank, before anything changes, and the job goes on."""
    script = tmp_path / "bad.py"
    script.write_text(MEMBERS_BAD)
    cases = ["bogus", "mixed", "members-differ", "more-ranks"]
    r = _run(2, str(script), "out", *cases, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    got = [json.loads((tmp_path / f"out.{rank}.json").read_text()) for rank in (0, 1)]
    assert got[0] == got[1]
    expected = {
        "bogus": "parallel='bogus': give 'rows' (every rank trains every member on its shard of each batch) or "
                 "'members' (every rank trains its own members on every row) (on every rank of 2)",
        "mixed": "the ranks disagree at the start of fit: rank 1 has parallel 'rows' (rank 0: 'members'). Every rank "
                 "must train the same members the same way",
        "members-differ": "the ranks disagree at the start of fit: rank 1 has members 4 (rank 0: 3). Every rank "
                          "must train the same members the same way",
        "more-ranks": "parallel='members' gives every rank at least one member: 2 ranks for 1 member; start at most 1 "
                      "rank, or split rows with parallel='rows'",
    }  # fmt: skip
    for case in cases:
        assert got[0][case] == ["ConfigError", expected[case], True], case


def test_an_uncaught_bad_parallel_ends_every_rank_with_one_traceback(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text(MEMBERS_BAD.replace("except GpunnError as e:", "except ZeroDivisionError as e:"))
    code, err, elapsed = _launch(["-n", "2", sys.executable, str(script), "out", "more-ranks"], tmp_path, 60)
    assert code == 1 and err.count("Traceback") == 1, err
    assert "gpunn.errors.ConfigError: parallel='members' gives every rank at least one member" in err
    assert "MPI_Abort" not in err


MEMBERS_STOP = textwrap.dedent(
    """
    import os, signal
    import numpy as np
    import gpunn
    from mpi4py import MPI  # initialised first: the timeout then times the gather, not a slow start
    from gpunn.distributed import Communicator

    comm = Communicator()
    X = np.random.default_rng(0).normal(size=(64, 3))
    y = (X[:, 0] > 0).astype(int)

    def stop(model, record):
        if comm.rank == 1:
            os.kill(os.getpid(), signal.SIGSTOP)

    gpunn.Ensemble([3, 4, 1], members=4, device="cpu").fit(X, y, epochs=3, verbose=0, comm=comm, callbacks=[stop],
                                                           parallel="members")
    """
)


def test_a_stopped_rank_ends_a_members_split_job_within_the_timeout(tmp_path):
    """Rank 1 stops (SIGSTOP) after its first epoch; rank 0 trains its members to the end and waits for rank 1
    in the gather: after GPUNN_MPI_TIMEOUT it names that gather and ends the job, the stopped rank included."""
    script = tmp_path / "stop.py"
    script.write_text(MEMBERS_STOP)
    code, err, elapsed = _launch(["-n", "2", sys.executable, str(script)], tmp_path, 60, GPUNN_MPI_TIMEOUT="3")
    assert code != 0
    assert "gpunn: error: rank 0 of 2 waited more than 3 s for the other ranks in the gather of the members at " in err
    assert elapsed < 30, elapsed


def test_cli_members_split_checkpoint_resumes_on_another_number_of_ranks(tmp_path):
    """gpunn train --members 5 --distributed --parallel members: rank 0's --checkpoint holds every member after
    every epoch (early stopping's state too), and --resume continues it on 3 ranks instead of 2; the result is
    the uninterrupted one-process run's, to 1e-12 in float64."""
    common = ["-m", "gpunn", "train", "--members", "5", "--batch-size", "50", "--optimizer", "adam", "--lr", "0.01",
              "--device", "cpu", "--dtype", "float64", "--early-stopping", "2", "--seed", "2", "-q"]  # fmt: skip
    split = ["--distributed", "--parallel", "members"]
    first = _run(2, *common, "--epochs", "6", *split, "--checkpoint", "c.safetensors", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = _run(3, *common, "--epochs", "12", *split, "--resume", "c.safetensors", "--save", "d.safetensors",
                   cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    one = subprocess.run([sys.executable, *common, "--epochs", "12", "--save", "s.safetensors"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert resumed.stdout == one.stdout
    a, b = gpunn.load(tmp_path / "d.safetensors", device="cpu"), gpunn.load(tmp_path / "s.safetensors", device="cpu")
    assert min(m.epoch for m in b.members) < 12, "no member stopped early: the case does not test it"
    for ma, mb in zip(a.members, b.members, strict=True):
        assert ma.epoch == mb.epoch and ma.history.to_dict().keys() == mb.history.to_dict().keys()
        for key, values in mb.history.to_dict().items():
            np.testing.assert_allclose(ma.history.to_dict()[key], values, rtol=1e-12, atol=0)
        np.testing.assert_allclose(ma.params, mb.params, rtol=0, atol=1e-12)


SEARCH = textwrap.dedent(
    """
    import json, sys, warnings
    import numpy as np
    from gpunn.distributed import Communicator
    from gpunn.errors import GpunnError
    from gpunn.sklearn import MLPClassifier, MLPSearchCV

    comm = Communicator()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=10, random_state=0, device="cpu", solver="sgd")
    grid = {"hidden_layer_sizes": [(4,), (5,), (6,)], "alpha": [1e-4, 1e-1]}
    out = {}
    try:  # rank 1 with one label changed: every rank refuses, naming the data
        MLPSearchCV(est, grid, cv=2, comm=comm).fit(X, np.where(np.arange(90) == 7, 1 - y, y) if comm.rank else y)
    except GpunnError as e:
        out["error"] = str(e)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search = MLPSearchCV(est, grid, cv=2, comm=comm).fit(X, y)
    out["results"] = {k: np.asarray(v).tolist() for k, v in search.cv_results_.items()
                      if k.startswith(("split", "mean_test", "std_test", "rank_test"))}
    out.update(best=search.best_index_, ensembles=search.n_ensembles_, predict=search.predict(X).tolist())
    with open(f"{sys.argv[1]}.{comm.rank}.json", "w") as f:
        json.dump(out, f)
    """
)


def test_a_search_split_over_two_ranks_equals_gridsearchcv(tmp_path):
    """MLPSearchCV(comm=): 12 fits in three shape groups of 4, 6 a rank (rank 0: the first group and half of the
    second, rank 1 the rest: 4 ensembles); every rank ends with GridSearchCV's cv_results_, best candidate and
    refitted estimator. Ranks whose data differ get one error on every rank first."""
    pytest.importorskip("sklearn")
    from sklearn.model_selection import GridSearchCV

    from gpunn.sklearn import MLPClassifier

    script = tmp_path / "search.py"
    script.write_text(SEARCH)
    r = _run(2, str(script), "out", cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr
    got = [json.loads((tmp_path / f"out.{rank}.json").read_text()) for rank in (0, 1)]
    assert got[0] == got[1]
    assert got[0]["error"].startswith("the ranks disagree at the start of fit: rank 1 has data fingerprint ")
    assert got[0]["ensembles"] == 4
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=10, random_state=0, device="cpu", solver="sgd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = GridSearchCV(est, {"hidden_layer_sizes": [(4,), (5,), (6,)], "alpha": [1e-4, 1e-1]}, cv=2).fit(X, y)
    assert got[0]["results"].keys() == {k for k in ref.cv_results_ if k.startswith(("split", "mean_test", "std_test",
                                                                                     "rank_test"))}  # fmt: skip
    for key, values in got[0]["results"].items():
        np.testing.assert_allclose(values, ref.cv_results_[key], rtol=0, atol=1e-9, err_msg=key)
    assert got[0]["best"] == ref.best_index_ and got[0]["predict"] == ref.predict(X).tolist()
