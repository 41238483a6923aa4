"""ONNX export (gpunn.export): the graph, run by onnxruntime, gives what the model gives, and what an independent
NumPy forward pass of the exported weights gives."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

import gpunn
from gpunn import MLP, _backend
from gpunn.errors import ConfigError, NotFittedError
from gpunn.export import DEFAULT_OPSET, GELU_OPSET, MIN_OPSET, onnx_model, to_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ACTIVATIONS = ["relu", "tanh", "sigmoid", "identity", "leaky_relu", "elu", "gelu", "silu", "softplus"]
MIXED = ["gelu", "softplus"]  # one activation per hidden layer
OUTPUTS = {"sigmoid": 1, "multilabel": 3, "softmax": 3, "identity": 2}  # output kind -> output units
N_FEATURES, TRAIN_ROWS, TEST_ROWS = 4, 64, 37  # a batch size the model never trained on


# ----------------------------------------------------------------------------------------- the oracle
# The network's outputs from its (W, b) pairs and scaling, in float64 NumPy, written from the definitions
# (docs/math.md), sharing no code with gpunn.
def _act(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "identity":
        return z
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)
    if name == "elu":
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0.0)))
    if name == "gelu":
        return 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3)))
    if name == "silu":
        return z / (1.0 + np.exp(-z))
    if name == "softplus":
        return np.logaddexp(0.0, z)
    raise AssertionError(name)


def oracle(model: MLP, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities or values) in float64."""
    a = X.astype(np.float64)
    if model.scaling is not None:
        mean, std = model.scaling
        a = (a - mean) / std
    pairs = model.numpy_weights()
    names = [model.activation] * (len(pairs) - 1) if isinstance(model.activation, str) else model.activation
    for (w, b), name in zip(pairs[:-1], names):
        a = _act(name, a @ w.astype(np.float64).T + b)
    w, b = pairs[-1]
    z = a @ w.astype(np.float64).T + b
    if model.output == "sigmoid":
        return z, 1.0 / (1.0 + np.exp(-z))
    if model.output == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return z, e / e.sum(axis=1, keepdims=True)
    if model.target_scaling is not None:  # a standardized target: values in its units
        mean, std = model.target_scaling
        return z, z * std + mean
    return z, z


# ------------------------------------------------------------------------------------------- helpers
def _problem(kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test): features far from zero mean and unit scale, so standardization matters."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(TRAIN_ROWS + TEST_ROWS, N_FEATURES)) * [1.0, 3.0, 0.5, 2.0] + [2.0, -1.0, 0.0, 5.0]
    s = (X - X.mean(axis=0)) / X.std(axis=0)
    score = s @ rng.normal(size=(N_FEATURES, 3))
    if kind == "sigmoid":
        y = (score[:, 0] > 0).astype(np.int64)
    elif kind == "multilabel":
        y = (score > 0).astype(np.int64)
    elif kind == "softmax":
        y = np.argmax(score, axis=1)
    else:
        y = score[:, :2] + 0.1 * rng.normal(size=(len(X), 2))
    return X[:TRAIN_ROWS], y[:TRAIN_ROWS], X[TRAIN_ROWS:]


def _trained(kind: str, activation, dtype: str, standardize: bool, seed: int = 0) -> tuple[MLP, np.ndarray]:
    X, y, X_test = _problem(kind, seed)
    output = "sigmoid" if kind == "multilabel" else kind
    m = MLP([N_FEATURES, 7, 5, OUTPUTS[kind]], activation=activation, output=output, dtype=dtype,
            standardize=standardize, device="cpu", seed=seed)  # fmt: skip
    m.fit(X, y, epochs=15, lr=0.05, optimizer="adam", batch_size=16, verbose=0)
    return m, X_test


def _run(path, X: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"X": X})))


def _tolerance(dtype: str) -> float:
    return 1e-5 if dtype == "float32" else 1e-10


# ------------------------------------------------------------------------------------ the model's outputs
@pytest.mark.parametrize("standardize", [False, True], ids=["raw", "standardized"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", [*ACTIVATIONS, MIXED], ids=[*ACTIVATIONS, "mixed"])
@pytest.mark.parametrize("kind", list(OUTPUTS))
def test_onnxruntime_matches_the_model_and_the_oracle(tmp_path, kind, activation, dtype, standardize):
    m, X_test = _trained(kind, activation, dtype, standardize)
    path = tmp_path / "m.onnx"
    assert to_onnx(m, path) == os.fspath(path)
    X = X_test.astype(dtype)
    got = _run(path, X)
    z, expected = oracle(m, X)
    tol = _tolerance(dtype)
    if kind == "identity":
        assert set(got) == {"values"}  # regression: no label output
        assert got["values"].dtype == np.dtype(dtype) and got["values"].shape == (TEST_ROWS, 2)
        np.testing.assert_allclose(got["values"], _backend.to_numpy(m.predict(X)), rtol=0, atol=tol)
        np.testing.assert_allclose(got["values"], expected, rtol=tol, atol=tol)
        return
    assert set(got) == {"probabilities", "label"}
    proba, label = got["probabilities"], got["label"]
    assert proba.dtype == np.dtype(dtype) and proba.shape == (TEST_ROWS, OUTPUTS[kind])
    np.testing.assert_allclose(proba, _backend.to_numpy(m.predict_proba(X)), rtol=0, atol=tol)
    np.testing.assert_allclose(proba, expected, rtol=0, atol=tol)
    predicted = _backend.to_numpy(m.predict(X))
    assert label.dtype == np.int64 and label.shape == predicted.shape
    np.testing.assert_array_equal(label, predicted)
    # The oracle's labels, where its margin is beyond rounding.
    if kind == "softmax":
        top2 = np.sort(z, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-4
        np.testing.assert_array_equal(label[clear], np.argmax(z, axis=1)[clear])
    else:
        z = z[:, 0] if kind == "sigmoid" else z
        clear = np.abs(z) > 1e-4
        np.testing.assert_array_equal(label[clear], (z > 0).astype(np.int64)[clear])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opset", [MIN_OPSET, GELU_OPSET, 21])
def test_every_opset_gives_the_same_outputs(tmp_path, opset, dtype):
    """From GELU_OPSET on, gelu in float32 is one Gelu node; below it, and in float64 (ONNX attributes are
    float32, and onnxruntime has no float64 Gelu), elementary operators. Every form is gpunn's gelu."""
    m, X_test = _trained("softmax", ["gelu", "leaky_relu"], dtype, True)
    X = X_test.astype(dtype)
    got = _run(to_onnx(m, tmp_path / "m.onnx", opset=opset), X)
    np.testing.assert_allclose(got["probabilities"], oracle(m, X)[1], rtol=0, atol=_tolerance(dtype))
    np.testing.assert_array_equal(got["label"], m.predict(X))
    proto = onnx.load(tmp_path / "m.onnx")
    assert proto.opset_import[0].version == opset
    ops = {n.op_type for n in proto.graph.node}
    assert ("Gelu" in ops) == (opset >= GELU_OPSET and dtype == "float32")
    assert ("LeakyRelu" in ops) == (dtype == "float32")


def test_the_graph_has_a_dynamic_batch_and_one_gemm_per_layer(tmp_path):
    m, X_test = _trained("sigmoid", "relu", "float32", True)
    proto = onnx.load(to_onnx(m, tmp_path / "m.onnx"))
    assert proto.opset_import[0].version == DEFAULT_OPSET
    (x,) = proto.graph.input
    dims = x.type.tensor_type.shape.dim
    assert x.name == "X" and x.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims[0].dim_param == "batch" and dims[1].dim_value == N_FEATURES
    gemms = [n for n in proto.graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 3
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for i, (w, b) in enumerate(m.numpy_weights()):
        np.testing.assert_array_equal(weights[f"layers.{i}.weight"], w)
        np.testing.assert_array_equal(weights[f"layers.{i}.bias"], b)
    assert to_onnx(m, tmp_path / "m.onnx") == os.fspath(tmp_path / "m.onnx")  # replaces the file, whole
    assert os.listdir(tmp_path) == ["m.onnx"]
    for rows in (1, 5, 200):  # any batch size
        X = np.random.default_rng(rows).normal(size=(rows, N_FEATURES)).astype(np.float32)
        got = _run(tmp_path / "m.onnx", X)
        assert got["probabilities"].shape == (rows, 1) and got["label"].shape == (rows,)
        np.testing.assert_array_equal(got["label"], m.predict(X))


def test_small_probabilities_keep_their_relative_precision(tmp_path):
    """The sigmoid output is computed from exp(-|z|), as predict_proba does: sigmoid(-30) = 9.4e-14 is not 0
    (onnxruntime's float32 Sigmoid node gives 0), and no logit overflows."""
    m = MLP([1, 1], output="sigmoid", device="cpu")  # logistic regression: the logit is x
    m.set_weights([(np.array([[1.0]]), np.array([0.0]))])
    X = np.array([[-80.0], [-30.0], [-20.0], [0.0], [20.0], [1e30]], dtype=np.float32)
    p = _run(to_onnx(m, tmp_path / "m.onnx"), X)["probabilities"][:, 0]
    expected = 1.0 / (1.0 + np.exp(-X[:, 0].astype(np.float64)))
    np.testing.assert_allclose(p, expected, rtol=1e-6, atol=0)
    np.testing.assert_allclose(p, m.predict_proba(X)[:, 0], rtol=1e-6, atol=0)
    np.testing.assert_array_equal(_run(tmp_path / "m.onnx", X)["label"], [0, 0, 0, 0, 1, 1])


def test_a_model_on_another_namespace_exports_its_weights(tmp_path, backend):
    X, y, X_test = _problem("softmax")
    m = MLP([N_FEATURES, 6, 3], output="softmax", activation="tanh", dtype="float64", standardize=True,
            **backend.kwargs())  # fmt: skip
    m.fit(X, y, epochs=5, lr=0.1, verbose=0)
    got = _run(to_onnx(m, tmp_path / "m.onnx"), X_test)
    np.testing.assert_allclose(got["probabilities"], _backend.to_numpy(m.predict_proba(X_test)), atol=1e-10)
    np.testing.assert_array_equal(got["label"], _backend.to_numpy(m.predict(X_test)))


def test_a_loaded_model_exports_with_its_names_in_the_metadata(tmp_path):
    m, X_test = _trained("softmax", "relu", "float32", True)
    m.feature_names, m.target_name, m.metadata["classes"] = ["a", "b", "c", "d"], "kind", [3, 5, 7]
    m.save(tmp_path / "m.safetensors")
    loaded = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    proto = onnx_model(loaded)
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props["gpunn.feature_names"] == ["a", "b", "c", "d"] and props["gpunn.classes"] == [3, 5, 7]
    assert props["gpunn.sizes"] == m.sizes and props["gpunn.output"] == "softmax"
    assert proto.producer_name == "gpunn"
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    proba, label = session.run(None, {"X": X_test.astype(np.float32)})
    np.testing.assert_allclose(proba, m.predict_proba(X_test), atol=1e-5)
    # labels a Python user lists in the metadata stay there: the model predicts its indices, and so does label
    np.testing.assert_array_equal(label, m.predict(X_test))
    np.testing.assert_array_equal(label, loaded.predict(X_test))


# ---------------------------------------------------------------------------------------------- errors
def test_an_untrained_model_is_not_exported(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    with pytest.raises(NotFittedError, match="not been trained"):
        to_onnx(MLP([2, 3, 1], device="cpu"), path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.onnx"]


def test_an_unwritable_path_is_an_oserror_naming_it(tmp_path):
    m, _ = _trained("sigmoid", "relu", "float32", False)
    missing = tmp_path / "no" / "such" / "m.onnx"
    with pytest.raises(FileNotFoundError) as info:
        to_onnx(m, missing)
    assert info.value.filename == os.fspath(missing)
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(IsADirectoryError):
        to_onnx(m, tmp_path / "folder.onnx")
    assert sorted(os.listdir(tmp_path)) == ["folder.onnx"]  # no temporary file left behind


def test_bad_options_are_config_errors(tmp_path):
    m, _ = _trained("sigmoid", "relu", "float32", False)
    newest = onnx.defs.onnx_opset_version()
    for opset in (MIN_OPSET - 1, newest + 1, True, 17.0, "17"):
        with pytest.raises(ConfigError, match=f"opset must be an integer from {MIN_OPSET} to {newest}"):
            to_onnx(m, tmp_path / "m.onnx", opset=opset)
    with pytest.raises(ConfigError, match="path must be a file path"):
        to_onnx(m, None)
    with pytest.raises(ConfigError, match="takes a gpunn.MLP; got dict"):
        to_onnx({"sizes": [2, 1]}, tmp_path / "m.onnx")
    m.activation = ["relu", "swish"]  # a name the exporter does not know
    with pytest.raises(ConfigError, match="activation 'swish' of hidden layer 2 has no ONNX form"):
        to_onnx(m, tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_without_onnx_the_error_says_what_to_install(tmp_path, monkeypatch):
    m, _ = _trained("sigmoid", "relu", "float32", False)
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install 'gpunn\[onnx\]'"):
        to_onnx(m, tmp_path / "m.onnx")


# ------------------------------------------------------------------------ class labels, scikit-learn estimators
try:
    from sklearn.exceptions import ConvergenceWarning
except ImportError:  # the scikit-learn tests skip
    ConvergenceWarning = Warning  # type: ignore[misc,assignment]


def _sklearn_oracle(est, X: np.ndarray) -> np.ndarray:
    """The estimator's output layer from its scikit-learn attributes (coefs_ are (in, out)), in float64."""
    a = X.astype(np.float64)
    act = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}[est.activation]
    for w, b in zip(est.coefs_[:-1], est.intercepts_[:-1]):
        a = act(a @ np.asarray(w, dtype=np.float64) + b)
    return a @ np.asarray(est.coefs_[-1], dtype=np.float64) + est.intercepts_[-1]


@pytest.mark.parametrize(
    "labels",
    [np.array(["no", "yes"]), np.array([3, 7, 11]), np.array(["setosa", "versicolor", "virginica"]),
     np.array([-1.0, 2.0])],
    ids=["binary-text", "multiclass-int", "multiclass-text", "binary-float"],
)  # fmt: skip
def test_an_sklearn_classifier_exports_its_classes_and_predict_proba(tmp_path, labels):
    sk = pytest.importorskip("gpunn.sklearn")
    X, _, X_test = _problem("softmax")
    y = labels[np.argmax(X[:, : len(labels)] * [1.0, -1.0, 0.5][: len(labels)], axis=1)]
    est = sk.MLPClassifier(hidden_layer_sizes=(6,), max_iter=40, tol=0.0, n_iter_no_change=40, random_state=0,
                           device="cpu")  # fmt: skip
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    out = _run(est.to_onnx(tmp_path / "clf.onnx"), X_test)
    z = _sklearn_oracle(est, X_test)
    if len(labels) == 2:
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        proba, index = np.stack([1.0 - p, p], axis=1), (z[:, 0] > 0).astype(int)
    else:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        proba, index = e / e.sum(axis=1, keepdims=True), np.argmax(z, axis=1)
    np.testing.assert_allclose(out["probabilities"], proba, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(out["label"].astype(labels.dtype), labels[index])
    np.testing.assert_array_equal(out["label"].astype(labels.dtype), est.predict(X_test))
    assert out["label"].dtype.kind == ("O" if labels.dtype.kind == "U" else labels.dtype.kind)


def test_an_sklearn_multilabel_classifier_and_regressor_export_what_predict_gives(tmp_path):
    sk = pytest.importorskip("gpunn.sklearn")
    X, Y, X_test = _problem("multilabel")
    clf = sk.MLPClassifier(hidden_layer_sizes=(6,), max_iter=40, random_state=0, device="cpu")
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, Y)
    out = _run(clf.to_onnx(tmp_path / "multi.onnx"), X_test)
    z = _sklearn_oracle(clf, X_test)
    np.testing.assert_allclose(out["probabilities"], 1.0 / (1.0 + np.exp(-z)), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(out["label"], (z > 0).astype(np.int64))
    np.testing.assert_array_equal(out["label"], clf.predict(X_test))

    X, T, X_test = _problem("identity")
    reg = sk.MLPRegressor(hidden_layer_sizes=(6,), max_iter=40, random_state=0, device="cpu")
    with pytest.warns(ConvergenceWarning):
        reg.fit(X, T)
    out = _run(reg.to_onnx(tmp_path / "reg.onnx"), X_test)
    np.testing.assert_allclose(out["values"], _sklearn_oracle(reg, X_test), rtol=0, atol=1e-10)
    assert set(out) == {"values"}


def test_an_mlp_exports_named_classes_and_refuses_classes_it_cannot_have(tmp_path):
    m, X_test = _trained("softmax", "relu", "float64", False)
    names = ["low", "mid", "high"]
    out = _run(m.to_onnx(tmp_path / "m.onnx", classes=names), X_test)
    np.testing.assert_array_equal(out["label"], np.array(names)[np.argmax(oracle(m, X_test)[0], axis=1)])
    with pytest.raises(ConfigError, match="must list the model's 3 classes in order; got shape"):
        m.to_onnx(tmp_path / "m.onnx", classes=["a", "b"])
    multi, _ = _trained("multilabel", "relu", "float64", False)
    with pytest.raises(ConfigError, match="single-label classifier; this model's sigmoid output with 3 units"):
        multi.to_onnx(tmp_path / "multi.onnx", classes=["a", "b", "c"])
    sk = pytest.importorskip("gpunn.sklearn")
    from sklearn.exceptions import NotFittedError as SklearnNotFitted

    with pytest.raises(SklearnNotFitted):
        sk.MLPRegressor().to_onnx(tmp_path / "r.onnx")


# ------------------------------------------------------------------------------------------ NaN rows
def _with_bad_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """X with a NaN in one feature, a row of NaN, and +inf and -inf features; and which rows are bad."""
    X = X.copy()
    X[0, 1], X[3, :], X[5, 0], X[8, 3] = np.nan, np.nan, np.inf, -np.inf
    bad = np.zeros(len(X), dtype=bool)
    bad[[0, 3, 5, 8]] = True
    return X, bad


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", list(OUTPUTS))
def test_rows_holding_nan_or_inf_give_nan_label_and_nan_probabilities(tmp_path, kind, dtype):
    """With nan_label, a row with a NaN or infinite feature gets that label and NaN probabilities (values for a
    regression); every other row gives what the oracle gives. Without it, such a row's label is 0."""
    m, X_test = _trained(kind, "tanh", dtype, True)  # tanh saturates: an inf feature can give finite logits
    X, bad = _with_bad_rows(X_test)
    logits, expected = oracle(m, X_test)
    nan_label = float("nan") if kind == "identity" else -1
    out = _run(to_onnx(m, tmp_path / "m.onnx", nan_label=nan_label), X.astype(dtype))
    result = out["values" if kind == "identity" else "probabilities"]
    assert np.isnan(result[bad]).all()
    np.testing.assert_allclose(result[~bad], expected[~bad], rtol=0, atol=_tolerance(dtype))
    if kind != "identity":
        label = out["label"]
        reference = (logits > 0).astype(np.int64) if kind != "softmax" else np.argmax(logits, axis=1)
        reference = reference[:, 0] if kind == "sigmoid" else reference
        assert (label[bad] == -1).all()
        np.testing.assert_array_equal(label[~bad], reference[~bad])
        plain = _run(to_onnx(m, tmp_path / "plain.onnx"), X.astype(dtype))
        assert (plain["label"][[0, 3]] == 0).all()  # the default the docs describe: NaN rows give label 0
        np.testing.assert_array_equal(plain["label"][~bad], reference[~bad])
    meta = onnx.load(tmp_path / "m.onnx").metadata_props
    assert {p.key: json.loads(p.value) for p in meta}["gpunn.nan_label"] == ("NaN" if kind == "identity" else -1)


@pytest.mark.parametrize(
    ("classes", "nan_label"), [(["low", "mid", "high"], "?"), ([0.5, 1.5, 2.5], float("nan")), ([5, 6, 7], -1)]
)
def test_nan_label_with_classes_has_the_labels_type(tmp_path, classes, nan_label):
    m, X_test = _trained("softmax", "relu", "float64", True)
    X, bad = _with_bad_rows(X_test)
    out = _run(to_onnx(m, tmp_path / "m.onnx", classes=classes, nan_label=nan_label), X)
    logits, probabilities = oracle(m, X_test)
    np.testing.assert_array_equal(out["label"][~bad], np.array(classes)[np.argmax(logits, axis=1)][~bad])
    if isinstance(nan_label, float):
        assert np.isnan(out["label"][bad]).all()
    else:
        assert (out["label"][bad] == nan_label).all()
    assert np.isnan(out["probabilities"][bad]).all()
    np.testing.assert_allclose(out["probabilities"][~bad], probabilities[~bad], rtol=0, atol=1e-10)


def test_two_column_binary_probabilities_are_nan_on_flagged_rows(tmp_path):
    m, X_test = _trained("sigmoid", "relu", "float32", True)
    X, bad = _with_bad_rows(X_test)
    out = _run(to_onnx(m, tmp_path / "m.onnx", two_column_binary=True, nan_label=-1), X.astype(np.float32))
    assert out["probabilities"].shape == (len(X), 2) and np.isnan(out["probabilities"][bad]).all()
    p = oracle(m, X_test)[1][:, 0]
    np.testing.assert_allclose(out["probabilities"][~bad], np.stack([1 - p, p], axis=1)[~bad], rtol=0, atol=1e-5)
    assert (out["label"][bad] == -1).all()


def test_a_nan_label_the_model_could_give_or_of_another_type_is_a_config_error(tmp_path):
    m, _ = _trained("softmax", "relu", "float64", False)
    for bad, match in (
        (2, "nan_label=2 is one of the labels the model gives"),
        ("?", "nan_label must be an integer"),
        (1.5, "nan_label must be an integer"),
        (True, "nan_label must be an integer"),
    ):
        with pytest.raises(ConfigError, match=match):
            to_onnx(m, tmp_path / "m.onnx", nan_label=bad)
    with pytest.raises(ConfigError, match="nan_label='c' is one of the labels"):
        to_onnx(m, tmp_path / "m.onnx", classes=["a", "b", "c"], nan_label="c")
    with pytest.raises(ConfigError, match="nan_label must be a string"):
        to_onnx(m, tmp_path / "m.onnx", classes=["a", "b", "c"], nan_label=-1)
    reg, _ = _trained("identity", "relu", "float64", False)
    with pytest.raises(ConfigError, match="regression model .* has no label"):
        to_onnx(reg, tmp_path / "r.onnx", nan_label=-1)
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "r.onnx").exists()


def test_a_graph_is_built_from_weights_and_a_spec_alone(tmp_path):
    """export takes a frozen spec and NumPy weights, no model: checked against a forward pass written here."""
    from gpunn.export import Network
    from gpunn.feed import Spec

    rng = np.random.default_rng(5)
    w1, b1, w2, b2 = rng.normal(size=(4, 3)), rng.normal(size=4), rng.normal(size=(2, 4)), rng.normal(size=2)
    mean, std = rng.normal(size=3), rng.uniform(0.5, 2, 3)
    spec = Spec(np, "cpu", "float64", (3, 4, 2), "softmax", "categorical_crossentropy", "tanh", True, ("a", "b", "c"))
    net = Network(spec, ((w1, b1), (w2, b2)), (mean, std), "kind", ["x", "y"])
    X = rng.normal(size=(7, 3))
    out = _run(to_onnx(net, tmp_path / "net.onnx"), X)
    z = np.tanh((X - mean) / std @ w1.T + b1) @ w2.T + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out["probabilities"], p / p.sum(axis=1, keepdims=True), rtol=1e-10)
    np.testing.assert_array_equal(out["label"], np.argmax(z, axis=1))
    meta = {p.key: p.value for p in pytest.importorskip("onnx").load(tmp_path / "net.onnx").metadata_props}
    assert json.loads(meta["gpunn.feature_names"]) == ["a", "b", "c"] and json.loads(meta["gpunn.classes"]) == [
        "x",
        "y",
    ]


def test_mlp_to_onnx_forwards_nan_label(tmp_path):
    X, y = gpunn.data.make_moons(100, seed=0)
    m = MLP([2, 5, 1], device="cpu", dtype="float64")
    m.fit(X, y, epochs=3, verbose=0)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    out = _run(m.to_onnx(tmp_path / "m.onnx", nan_label=-1), Xn)
    assert out["label"][3] == -1 and (out["label"][np.arange(100) != 3] >= 0).all()


# ------------------------------------------------------------------------------------------- ensembles
TEXT_CLASSES = np.array(["low", "mid", "high"])


def _ensemble(kind: str, members: int, dtype: str = "float32", seed: int = 0) -> tuple[gpunn.Ensemble, np.ndarray]:
    """A standardized ensemble trained a few epochs: a softmax one on text labels, a regression on a target it
    standardizes (its members' values scaled back in the graph)."""
    X, y, X_test = _problem(kind, seed)
    y = TEXT_CLASSES[y] if kind == "softmax" else y
    ens = gpunn.Ensemble([N_FEATURES, 7, 5, OUTPUTS[kind]], members=members, seed=seed, activation="tanh",
                         output="sigmoid" if kind == "multilabel" else kind, dtype=dtype, standardize=True,
                         device="cpu")  # fmt: skip
    ens.fit(X, y, epochs=15, lr=0.05, optimizer="adam", batch_size=16, verbose=0)
    if kind == "identity":
        assert all(m.target_scaling is not None for m in ens.members)
    if kind == "softmax":
        assert list(ens.classes) == sorted(TEXT_CLASSES)
    return ens, X_test


def _members_oracle(ens: gpunn.Ensemble, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every member's logits and outputs from its own weights (the oracle above), (K, n, k) each."""
    pairs = [oracle(m, X) for m in ens.members]
    return np.stack([z for z, _ in pairs]), np.stack([p for _, p in pairs])


@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", list(OUTPUTS))
def test_an_ensemble_graph_gives_the_members_mean_label_and_std(tmp_path, kind, dtype, members):
    ens, X_test = _ensemble(kind, members, dtype)
    path = tmp_path / "e.onnx"
    assert ens.to_onnx(path) == os.fspath(path)
    X = X_test.astype(dtype)
    got = _run(path, X)
    tol = _tolerance(dtype)
    _, each = _members_oracle(ens, X)
    width = OUTPUTS[kind]
    assert got["std"].dtype == np.dtype(dtype) and got["std"].shape == (TEST_ROWS, width)
    np.testing.assert_allclose(got["std"], each.std(axis=0), rtol=0, atol=tol)  # population std, 0 for one member
    if kind == "identity":
        assert set(got) == {"values", "std"}
        mean, std = (_backend.to_numpy(a) for a in ens.predict(X, return_std=True))
        np.testing.assert_allclose(got["values"], mean, rtol=tol, atol=tol)
        np.testing.assert_allclose(got["values"], each.mean(axis=0), rtol=tol, atol=tol)
        np.testing.assert_allclose(got["std"], std, rtol=tol, atol=tol)
        return
    assert set(got) == {"probabilities", "label", "std"}
    proba = got["probabilities"]
    assert proba.dtype == np.dtype(dtype) and proba.shape == (TEST_ROWS, width)
    np.testing.assert_allclose(proba, _backend.to_numpy(ens.predict_proba(X)), rtol=0, atol=tol)
    np.testing.assert_allclose(proba, each.mean(axis=0), rtol=0, atol=tol)
    members_proba = _backend.to_numpy(ens.predict_proba(X, members=True))
    np.testing.assert_allclose(got["std"], members_proba.std(axis=0), rtol=0, atol=tol)
    predicted = _backend.to_numpy(ens.predict(X))
    assert got["label"].shape == predicted.shape
    np.testing.assert_array_equal(got["label"], predicted)
    mean = each.mean(axis=0)  # the oracle's labels, where the mean is beyond rounding
    if kind == "softmax":
        assert got["label"].dtype == object
        top2 = np.sort(mean, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-4
        np.testing.assert_array_equal(got["label"][clear], ens.classes[np.argmax(mean, axis=1)][clear])
    else:
        assert got["label"].dtype == np.int64
        mean = mean[:, 0] if kind == "sigmoid" else mean
        clear = np.abs(mean - 0.5) > 1e-4
        np.testing.assert_array_equal(got["label"][clear], (mean > 0.5).astype(np.int64)[clear])
    if members > 1:  # a spread to show: the members differ
        assert got["std"].max() > 1e-3


def test_an_ensemble_graph_is_one_batched_matmul_per_layer(tmp_path):
    ens, X_test = _ensemble("sigmoid", 3)
    proto = onnx.load(ens.to_onnx(tmp_path / "e.onnx"))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMul") == 3 and "Gemm" not in ops  # three layers, all members in each
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for i in range(3):
        expected = np.stack([m.numpy_weights()[i][0] for m in ens.members])  # (K, out, in)
        np.testing.assert_array_equal(weights[f"layers.{i}.weight_t"], np.swapaxes(expected, 1, 2))
    np.testing.assert_array_equal(weights["scaling.mean"], ens.members[0].scaling[0].astype(np.float32))
    assert weights["scaling.mean"].shape == (N_FEATURES,)  # shared by the members: scaled once
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props["gpunn.members"] == 3 and props["gpunn.sizes"] == ens.sizes
    (x,) = proto.graph.input
    assert x.name == "X" and x.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in proto.graph.output] == ["probabilities", "label", "std"]


@pytest.mark.parametrize("opset", [MIN_OPSET, 18, 21])
def test_an_ensemble_graph_runs_at_every_opset(tmp_path, opset):
    """ReduceMean takes its axes as an input only from opset 18: the graph sums with ReduceSum and divides."""
    ens, X_test = _ensemble("softmax", 3, "float64")
    got = _run(ens.to_onnx(tmp_path / "e.onnx", opset=opset), X_test)
    assert onnx.load(tmp_path / "e.onnx").opset_import[0].version == opset
    np.testing.assert_allclose(got["probabilities"], ens.predict_proba(X_test), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(got["label"], ens.predict(X_test))


def test_members_scaled_apart_are_each_scaled_by_their_own(tmp_path):
    """Members trained alone on different rows standardize differently: the graph scales X once per member."""
    X, y, X_test = _problem("sigmoid")
    members = []
    for k, rows in enumerate((slice(0, 40), slice(24, 64))):
        m = MLP([N_FEATURES, 6, 1], activation="relu", dtype="float64", standardize=True, device="cpu", seed=k)
        m.fit(X[rows], y[rows], epochs=10, lr=0.05, optimizer="adam", verbose=0)
        members.append(m)
    ens = gpunn.Ensemble.from_members(members)
    assert not np.array_equal(members[0].scaling[0], members[1].scaling[0])
    got = _run(ens.to_onnx(tmp_path / "e.onnx"), X_test)
    each = np.stack([oracle(m, X_test)[1] for m in members])
    np.testing.assert_allclose(got["probabilities"], each.mean(axis=0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(got["probabilities"], ens.predict_proba(X_test), rtol=0, atol=1e-10)
    np.testing.assert_allclose(got["std"], each.std(axis=0), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(got["label"], ens.predict(X_test))


def test_regressions_scaled_apart_give_their_values_each_in_its_own_target_units(tmp_path):
    """Members trained alone on targets far apart standardize them apart: each member's values are scaled back by
    its own target scaling, as its own predict scales them."""
    X, T, X_test = _problem("identity")
    members = []
    for k, offset in enumerate((0.0, 100.0)):
        m = MLP([N_FEATURES, 6, 2], output="identity", dtype="float64", standardize=True, device="cpu", seed=k)
        m.fit(X[k * 20 :], T[k * 20 :] + offset, epochs=10, lr=0.05, optimizer="adam", verbose=0)
        members.append(m)
    got = _run(gpunn.Ensemble.from_members(members).to_onnx(tmp_path / "e.onnx"), X_test)
    each = np.stack([m.predict(X_test) for m in members])
    np.testing.assert_allclose(each, np.stack([oracle(m, X_test)[1] for m in members]), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["values"], each.mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["std"], each.std(axis=0), rtol=1e-10, atol=1e-10)
    assert got["std"].min() > 10  # the members are 100 apart


@pytest.mark.parametrize("kind", ["softmax", "identity"])
def test_an_ensemble_flags_rows_holding_nan_or_inf(tmp_path, kind):
    ens, X_test = _ensemble(kind, 3, "float64")
    X, bad = _with_bad_rows(X_test)
    nan_label = float("nan") if kind == "identity" else "?"
    got = _run(ens.to_onnx(tmp_path / "e.onnx", nan_label=nan_label), X)
    _, each = _members_oracle(ens, X_test)
    result = got["values" if kind == "identity" else "probabilities"]
    assert np.isnan(result[bad]).all() and np.isnan(got["std"][bad]).all()
    np.testing.assert_allclose(result[~bad], each.mean(axis=0)[~bad], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["std"][~bad], each.std(axis=0)[~bad], rtol=1e-10, atol=1e-10)
    if kind == "softmax":
        assert (got["label"][bad] == "?").all()
        np.testing.assert_array_equal(got["label"][~bad], ens.predict(X_test[~bad]))


def test_ensemble_network_takes_a_list_of_members_that_agree(tmp_path):
    from gpunn.export import EnsembleNetwork, ensemble_network

    ens, X_test = _ensemble("sigmoid", 3, "float64")
    two = ensemble_network(ens.members[1:])  # any of the members: the graph averages those
    assert isinstance(two, EnsembleNetwork) and two.members == 2 and two.weights[0][0].shape == (2, 7, N_FEATURES)
    got = _run(to_onnx(two, tmp_path / "two.onnx"), X_test)
    each = np.stack([oracle(m, X_test)[1] for m in ens.members[1:]])
    np.testing.assert_allclose(got["probabilities"], each.mean(axis=0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(got["std"], each.std(axis=0), rtol=0, atol=1e-10)
    other = MLP([N_FEATURES, 3, 1], dtype="float64", device="cpu")
    other.fit(X_test, np.arange(TEST_ROWS) % 2, epochs=1, verbose=0)
    for members, error, match in (
        ([], ConfigError, "a non-empty list of trained gpunn.MLP members"),
        (ens, ConfigError, "a non-empty list"),
        ([ens.members[0], other], ConfigError, "member 1 has sizes"),
        ([ens.members[0], ens], ConfigError, "member 1 is an ensemble"),
        ([ens.members[0], MLP([N_FEATURES, 7, 5, 1], device="cpu")], NotFittedError, "member 1 has not been trained"),
    ):
        with pytest.raises(error, match=match):
            ensemble_network(members)
    with pytest.raises(NotFittedError, match="this Ensemble has not been trained"):
        gpunn.Ensemble([2, 3, 1], members=2, device="cpu").to_onnx(tmp_path / "u.onnx")
    assert sorted(os.listdir(tmp_path)) == ["two.onnx"]


def test_gpunn_export_writes_an_ensemble_file_as_one_graph(tmp_path):
    from gpunn_in_process import run  # the command's file and output, without an interpreter's start

    ens, X_test = _ensemble("softmax", 3)
    ens.save(tmp_path / "e.safetensors")
    r = run("export", "--model", "e.safetensors", "--onnx", "e.onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "outputs probabilities, label, std; 3 members" in r.stdout
    got = _run(tmp_path / "e.onnx", X_test.astype(np.float32))
    loaded = gpunn.load(tmp_path / "e.safetensors", device="cpu")
    _, each = _members_oracle(loaded, X_test)
    np.testing.assert_allclose(got["probabilities"], ens.predict_proba(X_test), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["std"], each.std(axis=0), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got["label"], ens.predict(X_test))
    assert set(got["label"]) <= set(TEXT_CLASSES)


def test_an_ensemble_graph_leaves_out_a_member_that_diverged(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = np.c_[X[:, 0] * X[:, 1], np.sin(X[:, 2])]
    ens = gpunn.Ensemble([3, 8, 2], members=3, seed=0, output="identity", device="cpu", dtype="float64")
    with pytest.warns(RuntimeWarning, match="member 1"):
        ens.fit(X, y, epochs=30, lr=[0.05, 3.0, 0.05], verbose=0)
    ens.to_onnx(tmp_path / "e.onnx")
    out = _run(tmp_path / "e.onnx", X)
    values = [np.asarray(m.predict(X)) for k, m in enumerate(ens.members) if k != 1]  # the oracle: members 0 and 2
    np.testing.assert_allclose(out["values"], np.mean(values, axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["std"], np.std(values, axis=0), rtol=1e-9, atol=1e-9)
