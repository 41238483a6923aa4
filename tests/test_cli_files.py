"""The gpunn command on real tabular files (issues 20, 21, 22): no test rows in training, labels and targets read
as they are meant, bad input refused in one line with exit 2, and a trained model never lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from gpunn_in_process import run

import gpunn
import gpunn.data


def one_line_error(r, *parts):
    """Exit 2, one line on stderr holding every part, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def blobs(n=240, seed=0, labels=(0, 1)):
    """Two features, a class per region, labelled with ``labels``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    k = len(labels)
    index = np.digitize(np.arctan2(X[:, 1], X[:, 0]), np.linspace(-np.pi, np.pi, k + 1)[1:-1])
    return X, np.asarray(labels, dtype=object)[index], index


def write_csv(path, X, y, names=("a", "b"), target="label", sep=","):
    rows = [sep.join([*(repr(float(v)) for v in x), str(t)]) for x, t in zip(X, y)]
    path.write_text(sep.join([*names, target]) + "\n" + "\n".join(rows) + "\n")


# ------------------------------------------------------------------------------ issue 21.1: test rows unseen
def test_validation_rows_come_from_the_training_rows_and_the_test_rows_stay_unseen(tmp_path):
    X, y, _ = blobs(300, labels=(0, 1))
    write_csv(tmp_path / "d.csv", X, y)
    common = ["--data", "d.csv", "--target", "label", "--layers", "6", "--epochs", "12", "--batch-size", "32",
              "--dtype", "float64", "--device", "cpu", "--history", "h.json", "--save", "m.st"]  # fmt: skip
    r = run("train", "--preset", "tutorial", *common, "--validation-split", "0.25", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "180 train / 60 validation / 60 test rows" in r.stdout.splitlines()[0]
    # the oracle: the API on the command's split, the validation rows cut from the training rows
    Xf, yf, _, _ = gpunn.data.read(tmp_path / "d.csv", target="label", dtype="float64")
    X_train, X_test, y_train, y_test = gpunn.data.train_test_split(Xf, yf, test_size=0.2, seed=0)
    X_fit, X_val, y_fit, y_val = gpunn.data.train_test_split(X_train, y_train, test_size=0.25, seed=0)
    ref = gpunn.MLP([2, 6, 1], dtype="float64", device="cpu", standardize=True)
    ref.fit(X_fit, y_fit, epochs=12, lr=0.1, batch_size=32, validation_data=(X_val, y_val), verbose=0)
    history = json.loads((tmp_path / "h.json").read_text())
    np.testing.assert_allclose(history["val_loss"], ref.history.val_loss, rtol=1e-12)
    last = [line for line in r.stdout.splitlines() if line.startswith("epoch 12/12")][0]
    assert f"val_loss {ref.history.val_loss[-1]:.4f}" in last  # the printed val_* columns: validation rows
    test = ref.evaluate(X_test, y_test)
    assert f"test accuracy {test['accuracy']:.4f}  (test loss {test['loss']:.4f})" in r.stdout
    assert test["loss"] != pytest.approx(history["val_loss"][-1])  # not the same rows

    # without a validation split nothing is validated: plateau watches the training loss, as the API does
    r = run("train", "--preset", "tutorial", *common, "--schedule", "plateau", "--lr", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--schedule plateau watches the training loss" in r.stderr
    history = json.loads((tmp_path / "h.json").read_text())
    assert history["val_loss"] == []
    ref = gpunn.MLP([2, 6, 1], dtype="float64", device="cpu", standardize=True)
    ref.fit(X_train, y_train, epochs=12, lr=gpunn.schedules.plateau(3.0), batch_size=32, verbose=0)
    np.testing.assert_allclose(history["loss"], ref.history.loss, rtol=1e-12)
    assert history["lr"] == ref.history.lr


def test_test_size_0_trains_on_every_row_and_says_there_is_no_test(tmp_path):
    X, y, _ = blobs(200, seed=3)
    write_csv(tmp_path / "d.csv", X, y)
    r = run("train", "--preset", "tutorial",
            "--data", "d.csv", "--target", "label", "--test-size", "0", "--layers", "5", "--epochs", "4",
            "--dtype", "float64", "--device", "cpu", "--save", "m.st", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "200 train / no test rows (--test-size 0)" in r.stdout.splitlines()[0]
    assert r.stdout.splitlines()[-2] == "no test rows (--test-size 0): trained on all 200 rows, nothing held out to " \
        "test on"  # fmt: skip
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    ref = gpunn.MLP([2, 5, 1], dtype="float64", device="cpu", standardize=True)
    ref.fit(np.asarray(X, dtype=np.float64), y.astype(np.int64), epochs=4, lr=0.1, verbose=0)
    np.testing.assert_array_equal(m.params, ref.params)


# ------------------------------------------------------------------- issues 21.2 and 20.5: any set of labels
def test_sparse_labels_are_k_classes_written_back_with_named_probability_columns(tmp_path):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    X, y, _ = blobs(300, seed=1, labels=(0, 5, 1000))
    write_csv(tmp_path / "d.csv", X, y)
    r = run("train", "--preset", "tutorial",
            "--data", "d.csv", "--target", "label", "--epochs", "150", "--optimizer", "adam", "--lr", "0.02",
            "--device", "cpu", "--save", "m.st", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "[2, 10, 10, 10, 3]" in r.stdout and "3 classes: 0, 5, 1000" in r.stdout.splitlines()[0]
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    assert m.sizes[-1] == 3 and m.metadata["classes"] == [0, 5, 1000]
    r = run("predict", "--model", "m.st", "--data", "d.csv", "--out", "p.csv", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "prediction,p_0,p_5,p_1000"
    table = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(table[:, 1:], m.predict_proba(X.astype(np.float32)), rtol=1e-6)
    truth = y.astype(np.float64)
    # each row's label is the class of its largest probability column; the loaded model predicts the labels too
    np.testing.assert_array_equal(table[:, 0], np.array([0, 5, 1000])[np.argmax(table[:, 1:], axis=1)])
    assert m.classes.tolist() == [0, 5, 1000]
    np.testing.assert_array_equal(m.predict(X.astype(np.float32)), table[:, 0])
    # the file holds the target column: predict reports the score, as scikit-learn computes it
    accuracy = sklearn_metrics.accuracy_score(truth, table[:, 0])
    assert accuracy > 0.9
    assert r.stderr.splitlines()[-1] == f"accuracy {accuracy:.4f} on 300 rows with target 'label'"


def test_text_label_probability_columns_are_named_after_the_classes_and_export_gives_the_labels(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    X, y, _ = blobs(240, seed=2, labels=("setosa", "versicolor", "virginica"))
    write_csv(tmp_path / "d.csv", X, y, target="species")
    r = run("train", "--data", "d.csv", "--target", "species", "--epochs", "60", "--optimizer", "adam", "--lr",
            "0.02", "--device", "cpu", "--save", "m.st", "-q", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    write_csv(tmp_path / "new.csv", X[:20], ["?"] * 20, target="other")  # no target column: no score
    r = run("predict", "--model", "m.st", "--data", "new.csv", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.splitlines()[0] == "prediction,p_setosa,p_versicolor,p_virginica"
    table = np.array([line.split(",") for line in r.stdout.splitlines()[1:]])
    labels = np.array(["setosa", "versicolor", "virginica"])[np.argmax(table[:, 1:].astype(float), axis=1)]
    assert table[:, 0].tolist() == labels.tolist()  # each row's label is its most probable column's class
    m = gpunn.load(tmp_path / "m.st", device="cpu")  # the model holds the labels: predict gives them in Python too
    assert m.classes.tolist() == ["setosa", "versicolor", "virginica"]
    assert m.predict(X[:20].astype(np.float32)).tolist() == labels.tolist()

    r = run("export", "--model", "m.st", "--onnx", "m.onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    _, label = session.run(["probabilities", "label"], {"X": X[:20].astype(np.float32)})
    assert [str(v) for v in label] == labels.tolist()
    r = run("export", "--model", "m.st", "--onnx", "c.onnx", "--classes", "A,B,C", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    session = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    _, label = session.run(["probabilities", "label"], {"X": X[:20].astype(np.float32)})
    assert [str(v) for v in label] == [{"setosa": "A", "versicolor": "B", "virginica": "C"}[v] for v in labels]


# ------------------------------------------------------------------------- issue 21.3: a saved pandas index
def test_an_unnamed_index_column_is_refused_naming_it_and_features_picks_the_rest(tmp_path):
    pd = pytest.importorskip("pandas")
    X, y, _ = blobs(120, seed=4)
    pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "label": y.astype(int)}).to_csv(tmp_path / "f.csv")  # index written
    (tmp_path / "m.st").write_bytes(b"an existing model")
    r = run("train", "--data", "f.csv", "--target", "label", "--epochs", "3", "--device", "cpu", "--save", "m.st",
            cwd=tmp_path)  # fmt: skip
    one_line_error(r, "f.csv: column 1 has no name ('')", "--features a,b")
    assert (tmp_path / "m.st").read_bytes() == b"an existing model" and r.stdout == ""
    r = run("train", "--data", "f.csv", "--target", "label", "--features", "a,b", "--epochs", "3", "--device", "cpu",
            "--save", "m.st", "-q", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert gpunn.load(tmp_path / "m.st", device="cpu").feature_names == ["a", "b"]


# ------------------------------------------------------------------------- issue 21.4: resume with other labels
def test_resume_with_other_class_labels_is_refused_naming_both_and_nothing_is_overwritten(tmp_path):
    X, y, index = blobs(150, seed=5, labels=("setosa", "versicolor", "virginica"))
    write_csv(tmp_path / "iris.csv", X, y, target="species")
    write_csv(tmp_path / "abc.csv", X, np.array(["A", "B", "C"])[index], target="species")
    r = run("train", "--data", "iris.csv", "--target", "species", "--epochs", "3", "--device", "cpu", "--save",
            "m.st", "-q", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    before = (tmp_path / "m.st").read_bytes()
    r = run("train", "--data", "abc.csv", "--resume", "m.st", "--epochs", "6", "--device", "cpu", "--save", "m.st",
            cwd=tmp_path)  # fmt: skip
    one_line_error(r, "['A', 'B', 'C']", "['setosa', 'versicolor', 'virginica']", "m.st")
    assert (tmp_path / "m.st").read_bytes() == before


# -------------------------------------------------------------------------------- issue 21.7: | head -1
def test_a_closed_stdout_does_not_cost_the_model(tmp_path):
    args = ["train", "--samples", "200", "--epochs", "3000", "--device", "cpu", "--save", "m.st"]
    p = subprocess.Popen([sys.executable, "-m", "gpunn", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)  # fmt: skip
    assert p.stdout is not None and p.stdout.readline().startswith(b"gpunn ")
    p.stdout.close()  # as `| head -1` does, long before training ends
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    assert m.epoch == 3000


# ----------------------------------------------------------------------------- issue 20.1: whole-number targets
def test_a_whole_number_regression_target_is_a_regression_reported_with_r2_and_mae(tmp_path):
    datasets = pytest.importorskip("sklearn.datasets")
    metrics = pytest.importorskip("sklearn.metrics")
    pd = pytest.importorskip("pandas")
    frame = datasets.load_diabetes(as_frame=True, scaled=False).frame  # 442 rows, whole-number target
    assert np.all(frame["target"] == frame["target"].round()) and frame["target"].nunique() > 200
    frame.to_csv(tmp_path / "diabetes.csv", index=False)
    r = run("train", "--data", "diabetes.csv", "--target", "target", "--layers", "16", "--epochs", "50",
            "--optimizer", "adam", "--lr", "0.01", "--device", "cpu", "--dtype", "float64", "--save", "m.st",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert "[10, 16, 1]" in first and "identity output, chosen from the target" in first
    assert f"{frame['target'].nunique()} distinct whole numbers in 442 rows are too many to be classes" in first
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    X, y, _, _ = gpunn.data.read(tmp_path / "diabetes.csv", target="target", dtype="float64")
    _, X_test, _, y_test = gpunn.data.train_test_split(X, y, test_size=0.2, seed=0)
    predicted = m.predict(X_test)[:, 0]
    r2, mse = metrics.r2_score(y_test, predicted), metrics.mean_squared_error(y_test, predicted)
    mae = metrics.mean_absolute_error(y_test, predicted)
    assert r.stdout.splitlines()[-2] == f"test r2 {r2:.6g}  mse {mse:.6g}  mae {mae:.6g}"
    # predict on a file holding the target reports the same scores, on all of its rows
    r = run("predict", "--model", "m.st", "--data", "diabetes.csv", "--out", "p.csv", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = pd.read_csv(tmp_path / "p.csv")["prediction"].to_numpy()
    np.testing.assert_allclose(written, m.predict(X)[:, 0], rtol=1e-12)
    r2 = metrics.r2_score(y, written)
    assert r.stderr.splitlines()[-1].startswith(f"r2 {r2:.6g}  mse {metrics.mean_squared_error(y, written):.6g}")


def test_many_plausible_classes_ask_for_output_and_one_class_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 2))
    write_csv(tmp_path / "many.csv", X, np.arange(3000) % 150)  # 150 labels, 20 rows each
    r = run("train", "--data", "many.csv", "--target", "label", "--epochs", "2", "--device", "cpu", cwd=tmp_path)
    one_line_error(r, "150 distinct whole numbers", "--output softmax", "--output identity")
    r = run("train", "--data", "many.csv", "--target", "label", "--output", "softmax", "--layers", "4", "--epochs",
            "1", "--device", "cpu", "-q", "--save", "m.st", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert gpunn.load(tmp_path / "m.st", device="cpu").sizes == [2, 4, 150]
    for name, values in (("one.csv", [3] * 50), ("text.csv", ["yes"] * 50)):
        write_csv(tmp_path / name, X[:50], values)
        r = run("train", "--data", name, "--target", "label", "--epochs", "2", "--device", "cpu", cwd=tmp_path)
        one_line_error(r, f"{name}: the target holds a single value", "a classifier needs two classes")


# ----------------------------------------------------------------------------- issue 20.3: divergence
def test_a_diverged_run_exits_2_and_saves_the_last_good_weights(tmp_path):
    rows = "\n".join(f"{i * 1e3},{(i % 2) * 1e4 + 0.5}" for i in range(40))
    (tmp_path / "d.csv").write_text("x,y\n" + rows + "\n")
    r = run("train", "--preset", "tutorial",
            "--data", "d.csv", "--target", "y", "--lr", "1", "--epochs", "50", "--dtype", "float64",
            "--device", "cpu", "--save", "m.st", cwd=tmp_path)  # fmt: skip
    line = one_line_error(r, "gpunn: training diverged in epoch", "are saved to m.st")
    kept = gpunn.load(tmp_path / "m.st", device="cpu")
    assert line.endswith(f"the last good weights (epoch {kept.epoch}) are saved to m.st")
    # the oracle: the API on the same rows keeps the same last finite weights
    X, y, _, _ = gpunn.data.read(tmp_path / "d.csv", target="y", dtype="float64")
    X_train, _, y_train, _ = gpunn.data.train_test_split(X, y, test_size=0.2, seed=0)
    ref = gpunn.MLP([1, 10, 10, 10, 1], output="identity", dtype="float64", device="cpu", standardize=True)
    with pytest.raises(gpunn.NonFiniteError):
        ref.fit(X_train, y_train, epochs=50, lr=1.0, verbose=0)  # grows past diverge_factor after 3 good epochs
    assert kept.epoch == ref.epoch >= 1
    np.testing.assert_array_equal(kept.params, ref.params)


# ------------------------------------------------------------------------ issue 22.2: a failed final --save
def test_a_failed_save_rescues_the_model_and_names_the_file(tmp_path, monkeypatch, capsys):
    from gpunn import checkpoint, cli

    real = checkpoint.atomic_write

    def full_disk(path, data):
        if os.path.basename(os.fspath(path)) == "m.st":
            raise OSError(28, "No space left on device")  # no file name, as a failed write gives
        real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", full_disk)
    monkeypatch.chdir(tmp_path)
    assert (
        cli.main(
            [
                "train",
                "--preset",
                "tutorial",
                "--samples",
                "100",
                "--epochs",
                "7",
                "--device",
                "cpu",
                "-q",
                "--save",
                "m.st",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(
        "gpunn: error: --save m.st: cannot write (No space left on device); the model is saved to "
    )
    rescue = err.rsplit("the model is saved to ", 1)[1].removesuffix(" instead")
    assert os.path.dirname(rescue) == str(tmp_path) and os.path.basename(rescue).startswith("gpunn-rescue-")
    assert gpunn.load(rescue, device="cpu").epoch == 7 and not (tmp_path / "m.st").exists()


def test_a_save_folder_removed_during_training_rescues_the_model_in_the_working_folder(tmp_path, monkeypatch, capsys):
    from gpunn import cli
    from gpunn.model import MLP

    real_fit = MLP.fit

    def fit_then_remove(self, *args, **kwargs):
        result = real_fit(self, *args, **kwargs)
        shutil.rmtree(tmp_path / "out")
        return result

    (tmp_path / "out").mkdir()
    monkeypatch.setattr(MLP, "fit", fit_then_remove)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--samples", "100", "--epochs", "5", "--device", "cpu", "-q", "--save",
                     "out/m.st"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpunn: error: --save out/m.st: cannot write (No such file or directory)")
    rescue = err.rsplit("the model is saved to ", 1)[1].removesuffix(" instead")
    assert os.path.dirname(rescue) == str(tmp_path) and gpunn.load(rescue, device="cpu").epoch == 5


# ------------------------------------------------------------------ issue 22.9: settings stored in a checkpoint
@pytest.mark.parametrize(
    "key,value,message",
    [
        ("samples", 10**10, "--samples 10000000000 is refused: expected at most 10,000,000 rows"),
        ("samples", -5, "--samples -5 is refused: expected a number >= 1"),
        ("epochs", "abc", "--epochs 'abc' is refused: expected a whole number"),
        ("schedule", "evil", "--schedule 'evil' is refused: expected one of constant, step, cosine, plateau"),
    ],
)
def test_resume_checks_the_stored_training_settings_as_flags(tmp_path, key, value, message):
    r = run("train", "--samples", "50", "--epochs", "2", "--device", "cpu", "-q", "--save", "c.st", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = gpunn.load(tmp_path / "c.st", device="cpu")
    m.metadata["train"][key] = value
    m.save(tmp_path / "c.st")
    r = run("train", "--resume", "c.st", "--device", "cpu", "--save", "d.st", cwd=tmp_path)
    one_line_error(r, f"c.st: the stored training setting {message}")
    assert not (tmp_path / "d.st").exists()


# ------------------------------------------------------------------------------ argument errors: one line
@pytest.mark.parametrize(
    "args,message",
    [
        (["--epochs", "-5"], "gpunn train: error: argument --epochs: expected a number >= 0, got -5"),
        (["--layers", "64,,32"], "gpunn train: error: argument --layers: expected comma-separated integers"),
        (["--test-size", "1"], "argument --test-size: expected a fraction in [0, 1), got 1"),
        (["--validation-split", "0"], "argument --validation-split: expected a fraction in (0, 1), got 0"),
        # was "cannot split 1 rows with test_size 0.5", the validation split worded as the test split
        (
            ["--samples", "10", "--test-size", "0.9", "--validation-split", "0.5"],
            "gpunn: error: --validation-split 0.5 cannot split the 1 training rows left by --test-size 0.9: both parts",
        ),
        (["--samples", "2", "--test-size", "0.2"], "gpunn: error: --test-size 0.2 cannot split the 2 rows: both parts"),
        (["--samples", "100000000000"], "argument --samples: expected at most 10,000,000 rows"),
        (["--output", "bad"], "argument --output: invalid choice: 'bad'"),
        (["--epochs", "0"], "gpunn: error: --epochs 0 trains nothing"),
        (["--delimiter", ";;"], "argument --delimiter: expected one character"),
        (["--delimiter", ";"], "--delimiter needs --data FILE"),
    ],
)
def test_argument_errors_are_one_line_with_exit_2(tmp_path, args, message):
    (tmp_path / "m.st").write_bytes(b"kept")
    r = run("train", "--device", "cpu", "--save", "m.st", *args, cwd=tmp_path)
    one_line_error(r, message)
    assert r.stdout == "" and (tmp_path / "m.st").read_bytes() == b"kept"


# ---------------------------------------------------------------------------------------- --delimiter
def test_delimiter_reads_semicolon_and_tab_files_as_the_comma_file(tmp_path):
    X, y, _ = blobs(150, seed=6)
    write_csv(tmp_path / "comma.csv", X, y)
    write_csv(tmp_path / "semi.csv", X, y, sep=";")
    write_csv(tmp_path / "tab.tsv", X, y, sep="\t")
    common = ["--target", "label", "--layers", "4", "--epochs", "3", "--dtype", "float64", "--device", "cpu", "-q"]
    r = run("train", "--data", "semi.csv", *common, cwd=tmp_path)
    one_line_error(r, "target column 'label' is not in the header (a;b;label)", "delimiter=';'")
    params = []
    for name, extra in (("comma.csv", []), ("semi.csv", ["--delimiter", ";"]), ("tab.tsv", [])):
        r = run("train", "--data", name, *common, *extra, "--save", f"{name}.st", cwd=tmp_path)
        assert r.returncode == 0, (name, r.stderr)
        params.append(gpunn.load(tmp_path / f"{name}.st", device="cpu").params)
    np.testing.assert_array_equal(params[0], params[1])
    np.testing.assert_array_equal(params[0], params[2])
    r = run("predict", "--model", "semi.csv.st", "--data", "semi.csv", "--delimiter", ";", "--device", "cpu",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 151 and "accuracy" in r.stderr, r.stderr


def test_a_checkpoint_that_cannot_be_written_stops_training_and_rescues_the_model(tmp_path, monkeypatch, capsys):
    from gpunn import checkpoint, cli

    real, calls = checkpoint.atomic_write, []

    def fails_third(path, data):
        if os.path.basename(os.fspath(path)) == "c.st":
            calls.append(path)
            if len(calls) == 3:
                raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", fails_third)
    monkeypatch.chdir(tmp_path)
    common = ["train", "--samples", "100", "--epochs", "9", "--device", "cpu", "--dtype", "float64", "-q"]
    assert cli.main([*common, "--checkpoint", "c.st"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(
        "gpunn: error: --checkpoint c.st: cannot write (No space left on device) after epoch 3; the model is saved to "
    )
    rescued = gpunn.load(err.rsplit("the model is saved to ", 1)[1].removesuffix(" instead"), device="cpu")
    assert gpunn.load(tmp_path / "c.st", device="cpu").epoch == 2  # the last checkpoint written stays whole
    # the oracle: the same run stopped after 3 epochs
    assert cli.main([*common[:4], "3", *common[5:], "--save", "ref.st"]) == 0
    ref = gpunn.load(tmp_path / "ref.st", device="cpu")
    assert rescued.epoch == 3
    np.testing.assert_array_equal(rescued.params, ref.params)


def test_label_smoothing_on_a_regression_target_is_refused_before_training(tmp_path):
    # it was dropped silently (the library refuses it for a regression); the tabular preset's 0.1 is its classifiers'
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    write_csv(tmp_path / "values.csv", X, X[:, 0] - 0.5 * X[:, 1])
    r = run("train", "--data", "values.csv", "--target", "label", "--label-smoothing", "0.1", "--epochs", "1",
            "--device", "cpu", "--save", "m.st", cwd=tmp_path)  # fmt: skip
    one_line_error(r, "--label-smoothing trains a classifier", "target 'label' is a regression (output 'identity')")
    assert not (tmp_path / "m.st").exists()
    r = run("train", "--data", "values.csv", "--target", "label", "--epochs", "1", "--device", "cpu", "-q", "--save",
            "m.st", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert gpunn.load(tmp_path / "m.st", device="cpu").label_smoothing == 0.0
