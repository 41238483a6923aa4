"""What MLP makes of its targets (issues 20.4, 21.5, 21.6 and 21's hidden=): any class labels kept as
``classes`` and given back by ``predict``; no probabilities from a regression; a standardized regression target;
input and output widths inferred on the first fit."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import safetensors
import safetensors.numpy
from gpunn_in_process import run  # the command's files and status, without an interpreter's start per call

import gpunn
from gpunn import checkpoint

KW = dict(epochs=20, lr=0.2, verbose=0)


def _weights(m):
    return [np.asarray(a).copy() for pair in m.weights for a in pair]


def _same_weights(a, b):
    for wa, wb in zip(_weights(a), _weights(b), strict=True):
        np.testing.assert_array_equal(wa, wb)


def _problem(n=150, k=3, seed=0):
    """Features and a class index 0..k-1 per row (the regions of a random linear map)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, np.argmax(X @ rng.normal(size=(4, k)), axis=1)


def _rewrite_config(path, edit):
    """The checkpoint at ``path`` with its JSON description changed by ``edit`` (and a matching checksum)."""
    with safetensors.safe_open(os.fspath(path), "numpy") as f:
        meta = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    config = json.loads(meta["gpunn"])
    edit(config)
    meta["gpunn"] = json.dumps(config, sort_keys=True)
    meta["sha256"] = checkpoint._digest(meta["gpunn"], tensors)
    with open(path, "wb") as f:
        f.write(safetensors.numpy.save(tensors, metadata=meta))


# ------------------------------------------------------------------------------- 20.4: any class labels
@pytest.mark.parametrize(
    "labels",
    [np.array(["setosa", "versicolor", "virginica"], dtype=object), np.array([3, 7, 1000]), np.array([-1.5, 0.0, 2.5])],
    ids=["strings", "sparse-integers", "floats"],
)
def test_labels_train_as_their_sorted_indices_and_predict_gives_them_back(labels):
    X, index = _problem()
    y = labels[index]
    m = gpunn.MLP([4, 8, 3], output="softmax", device="cpu", dtype="float64", seed=1)
    m.fit(X, y, **KW)
    oracle = gpunn.MLP([4, 8, 3], output="softmax", device="cpu", dtype="float64", seed=1)
    oracle.fit(X, index, **KW)  # the same labels given as the indices of their sorted order
    _same_weights(m, oracle)
    assert m.classes.tolist() == sorted(labels.tolist())
    predicted = m.predict(X)
    assert isinstance(predicted, np.ndarray)
    np.testing.assert_array_equal(predicted, labels[np.asarray(oracle.predict(X))])
    assert m.evaluate(X, y) == oracle.evaluate(X, index)
    # a later fit and validation data take the same labels
    m.fit(X, y, epochs=2, lr=0.2, verbose=0, validation_data=(X[:30], y[:30]))
    oracle.fit(X, index, epochs=2, lr=0.2, verbose=0, validation_data=(X[:30], index[:30]))
    assert m.history.val_loss == oracle.history.val_loss and len(m.history.val_loss) == 2
    _same_weights(m, oracle)


def test_binary_string_labels_and_class_weight_by_label():
    X, index = _problem(k=2)
    y = np.where(index == 1, "yes", "no")
    m = gpunn.MLP([4, 6, 1], device="cpu", dtype="float64", seed=3)
    m.fit(X, y, class_weight={"yes": 3.0}, **KW)
    oracle = gpunn.MLP([4, 6, 1], device="cpu", dtype="float64", seed=3)
    oracle.fit(X, index, sample_weight=np.where(index == 1, 3.0, 1.0), **KW)
    _same_weights(m, oracle)
    np.testing.assert_array_equal(m.predict(X), np.where(np.asarray(oracle.predict(X)) == 1, "yes", "no"))
    with pytest.raises(gpunn.ConfigError, match=r"class_weight key 1 is not a label of this model \(\['no', 'yes'\]\)"):
        m.fit(X, y, class_weight={1: 2.0}, **KW)


def test_plain_index_labels_keep_todays_integer_predictions():
    X, y = _problem()
    m = gpunn.MLP([4, 8, 3], output="softmax", device="cpu", seed=1)
    m.fit(X, y, **KW)
    assert m.classes.tolist() == [0, 1, 2]
    predicted = m.predict(X)
    assert predicted.dtype.kind == "i"
    np.testing.assert_array_equal(predicted, np.argmax(np.asarray(m.decision_function(X)), axis=1))
    two = gpunn.MLP([4, 8, 3], output="softmax", device="cpu", seed=1)
    two.fit(X, np.minimum(y, 1), **KW)  # labels 0 and 1 of three outputs: still indices
    assert two.classes.tolist() == [0, 1, 2]


def test_an_unknown_label_is_named_and_nothing_changes():
    X, index = _problem()
    names = np.array(["a", "b", "c"])
    m = gpunn.MLP([4, 8, 3], output="softmax", device="cpu", seed=1)
    m.fit(X, names[index], **KW)
    before, epoch = _weights(m), m.epoch
    bad = names[index].copy()
    bad[7] = "d"
    for call in (
        lambda: m.fit(X, bad, **KW),
        lambda: m.fit(X, names[index], validation_data=(X, bad), **KW),
        lambda: m.evaluate(X, bad),
    ):
        with pytest.raises(gpunn.InputError, match=r"holds label 'd' at row 7, which is not one of the model's "
                           r"classes \['a', 'b', 'c'\]"):  # fmt: skip
            call()
    assert m.epoch == epoch
    for a, b in zip(before, _weights(m)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(gpunn.InputError, match=rf"holds label {index[0]} at row 0, which is not one of"):
        m.evaluate(X, index)  # indices are not the labels 'a', 'b', 'c'


def test_labels_that_do_not_fit_the_output_layer_are_refused():
    X, index = _problem()
    with pytest.raises(gpunn.InputError, match=r"y holds 3 classes \['a', 'b', 'c'\], but the model's sigmoid output "
                       r"with 1 output unit\(s\) takes 2; use output='softmax'"):  # fmt: skip
        gpunn.MLP([4, 8, 1], device="cpu").fit(X, np.array(["a", "b", "c"])[index], **KW)
    with pytest.raises(gpunn.InputError, match=r"y holds a single class \('a'\)"):
        gpunn.MLP([4, 8, 1], device="cpu").fit(X, np.full(len(X), "a"), **KW)
    with pytest.raises(gpunn.InputError, match=r"mixes labels of types int, str"):
        gpunn.MLP([4, 8, 1], device="cpu").fit(X, np.array(["a", 1] * 75, dtype=object), **KW)
    # bytes labels trained, then save() failed with json's "Object of type bytes is not JSON serializable"
    for labels in (np.array([b"no", b"yes"]), np.array([b"no", b"yes"], dtype=object)):
        m = gpunn.MLP(hidden=[8], device="cpu")
        with pytest.raises(gpunn.InputError, match=r"^y has dtype (\|S3|object); class labels must be numbers or "
                           r"strings \(decode bytes with y.astype\(str\)\)$"):  # fmt: skip
            m.fit(X, labels[index % 2], **KW)
        assert m.sizes is None and m.classes is None and m.epoch == 0


def test_a_fitted_classifier_trains_on_a_batch_of_one_class():
    """A first fit must see two classes (it learns them); a later fit knows them and takes a batch of one class,
    as online learning does one row at a time: its full-batch SGD step equals the step computed here in NumPy
    (tanh hidden layer, sigmoid output, mean binary cross-entropy)."""
    X, index = _problem(k=2)
    labels = np.array(["no", "yes"])[index]
    m = gpunn.MLP([4, 5, 1], activation="tanh", device="cpu", dtype="float64", seed=0)
    initial = _weights(m)
    with pytest.raises(gpunn.InputError, match=r"y holds a single class \('yes'\)"):
        m.fit(X, np.full(len(X), "yes"), **KW)
    assert m.classes is None and not m.fitted
    for a, b in zip(_weights(m), initial, strict=True):
        np.testing.assert_array_equal(a, b)
    m.fit(X, labels, **KW)
    (W1, b1), (W2, b2) = m.numpy_weights()
    rows = X[:3]
    m.fit(rows, np.array(["yes"] * 3), epochs=1, lr=0.5, verbose=0)
    h = np.tanh(rows @ W1.T + b1)
    p = 1 / (1 + np.exp(-(h @ W2.T + b2)))
    d2 = (p - 1) / 3  # target 1 ("yes"), the mean over 3 rows
    dh = (d2 @ W2) * (1 - h**2)
    expected = [W1 - 0.5 * dh.T @ rows, b1 - 0.5 * dh.sum(0), W2 - 0.5 * d2.T @ h, b2 - 0.5 * d2.sum(0)]
    for got, want in zip([a for pair in m.numpy_weights() for a in pair], expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    k3 = gpunn.MLP([4, 6, 3], output="softmax", device="cpu", seed=0)
    k3.fit(X, _problem(k=3)[1], **KW)
    before = k3.predict_proba(X[:1])[0, 2]
    k3.fit(X[:1], np.array([2]), epochs=1, lr=0.5, verbose=0)  # one row, one class: a step towards it
    assert k3.predict_proba(X[:1])[0, 2] > before


def test_classes_are_saved_and_validated_against_the_outputs(tmp_path):
    X, index = _problem()
    y = np.array(["x", "y", "z"])[index]
    m = gpunn.MLP([4, 8, 3], output="softmax", device="cpu", seed=1)
    m.fit(X, y, **KW)
    path = tmp_path / "m.safetensors"
    m.save(path)
    for again in (gpunn.load(path, device="cpu"), pickle.loads(pickle.dumps(m))):
        assert again.classes.tolist() == ["x", "y", "z"]
        np.testing.assert_array_equal(again.predict(X), m.predict(X))
        again.fit(X, y, epochs=1, verbose=0)  # continues with the same labels
    _rewrite_config(path, lambda c: c.update(classes=["x", "y"]))
    with pytest.raises(gpunn.CheckpointError, match=r"invalid model description: classes is \['x', 'y'\]; the model's "
                       r"softmax output with 3 unit\(s\) has 3"):  # fmt: skip
        gpunn.load(path, device="cpu")


def test_a_checkpoint_and_a_pickle_from_before_classes_load_as_indices(tmp_path):
    X, y = _problem()
    m = gpunn.MLP([4, 8, 3], output="softmax", device="cpu", seed=1, standardize=True)
    m.fit(X, y, **KW)
    path = tmp_path / "old.safetensors"
    m.save(path)
    _rewrite_config(path, lambda c: [c.pop("classes"), c.pop("target_scaling")])
    old = gpunn.load(path, device="cpu")
    assert old.classes is None
    np.testing.assert_array_equal(old.predict(X), m.predict(X))
    state = m.__getstate__()
    config, _ = state["state_map"]
    del config["classes"], config["target_scaling"]
    unpickled = object.__new__(gpunn.MLP)
    unpickled.__setstate__(state)
    assert unpickled.classes is None and unpickled.target_scaling is None
    np.testing.assert_array_equal(unpickled.predict(X), m.predict(X))


def test_a_cli_model_holds_its_text_labels_and_predicts_them_in_python(tmp_path):
    X, index = _problem(n=120)
    names = np.array(["no", "yes"])
    rows = ["a,b,c,d,label"] + [",".join(map(str, x)) + f",{names[i]}" for x, i in zip(X, index % 2)]
    (tmp_path / "f.csv").write_text("\n".join(rows) + "\n")
    r = run("train", "--data", "f.csv", "--target", "label", "--epochs", "5", "--device", "cpu", "-q", "--save",
            "m.st", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run("predict", "--model", "m.st", "--data", "f.csv", "--out", "p.csv", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = [line.split(",") for line in (tmp_path / "p.csv").read_text().splitlines()[1:]]
    expected = names[(np.array([float(p) for _, p in written]) > 0.5).astype(int)]  # P(yes) above a half: yes
    assert [label for label, _ in written] == expected.tolist()
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    assert m.classes.tolist() == ["no", "yes"] and m.predict(X.astype(np.float32)).tolist() == expected.tolist()


def test_a_cli_file_from_before_models_held_labels_predicts_its_labels(tmp_path):
    # gpunn train used to fit the labels' indices and list the labels in the metadata only
    X, index = _problem(n=120, k=2)
    m = gpunn.MLP([4, 6, 1], seed=3, device="cpu")
    m.fit(X, index, epochs=5, verbose=0)
    m.metadata["train"], m.metadata["classes"] = {"epochs": 5, "data": "f.csv"}, ["no", "yes"]  # as gpunn train
    indices = np.asarray(m.predict(X))
    for held in (None, [0, 1]):  # files before classes existed, and files whose model held the indices
        m.classes = None if held is None else np.asarray(held)
        m.save(tmp_path / "old.st")
        loaded = gpunn.load(tmp_path / "old.st", device="cpu")
        assert loaded.classes.tolist() == ["no", "yes"]
        assert loaded.predict(X).tolist() == np.array(["no", "yes"])[indices].tolist()
    m.classes, m.metadata["classes"] = None, ["b", "a"]  # labels the model cannot hold (unsorted): kept aside
    m.save(tmp_path / "odd.st")
    assert gpunn.load(tmp_path / "odd.st", device="cpu").classes is None


def test_labels_a_user_keeps_in_the_metadata_change_nothing_through_save_pickle_or_copy(tmp_path):
    import copy

    X, index = _problem(n=120, k=2)
    m = gpunn.MLP([4, 6, 1], seed=3, device="cpu")
    m.fit(X, index, epochs=3, verbose=0)
    m.metadata["classes"] = ["neg", "pos"]  # the user's own note: the model was fitted on 0/1
    indices = np.asarray(m.predict(X))
    assert set(indices.tolist()) == {0, 1}
    m.save(tmp_path / "m.st")
    for other in (gpunn.load(tmp_path / "m.st", device="cpu"), pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert other.classes.tolist() == [0, 1] and other.metadata["classes"] == ["neg", "pos"]
        np.testing.assert_array_equal(np.asarray(other.predict(X)), indices)
        other.fit(X, index, epochs=1, verbose=0)  # it still takes the indices it was fitted on


# ------------------------------------------------------------------------------ 21.5: no probabilities of values
def test_predict_proba_of_a_regression_is_a_config_error():
    X, _ = _problem()
    m = gpunn.MLP([4, 8, 1], output="identity", device="cpu")
    m.fit(X, X[:, 0], epochs=2, verbose=0)
    with pytest.raises(gpunn.ConfigError, match=r"^predict_proba gives class probabilities; this model is a "
                       r"regression \(output 'identity'\): use predict$"):  # fmt: skip
        m.predict_proba(X)


# ----------------------------------------------------------------------- 21.6: a standardized regression target
def test_a_standardized_target_trains_as_the_standardized_problem_and_predicts_in_its_units():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)) * [1.0, 10.0, 100.0] + 50
    Y = np.column_stack([X @ [1.0, 0.2, 0.01] * 30 + 6000, -0.001 * X[:, 2] + 2])  # far from zero, unlike scales
    kw = dict(epochs=30, lr=0.05, optimizer="adam", batch_size=32, verbose=0)
    m = gpunn.MLP([3, 8, 2], output="identity", standardize=True, device="cpu", dtype="float64", seed=4)
    m.fit(X, Y, **kw)
    mean, std = Y.mean(axis=0), Y.std(axis=0)
    np.testing.assert_allclose(m.target_scaling[0], mean, rtol=1e-12)
    np.testing.assert_allclose(m.target_scaling[1], std, rtol=1e-12)
    # the oracle: a plain model trained on inputs and targets standardized here
    oracle = gpunn.MLP([3, 8, 2], output="identity", device="cpu", dtype="float64", seed=4)
    h = oracle.fit((X - X.mean(axis=0)) / X.std(axis=0), (Y - mean) / std, **kw)
    for a, b in zip(_weights(m), _weights(oracle)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.history.loss, h.loss, rtol=1e-9)  # History: the loss trained, standardized
    z = np.asarray(oracle.predict((X - X.mean(axis=0)) / X.std(axis=0)))
    predicted = np.asarray(m.predict(X))
    np.testing.assert_allclose(predicted, z * std + mean, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(m.decision_function(X)), z, rtol=1e-9, atol=1e-12)
    # evaluate: the MSE in the target's units
    assert m.evaluate(X, Y)["loss"] == pytest.approx(np.mean((predicted - Y) ** 2), rel=1e-9)


def test_a_standardized_target_is_saved_validated_and_scaled_back_after_loading(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 3))
    y = X @ [3.0, -2.0, 1.0] * 40 + 500
    m = gpunn.MLP([3, 6, 1], output="identity", standardize=True, device="cpu", seed=2)
    m.fit(X, y, epochs=10, verbose=0)
    path = tmp_path / "r.safetensors"
    m.save(path)
    for again in (gpunn.load(path, device="cpu"), pickle.loads(pickle.dumps(m))):
        np.testing.assert_array_equal(again.target_scaling[1], m.target_scaling[1])
        np.testing.assert_array_equal(again.predict(X), m.predict(X))
    _rewrite_config(path, lambda c: c.update(target_scaling=[[500.0], [0.0]]))
    with pytest.raises(gpunn.CheckpointError, match=r"target_scaling scale of output 0 is 0.0; it must be a finite "
                       r"number > 0"):  # fmt: skip
        gpunn.load(path, device="cpu")


def test_a_regression_saved_before_target_scaling_resumes_in_raw_units(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(80, 3))
    y = X @ [1.0, 2.0, 3.0] + 10
    m = gpunn.MLP([3, 5, 1], output="identity", standardize=True, device="cpu", dtype="float64", seed=1)
    m.fit(X, y, epochs=3, verbose=0)
    path = tmp_path / "old.safetensors"
    m.save(path)
    _rewrite_config(path, lambda c: c.pop("target_scaling"))  # as gpunn wrote it before
    old = gpunn.load(path, device="cpu")
    old.fit(X, y, epochs=2, verbose=0)
    assert old.target_scaling is None  # its weights were trained on the raw target: no new scale mid-training
    np.testing.assert_array_equal(np.asarray(old.predict(X)), np.asarray(old.decision_function(X)))


def test_a_plain_model_leaves_its_target_alone():
    X, _ = _problem()
    m = gpunn.MLP([4, 6, 1], output="identity", device="cpu", dtype="float64")
    m.fit(X, X[:, :1] * 100, epochs=2, verbose=0)
    assert m.target_scaling is None
    np.testing.assert_array_equal(np.asarray(m.predict(X)), np.asarray(m.decision_function(X)))


def test_diabetes_learns_in_python_and_through_the_cli(tmp_path):
    datasets = pytest.importorskip("sklearn.datasets")
    metrics = pytest.importorskip("sklearn.metrics")
    frame = datasets.load_diabetes(as_frame=True, scaled=False).frame
    X, y = frame.drop(columns="target").to_numpy(), frame["target"].to_numpy()
    X_train, X_test, y_train, y_test = gpunn.data.train_test_split(X, y, test_size=0.2, seed=0)
    m = gpunn.MLP([10, 16, 1], output="identity", standardize=True, device="cpu", seed=0)
    m.fit(X_train, y_train, epochs=200, lr=0.1, verbose=0)  # the default SGD, full batch
    predicted = np.asarray(m.predict(X_test))[:, 0]
    assert metrics.r2_score(y_test, predicted) > 0.3  # a constant predictor scores <= 0
    assert m.evaluate(X_test, y_test)["loss"] == pytest.approx(metrics.mean_squared_error(y_test, predicted), rel=1e-5)
    frame.to_csv(tmp_path / "diabetes.csv", index=False)
    r = run("train", "--data", "diabetes.csv", "--target", "target", "--output", "identity", "--epochs", "200",
            "--device", "cpu", "-q", "--save", "m.st", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli = gpunn.load(tmp_path / "m.st", device="cpu")
    X, y, _, _ = gpunn.data.read(tmp_path / "diabetes.csv", target="target", dtype="float32")
    _, X_test, _, y_test = gpunn.data.train_test_split(X, y, test_size=0.2, seed=0)
    assert metrics.r2_score(y_test, np.asarray(cli.predict(X_test))[:, 0]) > 0.3


# ------------------------------------------------------------------------------------ 21: MLP(hidden=...)
@pytest.mark.parametrize(
    "output,make_y,width",
    [
        ("sigmoid", lambda idx: idx % 2, 1),
        ("sigmoid", lambda idx: np.column_stack([idx % 2, idx // 2]), 2),
        ("softmax", lambda idx: idx, 3),
        ("softmax", lambda idx: np.array(["p", "q", "r"])[idx], 3),
        ("identity", lambda idx: idx.astype(float), 1),
        ("identity", lambda idx: np.column_stack([idx, -idx, 2 * idx]).astype(float), 3),
    ],
)
def test_hidden_infers_the_widths_and_equals_the_full_sizes_bit_for_bit(output, make_y, width):
    X, idx = _problem()
    y = make_y(idx)
    kw = dict(epochs=5, lr=0.05, batch_size=32, optimizer="adam", verbose=0)
    inferred = gpunn.MLP(hidden=[10, 10], output=output, seed=7, device="cpu")
    h = inferred.fit(X, y, **kw)
    assert inferred.sizes == [4, 10, 10, width]
    full = gpunn.MLP([4, 10, 10, width], output=output, seed=7, device="cpu")
    full.fit(X, y, **kw)
    _same_weights(inferred, full)
    assert h.loss == full.history.loss


def test_hidden_before_fit_has_no_weights_and_a_refused_first_fit_keeps_it_so():
    X, y = _problem(k=2)
    m = gpunn.MLP(hidden=[5], seed=1, device="cpu")
    assert m.sizes is None and "hidden=[5]" in repr(m)
    pairs = [(np.zeros((5, 4)), np.zeros(5)), (np.zeros((1, 5)), np.zeros(1))]
    for call in (lambda: m.predict(X), lambda: m.weights, lambda: m.evaluate(X, y), lambda: m.set_weights(pairs)):
        with pytest.raises(gpunn.NotFittedError, match=r"MLP\(hidden=\[5\]\) has no weights yet"):
            call()
    with pytest.raises(gpunn.InputError, match="X has 150 rows but y has 149"):
        m.fit(X, y[:-1], epochs=1, verbose=0)
    assert m.sizes is None
    with pytest.raises(gpunn.InputError, match="X must be 2-D"):
        m.fit(X[:, 0], y, epochs=1, verbose=0)
    m.fit(X[:, :3], y, epochs=1, verbose=0)  # another width after a refusal
    assert m.sizes == [3, 5, 1]
    with pytest.raises(gpunn.ConfigError, match="not both"):
        gpunn.MLP([4, 1], hidden=[3])
    with pytest.raises(gpunn.ConfigError, match="not neither"):
        gpunn.MLP()
    with pytest.raises(gpunn.ConfigError, match="one name per hidden layer"):
        gpunn.MLP(hidden=[4, 4], activation=["relu"])


def test_gpunn_predict_writes_the_labels_of_a_model_trained_in_python(tmp_path):
    X, index = _problem(n=60)
    names = np.array(["low", "mid", "high"])
    m = gpunn.MLP(hidden=[6], output="softmax", device="cpu", seed=0)
    m.fit(X, names[index], epochs=5, verbose=0)
    m.save(tmp_path / "m.st")
    rows = ["a,b,c,d"] + [",".join(map(str, x)) for x in X]
    (tmp_path / "f.csv").write_text("\n".join(rows) + "\n")
    r = run("predict", "--model", "m.st", "--data", "f.csv", "--out", "p.csv", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = (tmp_path / "p.csv").read_text().splitlines()
    assert written[0] == "prediction,p_high,p_low,p_mid"  # the classes in sorted order
    assert [line.split(",")[0] for line in written[1:]] == m.predict(X.astype(np.float32)).tolist()


def test_gpunn_predict_writes_sparse_integer_labels_of_a_model_trained_in_python(tmp_path):
    X, index = _problem(n=60)
    labels = np.array([0, 5, 1000])
    m = gpunn.MLP(hidden=[6], output="softmax", device="cpu", seed=0)
    m.fit(X, labels[index], epochs=5, verbose=0)
    m.save(tmp_path / "m.st")
    rows = ["a,b,c,d"] + [",".join(map(str, x)) for x in X]
    (tmp_path / "f.csv").write_text("\n".join(rows) + "\n")
    r = run("predict", "--model", "m.st", "--data", "f.csv", "--out", "p.csv", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = (tmp_path / "p.csv").read_text().splitlines()
    assert written[0] == "prediction,p_0,p_5,p_1000"
    assert [int(line.split(",")[0]) for line in written[1:]] == m.predict(X.astype(np.float32)).tolist()


def test_a_streamed_dataset_standardizes_its_target_as_memory_does(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(5)
    X = rng.normal(size=(120, 3)).astype(np.float32)
    y = (X @ [2.0, -1.0, 0.5] * 80 + 3000).astype(np.float64)
    columns = {f"x{j}": X[:, j] for j in range(3)}
    pq.write_table(pa.table({**columns, "y": y}), tmp_path / "r.parquet")
    streamed = gpunn.MLP(hidden=[6], output="identity", standardize=True, device="cpu", seed=3)
    streamed.fit(gpunn.data.Dataset(tmp_path / "r.parquet", target="y"), epochs=20, verbose=0)
    memory = gpunn.MLP(hidden=[6], output="identity", standardize=True, device="cpu", seed=3)
    memory.fit(X, y, epochs=20, verbose=0)
    np.testing.assert_allclose(streamed.target_scaling[0], [y.mean()], rtol=1e-12)
    np.testing.assert_allclose(streamed.history.loss, memory.history.loss, rtol=1e-5)
    loss = streamed.evaluate(gpunn.data.Dataset(tmp_path / "r.parquet", target="y"))["loss"]
    assert loss == pytest.approx(np.mean((np.asarray(streamed.predict(X))[:, 0] - y) ** 2), rel=1e-5)
