"""gpunn.sklearn: scikit-learn's estimator checks, parity with scikit-learn's own MLP, namespaces follow X."""

from __future__ import annotations

import importlib.util
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import make_blobs, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from gpunn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.mark.parametrize("estimator", [MLPClassifier(), MLPRegressor()], ids=["classifier", "regressor"])
def test_check_estimator_passes_with_zero_failures(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert failed == []
    assert sum(r["status"] == "passed" for r in results) > 45


def _blobs(n_classes=3):
    X, y = make_blobs(n_samples=300, centers=n_classes, random_state=0)
    return StandardScaler().fit_transform(X), y


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_training_follows_scikit_learns_own_mlp(solver, n_classes):
    """Same parameters, same initialization scheme: the loss curves agree (the shuffles differ)."""
    X, y = _blobs(n_classes)
    kw = dict(solver=solver, random_state=0, max_iter=30, hidden_layer_sizes=(20,))
    ours, theirs = MLPClassifier(**kw).fit(X, y), SkClassifier(**kw).fit(X, y)
    assert ours.loss_curve_[0] == pytest.approx(theirs.loss_curve_[0], rel=1e-3)  # same start, other shuffle
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=0.02)
    assert [c.shape for c in ours.coefs_] == [c.shape for c in theirs.coefs_]
    assert ours.n_iter_ == theirs.n_iter_ == 30


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_regressor_follows_scikit_learns_own_mlp(solver):
    X, y = make_regression(n_samples=200, n_features=5, noise=0.1, random_state=0)
    y = y / y.std()
    kw = dict(solver=solver, random_state=0, max_iter=30, learning_rate_init=0.001)
    ours, theirs = MLPRegressor(**kw).fit(X, y), SkRegressor(**kw).fit(X, y)
    assert ours.loss_curve_[0] == pytest.approx(theirs.loss_curve_[0], rel=1e-3)  # same start, other shuffle
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=0.02)


def test_string_labels_probabilities_and_score():
    X, y = _blobs(3)
    names = np.array(["cat", "dog", "emu"])[y]
    clf = MLPClassifier(random_state=0, max_iter=200).fit(X, names)
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    proba = clf.predict_proba(X)
    assert proba.shape == (300, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    assert clf.score(X, names) > 0.9


def test_early_stopping_and_stopping_rule():
    X, y = _blobs(2)
    clf = MLPClassifier(early_stopping=True, random_state=0, max_iter=500, n_iter_no_change=5).fit(X, y)
    assert clf.best_loss_ is None and len(clf.validation_scores_) == clf.n_iter_ < 500
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    reg = MLPRegressor(random_state=0, max_iter=1000, tol=1e-2, n_iter_no_change=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # it stops by itself: no warning
        reg.fit(X, X[:, 0])
    assert reg.n_iter_ < 1000 and reg.best_loss_ == min(reg.loss_curve_)


def test_partial_fit_continues_training():
    X, y = _blobs(3)
    clf = MLPClassifier(random_state=0)
    for _ in range(30):
        clf.partial_fit(X, y, classes=np.unique(y))
    assert clf.n_iter_ == 30 and clf.loss_curve_[-1] < clf.loss_curve_[0]
    with pytest.raises(ValueError, match="classes"):
        MLPClassifier().partial_fit(X, y)


def test_fitted_estimator_pickles():
    X, y = _blobs(2)
    clf = MLPClassifier(random_state=0, max_iter=20).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_input_trains_in_torch_and_outputs_follow_x():
    import torch

    X, y = _blobs(3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    clf = MLPClassifier(random_state=0, max_iter=50).fit(Xt, yt)
    assert isinstance(clf.predict(Xt), torch.Tensor) and isinstance(clf.predict_proba(Xt), torch.Tensor)
    assert isinstance(clf.coefs_[0], torch.Tensor)
    ref = MLPClassifier(random_state=0, max_iter=50).fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(Xt).numpy(), ref.predict_proba(X), rtol=1e-6, atol=1e-9)
    reg = MLPRegressor(random_state=0, max_iter=20).fit(Xt, torch.from_numpy(X[:, 0]))
    assert isinstance(reg.predict(Xt), torch.Tensor) and reg.predict(Xt).shape == (300,)
