"""gpunn.sklearn keeps scikit-learn's semantics where scikit-learn's own MLP tests rely on them, each checked against
scikit-learn's own MLPClassifier/MLPRegressor as the oracle: n_iter_no_change=np.inf, assignable coefs_ and
intercepts_, loss_, _optimizer.learning_rate, non-finite training, one-class targets, one row at a time with
partial_fit, partial_fit's refusal of early stopping, a validation split too small to score, the stratified split's
error. (tests/test_sklearn_upstream.py runs scikit-learn's test file itself.)"""

from __future__ import annotations

import importlib.util
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.multiclass import check_classification_targets  # noqa: E402

import gpunn  # noqa: E402
from gpunn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # pytest.warns still sees it

SKLEARN_NON_FINITE = (
    "Solver produced non-finite parameter weights. The input data may contain large values and need to be preprocessed."
)


def _blobs(n: int = 60, centers: int = 3):
    X, y = make_blobs(n_samples=n, centers=centers, n_features=3, random_state=0)
    return StandardScaler().fit_transform(X), y


def _weights(est) -> list[np.ndarray]:
    return [np.asarray(a) for a in est.coefs_ + est.intercepts_]


def _assert_same_weights(ours, theirs, rtol=1e-9, atol=1e-12):
    for a, b in zip(_weights(ours), _weights(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def _both(kind: str, **kw):
    if kind == "classifier":
        return MLPClassifier(device="cpu", **kw), SkClassifier(**kw)
    return MLPRegressor(device="cpu", **kw), SkRegressor(**kw)


# ------------------------------------------------------------------------------------- stopping and rates
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_n_iter_no_change_inf_trains_to_max_iter_as_scikit_learn(kind):
    """np.inf never stops on no change, whatever tol: every epoch counts as no improvement but the first."""
    X, y = _blobs()
    target = y if kind == "classifier" else X[:, 0] - X[:, 1] ** 2
    kw = dict(solver="sgd", tol=1e9, n_iter_no_change=np.inf, max_iter=25, hidden_layer_sizes=(6,), batch_size=60,
              random_state=0)  # fmt: skip
    ours, theirs = _both(kind, **kw)
    for est in (ours, theirs):
        with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
            est.fit(X, target)
    assert ours.n_iter_ == theirs.n_iter_ == 25
    assert ours._no_improvement_count == theirs._no_improvement_count == 24
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    for bad in (0, 2.5, -np.inf, "inf"):
        with pytest.raises(ValueError, match=r"n_iter_no_change must be an integer >= 1 or np.inf"):
            MLPClassifier(n_iter_no_change=bad).fit(X, y)


@pytest.mark.parametrize("schedule", ["constant", "invscaling", "adaptive", "adam"])
def test_loss_and_optimizer_learning_rate_are_scikit_learns(schedule):
    """Full batches: ``loss_`` (the last epoch's loss, the L2 term in it) and ``_optimizer.learning_rate`` (SGD's
    scheduled rate; Adam's bias-corrected step size after ``t`` updates) equal scikit-learn's, after a fit, a
    partial_fit (the same optimizer goes on) and a warm-started fit (a new one)."""
    X, y = _blobs()
    kw = dict(random_state=0, max_iter=30, hidden_layer_sizes=(8,), tol=2e-3, n_iter_no_change=2, warm_start=True,
              alpha=0.05)  # fmt: skip
    if schedule == "adam":
        kw.update(solver="adam", batch_size=60)
    else:
        kw.update(solver="sgd", learning_rate=schedule, learning_rate_init=0.05, power_t=0.3, batch_size=60)
    ours, theirs = _both("classifier", **kw)
    rel = 1e-6 if schedule == "adam" else 1e-9  # (Adam: gpunn adds eps after the bias correction, as torch does)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for step in ("fit", "partial_fit", "partial_fit", "fit"):
            getattr(ours, step)(X, y)
            getattr(theirs, step)(X, y)
            assert ours.loss_ == pytest.approx(theirs.loss_, rel=rel) and ours.loss_ == ours.loss_curve_[-1]
            assert ours._optimizer.learning_rate == pytest.approx(theirs._optimizer.learning_rate, rel=1e-12)
            if schedule == "adam":
                assert ours._optimizer.t == theirs._optimizer.t
    if schedule == "adaptive":  # the rate went down by fifths, as scikit-learn's
        assert ours._optimizer.learning_rate < 0.05 / 5


# --------------------------------------------------------------------------------------- assigned weights
def test_weights_assigned_before_the_first_partial_fit_train_as_scikit_learns():
    """scikit-learn's worked example (its test_fit): weights assigned to an unfitted estimator, item by item,
    are where its first partial_fit starts, on a batch of one row and one class."""
    X, y = np.array([[0.6, 0.8, 0.7]]), np.array([0])
    kw = dict(solver="sgd", learning_rate_init=0.1, alpha=0.1, activation="logistic", random_state=1, max_iter=1,
              hidden_layer_sizes=2, momentum=0)  # fmt: skip
    ests = _both("classifier", **kw)
    for est in ests:
        est.coefs_ = [0] * 2
        est.intercepts_ = [0] * 2
        est.coefs_[0] = np.array([[0.1, 0.2], [0.3, 0.1], [0.5, 0]])
        est.coefs_[1] = np.array([[0.1], [0.2]])
        est.intercepts_[0] = np.array([0.1, 0.1])
        est.intercepts_[1] = np.array([1.0])
    theirs = ests[1]  # scikit-learn's own needs the rest of its state by hand
    theirs.n_outputs_, theirs.n_features_in_, theirs.n_iter_, theirs.n_layers_, theirs.t_ = 1, 3, 0, 3, 0
    theirs.out_activation_, theirs.best_loss_, theirs.loss_curve_ = "logistic", np.inf, []
    theirs._no_improvement_count = 0
    for est in ests:
        est.partial_fit(X, y, classes=[0, 1])
    _assert_same_weights(*ests, rtol=1e-12)
    np.testing.assert_allclose(ests[0].coefs_[1], [[0.04706], [0.154089]], atol=1e-3)  # its hand-worked numbers
    assert ests[0].predict_proba(X)[0, 1] == pytest.approx(0.739, abs=1e-3)


def test_weights_assigned_to_a_fitted_estimator_are_its_weights():
    """After a fit: replacing an item of coefs_ or the whole intercepts_ list sets the network's weights, as
    scikit-learn's lists are its weights; a warm-started fit continues from them as scikit-learn's does; a fit
    that starts over forgets them; a list that does not fit is refused and changes nothing."""
    X, y = _blobs()
    kw = dict(solver="sgd", random_state=0, max_iter=10, hidden_layer_sizes=(5,), batch_size=60, warm_start=True)
    ours, theirs = _both("classifier", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
        theirs.fit(X, y)
        rng = np.random.default_rng(1)
        W0, b = rng.normal(size=(3, 5)), [rng.normal(size=5), rng.normal(size=3)]
        for est in (ours, theirs):
            est.coefs_[0] = W0.copy()
            est.intercepts_ = [v.copy() for v in b]
        np.testing.assert_array_equal(ours.coefs_[0], W0)  # read back as assigned
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-12)
        copy = pickle.loads(pickle.dumps(ours))  # an assignment not yet used travels with the estimator
        np.testing.assert_allclose(copy.predict_proba(X), theirs.predict_proba(X), rtol=1e-12)
        ours.fit(X, y)
        theirs.fit(X, y)
        _assert_same_weights(ours, theirs)
        before = _weights(ours)
        refused = [
            ([np.zeros((3, 4)), ours.coefs_[1]], r"coefs_\[0\] has shape \(3, 4\); this network needs \(3, 5\)"),
            ([np.zeros(5)], "intercepts_ has 1 arrays; this network has 2 layers"),
        ]
        for bad, match in refused:
            est = pickle.loads(pickle.dumps(ours))
            setattr(est, "coefs_" if bad[0].ndim == 2 else "intercepts_", bad)
            with pytest.raises(gpunn.InputError, match=match):
                est.predict(X)
            with pytest.raises(gpunn.InputError, match=match):
                est.partial_fit(X, y)
            est.__dict__.pop("_exposed")
            for a, b_ in zip(_weights(est), before):
                np.testing.assert_array_equal(a, b_)
        fresh, cold = _both("classifier", **{**kw, "warm_start": False})[0], MLPClassifier(device="cpu", **kw)
        cold.warm_start = False
        cold.fit(X, y)
        cold.coefs_[0] = W0
        cold.fit(X, y)  # starts over, as scikit-learn's: the assigned weights are dropped
        fresh.fit(X, y)
        _assert_same_weights(cold, fresh, rtol=0, atol=0)
    with pytest.raises(gpunn.InputError, match="coefs_ must be a list of arrays"):
        ours.coefs_ = np.zeros((3, 5))


# ------------------------------------------------------------------------------------------ non-finite
def test_non_finite_error_is_a_value_error_with_scikit_learns_words():
    assert issubclass(gpunn.NonFiniteError, ValueError) and issubclass(gpunn.NonFiniteError, FloatingPointError)
    assert issubclass(gpunn.DivergenceError, ValueError)
    rng = np.random.RandomState(0)
    X = np.finfo(np.float64).max * rng.uniform(size=(10, 2))
    y = rng.standard_normal(size=10)
    for est in _both("regressor"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ValueError, match=SKLEARN_NON_FINITE):
                est.fit(X, y)


def _diverging(early_stopping: bool):
    X, y = _blobs(150)
    kw = dict(hidden_layer_sizes=20, activation="identity", solver="sgd", learning_rate_init=1.0, max_iter=20,
              early_stopping=early_stopping, random_state=0)  # fmt: skip
    return X, X[:, 0] * 3 + y, _both("regressor", **kw)


def test_a_diverging_fit_with_early_stopping_warns_and_keeps_the_best_weights():
    """scikit-learn scores the epochs whose weights are not finite NaN and ends with the best validation epoch's
    weights; gpunn does the same and stops at the first such epoch, with a warning."""
    X, y, (ours, theirs) = _diverging(early_stopping=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.fit(X, y)
    assert np.isnan(theirs.validation_scores_[-1]) and all(np.isfinite(w).all() for w in _weights(theirs))
    with pytest.warns(ConvergenceWarning, match=r"Training diverged in epoch \d+ of this fit"):
        ours.fit(X, y)
    assert np.isnan(ours.validation_scores_[-1]) and isinstance(ours.validation_scores_[-1], float)
    assert len(ours.validation_scores_) == len(ours.loss_curve_) == ours.n_iter_ < 20
    finite = [s for s in ours.validation_scores_ if np.isfinite(s)]
    assert ours.best_validation_score_ == max(finite)
    # the weights kept are the best epoch's: they score best_validation_score_ on the estimator's own split
    from sklearn.model_selection import train_test_split

    _, X_val, _, y_val = train_test_split(X, y, test_size=0.1, random_state=ours._seed_split)
    assert ours.score(X_val, y_val) == pytest.approx(ours.best_validation_score_, rel=1e-9)


def test_a_diverging_fit_without_early_stopping_raises_scikit_learns_value_error():
    X, y, ests = _diverging(early_stopping=False)
    for est in ests:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with pytest.raises(ValueError, match=SKLEARN_NON_FINITE):
                est.fit(X, y)
    assert all(np.isfinite(w).all() for w in _weights(ests[0]))  # gpunn keeps its last finite weights


# --------------------------------------------------------------------------------------------- classes
def test_one_class_trains_and_predicts_as_scikit_learns(tmp_path):
    """One class in fit: scikit-learn trains one logistic output towards 0 and predicts the class; gpunn's loss
    curve, probabilities (two columns, as there) and labels equal scikit-learn's, early stopping included."""
    X, _ = _blobs()
    y = np.full(len(X), "only")
    kw = dict(solver="sgd", random_state=0, max_iter=15, hidden_layer_sizes=(6,), batch_size=60)
    ours, theirs = _both("classifier", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
        theirs.fit(X, y)
    assert list(ours.classes_) == list(theirs.classes_) == ["only"]
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    assert ours.score(X, y) == theirs.score(X, y) == 1.0
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):  # its graph says the same
        import onnxruntime

        session = onnxruntime.InferenceSession(ours.to_onnx(tmp_path / "one.onnx"))
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"X": X})))
        np.testing.assert_array_equal(got["label"], theirs.predict(X))
        np.testing.assert_allclose(got["probabilities"], theirs.predict_proba(X), rtol=1e-9)
    es = MLPClassifier(early_stopping=True, validation_fraction=0.2, max_iter=5, device="cpu").fit(X[:10], y[:10])
    assert es.validation_scores_ == [1.0] * es.n_iter_  # predict gives the one class: always right, as there


@pytest.mark.parametrize("n_classes", [2, 3])
def test_partial_fit_one_row_at_a_time_equals_scikit_learns(n_classes):
    """Online learning: every batch one row, so one class; the weights after 60 rows equal scikit-learn's."""
    X, y = _blobs(60, n_classes)
    ours, theirs = _both("classifier", solver="sgd", random_state=0, hidden_layer_sizes=(8,), learning_rate_init=0.05)
    classes = list(range(n_classes))
    for i in range(len(X)):
        ours.partial_fit(X[i : i + 1], y[i : i + 1], classes=classes)
        theirs.partial_fit(X[i : i + 1], y[i : i + 1], classes=classes)
    _assert_same_weights(ours, theirs, rtol=1e-9, atol=1e-12)
    assert ours.loss_curve_ == pytest.approx(theirs.loss_curve_, rel=1e-9)


def test_partial_fit_refuses_labels_outside_classes_as_scikit_learn():
    X = [[3, 2], [1, 6]]
    for est in _both("classifier", solver="sgd"):
        with pytest.raises(ValueError, match=r"`y` has classes not in `self.classes_`"):
            est.partial_fit(X, [1, 0], classes=[2])
    ours = MLPClassifier(solver="sgd", device="cpu").partial_fit(X, [0, 1], classes=[0, 1])
    with pytest.raises(ValueError, match=r"`classes=\[1, 2\]` is not the same as on last call to partial_fit"):
        ours.partial_fit(X, [0, 1], classes=[1, 2])
    for solver in ("lbfgs", "newton"):  # partial_fit exists for the stochastic solvers only, as in scikit-learn
        assert not hasattr(MLPClassifier(solver=solver), "partial_fit")
        assert not hasattr(MLPRegressor(solver=solver), "partial_fit")
    assert hasattr(SkClassifier(solver="sgd"), "partial_fit") and hasattr(MLPClassifier(solver="sgd"), "partial_fit")


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_targets_a_classifier_cannot_take_are_refused_as_scikit_learn_and_change_nothing(solver):
    X, y = _blobs()
    bad = {
        "Unknown label type: ": X[:, 0],
        "Multioutput target data is not supported with label binarization": np.stack([y, (y + 1) % 3], axis=1),
    }
    ours = _both("classifier", solver=solver, max_iter=3, random_state=0)[0].fit(X, y)
    before = _weights(ours)
    for message, target in bad.items():
        for est in (*_both("classifier", solver=solver, max_iter=3), ours):
            with pytest.raises(ValueError, match=message):
                est.fit(X, target)
    with pytest.raises(ValueError, match="Unknown label type: continuous. Maybe you are trying to fit a classifier"):
        ours.fit(X, X[:, 0])  # the kind named, where scikit-learn's MLP prints the whole array
    for a, b in zip(_weights(ours), before, strict=True):
        np.testing.assert_array_equal(a, b)
    many = np.arange(len(y)) % 40  # 40 classes in 60 rows: more than half of the rows' count
    warned = "The number of unique classes is greater than 50% of the number of samples"
    with pytest.warns(UserWarning, match=warned):  # as scikit-learn's check of a classifier's targets warns
        check_classification_targets(many)
    with pytest.warns(UserWarning, match=warned):
        _both("classifier", solver=solver, max_iter=1)[0].fit(X, many)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_partial_fit_with_early_stopping_is_refused_as_scikit_learn_and_changes_nothing(kind):
    X, y = _blobs()
    target = y if kind == "classifier" else X[:, 0]
    extra = {"classes": [0, 1, 2]} if kind == "classifier" else {}
    for est in _both(kind, early_stopping=True, max_iter=5, random_state=0):
        with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
            est.partial_fit(X, target, **extra)
    ours = _both(kind, early_stopping=True, max_iter=5, random_state=0)[0]
    with pytest.raises(ValueError):
        ours.partial_fit(X, target, **extra)
    assert not hasattr(ours, "n_features_in_") and not hasattr(ours, "coefs_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, target)
    before = _weights(ours)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        ours.partial_fit(X, target)
    for a, b in zip(_weights(ours), before):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------ early stopping split
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_a_validation_split_too_small_to_score_is_refused_as_scikit_learn(kind):
    """Two rows at a validation fraction of 0.1 hold one out: scikit-learn refuses it, and so does gpunn, before
    it changes anything (a fitted estimator keeps its weights)."""
    X, y = _blobs(40, 2)
    target = y if kind == "classifier" else X[:, 0]
    for est in _both(kind, early_stopping=True, random_state=0):
        with pytest.raises(ValueError, match="The validation set is too small. Increase 'validation_fraction'"):
            est.fit(X[[0, 20]], target[[0, 20]])
    ours = _both(kind, early_stopping=True, random_state=0, max_iter=3)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, target)
    before = _weights(ours)
    with pytest.raises(ValueError, match="The validation set is too small"):
        ours.fit(X[[0, 20]], target[[0, 20]])
    for a, b in zip(_weights(ours), before):
        np.testing.assert_array_equal(a, b)
    # 20 rows hold out 2: enough, and each scored
    ours = _both(kind, early_stopping=True, random_state=0, max_iter=3)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X[:20], target[:20])
    assert len(ours.validation_scores_) == 3 and np.isfinite(ours.validation_scores_).all()


def test_the_stratified_split_names_the_class_as_scikit_learn():
    """Binary targets are stratified on scikit-learn's boolean column: a class too small names 'True'; with
    several classes gpunn stratifies on the labels, so such a class is named as the user knows it."""
    X, y = [[1, 2], [2, 3], [3, 4], [4, 5]], [0, 0, 0, 1]
    for est in _both("classifier", early_stopping=True):
        with pytest.raises(ValueError, match=r"Classes with too few members are: \['True'\]"):
            est.fit(X, y)
    X, y = _blobs(30)
    labels = np.array(["ant", "bee", "cat"], dtype=object)[y]
    labels[0] = "yak"
    with pytest.raises(ValueError, match=r"Classes with too few members are: \['yak'\]"):
        MLPClassifier(early_stopping=True, device="cpu").fit(X, labels)


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_a_refused_fit_leaves_the_estimator_as_it_was(Estimator):
    """A fit that starts over replaces the network and scikit-learn's attributes before each batch's weights are
    checked: a first batch whose sample weights sum to 0 was refused after a fitted estimator's weights had been
    drawn anew (and left a first fit's estimator half fitted). Now both are as before the call."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    X, y = make_blobs(100, centers=2, n_features=3, random_state=0)
    target = y if Estimator is MLPClassifier else y.astype(float)
    zero_first = np.r_[np.zeros(10), np.ones(90)]
    kw = dict(hidden_layer_sizes=(8,), batch_size=10, shuffle=False, max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fresh = Estimator(**kw)
        with pytest.raises(gpunn.InputError, match="sample_weight sums to 0 over batch 1 of epoch 1"):
            fresh.fit(X, target, sample_weight=zero_first)
        with pytest.raises(NotFittedError):
            check_is_fitted(fresh)
        est = Estimator(**kw).fit(X, target)
        before = {k: (list(v) if isinstance(v, list) else v) for k, v in vars(est).items()}
        coefs = [np.array(c) for c in est.coefs_]
        with pytest.raises(gpunn.InputError, match="sample_weight sums to 0"):
            est.fit(X, target, sample_weight=zero_first)
    assert (
        set(vars(est)) == set(before) and est.n_iter_ == before["n_iter_"] and est.loss_curve_ == before["loss_curve_"]
    )
    for a, b in zip(est.coefs_, coefs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(est.predict(X), Estimator(**kw).fit(X, target).predict(X))
