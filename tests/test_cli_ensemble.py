"""``gpunn train --members K`` and ``gpunn predict`` on an ensemble file (``--std``), end to end through
gpunn.cli.main (tests/gpunn_in_process.py; over MPI ranks in subprocesses; ``gpunn export`` of one:
tests/test_export.py). The oracles: ``gpunn.Ensemble`` fitted here with the command's settings, and the saved
members' forward passes written here in NumPy and averaged."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from gpunn_in_process import run

import gpunn
import gpunn.data
from gpunn.callbacks import EarlyStopping


def numpy_outputs(member, X):
    """A member's outputs (probabilities or values) from its saved weights, in NumPy: the oracle."""
    mean, scale = member.scaling
    a = (np.asarray(X, dtype=np.float64) - mean) / scale
    weights = member.numpy_weights()
    for i, (w, b) in enumerate(weights):
        z = a @ w.T + b  # W is (out, in)
        a = np.maximum(z, 0.0) if i < len(weights) - 1 else z
    if member.output == "sigmoid":
        return 1.0 / (1.0 + np.exp(-a))
    if member.output == "softmax":
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if member.target_scaling is not None:  # the CLI standardizes a regression target: values in its units
        t_mean, t_std = member.target_scaling
        a = a * t_std + t_mean
    return a


def moons_split(seed, samples=None, validation=None):
    X, y = gpunn.data.make_dataset("moons", samples, seed=seed)
    X_train, X_test, y_train, y_test = gpunn.data.train_test_split(X, y, test_size=0.2, seed=seed)
    val = None
    if validation is not None:
        X_train, X_val, y_train, y_val = gpunn.data.train_test_split(X_train, y_train, test_size=validation, seed=seed)
        val = (X_val, y_val)
    return X_train, y_train, X_test, y_test, val


def read_csv(path):
    lines = path.read_text().splitlines()
    return lines[0].split(","), np.array([[float(v) for v in line.split(",")] for line in lines[1:]])


def test_members_equal_an_ensemble_fitted_alone_and_the_scores_are_the_members_averaged(tmp_path):
    r = run(
        "train", "--members", "3", "--epochs", "15", "--batch-size", "64", "--optimizer", "adam", "--lr", "0.01",
        "--dtype", "float64", "--device", "cpu", "--seed", "4", "--samples", "400", "--save", "e.safetensors",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "training 3 networks [2, 10, 10, 10, 1]" in r.stdout
    saved = gpunn.load(tmp_path / "e.safetensors", device="cpu")
    assert isinstance(saved, gpunn.Ensemble) and saved.seeds == [4, 5, 6]

    X_train, y_train, X_test, y_test, _ = moons_split(4, 400)
    oracle = gpunn.Ensemble([2, 10, 10, 10, 1], members=3, seed=4, dtype="float64", device="cpu", standardize=True)
    oracle.fit(X_train, y_train, epochs=15, batch_size=64, optimizer="adam", lr=0.01, verbose=0)
    for mine, theirs in zip(saved.members, oracle.members):
        np.testing.assert_allclose(mine.params, theirs.params, rtol=0, atol=1e-12)
        assert mine.history.loss == pytest.approx(theirs.history.loss, abs=1e-12)

    # the report: members' mean accuracy, then the ensemble's from the mean probabilities
    p = np.stack([numpy_outputs(m, X_test)[:, 0] for m in saved.members])
    each = [np.mean((pk > 0.5) == y_test) for pk in p]
    ensemble = np.mean((p.mean(axis=0) > 0.5) == y_test)
    lines = r.stdout.strip().splitlines()
    assert lines[-3].startswith("members' mean test accuracy")
    assert float(lines[-3].split()[4]) == pytest.approx(np.mean(each), abs=5e-5)
    assert lines[-2] == f"ensemble of 3 test accuracy {ensemble:.4f}"


def test_predict_writes_the_mean_and_with_std_the_members_spread(tmp_path):
    r = run("train", "--members", "4", "--epochs", "20", "--dtype", "float64", "--device", "cpu", "--samples", "200",
            "--save", "e.safetensors", "-q", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    X = np.random.default_rng(0).normal(size=(25, 2))
    (tmp_path / "x.csv").write_text("a,b\n" + "\n".join(f"{float(u)!r},{float(v)!r}" for u, v in X) + "\n")
    r = run("predict", "--model", "e.safetensors", "--data", "x.csv", "--out", "p.csv", "--std", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names, table = read_csv(tmp_path / "p.csv")
    assert names == ["prediction", "probability", "std_probability"]
    members = gpunn.load(tmp_path / "e.safetensors", device="cpu").members
    p = np.stack([numpy_outputs(m, X)[:, 0] for m in members])
    np.testing.assert_allclose(table[:, 1], p.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(table[:, 2], p.std(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(table[:, 0], p.mean(axis=0) > 0.5)
    # without --std: the same mean, no spread
    r = run("predict", "--model", "e.safetensors", "--data", "x.csv", "--out", "q.csv", cwd=tmp_path)
    names, plain = read_csv(tmp_path / "q.csv")
    assert names == ["prediction", "probability"] and np.array_equal(plain, table[:, :2])


def test_softmax_ensemble_predicts_mean_probabilities_per_class_with_their_spread(tmp_path):
    r = run("train", "--dataset", "spirals", "--samples", "300", "--members", "2", "--epochs", "10", "--dtype",
            "float64", "--device", "cpu", "--save", "e.safetensors", "-q", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    X = np.random.default_rng(1).normal(size=(10, 2))
    (tmp_path / "x.csv").write_text("a,b\n" + "\n".join(f"{float(u)!r},{float(v)!r}" for u, v in X) + "\n")
    r = run("predict", "--model", "e.safetensors", "--data", "x.csv", "--out", "p.csv", "--std", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names, table = read_csv(tmp_path / "p.csv")
    assert names == ["prediction", "p_0", "p_1", "p_2", "std_p_0", "std_p_1", "std_p_2"]
    p = np.stack([numpy_outputs(m, X) for m in gpunn.load(tmp_path / "e.safetensors", device="cpu").members])
    np.testing.assert_allclose(table[:, 1:4], p.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(table[:, 4:], p.std(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(table[:, 0], p.mean(axis=0).argmax(axis=1))


def test_regression_ensemble_reports_r2_mse_mae_and_predicts_mean_and_std(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=200)
    (tmp_path / "d.csv").write_text(
        "f1,f2,f3,y\n" + "\n".join(",".join(repr(float(v)) for v in [*x, t]) for x, t in zip(X, y))
    )
    r = run("train", "--data", "d.csv", "--target", "y", "--members", "3", "--epochs", "30", "--layers", "8",
            "--lr", "0.05", "--dtype", "float64", "--device", "cpu", "--save", "e.safetensors",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    ens = gpunn.load(tmp_path / "e.safetensors", device="cpu")
    assert all(m.target_scaling is not None for m in ens.members)
    _, X_test, _, y_test = gpunn.data.train_test_split(X, y, test_size=0.2, seed=0)
    values = np.stack([numpy_outputs(m, X_test)[:, 0] for m in ens.members])

    def scores(v):
        mse = np.mean((y_test - v) ** 2)
        return [1 - mse * len(y_test) / np.sum((y_test - y_test.mean()) ** 2), mse, np.mean(np.abs(y_test - v))]

    lines = r.stdout.strip().splitlines()
    member_line, ensemble_line = lines[-3].split(), lines[-2].split()
    assert member_line[:4] == ["members'", "mean", "test", "r2"] and ensemble_line[:5] == ["ensemble", "of", "3",
                                                                                            "test", "r2"]  # fmt: skip
    mean_scores = np.mean([scores(v) for v in values], axis=0)
    np.testing.assert_allclose([float(v) for v in member_line[4::2]], mean_scores, rtol=1e-5)
    np.testing.assert_allclose([float(v) for v in ensemble_line[5::2]], scores(values.mean(axis=0)), rtol=1e-5)

    r = run("predict", "--model", "e.safetensors", "--data", "d.csv", "--out", "p.csv", "--std", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "r2 " in r.stderr  # the file holds the target: scored
    names, table = read_csv(tmp_path / "p.csv")
    everything = np.stack([numpy_outputs(m, X)[:, 0] for m in ens.members])
    assert names == ["prediction", "std_prediction"]
    np.testing.assert_allclose(table[:, 0], everything.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(table[:, 1], everything.std(axis=0), rtol=0, atol=1e-12)


def test_early_stopping_per_member_and_a_resumed_checkpoint_end_as_one_run(tmp_path):
    common = ["train", "--members", "3", "--early-stopping", "2", "--lr", "0.5", "--dtype", "float64", "--device",
              "cpu", "--samples", "200", "--seed", "1", "-q"]  # fmt: skip
    r = run(*common, "--epochs", "60", "--save", "whole.safetensors", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(*common, "--epochs", "12", "--checkpoint", "half.safetensors", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run("train", "--resume", "half.safetensors", "--epochs", "60", "--save", "resumed.safetensors", "-q",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    whole = gpunn.load(tmp_path / "whole.safetensors", device="cpu")
    resumed = gpunn.load(tmp_path / "resumed.safetensors", device="cpu")

    # the oracle: an Ensemble with an EarlyStopping per member, validated on the split the command holds out
    X_train, y_train, _, _, val = moons_split(1, 200, validation=0.1)
    oracle = gpunn.Ensemble([2, 10, 10, 10, 1], members=3, seed=1, dtype="float64", device="cpu", standardize=True)
    oracle.fit(X_train, y_train, epochs=60, lr=0.5, validation_data=val, callbacks=[EarlyStopping(patience=2)],
               verbose=0)  # fmt: skip
    epochs = [m.epoch for m in oracle.members]
    assert min(epochs) < 60  # some member stopped early, on its own
    for a, b, c in zip(whole.members, resumed.members, oracle.members):
        assert a.epoch == b.epoch == c.epoch
        np.testing.assert_allclose(a.params, c.params, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(a.params, b.params)
        assert a.history.val_loss == b.history.val_loss


def test_history_of_an_ensemble_holds_every_member(tmp_path):
    r = run("train", "--members", "2", "--epochs", "3", "--device", "cpu", "--samples", "100", "--history", "h.json",
            "-q", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    import json

    held = json.loads((tmp_path / "h.json").read_text())
    assert len(held["members"]) == 2 and all(len(h["loss"]) == 3 for h in held["members"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--members", "2", "--stream", "--data", "d.parquet", "--target", "y"], "--stream trains one"),
        (["train", "--members", "0"], "expected a number >= 1"),
        (["train", "--resume", "one.safetensors", "--members", "2"], "holds one network, not an ensemble"),
        (["train", "--resume", "e.safetensors", "--members", "3"], "--members 3 differs from the resumed"),
        (["predict", "--model", "one.safetensors", "--data", "x.csv", "--std"], "--std is the spread of an ensemble"),
        (
            ["train", "--members", "2", "--parallel", "members"],
            "--parallel members splits the work over MPI ranks: add --distributed",
        ),
        (["train", "--parallel", "rows"], "--parallel rows splits the work over MPI ranks: add --distributed"),
        (["train", "--parallel", "both"], "argument --parallel: invalid choice: 'both'"),
    ],
)
def test_what_an_ensemble_run_cannot_do_is_one_clear_error(tmp_path, args, message):
    X, y = gpunn.data.make_dataset("moons", 40)
    one = gpunn.MLP([2, 3, 1], seed=0, standardize=True)
    one.fit(X, y, epochs=1, verbose=0)
    one.metadata["train"] = {"epochs": 1}
    one.save(tmp_path / "one.safetensors")
    r = run("train", "--members", "2", "--epochs", "1", "--samples", "50", "--layers", "3", "--save", "e.safetensors",
            "-q", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (tmp_path / "x.csv").write_text("a,b\n0,1\n")
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def _mpiexec():
    import shutil

    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec")


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("mpi4py") is None or _mpiexec() is None,
    reason="mpi4py and mpiexec are needed (pip install 'gpunn[mpi]')",
)
def test_members_over_two_mpi_ranks_equal_one_process(tmp_path):
    common = ["train", "--members", "3", "--epochs", "20", "--batch-size", "64", "--optimizer", "adam", "--lr",
              "0.01", "--dtype", "float64", "--device", "cpu", "--samples", "300", "--early-stopping", "3",
              "-q"]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [
        _mpiexec(),
        "-n",
        "2",
        sys.executable,
        "-m",
        "gpunn",
        *common,
        "--distributed",
        "--save",
        "two.safetensors",
    ]
    r = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    r = run(*common, "--save", "one.safetensors", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    two = gpunn.load(tmp_path / "two.safetensors", device="cpu")
    one = gpunn.load(tmp_path / "one.safetensors", device="cpu")
    assert len({m.epoch for m in one.members}) > 1  # members stopped apart
    for a, b in zip(one.members, two.members):
        assert a.epoch == b.epoch
        np.testing.assert_allclose(a.params, b.params, rtol=0, atol=1e-12)
