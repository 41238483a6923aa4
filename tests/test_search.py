"""gpunn.sklearn.MLPSearchCV against its oracle, scikit-learn's GridSearchCV over the same gpunn estimator and grid:
the same cross-validation results (scores per split, means, deviations, ranks) to 1e-9 in float64, the same best
candidate, and a best estimator that predicts the same."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpunn

pytest.importorskip("sklearn")

from sklearn.model_selection import GridSearchCV, KFold  # noqa: E402

from gpunn.sklearn import MLPClassifier, MLPRegressor, MLPSearchCV  # noqa: E402

TOL = 1e-9


def _classification(n: int = 90, classes: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    score = X[:, 0] + X[:, 1] * X[:, 2]
    y = (score > 0).astype(int) if classes == 2 else np.digitize(score, [-0.6, 0.6])
    return X, y


def _compare(ours: MLPSearchCV, ref: GridSearchCV, X) -> None:
    r, s = ours.cv_results_, ref.cv_results_
    assert r["params"] == s["params"]
    for key in s:
        if key.startswith("split") or key in ("mean_test_score", "std_test_score"):
            np.testing.assert_allclose(r[key], s[key], rtol=0, atol=TOL, err_msg=key)
        elif key == "rank_test_score":
            np.testing.assert_array_equal(r[key], s[key])
        elif key.startswith("param_"):
            assert list(r[key]) == list(s[key]), key
        else:
            assert key in r, key
    assert ours.best_index_ == ref.best_index_ and ours.best_params_ == ref.best_params_
    assert abs(ours.best_score_ - ref.best_score_) <= TOL
    assert ours.n_splits_ == ref.n_splits_
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def _both(estimator, grid, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning from both, alike
        ours = MLPSearchCV(estimator, grid, **kwargs).fit(X, y)
        ref = GridSearchCV(estimator, grid, **kwargs).fit(X, y)
    return ours, ref


def test_binary_grid_with_both_solvers_and_early_stopping_equals_gridsearchcv():
    X, y = _classification()
    est = MLPClassifier(hidden_layer_sizes=(6,), max_iter=15, random_state=0, device="cpu")
    grid = {"learning_rate_init": [0.01, 0.05], "alpha": [1e-4, 1e-1], "solver": ["adam", "sgd"],
            "early_stopping": [False, True]}  # fmt: skip
    ours, ref = _both(est, grid, X, y, cv=3)
    _compare(ours, ref, X)
    assert ours.n_ensembles_ == 2  # adam and sgd: 8 grid points x 3 folds in each ensemble


def test_multiclass_minibatches_class_and_sample_weights_equal_gridsearchcv():
    X, y = _classification(classes=3)
    w = np.random.default_rng(3).uniform(0.5, 2.0, size=len(y))
    est = MLPClassifier(hidden_layer_sizes=(5, 4), max_iter=10, batch_size=16, random_state=2, device="cpu",
                        learning_rate_init=0.02)  # fmt: skip
    grid = [{"class_weight": [None, "balanced"], "tol": [1e-4, 1e-1], "n_iter_no_change": [2]},
            {"hidden_layer_sizes": [(7,)], "activation": ["tanh", "relu"]}]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = MLPSearchCV(est, grid, cv=3).fit(X, y, sample_weight=w)
        ref = GridSearchCV(est, grid, cv=3).fit(X, y, sample_weight=w)
    _compare(ours, ref, X)
    assert ours.n_ensembles_ == 3  # (5, 4) relu, (7,) tanh, (7,) relu


def test_regressor_sgd_schedules_and_a_scoring_equal_gridsearchcv():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1]
    est = MLPRegressor(hidden_layer_sizes=(6,), max_iter=20, batch_size=25, random_state=1, device="cpu",
                       solver="sgd")  # fmt: skip
    grid = {"learning_rate": ["constant", "invscaling", "adaptive"], "learning_rate_init": [0.01, 0.05],
            "n_iter_no_change": [1, 5], "max_iter": [8, 20]}  # fmt: skip
    ours, ref = _both(est, grid, X, y, cv=KFold(4, shuffle=True, random_state=0), scoring="neg_mean_squared_error")
    _compare(ours, ref, X)
    assert ours.n_ensembles_ == 1


def test_without_refit_there_is_no_best_estimator():
    X, y = _classification()
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search = MLPSearchCV(est, {"alpha": [1e-4, 1e-2]}, cv=2, refit=False).fit(X, y)
    assert not hasattr(search, "best_estimator_") and search.best_index_ in (0, 1)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(estimator="not an estimator"), TypeError, "searches gpunn.sklearn estimators"),
        (dict(scoring=["accuracy", "f1"]), ValueError, "one metric"),
        (dict(refit="accuracy"), ValueError, "refit must be True or False"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, error, match):
    X, y = _classification()
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0, device="cpu")
    args = {"estimator": est, "param_grid": {"alpha": [1e-4]}, **kwargs}
    with pytest.raises(error, match=match):
        MLPSearchCV(**args).fit(X, y)


def test_a_candidate_that_diverges_scores_error_score_as_gridsearchcv_scores_a_failed_fit():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = X[:, 0] * 3.0 + X[:, 1]
    est = MLPRegressor(hidden_layer_sizes=(6,), solver="sgd", max_iter=40, random_state=0, device="cpu",
                       batch_size=90)  # fmt: skip
    grid = {"learning_rate_init": [0.01, 50.0]}  # the second explodes: its lone fit raises DivergenceError
    with pytest.warns(Warning) as caught:
        ours = MLPSearchCV(est, grid, cv=3).fit(X, y)
        ref = GridSearchCV(est, grid, cv=3).fit(X, y)
    from sklearn.exceptions import FitFailedWarning

    assert sum(isinstance(w.message, FitFailedWarning) for w in caught) == 2  # one each
    assert np.isnan(ref.cv_results_["mean_test_score"][1])  # the oracle failed that candidate
    _compare(ours, ref, X)
    with pytest.raises(gpunn.DivergenceError):
        MLPSearchCV(est, grid, cv=3, error_score="raise").fit(X, y)
    with pytest.raises(ValueError, match="error_score must be 'raise' or a number"):
        MLPSearchCV(est, grid, cv=3, error_score="nan").fit(X, y)
