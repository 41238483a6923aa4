"""The gpunn command, end to end: through gpunn.cli.main in the test process where the oracle is what the command
did (its status, output and files), and in subprocesses, as a user runs it, for what only a process shows (the
entry point, a closed pipe, Ctrl-C, a traceback, the exit after pyarrow)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import gpunn_in_process
import numpy as np
import pytest

import gpunn
import gpunn.data


def run(*args, cwd=None):
    """``gpunn *args`` through gpunn.cli.main in this process (tests/gpunn_in_process.py), where the oracle is what
    the command did: its status, output and files."""
    return gpunn_in_process.run(*args, cwd=cwd)


def run_process(*args, cwd=None):
    """``python -m gpunn *args`` in a process of its own: for what only a process shows (a traceback on its
    stderr, its exit once pyarrow has read a file)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "gpunn", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_train_with_no_arguments_is_the_tutorial_job(tmp_path):
    r = run("train", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert "[2, 10, 10, 10, 1]" in lines[0] and "moons" in lines[0]
    epoch_lines = [line for line in lines if line.startswith("epoch")]
    assert len(epoch_lines) == 10 and epoch_lines[-1].startswith("epoch 1000/1000  loss ")
    accuracy = float(lines[-1].split()[2])
    assert lines[-1].startswith("test accuracy") and accuracy >= 0.95


def test_train_on_csv_then_predict(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] + X[:, 2] > 0).astype(int)
    rows = "\n".join(f"{a},{b},{c},{t}" for (a, b, c), t in zip(X, y))
    (tmp_path / "train.csv").write_text("f1,f2,f3,label\n" + rows + "\n")
    (tmp_path / "new.csv").write_text("f3,f1,f2\n1,1,0\n-1,-1,0\n")  # columns in another order
    r = run(
        "train", "--preset", "tutorial",
        "--data", "train.csv", "--target", "label", "--layers", "8,8", "--epochs", "200", "--lr", "0.05",
        "--optimizer", "adam", "--batch-size", "32", "--device", "cpu", "--dtype", "float64", "--seed", "3",
        "--save", "m.safetensors", "--history", "h.json", "--test-size", "0.25", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "225 train / 75 test" in r.stdout
    history = json.loads((tmp_path / "h.json").read_text())
    assert len(history["loss"]) == 200 and history["loss"][-1] < history["loss"][0]
    model = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    assert model.feature_names == ["f1", "f2", "f3"] and model.scaling is not None

    r = run("predict", "--model", "m.safetensors", "--data", "new.csv", "--out", "p.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = (tmp_path / "p.csv").read_text().splitlines()
    assert out[0] == "prediction,probability" and len(out) == 3
    # The command applies the saved scaling and column order: same answer as the API on raw features.
    expected = model.predict_proba(np.array([[1.0, 0.0, 1.0], [-1.0, 0.0, -1.0]]))[:, 0]
    np.testing.assert_allclose([float(line.split(",")[1]) for line in out[1:]], expected, rtol=1e-12)
    assert [int(line.split(",")[0]) for line in out[1:]] == [1, 0]


def test_train_on_csv_equals_the_api_on_the_same_file(tmp_path):
    """The command reads, splits and scales in place to hold a large file once; the result is what the copying
    API gives on the same file, bit for bit, and the test metrics are computed on unscaled test rows."""
    rng = np.random.default_rng(4)
    X = rng.normal(loc=3.0, scale=[1.0, 50.0, 0.01], size=(240, 3))
    y = rng.integers(0, 3, 240)
    rows = "\n".join(",".join(repr(float(v)) for v in (a, t, b, c)) for (a, b, c), t in zip(X, y))
    (tmp_path / "d.csv").write_text("f1,label,f2,f3\n" + rows + "\n")
    r = run("train", "--preset", "tutorial",
            "--data", "d.csv", "--target", "label", "--output", "softmax", "--layers", "7", "--epochs", "6",
            "--batch-size", "32", "--seed", "5", "--device", "cpu", "--save", "m.safetensors",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    Xf, yf, names = gpunn.data.read_csv(tmp_path / "d.csv", target="label", dtype="float32")
    assert names == ["f1", "f2", "f3"]
    X_train, X_test, y_train, y_test = gpunn.data.train_test_split(Xf, yf, test_size=0.2, seed=5)
    ref = gpunn.MLP([3, 7, 3], output="softmax", seed=5, device="cpu", standardize=True)
    ref.fit(X_train, y_train, epochs=6, lr=0.1, batch_size=32, validation_data=(X_test, y_test), verbose=0)
    for (w, b), (w2, b2) in zip(m.weights, ref.weights):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)
    test = ref.evaluate(X_test, y_test)
    assert f"test accuracy {test['accuracy']:.4f}  (test loss {test['loss']:.4f})" in r.stdout
    assert test["loss"] == pytest.approx(ref.history.val_loss[-1], rel=1e-6)


def test_bad_csv_is_one_line_on_stderr_with_exit_2(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b,y\n1,2,0\n3,1\n")
    r = run("train", "--data", "bad.csv", "--target", "y", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "gpunn: error: bad.csv: line 3 has 2 fields but the header has 3"
    assert "Traceback" not in r.stderr


def test_debug_shows_the_traceback(tmp_path):
    r = run_process("train", "--data", "missing.csv", "--target", "y", "--debug", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["train", "--device", "tpu"], "device 'tpu' is not known"),
        (["train", "--data", "x.csv"], "needs --target"),
        (["train", "--lr", "-1", "--device", "cpu"], "lr must be a finite number > 0"),
        (["predict", "--model", "none.safetensors", "--data", "x.csv"], "none.safetensors: cannot read"),
        (["train", "--dropout", "1", "--device", "cpu"], "dropout must be in [0, 1)"),
    ],
)
def test_usage_errors(tmp_path, args, pattern):
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2 and pattern in r.stderr and "Traceback" not in r.stderr


def test_info_lists_namespaces_and_blas():
    r = gpunn_in_process.run("info")  # what it prints, not how a process starts: tested in this process
    assert r.returncode == 0, r.stderr
    assert f"gpunn {gpunn.__version__}" in r.stdout
    assert "numpy" in r.stdout and "BLAS:" in r.stdout and "device 'auto' uses:" in r.stdout


def test_softmax_on_spirals(tmp_path):
    r = run("train", "--dataset", "spirals", "--epochs", "300", "--optimizer", "adam", "--lr", "0.01",
            "--device", "cpu", "-q", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("test accuracy") and float(r.stdout.split()[2]) > 0.9


def test_import_gpunn_does_not_import_gpu_or_framework_libraries():
    code = "import sys, gpunn; print(sorted(m for m in ('cupy', 'torch', 'jax') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_console_script_is_installed():
    import shutil

    exe = shutil.which("gpunn") or os.path.join(os.path.dirname(sys.executable), "gpunn")
    if not os.path.exists(exe):
        pytest.skip("gpunn is not installed as a package here (pip install . puts the gpunn command on PATH)")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"gpunn {gpunn.__version__}"


def test_every_option_is_documented():
    """Each option of every command appears in --help and in docs/cli.md."""
    from pathlib import Path

    from gpunn.cli import build_parser

    doc = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        assert f"gpunn {name}" in doc
        for action in command._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in doc, f"gpunn {name} {flag} is not in docs/cli.md"


def test_unwritable_output_is_one_line_with_exit_2(tmp_path):
    r = run("train", "--epochs", "2", "--device", "cpu", "-q", "--save", "no/such/dir/m.safetensors", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"gpunn: error: --save no/such/dir/m.safetensors: the folder {tmp_path / 'no/such/dir'} does not exist"
    )


def test_train_options_reach_the_model(tmp_path):
    r = run("train", "--dataset", "circles", "--samples", "400", "--activation", "tanh", "--layers", "6,5",
            "--optimizer", "momentum", "--clip-norm", "0.5", "--lr", "0.05", "--epochs", "40", "--batch-size", "64",
            "--dtype", "float64", "--seed", "7", "--test-size", "0.25", "--device", "cpu", "-q",
            "--save", "m.safetensors", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    assert m.sizes == [2, 6, 5, 1] and m.activation == "tanh" and m.dtype == "float64" and m.seed == 7
    assert m.optimizer.name == "momentum" and m.epoch == 40
    settings = m.metadata["train"]
    assert (settings["clip_norm"], settings["batch_size"], settings["test_size"], settings["samples"]) == (
        0.5,
        64,
        0.25,
        400,
    )
    # Replaying the saved settings through the API gives the same weights: the options were applied as given.
    X, y = gpunn.data.make_circles(400, seed=7)
    X_train, X_test, y_train, y_test = gpunn.data.train_test_split(X, y, test_size=0.25, seed=7)
    ref = gpunn.MLP([2, 6, 5, 1], activation="tanh", dtype="float64", seed=7, device="cpu", standardize=True)
    ref.fit(X_train, y_train, epochs=40, lr=0.05, batch_size=64, optimizer="momentum", clip_norm=0.5,
            validation_data=(X_test, y_test), verbose=0)  # fmt: skip
    for (w, b), (w2, b2) in zip(m.weights, ref.weights):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)


@pytest.mark.parametrize(
    "target,expected",
    [
        (lambda X: (X[:, 0] > 0).astype(int), "sigmoid"),
        (lambda X: np.digitize(X[:, 0], [-1.0, -0.3, 0.3, 1.0]), "softmax"),
        (lambda X: X[:, 0] * 0.5 + 0.1, "identity"),
    ],
    ids=["two-values", "five-classes", "values"],
)
def test_the_output_layer_follows_the_target(tmp_path, target, expected):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    np.savetxt(tmp_path / "d.csv", np.c_[X, target(X)], delimiter=",", header="a,b,c,label", comments="")
    r = run("train", "--data", "d.csv", "--target", "label", "--epochs", "2", "--device", "cpu", "--save", "m.st",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"{expected} output, chosen from the target" in r.stdout.splitlines()[0]
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    assert m.output == expected and m.n_outputs == {"sigmoid": 1, "softmax": 5, "identity": 1}[expected]


def test_class_labels_other_than_0_to_k_are_trained_and_written_back(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 2))
    y = np.where(X[:, 0] + X[:, 1] > 0, 7, 3)  # a binary target coded 3 / 7
    np.savetxt(tmp_path / "d.csv", np.c_[X, y], delimiter=",", header="a,b,label", comments="")
    r = run("train", "--data", "d.csv", "--target", "label", "--epochs", "300", "--optimizer", "adam", "--lr",
            "0.02", "--device", "cpu", "--save", "m.st", "-q", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run("predict", "--model", "m.st", "--data", "d.csv", "--out", "p.csv", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    predicted = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)[:, 0]
    assert set(np.unique(predicted)) == {3.0, 7.0}
    assert np.mean(predicted == y) > 0.95


def test_training_options_of_the_new_round_reach_the_model(tmp_path):
    r = run("train", "--dataset", "spirals", "--samples", "300", "--optimizer", "adamw", "--weight-decay", "0.05",
            "--schedule", "cosine", "--lr", "0.03", "--epochs", "400", "--early-stopping", "5", "--validation-split",
            "0.2", "--class-weight", "balanced", "--activation", "gelu", "--device", "cpu", "-q", "--save", "m.st",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    assert m.optimizer.name == "adamw" and m.optimizer.hyper["weight_decay"] == 0.05
    assert m.schedule == gpunn.schedules.cosine(0.03, 400) and m.activation == "gelu"
    assert m.epoch < 400, "early stopping with patience 5 ends this run early"
    lr = m.history.lr
    assert lr[0] == pytest.approx(0.03) and all(a >= b for a, b in zip(lr, lr[1:]))
    assert len(m.history.val_loss) == m.epoch
    assert m.metadata["train"]["validation_split"] == 0.2 and m.metadata["train"]["class_weight"] == "balanced"
    r = run("train", "--optimizer", "sgd", "--weight-decay", "0.1", "--epochs", "2", "--device", "cpu", "-q",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "weight_decay is AdamW's decoupled decay" in r.stderr


def test_dropout_reaches_the_model_and_trains_as_the_api_does(tmp_path):
    r = run("train", "--dataset", "moons", "--samples", "200", "--dropout", "0.2", "--layers", "16,16", "--epochs",
            "5", "--batch-size", "32", "--optimizer", "adam", "--lr", "0.01", "--dtype", "float64", "--device", "cpu",
            "--save", "m.st", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "dropout 0.2" in r.stdout.splitlines()[0]
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    assert m.dropout == 0.2
    X, y = gpunn.data.make_moons(200, seed=0)
    X_train, X_test, y_train, y_test = gpunn.data.train_test_split(X, y, test_size=0.2, seed=0)
    ref = gpunn.MLP([2, 16, 16, 1], dtype="float64", device="cpu", standardize=True, dropout=0.2)
    ref.fit(X_train, y_train, epochs=5, lr=0.01, batch_size=32, optimizer="adam", validation_data=(X_test, y_test),
            verbose=0)  # fmt: skip
    for (w, b), (w2, b2) in zip(m.numpy_weights(), ref.numpy_weights()):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)


def test_stream_trains_from_a_parquet_file_as_the_api_does(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": y}), tmp_path / "d.parquet",
                   row_group_size=40)  # fmt: skip
    r = run_process("train", "--preset", "tutorial",  # a process: its exit once pyarrow has streamed a file
                    "--data", "d.parquet", "--target", "label", "--stream", "--epochs", "4", "--batch-size", "32",
                    "--dtype", "float64", "--device", "cpu", "--save", "m.st", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert "streamed" in first and "sigmoid output, chosen from the target" in first
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    assert m.metadata["train"]["stream"] is True and m.feature_names == ["a", "b", "c"]
    train, test = gpunn.data.Dataset(tmp_path / "d.parquet", "label").split(0.2, seed=0)
    assert f"{train.n_rows} train / {test.n_rows} test rows" in first
    ref = gpunn.MLP([3, 10, 10, 10, 1], dtype="float64", device="cpu", standardize=True)
    ref.fit(train, epochs=4, lr=0.1, batch_size=32, validation_data=test, verbose=0)
    np.testing.assert_allclose(m.params, ref.params, rtol=0, atol=1e-12)
    assert f"test accuracy {ref.evaluate(test)['accuracy']:.4f}" in r.stdout
    r = run("train", "--preset", "tutorial",
            "--data", "d.parquet", "--target", "a", "--stream", "--output", "softmax", "--device", "cpu",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "output 'softmax' needs class labels in the target, which holds fractions" in r.stderr


def _weighted_rows():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    w = np.round(rng.uniform(0.0, 3.0, size=400), 2)
    return X, y, w


def test_sample_weight_in_memory_trains_as_the_api_with_sample_weight(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    X, y, w = _weighted_rows()
    pq.write_table(pa.table({"a": X[:, 0], "w": w, "b": X[:, 1], "c": X[:, 2], "label": y}), tmp_path / "d.parquet")
    common = ["--target", "label", "--epochs", "5", "--batch-size", "32", "--optimizer", "adam", "--lr", "0.01",
              "--dtype", "float64", "--device", "cpu", "-q"]  # fmt: skip
    r = run(
        "train",
        "--preset",
        "tutorial",
        "--data",
        "d.parquet",
        "--sample-weight",
        "w",
        *common,
        "--save",
        "m.st",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    assert m.feature_names == ["a", "b", "c"] and m.sizes[0] == 3 and m.metadata["train"]["sample_weight"] == "w"
    # the oracle: the command's split (seeded permutation, the first 20% for testing) and the API's weighted fit
    order = np.random.default_rng(0).permutation(400)
    test, train = order[:80], order[80:]
    ref = gpunn.MLP([3, 10, 10, 10, 1], dtype="float64", device="cpu", standardize=True)
    ref.fit(X[train], y[train], sample_weight=w[train], epochs=5, lr=0.01, batch_size=32, optimizer="adam",
            verbose=0)  # fmt: skip
    np.testing.assert_allclose(m.params, ref.params, rtol=0, atol=1e-12)
    for key in ("loss", "weighted_loss"):
        np.testing.assert_allclose(getattr(m.history, key), getattr(ref.history, key), rtol=1e-12)
    assert m.history.val_loss == []  # the test rows are not validation rows
    assert f"test accuracy {ref.evaluate(X[test], y[test])['accuracy']:.4f}" in r.stdout
    # an .npy file's weight column is a column number, left out of the features
    np.save(tmp_path / "d.npy", np.c_[X[:, 0], w, X[:, 1:], y])
    r = run("train", "--preset", "tutorial",
            "--data", "d.npy", "--sample-weight", "1", *common, "--target", "4", "--save", "n.st",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    n = gpunn.load(tmp_path / "n.st", device="cpu")
    assert n.feature_names == ["0", "2", "3"]
    np.testing.assert_allclose(n.params, ref.params, rtol=0, atol=1e-12)


def test_sample_weight_with_stream_trains_as_in_memory_on_the_same_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    X, y, w = _weighted_rows()
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "w": w, "c": X[:, 2], "label": y}), tmp_path / "d.parquet",
                   row_group_size=40)  # fmt: skip
    r = run("train", "--preset", "tutorial",
            "--data", "d.parquet", "--target", "label", "--sample-weight", "w", "--stream", "--epochs", "4",
            "--batch-size", "32", "--dtype", "float64", "--device", "cpu", "--save", "m.st", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    assert m.feature_names == ["a", "b", "c"] and m.metadata["train"]["sample_weight"] == "w"
    # the oracle: in-memory training on the rows of the training blocks, in file order (the buffer holds them all)
    train, test = gpunn.data.Dataset(tmp_path / "d.parquet", "label").split(0.2, seed=0)
    rows = np.concatenate([np.arange(40 * b, 40 * b + 40) for b in train.blocks])
    held = np.concatenate([np.arange(40 * b, 40 * b + 40) for b in test.blocks])
    ref = gpunn.MLP([3, 10, 10, 10, 1], dtype="float64", device="cpu", standardize=True)
    ref.fit(X[rows], y[rows], sample_weight=w[rows], epochs=4, lr=0.1, batch_size=32, verbose=0)
    np.testing.assert_allclose(m.params, ref.params, rtol=0, atol=1e-12)
    for key in ("loss", "weighted_loss"):
        np.testing.assert_allclose(getattr(m.history, key), getattr(ref.history, key), rtol=1e-12)
    assert m.history.val_loss == [] and f"test accuracy {ref.evaluate(X[held], y[held])['accuracy']:.4f}" in r.stdout
    r = run("train", "--preset", "tutorial",
            "--data", "d.parquet", "--target", "label", "--sample-weight", "w", "--stream",
            "--class-weight", "balanced", "--device", "cpu", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "--class-weight is not available with --stream" in r.stderr
    for weight, message in (("label", "'label' is both the target and the weight column"),
                            ("x", "weight column 'x' is not in the file's columns")):  # fmt: skip
        for stream in ([], ["--stream"]):
            r = run("train", "--preset", "tutorial",
                    "--data", "d.parquet", "--target", "label", "--sample-weight", weight, *stream,
                    "--device", "cpu", cwd=tmp_path)  # fmt: skip
            assert r.returncode == 2 and message in r.stderr, (stream, r.stderr)
    r = run("train", "--preset", "tutorial", "--sample-weight", "w", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 2 and "--sample-weight needs --data FILE" in r.stderr


def test_export_writes_an_onnx_graph_that_predicts_as_the_model(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    r = run("train", "--epochs", "20", "--device", "cpu", "-q", "--save", "m.safetensors", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run("export", "--model", "m.safetensors", "--onnx", "m.onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    X, _ = gpunn.data.make_moons(300, seed=5)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    probabilities, label = session.run(["probabilities", "label"], {"X": X.astype(np.float32)})
    np.testing.assert_array_equal(label, m.predict(X))
    np.testing.assert_allclose(probabilities, m.predict_proba(X), rtol=0, atol=1e-5)
    r = run("export", "--model", "m.safetensors", "--onnx", "x.onnx", "--opset", "99", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "opset" in r.stderr


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".feather"])
def test_text_labels_are_trained_as_classes_and_written_back(tmp_path, suffix):
    pd = pytest.importorskip("pandas")
    if suffix != ".csv":
        pytest.importorskip("pyarrow")
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 2))
    species = np.array(["setosa", "versicolor", "virginica"])[np.digitize(X[:, 0] + X[:, 1], [-0.7, 0.7])]
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "species": species})
    path = tmp_path / f"d{suffix}"
    {".csv": lambda: frame.to_csv(path, index=False), ".parquet": lambda: frame.to_parquet(path),
     ".feather": lambda: frame.to_feather(path)}[suffix]()  # fmt: skip
    r = run_process("train", "--data", path.name, "--target", "species", "--epochs", "40", "--optimizer", "adam",
                    "--lr", "0.02", "--device", "cpu", "--save", "m.st", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "softmax output, chosen from the target" in r.stdout.splitlines()[0]
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    assert m.metadata["classes"] == ["setosa", "versicolor", "virginica"] and m.n_outputs == 3
    frame[["b", "a"]].to_csv(tmp_path / "new.csv", index=False)  # other column order, no target
    r = run("predict", "--model", "m.st", "--data", "new.csv", "--out", "p.csv", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    predicted = pd.read_csv(tmp_path / "p.csv")["prediction"].to_numpy()
    assert set(predicted) <= set(species) and np.mean(predicted == species) > 0.9


def test_output_paths_are_checked_before_training_and_the_model_is_saved_first(tmp_path):
    """A path that cannot be written is found before training, not after it; and with every output given, the
    model is written before the history and the plot."""
    for option in ("--save", "--checkpoint", "--history", "--plot"):
        r = run("train", "--device", "cpu", "--epochs", "100000", option, str(tmp_path / "missing" / "f"),
                cwd=tmp_path)  # fmt: skip
        assert r.returncode == 2 and r.stdout == "", (option, r.stdout)  # no training line, no epoch line
        assert f"{option} {tmp_path / 'missing' / 'f'}: the folder {tmp_path / 'missing'} does not exist" in r.stderr
    r = run("train", "--device", "cpu", "--epochs", "5", "--save", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "is a folder; give a file path" in r.stderr
    assert os.listdir(tmp_path) == []


def test_resume_says_when_nothing_is_saved_or_nothing_is_left_to_train(tmp_path):
    first = run("train", "--device", "cpu", "--epochs", "20", "--checkpoint", "r.safetensors", "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "r.safetensors").read_bytes()
    r = run("train", "--device", "cpu", "--resume", "r.safetensors", "--epochs", "30", "-q", cwd=tmp_path)
    assert r.returncode == 0 and "the resumed training is not saved: add --save PATH or --checkpoint" in r.stderr
    assert (tmp_path / "r.safetensors").read_bytes() == before
    r = run("train", "--device", "cpu", "--resume", "r.safetensors", "--epochs", "20", "-q", cwd=tmp_path)
    assert r.returncode == 0 and "r.safetensors has trained 20 epochs, --epochs 20: nothing to train" in r.stderr


def test_early_stopping_says_where_it_stopped_and_which_epoch_it_kept(tmp_path):
    r = run("train", "--device", "cpu", "--epochs", "3000", "--early-stopping", "3", "--lr", "0.5", "--optimizer",
            "adam", "--history", "h.json", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    history = json.loads((tmp_path / "h.json").read_text())
    val = history["val_loss"]
    best = int(np.argmin(val)) + 1  # 1-based, as the progress lines count
    line = next(x for x in r.stdout.splitlines() if x.startswith("stopped early"))
    assert line == (f"stopped early after epoch {len(val)}: val_loss did not improve for 3 epochs; restored epoch "
                    f"{best} (val_loss {min(val):.4f})")  # fmt: skip
    assert len(val) == best + 3


def test_a_closed_pipe_ends_predict_quietly(tmp_path):
    assert (
        run("train", "--device", "cpu", "--epochs", "5", "--save", "m.safetensors", "-q", cwd=tmp_path).returncode == 0
    )
    rows = np.random.default_rng(0).normal(size=(50000, 2))
    (tmp_path / "x.csv").write_text("x0,x1\n" + "\n".join(f"{a},{b}" for a, b in rows) + "\n")
    p = subprocess.Popen([sys.executable, "-m", "gpunn", "predict", "--model", "m.safetensors", "--data", "x.csv"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert p.stdout is not None and p.stdout.readline().startswith(b"prediction")
    p.stdout.close()  # as `| head -1` does
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1 and err == b"", err


def test_plot_without_matplotlib_is_refused_before_training(tmp_path, monkeypatch, capsys):
    import importlib.util

    from gpunn import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    assert (
        cli.main(
            [
                "train",
                "--preset",
                "tutorial",
                "--device",
                "cpu",
                "--epochs",
                "100000",
                "--plot",
                "b.png",
                "--save",
                "m.st",
            ]
        )
        == 2
    )
    out = capsys.readouterr()
    assert out.out == "" and "--plot needs matplotlib: pip install 'gpunn[plot]'" in out.err
    assert os.listdir(tmp_path) == []


def test_features_picks_the_columns_and_leaves_the_others_unread(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    rows = [f"row{i},{a},{b},{int(a + b > 0)}" for i, (a, b) in enumerate(X)]
    (tmp_path / "p.csv").write_text("name,a,b,label\n" + "\n".join(rows) + "\n")
    r = run("train", "--device", "cpu", "--data", "p.csv", "--target", "label", "--epochs", "5", "-q", cwd=tmp_path)
    assert r.returncode == 2 and re.search(r"column 'name' holds \d+ distinct values, none seen 2 times", r.stderr)
    r = run("train", "--device", "cpu", "--data", "p.csv", "--target", "label", "--features", "b,a", "--epochs", "5",
            "-q", "--save", "m.safetensors", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    assert m.feature_names == ["b", "a"] and m.n_features == 2
    r = run("train", "--device", "cpu", "--data", "p.csv", "--target", "label", "--resume", "m.safetensors",
            "--features", "a,b", "--epochs", "6", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "--features ['a', 'b'] differs from the resumed checkpoint's ['b', 'a']" in r.stderr


# ------------------------------------------------------------------------------------- Ctrl-C before training
# what the gpunn script runs (pip writes it so): a file named gpunn, which the process's sys.argv[0] names
SCRIPT = "import sys\nfrom gpunn._entry import main\n\nif __name__ == '__main__':\n    sys.exit(main())\n"


def test_the_gpunn_script_enters_through_the_guarded_entry():
    """Importing anything in gpunn runs gpunn/__init__.py (NumPy and the rest) first: its first lines put the
    command's Ctrl-C guard in place (gpunn/_entry.py), and the script enters through that module."""
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '\ngpunn = "gpunn._entry:main"' in pyproject
    first = (Path(__file__).resolve().parent.parent / "gpunn" / "__init__.py").read_text().split("from . import _entry")
    assert len(first) == 2 and "\nimport" not in first[0].replace("import sys", "")  # nothing heavy before it


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/proc/self/maps"), reason="Linux /proc, FIFOs")
@pytest.mark.parametrize("entry", ["script", "module"])
@pytest.mark.parametrize("point", ["numpy-loads", "after-0.3-s", "reading-data"])
def test_ctrl_c_before_training_ends_with_one_line_and_status_130(tmp_path, entry, point):
    """SIGINT at three early points of `gpunn train`: while NumPy's extension loads (inside the import of the
    command), 0.3 s after the start (imports, or later on a fast machine), and while --data is read (a FIFO that
    is opened but never written). Each used to end in a KeyboardInterrupt traceback. Not earlier: before
    Python's own handler is installed SIGINT ends the process at once, and in Python's start (site) its
    traceback is Python's own, both before any gpunn code runs. About one Ctrl-C in a hundred at such points
    is lost outright, in CPython or NumPy (a KeyboardInterrupt raised in a weakref callback of the import system,
    or in Python code that a C extension's set-up calls and whose errors it clears): the process goes on, and
    the test then presses Ctrl-C again, as a user would."""
    script = tmp_path / "bin" / "gpunn"
    script.parent.mkdir()
    script.write_text(SCRIPT)
    command = [sys.executable, *([str(script)] if entry == "script" else ["-m", "gpunn"]), "train", "--device",
               "cpu", "--epochs", "100000", "-q"]  # fmt: skip
    if point == "reading-data":
        os.mkfifo(tmp_path / "d.csv")
        command += ["--data", "d.csv", "--target", "y"]
    p = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    writer = None
    try:
        deadline = time.monotonic() + 60
        if point == "numpy-loads":
            while "numpy" not in open(f"/proc/{p.pid}/maps").read():  # the first of NumPy's files mapped
                assert p.poll() is None and time.monotonic() < deadline
        elif point == "reading-data":
            while writer is None:  # opens once gpunn has the FIFO open for reading
                assert p.poll() is None and time.monotonic() < deadline
                try:
                    writer = os.open(tmp_path / "d.csv", os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    time.sleep(0.005)
            time.sleep(0.05)
        else:
            time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # lost: Python's import system or NumPy swallowed the KeyboardInterrupt
            p.send_signal(signal.SIGINT)  # as a user presses Ctrl-C again
            _, err = p.communicate(timeout=60)
    finally:
        if writer is not None:
            os.close(writer)
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if point == "after-0.3-s":  # training may have started on a fast machine: gpunn train's own line then
        assert len(lines) == 1 and lines[0].startswith("gpunn: interrupted"), err
    else:
        assert lines == ["gpunn: interrupted before training started; nothing saved"], err
