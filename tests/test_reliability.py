"""Interrupts, kills, divergence and memory errors: nothing is lost and a resumed run equals an unbroken one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import gpunn


def _problem(n=90):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3))
    return X, (X[:, 0] * X[:, 1] > 0).astype(int)


def _weights(m):
    return [np.asarray(gpunn._backend.to_numpy(a)) for pair in m.weights for a in pair]


def test_interrupt_inside_fit_leaves_a_resumable_model():
    X, y = _problem()
    kw = dict(lr=0.01, batch_size=16, optimizer="adam", verbose=0)

    def stop_at_epoch_4(model, record):
        if model.epoch == 4:
            raise KeyboardInterrupt

    m = gpunn.MLP([3, 8, 1], device="cpu", seed=4)
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y, epochs=10, callbacks=[stop_at_epoch_4], **kw)
    assert m.epoch == 4 == m.history.epochs
    m.fit(X, y, epochs=6, **kw)
    ref = gpunn.MLP([3, 8, 1], device="cpu", seed=4)
    ref.fit(X, y, epochs=10, **kw)
    for a, b in zip(_weights(m), _weights(ref)):
        np.testing.assert_array_equal(a, b)
    assert m.history == ref.history


def test_memory_errors_become_a_clear_gpunn_error():
    X, y = _problem()

    def exhaust(model, record):
        raise MemoryError("Unable to allocate 1.00 TiB")

    m = gpunn.MLP([3, 8, 1], device="cpu")
    with pytest.raises(gpunn.OutOfMemoryError, match=r"out of memory on cpu with batch_size=32: try a smaller"):
        m.fit(X, y, epochs=2, batch_size=32, callbacks=[exhaust], verbose=0)

    class OutOfMemoryError(Exception):  # how CuPy and PyTorch name theirs
        pass

    def gpu_exhaust(model, record):
        raise OutOfMemoryError("Out of memory allocating 4,294,967,296 bytes")

    with pytest.raises(gpunn.OutOfMemoryError, match=r"full batch.*smaller batch_size.*4,294,967,296"):
        m.fit(X, y, epochs=2, callbacks=[gpu_exhaust], verbose=0)


def _gpunn(*args, cwd, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "gpunn", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        **kw,
    )  # fmt: skip


def test_sigint_saves_a_checkpoint_and_resume_equals_an_unbroken_run(tmp_path):
    common = ["train", "--epochs", "100", "--batch-size", "16", "--optimizer", "adam", "--lr", "0.01",
              "--device", "cpu", "--seed", "1", "-q"]  # fmt: skip
    ref = _gpunn(*common, "--save", "ref.safetensors", cwd=tmp_path)
    assert ref.wait(timeout=300) == 0, ref.stderr.read()

    proc = _gpunn(*common, "--checkpoint", "c.safetensors", cwd=tmp_path)
    deadline = time.time() + 120
    while not (tmp_path / "c.safetensors").exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, proc.stderr.read()
    assert "interrupted after epoch" in proc.stderr.read()
    stopped = gpunn.load(tmp_path / "c.safetensors", device="cpu")
    assert 0 < stopped.epoch < 100

    resumed = _gpunn("train", "--resume", "c.safetensors", "--device", "cpu", "-q", "--save", "r.safetensors",
                     cwd=tmp_path)  # fmt: skip
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    a = gpunn.load(tmp_path / "ref.safetensors", device="cpu")
    b = gpunn.load(tmp_path / "r.safetensors", device="cpu")
    assert a.epoch == b.epoch == 100
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(wa, wb)
    assert a.history == b.history


# One import for all the kills: each line on stdin forks a saver from this process, which the test kills with
# SIGKILL mid-loop; it is reaped before the next line.
SAVER = textwrap.dedent(
    """
    import os, sys, numpy as np, gpunn
    for _ in sys.stdin:
        pid = os.fork()
        if pid == 0:
            m = gpunn.load(sys.argv[1], device="cpu")
            X = np.random.default_rng(0).normal(size=(64, 3))
            y = (X[:, 0] > 0).astype(int)
            print("ready", os.getpid(), flush=True)
            while True:
                m.fit(X, y, epochs=1, verbose=0)
                m.save(sys.argv[1])
        os.waitpid(pid, 0)
        print("reaped", flush=True)
    """
)


def test_kill_9_while_saving_never_breaks_the_previous_checkpoint(tmp_path):
    X, y = _problem()
    m = gpunn.MLP([3, 64, 64, 1], device="cpu")
    m.fit(X, y, epochs=1, verbose=0)
    path = tmp_path / "m.safetensors"
    m.save(path)
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    rnd = random.Random(0)
    epochs_seen = set()
    forker = subprocess.Popen([sys.executable, str(script), str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    for _ in range(12):
        forker.stdin.write("save\n")
        forker.stdin.flush()
        ready, pid = forker.stdout.readline().split()
        assert ready == "ready"
        time.sleep(rnd.uniform(0.0, 0.15))
        os.kill(int(pid), signal.SIGKILL)
        assert forker.stdout.readline().strip() == "reaped"
        epochs_seen.add(gpunn.load(path, device="cpu").epoch)  # always loads
    forker.stdin.close()
    assert forker.wait(timeout=60) == 0
    assert len(epochs_seen) > 3  # the kills landed at different points of the saving loop
    m.save(path)  # the next save clears what killed saves left behind
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "saver.py"]


def test_divergence_in_the_cli_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    rows = "\n".join(f"{i * 1e3},{(i % 2) * 1e4}" for i in range(40))
    (tmp_path / "d.csv").write_text("x,y\n" + rows + "\n")
    args = ["--preset", "tutorial", "--output", "identity", "--lr", "1", "--dtype", "float64", "--epochs", "50",
            "--device", "cpu"]  # fmt: skip
    proc = _gpunn("train", "--data", "d.csv", "--target", "y", *args, "--checkpoint", "c.safetensors", cwd=tmp_path)
    assert proc.wait(timeout=120) == 2  # an error, as every other
    err = proc.stderr.read().strip()
    assert err.startswith("gpunn: training diverged in epoch") and "Traceback" not in err
    kept = gpunn.load(tmp_path / "c.safetensors", device="cpu")
    assert len(err.splitlines()) == 1 and err.endswith(f"c.safetensors holds the last good epoch ({kept.epoch})")
    # the oracle: the API on the same rows goes back to the same epoch, and the checkpoint holds its weights
    X, y, _, _ = gpunn.data.read(tmp_path / "d.csv", target="y", dtype="float64")
    X_train, _, y_train, _ = gpunn.data.train_test_split(X, y, test_size=0.2, seed=0)
    ref = gpunn.MLP([1, 10, 10, 10, 1], output="identity", dtype="float64", device="cpu", standardize=True)
    with pytest.raises(gpunn.DivergenceError):
        ref.fit(X_train, y_train, epochs=50, lr=1.0, verbose=0)
    assert kept.epoch == ref.epoch >= 1 and kept.history == ref.history
    np.testing.assert_array_equal(_weights(kept)[0], _weights(ref)[0])


def _interrupt_at_line(filename, k):
    """A trace function that raises KeyboardInterrupt at the k-th line executed in ``filename``."""
    count = {"n": 0}

    def tracer(frame, event, arg):
        if frame.f_code.co_filename == filename and event == "line":
            count["n"] += 1
            if count["n"] == k:
                raise KeyboardInterrupt
        return tracer

    return tracer


def test_an_interrupt_at_any_point_of_an_epoch_leaves_a_consistent_model():
    """KeyboardInterrupt injected at every line the epoch runs: the model always equals some completed epoch."""
    import sys as _sys

    from gpunn import model as model_module

    X, y = _problem()
    kw = dict(lr=0.01, batch_size=30, optimizer="adam", verbose=0)
    ref = gpunn.MLP([3, 8, 1], device="cpu", seed=4)
    ref.fit(X, y, epochs=3, **kw)
    target = model_module.__file__
    lines = {"n": 0}

    def counter(frame, event, arg):
        if frame.f_code.co_filename == target and event == "line":
            lines["n"] += 1
        return counter

    probe = gpunn.MLP([3, 8, 1], device="cpu", seed=4)
    probe.fit(X, y, epochs=1, **kw)
    _sys.settrace(counter)
    probe.fit(X, y, epochs=1, **kw)
    _sys.settrace(None)
    hits = 0
    for k in range(1, lines["n"] + 1):
        m = gpunn.MLP([3, 8, 1], device="cpu", seed=4)
        m.fit(X, y, epochs=1, **kw)
        _sys.settrace(_interrupt_at_line(target, k))
        try:
            m.fit(X, y, epochs=1, **kw)
        except KeyboardInterrupt:
            hits += 1
        finally:
            _sys.settrace(None)
        m.fit(X, y, epochs=3 - m.epoch, **kw)  # finish the run after the interruption
        for a, b in zip(_weights(m), _weights(ref)):
            np.testing.assert_array_equal(a, b)
        assert m.history == ref.history
    assert hits == lines["n"]  # every line of fit and the epoch was interrupted once


def test_resume_with_early_stopping_stops_and_restores_as_an_unbroken_run(tmp_path, capsys):
    """Issue 22.1: EarlyStopping's best value, epochs waited and best weights are saved with the model, so a run
    interrupted inside its patience and resumed stops after the same epoch, restores the same one and ends with
    the same tensors, bit for bit. (Before, the resumed run started counting afresh and stopped later.)"""
    import safetensors.numpy

    from gpunn import cli

    common = ["train", "--dataset", "moons", "--samples", "400", "--layers", "64,64", "--lr", "0.05",
              "--batch-size", "16", "--optimizer", "adam", "--early-stopping", "3", "--schedule", "plateau",
              "--device", "cpu", "--seed", "0"]  # fmt: skip
    ref = tmp_path / "ref.safetensors"
    assert cli.main([*common, "--epochs", "200", "--save", str(ref)]) == 0
    stopped = [line for line in capsys.readouterr().out.splitlines() if line.startswith("stopped early")]
    assert len(stopped) == 1 and stopped[0].startswith("stopped early after epoch 10: val_loss did not improve for 3 "
                                                       "epochs; restored epoch 7")  # fmt: skip
    expected = safetensors.numpy.load_file(ref)
    a = gpunn.load(ref, device="cpu")
    for interrupted_after in (7, 8, 9):  # at the best epoch, then 1 and 2 epochs into the patience
        checkpoint = tmp_path / f"c{interrupted_after}.safetensors"
        assert cli.main([*common, "--epochs", str(interrupted_after), "--checkpoint", str(checkpoint)]) == 0
        capsys.readouterr()
        resumed = tmp_path / f"r{interrupted_after}.safetensors"
        argv = ["train", "--resume", str(checkpoint), "--epochs", "200", "--device", "cpu", "--save", str(resumed)]
        assert cli.main(argv) == 0
        assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("stopped early")] == stopped
        got = safetensors.numpy.load_file(resumed)
        assert sorted(got) == sorted(expected) and "callbacks.early_stopping.params" in got
        for name, tensor in expected.items():
            assert tensor.dtype == got[name].dtype and tensor.tobytes() == got[name].tobytes(), name
        b = gpunn.load(resumed, device="cpu")
        assert b.epoch == a.epoch == 10 and b.history == a.history
        assert b.metadata["callbacks"]["early_stopping"]["best_epoch"] == 7
        assert b.metadata["callbacks"]["early_stopping"]["stopped_epoch"] == 10
