"""gpunn.sklearn.MLPSearchCV against its oracle, scikit-learn's GridSearchCV over the same gpunn estimator and grid:
the same cross-validation results (scores per split, means, deviations, ranks) to 1e-9 in float64, the same best
candidate, and a best estimator that predicts the same."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpunn

pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold  # noqa: E402

from gpunn.sklearn import MLPClassifier, MLPRegressor, MLPSearchCV  # noqa: E402

TOL = 1e-9


def _classification(n: int = 90, classes: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    score = X[:, 0] + X[:, 1] * X[:, 2]
    y = (score > 0).astype(int) if classes == 2 else np.digitize(score, [-0.6, 0.6])
    return X, y


def _compare(ours: MLPSearchCV, ref: GridSearchCV, X, y=None) -> None:
    r, s = ours.cv_results_, ref.cv_results_
    assert r["params"] == s["params"]
    assert list(r) == list(s)  # the same keys, in GridSearchCV's order
    for key in s:
        if key.startswith(("split", "mean_test_", "std_test_", "mean_train_", "std_train_")):
            np.testing.assert_allclose(r[key], s[key], rtol=0, atol=TOL, err_msg=key)
        elif key.startswith("rank_test_"):
            np.testing.assert_array_equal(r[key], s[key])
        elif key.startswith("param_"):
            assert list(r[key]) == list(s[key]), key
    assert ours.multimetric_ == ref.multimetric_
    if ours.refit or not ours.multimetric_:
        assert ours.best_index_ == ref.best_index_ and ours.best_params_ == ref.best_params_
        assert hasattr(ours, "best_score_") == hasattr(ref, "best_score_")
        if hasattr(ref, "best_score_"):
            assert abs(ours.best_score_ - ref.best_score_) <= TOL
    assert ours.n_splits_ == ref.n_splits_
    if ours.refit:
        np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
        if y is not None:
            assert ours.score(X, y) == pytest.approx(ref.score(X, y), abs=TOL)


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
        (dict(estimator="not an estimator"), gpunn.InputTypeError, "searches gpunn.sklearn estimators"),
        (dict(scoring=["accuracy", "f1"]), ValueError, "For multi-metric scoring, the parameter refit must be"),
        (dict(scoring=["accuracy", "f1"], refit="roc_auc"), ValueError, "'roc_auc' was passed"),
        (dict(refit=3), gpunn.ConfigError, "refit must be True, False, a metric's name or a callable"),
        (dict(refit=lambda results: 1.0), TypeError, "best_index_ returned is not an integer"),
        (dict(refit=lambda results: 7), IndexError, "best_index_ index out of range"),
        (dict(n_jobs=0), gpunn.ConfigError, "n_jobs must be None or a non-zero integer"),
        (dict(pre_dispatch=1.5), gpunn.ConfigError, "pre_dispatch must be an integer or a string"),
        # a list of no grids: was a ZeroDivisionError from the mean over no candidates
        (dict(param_grid=[]), gpunn.ConfigError, r"^param_grid \[\] holds no candidates; give a dict of parameter"),
        (dict(comm=3), gpunn.ConfigError, r"^comm must be a gpunn.distributed.Communicator \(or None\); got int$"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, error, match):
    X, y = _classification()
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0, device="cpu")
    args = {"estimator": est, "param_grid": {"alpha": [1e-4]}, **kwargs}
    with pytest.raises(error, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MLPSearchCV(**args).fit(X, y)


def test_a_candidate_that_diverges_scores_error_score_as_gridsearchcv_scores_a_failed_fit():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = X[:, 0] * 3.0 + X[:, 1]
    est = MLPRegressor(hidden_layer_sizes=(6,), solver="sgd", max_iter=40, random_state=0, device="cpu",
                       batch_size=90)  # fmt: skip
    grid = {"learning_rate_init": [0.01, 50.0]}  # the second explodes: its lone fit raises NonFiniteError
    with pytest.warns(Warning) as caught:
        ours = MLPSearchCV(est, grid, cv=3).fit(X, y)
        ref = GridSearchCV(est, grid, cv=3).fit(X, y)
    from sklearn.exceptions import FitFailedWarning

    assert sum(isinstance(w.message, FitFailedWarning) for w in caught) == 2  # one each
    assert np.isnan(ref.cv_results_["mean_test_score"][1])  # the oracle failed that candidate
    _compare(ours, ref, X)
    with pytest.raises(gpunn.NonFiniteError, match="Solver produced non-finite parameter weights"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            MLPSearchCV(est, grid, cv=3, error_score="raise").fit(X, y)  # the lone fit's error, as GridSearchCV's
    # With early stopping a lone fit that diverges warns and keeps its best epoch's weights: it is scored.
    est.set_params(early_stopping=True)
    with pytest.warns(ConvergenceWarning, match="Training diverged") as caught:
        ours = MLPSearchCV(est, grid, cv=3).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = GridSearchCV(est, grid, cv=3).fit(X, y)
    assert sum("Training diverged" in str(w.message) for w in caught) == 3  # each fold of the second candidate
    assert not np.isnan(ref.cv_results_["mean_test_score"]).any()
    _compare(ours, ref, X)
    with pytest.raises(ValueError, match="error_score must be 'raise' or a number"):
        MLPSearchCV(est, grid, cv=3, error_score="nan").fit(X, y)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(return_train_score=True, n_jobs=2, pre_dispatch=4),
        dict(scoring=["accuracy", "f1"], refit="f1", return_train_score=True),
        dict(scoring={"acc": "accuracy", "bal": "balanced_accuracy"}, refit=False),
        dict(refit=lambda results: int(np.argmax(results["mean_test_score"] - results["std_test_score"]))),
        dict(refit="accuracy", n_jobs=-1, pre_dispatch="all"),  # one metric: a name refits on it, as True
    ],
    ids=["train-scores", "two-metrics", "named-metrics-no-refit", "refit-callable", "refit-name"],
)
def test_gridsearchcv_s_other_arguments_mean_what_they_mean_there(kwargs):
    """return_train_score, several metrics, refit by name or by a callable: the same cv_results_ (every key, in
    order), best candidate and refitted estimator as GridSearchCV's; n_jobs splits the fits over processes with
    the same results, and pre_dispatch is accepted."""
    X, y = _classification()
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=10, random_state=0, device="cpu")
    grid = {"alpha": [1e-4, 1e-1], "learning_rate_init": [0.003, 0.05]}
    ours, ref = _both(est, grid, X, y, cv=3, **kwargs)
    _compare(ours, ref, X, y)
    if kwargs.get("return_train_score"):
        assert "mean_train_score" in ours.cv_results_ or "mean_train_f1" in ours.cv_results_
    if callable(kwargs.get("refit")):
        assert not hasattr(ours, "best_score_")


def test_n_jobs_splits_shape_groups_then_members_over_processes_with_gridsearchcv_s_results():
    """12 fits in two shape groups of 6, cut into 3 parts of 4 (the middle part holds the end of one group and
    the start of the other): 4 ensembles trained in 3 joblib processes, and GridSearchCV's results."""
    X, y = _classification()
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=10, random_state=0, device="cpu", solver="sgd")
    grid = {"hidden_layer_sizes": [(4,), (5,)], "alpha": [1e-4, 1e-1]}
    ours, ref = _both(est, grid, X, y, cv=3, n_jobs=3)
    _compare(ours, ref, X, y)
    assert ours.n_ensembles_ == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = MLPSearchCV(est, grid, cv=3).fit(X, y)
    assert one.n_ensembles_ == 2
    for key in ("mean_test_score", "std_test_score", "split0_test_score"):
        np.testing.assert_allclose(ours.cv_results_[key], one.cv_results_[key], rtol=0, atol=1e-12)


def test_verbose_prints_gridsearchcv_s_lines(capsys):
    """verbose=1: the count of fits; 3: a line per fit with its fold, parameters and scores; 10: START lines too.
    The lines equal GridSearchCV's but for the times."""
    import re

    X, y = _classification()
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0, device="cpu")
    for verbose in (1, 3, 10):
        printed = []
        for search in (MLPSearchCV, GridSearchCV):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                search(est, {"alpha": [1e-4, 1e-2]}, cv=2, verbose=verbose, return_train_score=True,
                       scoring=["accuracy", "f1"], refit="f1").fit(X, y)  # fmt: skip
            printed.append(re.sub(r"total time= *[\d.]+m?s", "total time", capsys.readouterr().out))
        assert printed[0] == printed[1]
        assert printed[0].count("\n") == {1: 1, 3: 5, 10: 9}[verbose]
