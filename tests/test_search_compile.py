"""MLPSearchCV on JAX compiles nothing per fold or per grid value in its set-up (issue 28.5): the folds' rows are
taken from one host copy of X, y and the per-row fit parameters and moved to the device once a fold, where taking
them on the device compiled a gather (and its index arithmetic) for each fold's row count. Counted with JAX's own
backend-compile events, the training (the ensembles' fits) and the scoring (the estimators' predictions, as
GridSearchCV makes them) counted apart; the results held to scikit-learn's GridSearchCV on the same data in NumPy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
pytest.importorskip("sklearn")

import jax_compiles  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from gpunn import _backend  # noqa: E402
from gpunn.ensemble import Ensemble  # noqa: E402
from gpunn.sklearn import MLPClassifier, MLPRegressor, MLPSearchCV  # noqa: E402

N = 151  # folds of 100 and 101 training rows (cv=3), 121 and 120 (cv=5): several row counts
TOL = 1e-9


class Phases:
    """XLA compilations while a search runs, those of its ensembles' fits and of its scoring apart."""

    def __init__(self, monkeypatch):
        self.namespaces: list[str] = []
        real_fit = Ensemble.fit

        def fit(ens, *args, **kwargs):
            self.namespaces.append(_backend.namespace_name(ens.xp))
            return self._counted("training", real_fit, ens, *args, **kwargs)

        monkeypatch.setattr(Ensemble, "fit", fit)

    @property
    def count(self):
        return jax_compiles.count()

    def _counted(self, phase, fn, *args, **kwargs):
        before = self.count
        try:
            return fn(*args, **kwargs)
        finally:
            self.phases[phase] += self.count - before

    def scorer(self, estimator, X, y):
        return self._counted("scoring", estimator.score, X, y)

    def search(self, estimator, grid, X, y, **kwargs):
        """The search's compilations: ``{"set-up": ..., "training": ..., "scoring": ...}``."""
        self.phases = {"training": 0, "scoring": 0}
        before = self.count
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at a few epochs
            MLPSearchCV(estimator, grid, cv=kwargs.pop("cv", 3), scoring=self.scorer, refit=False).fit(X, y, **kwargs)
        return {"set-up": self.count - before - sum(self.phases.values()), **self.phases}


def _data(regression=False):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 4))
    score = X[:, 0] + X[:, 1] * X[:, 2]
    return X, (score if regression else (score > 0).astype(np.int64)), rng.uniform(0.5, 2.0, size=N)


CASES = {
    "classifier": (MLPClassifier, {}, False),
    "classifier, early stopping, sample weights": (MLPClassifier, dict(early_stopping=True), True),
    "regressor, a 1-d target": (MLPRegressor, {}, False),
}


# the plain classifier's set-up is the early-stopping one's without its splits and weights: its results are held
# to GridSearchCV's below, and its compilations here would add the three searches' training programs for nothing
@pytest.mark.parametrize("case", [c for c in CASES if c != "classifier"])
def test_the_set_up_compiles_a_fixed_few_programs_whatever_the_folds_and_the_grid(monkeypatch, case):
    """The set-up (every fold's rows, every candidate's checks, encoding and initial weights) compiles at most the
    two scalar programs of the array namespace's first use, and nothing in a second search with more learning
    rates or in one with other folds; the second search's training compiles no more than the first's (its members
    are more, its programs as many). Before, the set-up compiled 4 programs for each fold's row count, for X and y
    each and again for the test folds' rows, and the training ran on JAX as it does now."""
    cls, kwargs, weighted = CASES[case]
    X, y, w = _data(regression=cls is MLPRegressor)
    estimator = cls(hidden_layer_sizes=(5,), max_iter=3, random_state=0, **kwargs)
    fit = {"sample_weight": jnp.asarray(w)} if weighted else {}
    jax.clear_caches()  # the eager operations of the shapes below compile anew, whatever ran before in this process
    phases = Phases(monkeypatch)
    X, y = jnp.asarray(X), jnp.asarray(y)
    first = phases.search(estimator, {"learning_rate_init": [0.001, 0.01, 0.1], "alpha": [1e-4, 1e-2]}, X, y, **fit)
    assert first["set-up"] <= 2, first
    # the regressor's set-up differs from the classifier's in y alone: its first search's folds of 100 and 101
    # rows (and test folds of 51 and 50) would each compile the 1-d target's reshape, so the first search shows it
    if cls is MLPClassifier:  # a second search with more rates, and other folds' row counts
        more = phases.search(estimator, {"learning_rate_init": [0.002, 0.02, 0.2, 0.3, 0.05], "alpha": [1e-4, 1e-2]},
                             X, y, **fit)  # fmt: skip
        assert more["set-up"] == 0 and more["scoring"] == 0, more
        assert more["training"] <= first["training"], (first, more)
        other_folds = phases.search(estimator, {"learning_rate_init": [0.003, 0.03]}, X, y, cv=5, **fit)
        assert other_folds["set-up"] == 0, other_folds
    assert set(phases.namespaces) == {"jax"}  # the ensembles train on the user's namespace


@pytest.mark.parametrize("case", list(CASES))
def test_a_search_on_jax_equals_gridsearchcv_on_numpy(case):
    """The same cross-validation results (every split's scores, means, ranks) and best candidate as GridSearchCV
    over the same estimator on the data in NumPy, in float64."""
    cls, kwargs, weighted = CASES[case]
    X, y, w = _data(regression=cls is MLPRegressor)
    estimator = cls(hidden_layer_sizes=(5,), max_iter=6, random_state=0, **kwargs)
    grid = {"learning_rate_init": [0.01, 0.1], "alpha": [1e-4, 1e-1]}
    scoring = ["r2", "neg_mean_squared_error"] if cls is MLPRegressor else ["accuracy", "neg_log_loss"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = MLPSearchCV(estimator, grid, cv=3, scoring=scoring, refit=scoring[1]).fit(
            jnp.asarray(X), jnp.asarray(y), **({"sample_weight": jnp.asarray(w)} if weighted else {}))  # fmt: skip
        ref = GridSearchCV(estimator, grid, cv=3, scoring=scoring, refit=scoring[1]).fit(
            X, y, **({"sample_weight": w} if weighted else {}))  # fmt: skip
    assert _backend.namespace_name(ours.best_estimator_._model.xp) == "jax"
    for key, value in ref.cv_results_.items():
        if key.startswith(("split", "mean_test_", "std_test_")):
            np.testing.assert_allclose(ours.cv_results_[key], value, rtol=0, atol=TOL, err_msg=key)
        elif key.startswith("rank_test_"):
            np.testing.assert_array_equal(ours.cv_results_[key], value)
    assert ours.best_params_ == ref.best_params_ and ours.best_index_ == ref.best_index_
    assert abs(ours.best_score_ - ref.best_score_) <= TOL
