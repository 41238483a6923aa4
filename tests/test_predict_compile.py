"""Predictions on JAX compile nothing for a new row count in the same power-of-two bucket (issue 28.3): the rows
run padded to the bucket of their last EVAL_ROWS block, one compiled program per padded shape, and come back
exactly the real rows; the finiteness check runs on the host copy that the padding makes. Counted with JAX's own
backend-compile events; the predictions held to NumPy's with the same weights."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import gpunn
from gpunn.ensemble import Ensemble
from gpunn.errors import InputError

jax = pytest.importorskip("jax")

import jax_compiles  # noqa: E402

jnp = jax.numpy
jax.config.update("jax_enable_x64", True)

_compiled_by = jax_compiles.during  # XLA programs fn(*args) compiled, from JAX's own events


RNG = np.random.default_rng(0)
X = RNG.normal(size=(4500, 5)) * 3 + 1
Y = {
    "softmax": np.digitize(X[:, 0] - X[:, 1], [-2.0, 2.0]),
    "sigmoid": (X[:, 0] * X[:, 2] > 1).astype(int),
    "identity": np.stack([X[:, 0] - X[:, 1], X[:, 2] * 2], axis=1),
    "exp": np.exp(0.2 * X[:, :1]),
}
METHODS = {"softmax": ("decision_function", "predict_proba", "predict"), "sigmoid": ("predict_proba", "predict")}
METHODS |= {"identity": ("decision_function", "predict"), "exp": ("predict",)}
SETTINGS = {"softmax": dict(standardize=True), "identity": dict(standardize=True), "exp": dict(standardize=True)}


def _model(output, hidden=(8,), members=None, dtype="float64"):
    """A model on JAX (compile="auto": its predictions compiled), trained on NumPy and moved: its predictions are
    under test here, and a fit on JAX compiled its training programs for each model (about 0.5 s each); JAX's
    training is held to NumPy's in tests/test_compile.py and tests/test_ensemble_compile.py."""
    kw = dict(hidden=hidden, output=output, device="cpu", dtype=dtype, seed=1, **SETTINGS.get(output, {}))
    m = gpunn.MLP(**kw) if members is None else Ensemble(members=members, **kw)
    m.fit(X[:300], Y[output][:300], epochs=3, lr=0.05, verbose=0)
    return m.to(device="cpu", xp=jnp)


def _assert_as_numpy(got, want, dtype):
    got = np.asarray(got)
    assert got.shape == want.shape and got.dtype == want.dtype
    if got.dtype.kind in "iub":
        np.testing.assert_array_equal(got, want)
    else:
        scale = max(1.0, float(np.max(np.abs(want))))  # float32: a few units in the last place of the largest
        tight = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=2e-6 * scale)
        np.testing.assert_allclose(got, want, **tight)


# float32 for the outputs whose results are probabilities and class indices; float64 for all four (the regressors'
# scalings and exp are the host's and the dtype's alike)
CASES = [(o, "float64") for o in Y] + [(o, "float32") for o in ("softmax", "sigmoid")]


@pytest.mark.parametrize("members", [None, 3], ids=["MLP", "Ensemble"])
@pytest.mark.parametrize("output, dtype", CASES)
def test_predictions_on_jax_equal_numpys_with_the_same_weights(output, members, dtype):
    """Every row count (one block, a bucket's size, several blocks with a short last one), given as JAX arrays
    and as host arrays, predicts exactly the real rows, as the same weights predict on NumPy."""
    m = _model(output, members=members, dtype=dtype)
    oracle = copy.deepcopy(m).to(device="cpu", xp=np)  # the same weights, on NumPy
    methods = METHODS[output] + (("predict_proba",) if members and output in ("identity", "exp") else ())
    for n in (200, 230, 256, 4500):
        for x in (jnp.asarray(X[:n]), X[:n]):
            for method in methods:
                _assert_as_numpy(getattr(m, method)(x), getattr(oracle, method)(X[:n]), dtype)
            if members and output == "identity":
                for got, want in zip(m.predict(x, return_std=True), oracle.predict(X[:n], return_std=True)):
                    _assert_as_numpy(got, want, dtype)
            if members:
                _assert_as_numpy(m.predict_proba(x, members=True), oracle.predict_proba(X[:n], members=True), dtype)


@pytest.mark.parametrize("members", [None, 2], ids=["MLP", "Ensemble"])
@pytest.mark.parametrize("output, width", [("softmax", 11), ("sigmoid", 12), ("identity", 13), ("exp", 14)])
def test_a_new_row_count_in_the_same_bucket_compiles_nothing(output, width, members):
    """After predicting on 200 rows, 230 rows (the same bucket of 256) compile nothing, for every method; 300 rows
    (the next bucket) compile again (the count works). A width of its own keeps other tests' programs out."""
    m = _model(output, hidden=(width + (members or 0) * 10,), members=members)
    methods = METHODS[output] + (("predict_proba",) if members and output in ("identity", "exp") else ())
    for method in methods:
        getattr(m, method)(jnp.asarray(X[:200]))
    x230, x300 = jnp.asarray(X[:230]), jnp.asarray(X[:300])
    assert [_compiled_by(getattr(m, method), x230) for method in methods] == [0] * len(methods), methods
    assert _compiled_by(lambda: [getattr(m, method)(x300) for method in methods]) > 0


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regressor"])
def test_sklearns_estimators_on_jax_compile_nothing_for_a_new_row_count_in_the_bucket(kind):
    """The scoring of a cross-validation search: MLPClassifier's predict, predict_proba (two columns for a
    binary problem) and predict_log_proba, and MLPRegressor's predict (a 1-D target) on JAX data, equal to the same
    weights on NumPy."""
    from gpunn.sklearn import MLPClassifier, MLPRegressor

    width = {"binary": 21, "multiclass": 22, "regressor": 23}[kind]
    est = (MLPRegressor if kind == "regressor" else MLPClassifier)(hidden_layer_sizes=(width,), max_iter=3,
                                                                   device="cpu", random_state=0)  # fmt: skip
    y = {"binary": Y["sigmoid"], "multiclass": Y["softmax"], "regressor": Y["identity"][:, 0]}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged in 3 iterations
        est.fit(jnp.asarray(X[:300]), jnp.asarray(y[:300]))
    oracle = copy.deepcopy(est._model).to(device="cpu", xp=np)
    methods = ("predict",) if kind == "regressor" else ("predict", "predict_proba", "predict_log_proba")
    for method in methods:
        getattr(est, method)(jnp.asarray(X[:200]))
    x230 = jnp.asarray(X[:230])
    assert [_compiled_by(getattr(est, method), x230) for method in methods] == [0] * len(methods), methods
    want = oracle.predict(X[:230]) if kind == "regressor" else oracle.predict_proba(X[:230])
    got = est.predict(x230) if kind == "regressor" else est.predict_proba(x230)
    got = np.asarray(got)
    if kind == "binary":
        got = got[:, 1:]
    if kind == "regressor":
        got = got[:, None]
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    if kind != "regressor":  # the logarithm of the same probabilities
        log = np.asarray(est.predict_log_proba(x230))
        np.testing.assert_allclose(log[:, 1:] if kind == "binary" else log, np.log(want), rtol=2e-6, atol=1e-7)


def test_a_non_finite_value_on_jax_is_refused_by_its_position():
    """The finiteness check, now on the host copy, names the value as before, and nothing changes."""
    m = _model("sigmoid", hidden=(5,))
    before = np.asarray(m.params).copy()
    x = X[:230].copy()
    x[17, 3] = np.nan
    with pytest.raises(InputError, match="row 17, column 3"):
        m.predict(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(m.params), before)
