"""SciPy sparse input: trained, predicted and evaluated as the same X dense, bit for bit on NumPy (the dense run is
the oracle), densified a batch of rows at a time, and refused with the dense input's errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import gpunn
from gpunn import _backend
from gpunn.errors import InputError

sp = pytest.importorskip("scipy.sparse")

FORMATS = {
    "csr_matrix": lambda a: sp.csr_matrix(a), "csr_array": lambda a: sp.csr_array(a),
    "csc_matrix": lambda a: sp.csc_matrix(a), "coo_array": lambda a: sp.coo_array(a),
}  # fmt: skip


def data(n=90, d=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(loc=1.0, scale=3.0, size=(n, d))
    X[rng.random((n, d)) < 0.7] = 0.0  # mostly zeros, as text features are
    y = (X[:, 0] - X[:, 1] + rng.normal(size=n) > 0).astype(int)
    return X, y


def same(a, b, backend):
    a, b = _backend.to_numpy(a), _backend.to_numpy(b)
    if backend.name == "numpy":
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


BATCHING = pytest.mark.parametrize("batch_size,shuffle", [(None, True), (16, True), (16, False)],
                                   ids=["full", "shuffled", "slices"])  # fmt: skip
STANDARDIZE = pytest.mark.parametrize("standardize", [False, True], ids=["raw", "standardized"])


class _NumPy:
    name = "numpy"

    @staticmethod
    def kwargs() -> dict:
        return {"device": "cpu"}


@STANDARDIZE
@BATCHING
def test_a_sparse_fit_equals_the_dense_fit(backend, standardize, batch_size, shuffle):
    """CSR on every namespace: its rows are densified on the host, then placed as a dense batch is."""
    _sparse_fit_equals_dense_fit(backend, "csr_matrix", standardize, batch_size, shuffle)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "csr_matrix"])
@STANDARDIZE
@BATCHING
def test_every_sparse_format_fits_as_the_dense_x_on_numpy(fmt, standardize, batch_size, shuffle):
    """The other formats on NumPy alone, bit for bit: every format becomes a host CSR matrix when it is checked
    (gpunn.feed.sparse.check_sparse), before any namespace sees its rows, so where formats differ is the same on
    every namespace, and each namespace's own part is the CSR test's."""
    _sparse_fit_equals_dense_fit(_NumPy, fmt, standardize, batch_size, shuffle)


def _sparse_fit_equals_dense_fit(backend, fmt, standardize, batch_size, shuffle):
    X, y = data()
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(y))
    S = FORMATS[fmt](X)
    runs = []
    for x, xv in ((X, X[:30]), (S, FORMATS[fmt](X[:30]))):
        m = gpunn.MLP(hidden=[6], dtype="float64", seed=2, standardize=standardize, **backend.kwargs())
        m.fit(x, y, epochs=3, lr=0.1, batch_size=batch_size, shuffle=shuffle, optimizer="adam", sample_weight=w,
              validation_data=(xv, y[:30]), verbose=0)  # fmt: skip
        runs.append((m, x))
    (dense, X_), (sparse, S_) = runs
    same(dense.params, sparse.params, backend)
    if standardize:
        np.testing.assert_array_equal(dense.scaling[0], sparse.scaling[0])
        np.testing.assert_array_equal(dense.scaling[1], sparse.scaling[1])
    for key in ("loss", "val_loss", "accuracy", "weighted_loss"):
        np.testing.assert_allclose(getattr(sparse.history, key), getattr(dense.history, key), rtol=1e-12)
    same(dense.predict_proba(X), sparse.predict_proba(S), backend)
    same(dense.predict(X), sparse.predict(S), backend)
    assert sparse.evaluate(S, y) == pytest.approx(dense.evaluate(X, y), rel=1e-12)


def test_a_sparse_ensemble_equals_the_dense_ensemble():
    X, y = data()
    S = sp.csr_matrix(X)
    for kw in (dict(batch_size=16), dict(batch_size=16, shuffle=False), dict(batch_size=None),
               dict(batch_size=16, rows=[np.arange(0, 60), np.arange(20, 90)])):  # fmt: skip
        fits = []
        for x, xv in ((X, X[:30]), (S, S[:30])):
            standardize = "rows" not in kw  # (members on their own rows cannot learn a scaling)
            e = gpunn.Ensemble(hidden=[5], members=2, dtype="float64", device="cpu", seed=[1, 2],
                               standardize=standardize)  # fmt: skip
            e.fit(x, y, epochs=3, lr=0.1, validation_data=(xv, y[:30]), verbose=0, **kw)
            fits.append(e)
        for a, b in zip(fits[0].members, fits[1].members):
            np.testing.assert_array_equal(_backend.to_numpy(a.params), _backend.to_numpy(b.params))
            assert a.history.val_loss == b.history.val_loss
        np.testing.assert_array_equal(fits[0].predict_proba(X), fits[1].predict_proba(S))
        assert fits[1].evaluate(S, y) == fits[0].evaluate(X, y)


def test_evaluate_and_loss_and_grads_take_sparse_input():
    X, y = data()
    m = gpunn.MLP([7, 4, 1], dtype="float64", device="cpu", seed=3)
    loss, grads = m.loss_and_grads(sp.csc_matrix(X), y, l2=0.1)
    loss_d, grads_d = m.loss_and_grads(X, y, l2=0.1)
    assert float(loss) == float(loss_d)
    for (gw, gb), (dw, db) in zip(grads, grads_d):
        np.testing.assert_array_equal(gw, dw)
        np.testing.assert_array_equal(gb, db)


def test_a_sparse_x_is_densified_one_batch_at_a_time(monkeypatch):
    """Every densification holds at most a batch of rows (training) or a block of EVAL_ROWS (predicting)."""
    from gpunn.feed import evaluate, sparse

    X, y = data(n=300)
    seen = []
    densify = sparse.SparseRows.__getitem__
    monkeypatch.setattr(sparse.SparseRows, "__getitem__", lambda self, key: seen.append(densify(self, key)) or seen[-1])
    monkeypatch.setattr(evaluate, "EVAL_ROWS", 64)
    monkeypatch.setattr(gpunn.feed.predict, "EVAL_ROWS", 64)
    m = gpunn.MLP(hidden=[4], dtype="float64", device="cpu")
    m.fit(sp.csr_matrix(X), y, epochs=2, batch_size=32, validation_data=(sp.csr_matrix(X), y), verbose=0)
    assert {len(a) for a in seen} == {32, 300 % 32, 64, 300 % 64}  # batches of 32, validation blocks of 64
    seen.clear()
    m.predict(sp.csr_matrix(X))
    m.evaluate(sp.csr_matrix(X), y)
    assert {len(a) for a in seen} == {64, 300 % 64}


@pytest.mark.parametrize(
    "edit",
    [
        lambda X: X.__setitem__((5, 3), np.nan),
        lambda X: X.__setitem__((8, 0), -np.inf),
        lambda X: X.__setitem__((2, 6), 1e300),  # too large for float32
    ],
    ids=["nan", "inf", "too-large"],
)
def test_bad_sparse_input_is_the_dense_input_s_error_and_changes_nothing(edit):
    X, y = data()
    edit(X)
    m = gpunn.MLP([7, 3, 1], dtype="float32", device="cpu")
    before = _backend.to_numpy(m.params).copy()
    with pytest.raises(InputError) as dense:
        m.fit(X, y, epochs=1, verbose=0)
    for fmt in FORMATS.values():
        with pytest.raises(InputError) as sparse:
            m.fit(fmt(X), y, epochs=1, verbose=0)
        assert str(sparse.value) == str(dense.value)
        with pytest.raises(InputError) as sparse:
            m.predict(fmt(X))
        assert str(sparse.value) == str(dense.value)
    np.testing.assert_array_equal(_backend.to_numpy(m.params), before)
    assert m.epoch == 0


def test_a_sparse_x_with_the_wrong_columns_is_the_dense_error():
    X, y = data()
    m = gpunn.MLP([7, 3, 1], device="cpu")
    with pytest.raises(InputError) as dense:
        m.predict(X[:, :5])
    with pytest.raises(InputError) as sparse:
        m.predict(sp.csr_matrix(X[:, :5]))
    assert str(sparse.value) == str(dense.value) == "X has 5 features but the model expects 7"
    with pytest.raises(InputError, match="5 features"):
        m.fit(sp.coo_matrix(X[:, :5]), y, verbose=0)


def test_several_ranks_refuse_a_sparse_x():
    """Ranks agree on their data by a fingerprint of X, which would densify a sparse X whole on every rank."""
    from gpunn import distributed, feed

    X, y = data()
    m = gpunn.MLP([7, 3, 1], device="cpu")
    x = feed.prepare_x(m.spec, sp.csr_matrix(X), None)
    with pytest.raises(gpunn.errors.ConfigError, match="several ranks.*sparse X"):
        distributed.describe(m.spec, x, feed.targets(m.spec, y, len(y)), None, {})


def test_gpunn_does_not_import_scipy_for_dense_input():
    code = (
        "import sys, numpy as np, gpunn\n"
        "m = gpunn.MLP(hidden=[3], device='cpu'); m.fit(np.eye(4), [0, 1, 0, 1], epochs=1, verbose=0)\n"
        "m.predict(np.eye(4)); print('scipy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------- gpunn.sklearn
@pytest.mark.parametrize("fmt", ["csr_matrix", "csr_array", "csc_matrix", "coo_array"])
def test_the_sklearn_estimators_take_sparse_input_as_dense(fmt):
    pytest.importorskip("sklearn")
    from gpunn.sklearn import MLPClassifier, MLPRegressor

    X, y = data(n=120)
    S = FORMATS[fmt](X)
    kw = dict(hidden_layer_sizes=(5,), max_iter=5, random_state=0, batch_size=32, device="cpu")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf_d, clf_s = MLPClassifier(**kw).fit(X, y), MLPClassifier(**kw).fit(S, y)
        clf_d.partial_fit(X, y)
        clf_s.partial_fit(S, y)
        target = X[:, 0] * 2.0 + 1.0
        reg_d = MLPRegressor(early_stopping=True, **kw).fit(X, target)
        reg_s = MLPRegressor(early_stopping=True, **kw).fit(S, target)
    assert clf_s.loss_curve_ == clf_d.loss_curve_
    np.testing.assert_array_equal(clf_s.predict_proba(S), clf_d.predict_proba(X))
    np.testing.assert_array_equal(clf_s.predict(S), clf_d.predict(X))
    assert clf_s.score(S, y) == clf_d.score(X, y)
    assert reg_s.validation_scores_ == reg_d.validation_scores_
    np.testing.assert_array_equal(reg_s.predict(S), reg_d.predict(X))
    with pytest.raises(ValueError, match="features"):
        clf_s.predict(FORMATS[fmt](X[:, :5]))
