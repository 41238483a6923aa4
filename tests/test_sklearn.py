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
from sklearn.utils.class_weight import compute_sample_weight  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from gpunn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor], ids=["classifier", "regressor"])
def test_a_dataframe_s_column_names_are_kept_and_checked(estimator):
    """scikit-learn's own check (which check_estimator leaves out), then the names themselves: fitted from a
    DataFrame, the estimator knows its columns and refuses them in another order, as scikit-learn's do."""
    pd = pytest.importorskip("pandas")
    from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency

    check_dataframe_column_names_consistency(estimator.__name__, estimator(max_iter=5, device="cpu"))
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(40, 3)), columns=["age", "weight", "height"])
    y = (X["age"] > 0).astype(int)
    for fit in ("fit", "partial_fit"):
        est = estimator(max_iter=5, device="cpu")
        getattr(est, fit)(X, y, **({"classes": [0, 1]} if fit == "partial_fit" and estimator is MLPClassifier else {}))
        assert list(est.feature_names_in_) == ["age", "weight", "height"]
        with pytest.raises(ValueError, match="Feature names must be in the same order"):
            est.predict(X[["height", "age", "weight"]])


@pytest.mark.parametrize(
    "estimator",
    [
        # max_iter=100: the checking parameters scikit-learn gives its own MLPs (PER_ESTIMATOR_CHECK_PARAMS in
        # sklearn/utils/_test_common/instance_generator.py); half the time of the default 200, no check left out
        MLPClassifier(max_iter=100),
        MLPRegressor(max_iter=100),
        # fewer iterations: L-BFGS fits the check's random labels until sigmoid outputs round to exactly 1.0,
        # which its multilabel check refuses (scikit-learn's own MLPClassifier(solver="lbfgs") fails it so too)
        MLPClassifier(solver="lbfgs", max_iter=50),
        MLPRegressor(solver="lbfgs", max_iter=50),
    ],
    ids=["classifier", "regressor", "classifier-lbfgs", "regressor-lbfgs"],
)
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
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    X, y = make_classification(n_samples=400, n_features=8, flip_y=0.15, random_state=0)  # noisy: scores wander
    clf = MLPClassifier(early_stopping=True, random_state=0, max_iter=500, n_iter_no_change=5,
                        learning_rate_init=0.05, hidden_layer_sizes=(50,)).fit(X, y)  # fmt: skip
    assert clf.best_loss_ is None and len(clf.validation_scores_) == clf.n_iter_ < 500
    # The model ends with its best epoch's weights: its accuracy on the validation rows, recomputed here from
    # the split scikit-learn's rule draws (stratified on the encoded 0/1 column), is the best score, and the
    # last epoch's was lower.
    T = y.reshape(-1, 1).astype(float)
    _, X_val, _, y_val = train_test_split(X, T, test_size=0.1, random_state=clf._seed_split, stratify=T)
    assert clf.validation_scores_[-1] < clf.best_validation_score_
    assert np.mean(clf.predict(X_val) == y_val[:, 0]) == clf.best_validation_score_
    X, y = _blobs(2)
    reg = MLPRegressor(random_state=0, max_iter=1000, tol=1e-2, n_iter_no_change=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # it stops by itself: no warning
        reg.fit(X, X[:, 0])
    assert reg.n_iter_ < 1000 and reg.best_loss_ == min(reg.loss_curve_)


def test_partial_fit_continues_training():
    X, y = _blobs(3)
    clf, theirs = MLPClassifier(random_state=0), SkClassifier(random_state=0)
    for _ in range(30):
        clf.partial_fit(X, y, classes=np.unique(y))
        theirs.partial_fit(X, y, classes=np.unique(y))
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    # counted as scikit-learn counts: n_iter_ per call, t_ and the loss curve over all calls
    assert (clf.n_iter_, clf.t_, len(clf.loss_curve_)) == (theirs.n_iter_, theirs.t_, len(theirs.loss_curve_))
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


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_sample_and_class_weights_train_as_scikit_learns_own_mlp(solver):
    """Full batches (so no shuffle differs): with sample weights, and with balanced class weights, which
    scikit-learn's MLP takes as sample weights, the weighted loss curves and the weights agree."""
    X, y = _blobs(3)
    keep = np.r_[np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:30]]  # an unbalanced problem
    X, y = X[keep], y[keep]
    w = np.random.default_rng(0).uniform(0.2, 3.0, len(y))
    kw = dict(solver=solver, random_state=0, max_iter=25, hidden_layer_sizes=(12,), batch_size=len(y), alpha=0.01)
    balanced = compute_sample_weight("balanced", y)
    for ours, sample_weight in [
        (MLPClassifier(**kw).fit(X, y, sample_weight=w), w),
        (MLPClassifier(**kw, class_weight="balanced").fit(X, y), balanced),
        (MLPClassifier(**kw, class_weight="balanced").fit(X, y, sample_weight=w), w * balanced),
    ]:
        theirs = SkClassifier(**kw).fit(X, y, sample_weight=sample_weight)
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-6)
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=0, atol=1e-5)
        if solver == "sgd":  # (Adam: scikit-learn adds eps to sqrt(v) before the bias correction, gpunn after,
            # as torch does; on a unit whose gradients are ~1e-8 that moves its weights by ~1e-3)
            for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    target = X[:, 0] - X[:, 1] ** 2
    ours_r = MLPRegressor(**kw).fit(X, target, sample_weight=w)
    theirs_r = SkRegressor(**kw).fit(X, target, sample_weight=w)
    np.testing.assert_allclose(ours_r.loss_curve_, theirs_r.loss_curve_, rtol=1e-6)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_warm_start_continues_as_scikit_learns_own_mlp(solver):
    """Full batches: a second, warm-started fit continues the weights, the loss curve and n_iter_, with a new
    optimizer, exactly as scikit-learn's MLP does (both warn only when the first fit ends at max_iter)."""
    X, y = _blobs(3)
    kw = dict(solver=solver, random_state=0, max_iter=10, hidden_layer_sizes=(12,), batch_size=len(y),
              warm_start=True, momentum=0.9)  # fmt: skip
    target = X[:, 0] - X[:, 1] ** 2
    for ours, theirs, yy in [(MLPClassifier(**kw), SkClassifier(**kw), y), (MLPRegressor(**kw), SkRegressor(**kw),
                                                                             target)]:  # fmt: skip
        for _ in range(3):
            ours.fit(X, yy)
            theirs.fit(X, yy)
        assert ours.n_iter_ == theirs.n_iter_ == 10 and len(ours.loss_curve_) == len(theirs.loss_curve_) == 30
        assert ours.t_ == theirs.t_
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-6)
        assert ours.loss_curve_[-1] < ours.loss_curve_[9]  # training went on
    cold = MLPClassifier(**{**kw, "warm_start": False}).fit(X, y)
    cold.fit(X, y)
    assert len(cold.loss_curve_) == 10  # without warm_start, fit starts over
    with pytest.raises(ValueError, match="warm_start can only be used where `y` has the same classes"):
        MLPClassifier(**kw).fit(X, y).fit(X[y < 2], y[y < 2])


@pytest.mark.parametrize("schedule", ["invscaling", "adaptive"])
def test_sgd_learning_rate_schedules_follow_scikit_learns_own_mlp(schedule):
    """Full batches, SGD with momentum: invscaling's rate learning_rate_init / (t_ + 1) ** power_t after each
    epoch, and adaptive's rate / 5 where scikit-learn would stop, give scikit-learn's loss curves, through a
    partial_fit and a warm-started fit too (each starting at learning_rate_init, as scikit-learn's optimizer)."""
    X, y = _blobs(3)
    kw = dict(solver="sgd", learning_rate=schedule, learning_rate_init=0.05, power_t=0.3, random_state=0,
              max_iter=40, hidden_layer_sizes=(12,), batch_size=len(y), tol=2e-3, n_iter_no_change=2,
              warm_start=True)  # fmt: skip
    target = X[:, 0] - X[:, 1] ** 2
    for ours, theirs, yy in [(MLPClassifier(**kw), SkClassifier(**kw), y), (MLPRegressor(**kw), SkRegressor(**kw),
                                                                             target)]:  # fmt: skip
        ours.fit(X, yy)
        theirs.fit(X, yy)
        for _ in range(3):
            ours.partial_fit(X, yy)
            theirs.partial_fit(X, yy)
        ours.fit(X, yy)
        theirs.fit(X, yy)
        assert len(ours.loss_curve_) == len(theirs.loss_curve_) and ours.n_iter_ == theirs.n_iter_
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-6)
        rates = ours._model.history.lr
        if schedule == "invscaling":  # every epoch a lower rate than the one before, within a fit
            assert rates[1] < rates[0]
        else:  # some epochs ran at a fifth of the rate before them
            assert any(abs(b / a - 0.2) < 1e-12 for a, b in zip(rates, rates[1:]))
    with pytest.raises(ValueError, match="learning_rate 'optimal' is not supported"):
        MLPClassifier(learning_rate="optimal").fit(X, y)
    with pytest.raises(ValueError, match="power_t must be a finite number >= 0"):
        MLPClassifier(power_t=-1).fit(X, y)


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(learning_rate_init="0.1"), r"^learning_rate_init must be a finite number > 0; got '0.1'$"),
        (dict(learning_rate_init=np.inf), r"^learning_rate_init must be a finite number > 0; got inf$"),  # not "lr"
        (dict(alpha=None), r"^alpha must be a finite number >= 0; got None$"),
        (dict(alpha=np.inf), r"^alpha must be a finite number >= 0; got inf$"),  # was named l2
        (dict(momentum="x"), r"^momentum must be a finite number in \[0, 1\]; got 'x'$"),
        (dict(beta_1=None), r"^beta_1 must be a finite number in \[0, 1\); got None$"),
        (dict(epsilon=None), r"^epsilon must be a finite number > 0; got None$"),
        (dict(tol=-1.0), r"^tol must be a finite number >= 0; got -1.0$"),  # was accepted
        (dict(tol="x"), r"^tol must be a finite number >= 0; got 'x'$"),  # was a TypeError after the first epoch
        (dict(early_stopping=True, validation_fraction="a"), r"^validation_fraction must be a finite number in"),
        (dict(hidden_layer_sizes=None), r"^hidden_layer_sizes must be positive integers; got None$"),
        (dict(shuffle="no"), r"^shuffle must be True or False; got 'no'$"),
        (dict(warm_start="yes"), r"^warm_start must be True or False; got 'yes'$"),
    ],
)
def test_bad_parameters_are_config_errors_and_a_refused_fit_keeps_the_fitted_estimator(params, match):
    # comparisons such as "0.1" > 0 raised a bare TypeError; each is now a gpunn ConfigError, a ValueError as
    # scikit-learn's own refusals are
    import gpunn

    X, y = _blobs(2)
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0, device="cpu").fit(X, y)
    coefs, curve = [c.copy() for c in est.coefs_], list(est.loss_curve_)
    with pytest.raises(gpunn.ConfigError, match=match):
        est.set_params(**params).fit(X, y)
    assert all(np.array_equal(a, b) for a, b in zip(coefs, est.coefs_)) and est.loss_curve_ == curve


def test_bad_sample_and_class_weights_are_clear_errors():
    X, y = _blobs(2)
    with pytest.raises(ValueError, match="(?i)negative"):
        MLPClassifier(max_iter=2).fit(X, y, sample_weight=-np.ones(len(y)))
    with pytest.raises(ValueError, match="shape|length|number"):
        MLPClassifier(max_iter=2).fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="class"):
        MLPClassifier(max_iter=2, class_weight={7: 2.0}).fit(X, y)


def test_auto_device_trains_a_small_network_on_the_cpu(monkeypatch):
    """device="auto" on a machine with a usable GPU: digits' 64-32 network on batches of 200 (3.9 million
    multiply-adds a step) is launch bound on a GPU and trains on NumPy; a 784-256-256-10 step of 128 rows
    (103 million) would take the GPU. Here no GPU is usable: any attempt to take one raises DeviceError."""
    from gpunn import _backend
    from gpunn.sklearn._base import _BaseMLP

    monkeypatch.setattr(_backend, "gpu_usable", lambda: True)  # resolve("auto") would now reach for CuPy
    X, y = _blobs(3)
    X = np.hstack([X] * 32)  # 64 features
    clf = MLPClassifier((64, 32), max_iter=2, random_state=0).fit(X, y)
    assert clf._model.device == "cpu" and _backend.namespace_name(clf._model.xp) == "numpy"
    assert 3 * 200 * (64 * 64 + 64 * 32 + 32 * 10) < 10_000_000
    assert _BaseMLP._auto_device([64, 64, 32, 10], 200) == "cpu"
    assert _BaseMLP._auto_device([784, 256, 256, 10], 128) == "auto"
    with pytest.raises(Exception, match="cuda"):  # an explicit device is taken as given
        MLPClassifier((64, 32), max_iter=2, device="cuda").fit(X, y)


def test_default_batches_and_steps_are_scikit_learns():
    """batch_size="auto" is min(200, n): on digits (1797 rows) both take 9 Adam steps an epoch, counted by
    scikit-learn's own optimizer."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    ours = MLPClassifier((64, 32), max_iter=3, random_state=0).fit(X, y)
    theirs = SkClassifier((64, 32), max_iter=3, random_state=0).fit(X, y)
    assert int(ours._model.optimizer_state["step"]) == theirs._optimizer.t == 27
    assert ours.t_ == theirs.t_
