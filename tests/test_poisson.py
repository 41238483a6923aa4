"""Poisson regression (output "exp", loss "poisson"): the loss against the deviance written here, training in
MLP, Ensemble, checkpoints, ONNX, the command line and gpunn.sklearn against scikit-learn's own MLPRegressor.
(The gradient against float64 finite differences on every namespace is in test_gradients.py.)"""

from __future__ import annotations

import importlib.util
import json

import gpunn_in_process  # the command's files and output, without an interpreter's start per call
import numpy as np
import pytest

import gpunn
from gpunn import _backend
from gpunn.errors import CheckpointError, ConfigError, InputError


def deviance(y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Each element's Poisson deviance 2 (y log(y / mu) - y + mu), with 0 log 0 = 0, in float64."""
    y, mu = np.asarray(y, np.float64), np.asarray(mu, np.float64)
    safe = np.where(y > 0, y, 1.0)
    return 2.0 * (np.where(y > 0, y * np.log(safe / mu), 0.0) - y + mu)


def forward(model: gpunn.MLP, X: np.ndarray) -> np.ndarray:
    """The network's logits from its weights, in float64 NumPy (relu hidden layers)."""
    a = np.asarray(X, np.float64)
    pairs = model.numpy_weights()
    for w, b in pairs[:-1]:
        a = np.maximum(a @ w.T + b, 0.0)
    w, b = pairs[-1]
    return a @ w.T + b


def counts(n=120, k=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    rate = np.exp(0.6 * X[:, :1] - 0.3 * X[:, 1:2] + 0.5 + 0.2 * np.arange(k))
    return X, rng.poisson(rate).astype(np.float64)


def test_the_default_loss_of_an_exp_output_is_poisson_and_other_pairs_are_refused():
    assert gpunn.MLP([3, 1], output="exp").loss == "poisson"
    with pytest.raises(ConfigError, match="exp\\+poisson"):
        gpunn.MLP([3, 1], output="identity", loss="poisson")
    with pytest.raises(ConfigError, match="cannot be trained"):
        gpunn.MLP([3, 1], output="exp", loss="mse")


@pytest.mark.parametrize("k", [1, 2])
def test_predict_is_exp_of_the_logits_and_evaluate_the_mean_deviance(k):
    X, y = counts(k=k)
    m = gpunn.MLP([3, 6, k], output="exp", dtype="float64", device="cpu", seed=2)
    history = m.fit(X, y, epochs=5, lr=0.05, batch_size=None, verbose=0)
    mu = np.exp(forward(m, X))
    np.testing.assert_allclose(_backend.to_numpy(m.predict(X)), mu, rtol=1e-13)
    assert m.evaluate(X, y)["loss"] == pytest.approx(float(np.mean(deviance(y, mu))), rel=1e-12)
    assert set(m.evaluate(X, y)) == {"loss"} and history.accuracy == []
    with pytest.raises(ConfigError, match="regression"):
        m.predict_proba(X)
    if k == 1:
        from sklearn.metrics import mean_poisson_deviance

        assert m.evaluate(X, y)["loss"] == pytest.approx(mean_poisson_deviance(y[:, 0], mu[:, 0]), rel=1e-12)


def test_the_training_loss_is_the_mean_deviance_at_the_weights_of_the_step():
    """One full-batch step: History's loss is the deviance of the initial weights, the update SGD's on its gradient
    2 (mu - y) / (n k) backpropagated (checked through the loss after the step against the reference)."""
    X, y = counts(k=2)
    m = gpunn.MLP([3, 5, 2], output="exp", dtype="float64", device="cpu", seed=4)
    before = np.mean(deviance(y, np.exp(forward(m, X))))
    m.fit(X, y, epochs=1, lr=0.01, batch_size=None, verbose=0)
    assert m.history.loss[0] == pytest.approx(before, rel=1e-12)


def test_lbfgs_records_the_deviance_of_its_accepted_weights_and_no_accuracy():
    X, y = counts(k=2)
    m = gpunn.MLP([3, 5, 2], output="exp", dtype="float64", device="cpu", seed=4)
    history = m.fit(X, y, epochs=5, optimizer="lbfgs", verbose=0)
    assert history.accuracy == []  # a regression has none, whichever optimizer trains it
    assert history.loss[-1] == pytest.approx(np.mean(deviance(y, np.exp(forward(m, X)))), rel=1e-10)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX (its compiled epoch pads and skips)")
def test_a_compiled_epoch_s_skipped_steps_give_a_loss_and_no_count():
    """A compiled minibatch epoch on JAX pads the rows to a bucket, and its steps past the last batch give zero
    sums of the head's shapes: a loss and, for a regression, no count (a count would not match the head's). The
    fit equals NumPy's eager one on the same rows."""
    import jax.numpy as jnp

    X, y = counts(n=70)  # 5 batches of 16 in a bucket of 128 rows: 3 steps skipped an epoch
    fits = []
    for kw in (dict(xp=jnp, device=None, compile=True), dict(device="cpu")):
        m = gpunn.MLP([3, 5, 1], output="exp", dtype="float64", seed=2, **kw)
        fits.append((m, m.fit(X, y, epochs=3, batch_size=16, lr=0.01, shuffle=False, verbose=0)))
    (jm, jh), (nm, nh) = fits
    assert jh.accuracy == [] and nh.accuracy == []
    np.testing.assert_allclose(jh.loss, nh.loss, rtol=1e-10)
    np.testing.assert_allclose(_backend.to_numpy(jm.params), _backend.to_numpy(nm.params), rtol=0, atol=1e-10)


def test_negative_targets_are_refused_naming_the_row_and_change_nothing():
    X, y = counts()
    m = gpunn.MLP([3, 4, 1], output="exp", dtype="float64", device="cpu")
    before = _backend.to_numpy(m.params).copy()
    bad = y.copy()
    bad[7, 0] = -1.0
    with pytest.raises(InputError, match="y holds -1.0 at row 7.*Poisson target.*>= 0"):
        m.fit(X, bad, epochs=1, verbose=0)
    np.testing.assert_array_equal(_backend.to_numpy(m.params), before)
    assert m.epoch == 0
    with pytest.raises(InputError, match="at row 7"):
        m.evaluate(X, bad)
    nan = y.copy()
    nan[3, 0] = np.nan
    with pytest.raises(InputError, match="row 3"):
        m.fit(X, nan, epochs=1, verbose=0)


def test_standardize_scales_the_features_but_never_the_counts():
    X, y = counts()
    X = X * 50.0 + 7.0
    m = gpunn.MLP(hidden=[6], output="exp", dtype="float64", device="cpu", standardize=True, seed=1)
    m.fit(X, y, epochs=3, lr=0.05, verbose=0)
    assert m.target_scaling is None and m.scaling is not None
    mean, std = m.scaling
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-12)
    mu = np.exp(forward(m, (X - mean) / std))
    np.testing.assert_allclose(_backend.to_numpy(m.predict(X)), mu, rtol=1e-12)
    assert m.evaluate(X, y)["loss"] == pytest.approx(float(np.mean(deviance(y, mu))), rel=1e-12)  # counts' units


def test_an_ensemble_member_trains_as_a_lone_network():
    X, y = counts(k=2)
    kw = dict(epochs=4, lr=0.03, batch_size=16, optimizer="adam", verbose=0)
    ensemble = gpunn.Ensemble(hidden=[6], members=2, output="exp", dtype="float64", device="cpu", seed=[3, 8])
    ensemble.fit(X, y, **kw)
    for member, seed in zip(ensemble.members, [3, 8]):
        lone = gpunn.MLP(hidden=[6], output="exp", dtype="float64", device="cpu", seed=seed)
        lone.fit(X, y, **kw)
        np.testing.assert_allclose(_backend.to_numpy(member.params), _backend.to_numpy(lone.params), atol=1e-12)
        np.testing.assert_allclose(member.history.loss, lone.history.loss, rtol=1e-12)
    means = [np.exp(forward(member, X)) for member in ensemble.members]
    np.testing.assert_allclose(_backend.to_numpy(ensemble.predict(X)), np.mean(means, axis=0), rtol=1e-12)
    mean, std = ensemble.predict(X, return_std=True)
    np.testing.assert_allclose(_backend.to_numpy(std), np.std(means, axis=0), rtol=1e-10, atol=1e-14)
    mean_mu = np.mean(means, axis=0)
    assert ensemble.evaluate(X, y)["loss"] == pytest.approx(float(np.mean(deviance(y, mean_mu))), rel=1e-12)


def test_a_checkpoint_keeps_the_output_and_refuses_another_loss(tmp_path):
    X, y = counts()
    m = gpunn.MLP([3, 4, 1], output="exp", dtype="float64", device="cpu")
    m.fit(X, y, epochs=2, lr=0.05, verbose=0)
    m.save(tmp_path / "m.safetensors")
    back = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    assert (back.output, back.loss) == ("exp", "poisson")
    np.testing.assert_array_equal(_backend.to_numpy(back.predict(X)), _backend.to_numpy(m.predict(X)))
    back.fit(X, y, epochs=1, lr=0.05, verbose=0)
    m.fit(X, y, epochs=1, lr=0.05, verbose=0)
    np.testing.assert_array_equal(_backend.to_numpy(back.params), _backend.to_numpy(m.params))

    for field, value, message in [("loss", "mse", "loss"), ("target_scaling", [[1.0], [2.0]], "target_scaling")]:
        with pytest.raises(CheckpointError, match=message):
            gpunn.load(_forged(tmp_path / "m.safetensors", tmp_path / f"{field}.safetensors", field, value))


def _forged(src, dst, field, value):
    """``src`` with one field of its JSON description changed, under a checksum that matches."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from gpunn import checkpoint

    tensors = load_file(str(src))
    with safe_open(str(src), "np") as f:
        meta = dict(f.metadata())
    config = json.loads(meta["gpunn"])
    config[field] = value
    meta["gpunn"] = json.dumps(config, sort_keys=True)
    meta["sha256"] = checkpoint._digest(meta["gpunn"], tensors)
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_the_onnx_graph_gives_the_mean_as_predict_does(tmp_path):
    import onnxruntime as ort

    X, y = counts(k=2)
    m = gpunn.MLP([3, 5, 2], output="exp", dtype="float32", device="cpu", seed=1, standardize=True)
    m.fit(X, y, epochs=3, lr=0.05, verbose=0)
    m.to_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    assert [o.name for o in session.get_outputs()] == ["values"]
    (values,) = session.run(None, {"X": X.astype(np.float32)})
    np.testing.assert_allclose(values, _backend.to_numpy(m.predict(X)), rtol=1e-5)

    ensemble = gpunn.Ensemble([3, 5, 2], members=2, output="exp", dtype="float64", device="cpu", seed=[1, 2])
    ensemble.fit(X, y, epochs=3, lr=0.05, verbose=0)
    ensemble.to_onnx(tmp_path / "e.onnx")
    session = ort.InferenceSession(str(tmp_path / "e.onnx"))
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"X": X})))
    mean, std = ensemble.predict(X, return_std=True)
    np.testing.assert_allclose(out["values"], _backend.to_numpy(mean), rtol=1e-12)
    np.testing.assert_allclose(out["std"], _backend.to_numpy(std), rtol=1e-9, atol=1e-12)


def test_gpunn_train_output_exp_trains_the_api_s_network(tmp_path):
    X, y = counts(n=200)
    rows = "\n".join(",".join(repr(float(v)) for v in (*x, t)) for x, t in zip(X, y[:, 0]))
    (tmp_path / "d.csv").write_text("a,b,c,count\n" + rows + "\n")
    r = gpunn_in_process.run(
        "train", "--preset", "tutorial", "--data", "d.csv", "--target", "count", "--output", "exp",
        "--layers", "5", "--epochs", "4", "--batch-size", "32", "--seed", "5", "--device", "cpu", "--dtype",
        "float64", "--save", "m.safetensors", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    assert (m.output, m.loss, m.target_scaling) == ("exp", "poisson", None)
    Xf, yf, _ = gpunn.data.read_csv(tmp_path / "d.csv", target="count", dtype="float64")
    X_train, X_test, y_train, y_test = gpunn.data.train_test_split(Xf, yf, test_size=0.2, seed=5)
    ref = gpunn.MLP([3, 5, 1], output="exp", seed=5, device="cpu", dtype="float64", standardize=True)
    ref.fit(X_train, y_train, epochs=4, lr=0.1, batch_size=32, validation_data=(X_test, y_test), verbose=0)
    np.testing.assert_array_equal(_backend.to_numpy(m.params), _backend.to_numpy(ref.params))
    mu = _backend.to_numpy(ref.predict(X_test))[:, 0]
    (line,) = [line for line in r.stdout.splitlines() if line.startswith("test ")]
    assert line.startswith("test r2") and f"deviance {np.mean(deviance(y_test, mu)):.6g}" in line


def test_gpunn_train_output_exp_under_the_tabular_preset_smooths_no_labels(tmp_path):
    X, y = counts(n=200)
    rows = "\n".join(",".join(repr(float(v)) for v in (*x, t)) for x, t in zip(X, y[:, 0]))
    (tmp_path / "d.csv").write_text("a,b,c,count\n" + rows + "\n")
    r = gpunn_in_process.run("train", "--data", "d.csv", "--target", "count", "--output", "exp", "--epochs", "2",
                             "--device", "cpu", "--save", "m.safetensors", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "tabular preset" in r.stdout and "label smoothing" not in r.stdout
    assert gpunn.load(tmp_path / "m.safetensors", device="cpu").label_smoothing == 0.0


# ---------------------------------------------------------------------------------------------- gpunn.sklearn
sklearn = pytest.importorskip("sklearn")


@pytest.mark.parametrize("k", [1, 2])
def test_sklearn_poisson_regressor_follows_scikit_learns_own(k):
    """Full-batch SGD from the same initial weights: loss_ (scikit-learn's half deviance, summed over outputs, L2
    term included) and predictions as scikit-learn's MLPRegressor(loss="poisson") computes them."""
    from sklearn.neural_network import MLPRegressor as Theirs

    from gpunn.sklearn import MLPRegressor

    X, y = counts(n=60, k=k)
    y = y[:, 0] if k == 1 else y
    params = dict(loss="poisson", hidden_layer_sizes=(5,), solver="sgd", batch_size=60, learning_rate_init=0.01,
                  max_iter=8, alpha=0.01, random_state=0, tol=0.0, n_iter_no_change=100)  # fmt: skip
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = Theirs(**params).fit(X, y)
        ours = MLPRegressor(**params, device="cpu").fit(X, y)
    assert ours.out_activation_ == theirs.out_activation_ == "exp"
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9)
    assert ours.predict(X).shape == theirs.predict(X).shape


def test_sklearn_bad_loss_is_scikit_learns_value_error():
    from gpunn.sklearn import MLPRegressor

    X, y = counts(n=20)
    with pytest.raises(ValueError, match="'loss' parameter of MLPRegressor must be a str among"):
        MLPRegressor(loss="absolute_error").fit(X, y[:, 0])
    assert MLPRegressor(loss="poisson").get_params()["loss"] == "poisson"
