"""MLPSearchCV: scikit-learn's grid search over a gpunn estimator, every grid point and fold of one network shape
trained as one :class:`gpunn.Ensemble`.

Each (candidate, fold) is the estimator ``GridSearchCV`` would fit: ``clone(estimator).set_params(**params)``
fitted on the fold's training rows. gpunn runs that estimator's own ``fit`` up to the point where it would train
(its checks, its label encoding, its initial weights from ``random_state``), and then trains every such
estimator that shares the network shape, optimizer, batch size and shuffling as one member of a stacked
ensemble, each on its own rows (``Ensemble.fit(rows=...)``) with its own learning rate, ``alpha``, schedule,
stopping rule and ``max_iter``. What scikit-learn's loop does after each epoch (loss curve, ``tol`` and
``n_iter_no_change``, early stopping on a validation split, the SGD schedules) runs per member as that
member's callback. So each fold's estimator ends as it would alone, and the scores are ``GridSearchCV``'s.
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier
    from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
    from sklearn.metrics import check_scoring
    from sklearn.model_selection import ParameterGrid, check_cv, train_test_split
    from sklearn.utils import _safe_indexing
    from sklearn.utils.validation import check_is_fitted, indexable
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("gpunn.sklearn needs scikit-learn: pip install 'gpunn[sklearn]'") from exc
from scipy.stats import rankdata

from .. import schedules
from ..ensemble import Ensemble
from ..errors import DivergenceError
from ._base import _HELD, _BaseMLP


class _Task:
    """One (candidate, fold): its estimator, stopped where it would train, and what it would train on."""

    def __init__(self, candidate: int, fold: int, estimator: _BaseMLP, train: np.ndarray, test: np.ndarray):
        self.candidate, self.fold, self.estimator, self.train, self.test = candidate, fold, estimator, train, test
        self.fit_time = 0.0
        self.score = np.nan
        self.score_time = 0.0
        self.error: str | None = None  # why the fit failed (its divergence), or None

    def prepare(self, X: Any, y: Any, fit_params: dict[str, Any]) -> None:
        """Run the estimator's fit up to its training: it validates, encodes the targets and draws its initial
        weights; the arrays it would train on are kept here."""
        est = self.estimator
        captured: dict[str, Any] = {}

        def capture(X_fit: Any, T: Any, epochs: int, incremental: bool, sample_weight: Any = None) -> None:
            captured.update(X=X_fit, T=T, epochs=epochs, sample_weight=sample_weight)

        est._train = capture  # type: ignore[method-assign, assignment]  # the instance's, for this one call
        try:
            est.fit(_safe_indexing(X, self.train), _safe_indexing(y, self.train), **fit_params)
        finally:
            del est._train
        self.X, self.T, self.epochs, self.weight = (
            captured["X"],
            captured["T"],
            captured["epochs"],
            captured["sample_weight"],
        )

    def key(self) -> tuple:
        """What members of one ensemble must share."""
        est, m = self.estimator, self.estimator._model
        batch = min(200, len(self.X)) if est.batch_size == "auto" else min(int(est.batch_size), len(self.X))
        classes = tuple(np.asarray(getattr(est, "classes_", ())).tolist())
        return (
            type(est), tuple(m.sizes), str(m.activation), m.output, m.dtype, id(m.xp), str(m.device), classes,
            est._optimizer(), batch, bool(est.shuffle), self.weight is not None, self.X.dtype.str, str(self.T.dtype),
        )  # fmt: skip


def _after_epoch(est: _BaseMLP, key: str, scale: float, n_train: int, val: tuple | None, best: dict[str, Any]) -> Any:
    """What ``_BaseMLP._train`` does after each epoch, for one member, plus the stop at ``max_iter`` that its own
    ``fit(epochs=max_iter)`` would make."""
    after_epoch = est._after_epoch(key, scale, n_train, val, best)
    return lambda model, record: after_epoch(model, record) and est.n_iter_ < est.max_iter


def _train_group(tasks: list[_Task], n: int) -> None:
    """Train the tasks' estimators as one ensemble on the rows of one X (the tasks' own arrays put back in
    place: every row is the array its estimator validated)."""
    first = tasks[0]
    est0 = first.estimator
    X = np.zeros((n, first.X.shape[1]), dtype=first.X.dtype)
    T = np.empty((n, *first.T.shape[1:]), dtype=first.T.dtype)
    T[...] = first.T[0]
    weights = np.zeros((len(tasks), n)) if first.weight is not None else None
    rows, rates, l2s, callbacks, bests = [], [], [], [], []
    for k, task in enumerate(tasks):
        est = task.estimator
        X[task.train] = task.X
        T[task.train] = task.T
        scale = est._gradient_scale()
        rate: Any = est.learning_rate_init / scale if est.solver == "sgd" else est.learning_rate_init
        if est._sgd_schedule():
            rate = schedules.plateau(rate, factor=0.2, patience=_HELD)
        member_rows, val = np.arange(len(task.X)), None
        if est.early_stopping:  # the estimator's own split of its rows, by the same generator
            Tk = task.T
            stratify = Tk if is_classifier(est) and (Tk.ndim == 1 or Tk.shape[1] == 1) else None
            member_rows, held = train_test_split(
                member_rows, test_size=est.validation_fraction, random_state=est._seed_split, stratify=stratify
            )
            val = (task.X[held], Tk[held], None if task.weight is None else task.weight[held])
        if weights is not None:
            weights[k, task.train] = task.weight
        rows.append(task.train[member_rows])
        rates.append(rate)
        l2s.append(est.alpha * scale)
        best: dict[str, Any] = {"weights": est._best_weights}
        bests.append(best)
        key = "loss" if task.weight is None else "weighted_loss"
        callbacks.append([_after_epoch(est, key, scale, len(member_rows), val, best)])
    for task in tasks:  # every fit starts a new optimizer and rate, as scikit-learn's
        task.estimator._model.optimizer_state, task.estimator._model.schedule = None, None
    ens = Ensemble.from_members([t.estimator._model for t in tasks], compile=est0._model.compile)
    batch = first.key()[9]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="gpunn: ensemble member", category=RuntimeWarning)
        try:  # a member that diverges is set aside: its task failed, as the lone estimator's fit would have
            ens.fit(
                X, T, epochs=max(t.epochs for t in tasks), lr=rates, batch_size=batch, optimizer=est0._optimizer(),
                shuffle=est0.shuffle, verbose=0, l2=l2s, callbacks=callbacks, sample_weight=weights, rows=rows,
            )  # fmt: skip
        except DivergenceError:
            pass  # every member diverged: every task failed
    elapsed = (time.perf_counter() - start) / len(tasks)
    for task, reason in zip(tasks, ens.diverged):
        task.error = reason
    for task, best in zip(tasks, bests):
        est = task.estimator
        est._best_weights = best["weights"]
        if est.early_stopping and best["weights"] is not None:
            est._model.set_weights(best["weights"])
        if est._no_improvement_count <= est.n_iter_no_change and est.n_iter_ == est.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and the optimization hasn't "
                "converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        task.fit_time += elapsed


def _param_arrays(candidates: list[dict[str, Any]]) -> dict[str, np.ma.MaskedArray]:
    names = sorted({name for c in candidates for name in c})
    out = {}
    for name in names:
        values = np.ma.MaskedArray(np.empty(len(candidates), dtype=object), mask=True)
        for i, c in enumerate(candidates):
            if name in c:
                values[i] = c[name]
        out[f"param_{name}"] = values
    return out


class MLPSearchCV(MetaEstimatorMixin, BaseEstimator):
    """Exhaustive search over a grid of a gpunn ``MLPClassifier``'s or ``MLPRegressor``'s parameters, with
    cross-validation, as ``sklearn.model_selection.GridSearchCV``, training the grid points and folds that share
    a network shape as one stacked ensemble.

    Parameters
    ----------
    estimator : gpunn.sklearn.MLPClassifier or MLPRegressor
    param_grid : dict or list of dicts
        As for ``GridSearchCV``: parameter names to lists of values.
    cv : int, cross-validation generator or iterable
        As for ``GridSearchCV`` (5: stratified 5-fold for classifiers, 5-fold otherwise).
    scoring : str or callable, optional
        One metric, as for ``GridSearchCV``; the estimator's ``score`` by default.
    refit : bool
        Refit the best candidate on all of ``X`` into ``best_estimator_``.
    error_score : "raise" or float
        The score of a fit that diverged (its member of the stacked ensemble was set aside), as ``GridSearchCV``
        scores a fit that failed: ``np.nan`` by default, with one ``FitFailedWarning``; "raise" raises its
        ``DivergenceError``.

    Attributes
    ----------
    cv_results_, best_params_, best_score_, best_index_, best_estimator_, n_splits_, scorer_, refit_time_:
        As ``GridSearchCV``'s (``mean_fit_time`` shares each ensemble's time out among its members).
    n_ensembles_ : int
        How many stacked ensembles the search trained.
    """

    def __init__(
        self, estimator: Any, param_grid: Any, *, cv: Any = 5, scoring: Any = None, refit: bool = True,
        error_score: Any = np.nan,
    ):  # fmt: skip
        self.estimator = estimator
        self.param_grid = param_grid
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.error_score = error_score

    def fit(self, X: Any, y: Any, **fit_params: Any) -> MLPSearchCV:
        """Fit every candidate on every fold, stacked; then refit the best on all of ``X``. ``fit_params`` (such
        as ``sample_weight``) are indexed by fold, as ``GridSearchCV`` does."""
        if not isinstance(self.estimator, _BaseMLP):
            raise TypeError(f"MLPSearchCV searches gpunn.sklearn estimators; got {type(self.estimator).__name__}")
        if not isinstance(self.refit, bool):
            raise ValueError(f"refit must be True or False; got {self.refit!r}")
        if isinstance(self.scoring, (list, tuple, set, Mapping)):
            raise ValueError("MLPSearchCV takes one metric: scoring is a string, a callable or None")
        if not (isinstance(self.error_score, str) and self.error_score == "raise") and not isinstance(
            self.error_score, (int, float, np.number)
        ):
            raise ValueError(f"error_score must be 'raise' or a number; got {self.error_score!r}")
        X, y = indexable(X, y)
        fit_params = dict(fit_params)
        groups = fit_params.pop("groups", None)
        candidates = list(ParameterGrid(self.param_grid))
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        splits = list(cv.split(X, y, groups))
        self.scorer_ = check_scoring(self.estimator, self.scoring)
        tasks = self._tasks(candidates, splits, X, y, fit_params)
        stacks: dict[tuple, list[_Task]] = {}
        for task in tasks:
            stacks.setdefault(task.key(), []).append(task)
        for stack in stacks.values():
            _train_group(stack, len(y))
        self.n_ensembles_ = len(stacks)
        self._score(tasks, X, y, fit_params.get("sample_weight") if _forwards_weights(self.scorer_) else None)
        self.cv_results_ = self._results(candidates, len(splits), tasks)
        self.n_splits_ = len(splits)
        self.best_index_ = int(self.cv_results_["rank_test_score"].argmin())
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.best_params_ = candidates[self.best_index_]
        if self.refit:
            start = time.perf_counter()
            self.best_estimator_ = clone(self.estimator).set_params(**clone(self.best_params_, safe=False))
            self.best_estimator_.fit(X, y, **fit_params)
            self.refit_time_ = time.perf_counter() - start
        self.multimetric_ = False
        return self

    def _tasks(self, candidates: list[dict[str, Any]], splits: list[Any], X: Any, y: Any,
               fit_params: dict[str, Any]) -> list[_Task]:  # fmt: skip
        """Every (candidate, fold)'s estimator, validated and stopped where it would train."""
        n, tasks = len(y), []
        for c, params in enumerate(candidates):
            for f, (train, test) in enumerate(splits):
                est = clone(self.estimator).set_params(**clone(params, safe=False))
                task = _Task(c, f, est, np.asarray(train), np.asarray(test))
                fold_params = {k: _safe_indexing(v, task.train) if _per_row(v, n) else v for k, v in fit_params.items()}
                start = time.perf_counter()
                task.prepare(X, y, fold_params)
                task.fit_time = time.perf_counter() - start
                tasks.append(task)
        return tasks

    def _score(self, tasks: list[_Task], X: Any, y: Any, score_weight: Any) -> None:
        """Every task's test score; a fit that diverged scores ``error_score``, as GridSearchCV scores a failed
        fit (with one FitFailedWarning), or with ``error_score="raise"`` its error is raised."""
        failed = [task for task in tasks if task.error is not None]
        if failed and isinstance(self.error_score, str):
            raise DivergenceError(failed[0].error)
        for task in tasks:
            start = time.perf_counter()
            kw = {} if score_weight is None else {"sample_weight": _safe_indexing(score_weight, task.test)}
            X_test, y_test = _safe_indexing(X, task.test), _safe_indexing(y, task.test)
            if task.error is None:
                task.score = float(self.scorer_(task.estimator, X_test, y_test, **kw))
            else:
                task.score = float(self.error_score)
            task.score_time = time.perf_counter() - start
        if failed:
            warnings.warn(
                f"{len(failed)} fits failed out of a total of {len(tasks)}.\nThe score on these train-test partitions "
                f"for these parameters will be set to {self.error_score}.\nThe fits failed because they diverged: "
                + "; ".join(sorted({task.error for task in failed if task.error is not None})),
                FitFailedWarning,
                stacklevel=3,
            )

    @staticmethod
    def _results(candidates: list[dict[str, Any]], n_splits: int, tasks: list[_Task]) -> dict[str, Any]:
        shape = (len(candidates), n_splits)
        table = {name: np.empty(shape) for name in ("fit_time", "score_time", "test_score")}
        for t in tasks:
            table["fit_time"][t.candidate, t.fold] = t.fit_time
            table["score_time"][t.candidate, t.fold] = t.score_time
            table["test_score"][t.candidate, t.fold] = t.score
        results: dict[str, Any] = {}
        for name in ("fit_time", "score_time", "test_score"):
            array = table[name]
            if name == "test_score":
                for f in range(n_splits):
                    results[f"split{f}_test_score"] = array[:, f]
            means = np.average(array, axis=1)
            results[f"mean_{name}"] = means
            results[f"std_{name}"] = np.sqrt(np.average((array - means[:, None]) ** 2, axis=1))
            if name == "test_score":  # as GridSearchCV: failed (NaN) means tie with the worst
                filled = np.where(np.isnan(means), np.nanmin(means) - 1 if not np.isnan(means).all() else 0, means)
                results["rank_test_score"] = rankdata(-filled, method="min").astype(np.int32)
            if name == "score_time":
                results.update(_param_arrays(candidates))
                results["params"] = candidates
        return results

    # ------------------------------------------------------------------------ the best estimator's methods
    def _best(self) -> Any:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_

    def predict(self, X: Any) -> Any:
        """The refitted best estimator's ``predict``."""
        return self._best().predict(X)

    def predict_proba(self, X: Any) -> Any:
        """The refitted best estimator's ``predict_proba``."""
        return self._best().predict_proba(X)

    def score(self, X: Any, y: Any) -> float:
        """The scorer on the refitted best estimator."""
        return float(self.scorer_(self._best(), X, y))

    @property
    def classes_(self) -> Any:
        return self._best().classes_


def _forwards_weights(scorer: Any) -> bool:
    """Whether GridSearchCV would score the test folds with their sample weights: recent scikit-learn does,
    when the scorer takes them (older versions never do)."""
    from sklearn.model_selection._search import BaseSearchCV

    if not hasattr(BaseSearchCV, "_check_scorers_accept_sample_weight"):
        return False
    if hasattr(scorer, "_accept_sample_weight"):
        return bool(scorer._accept_sample_weight())
    return "sample_weight" in inspect.signature(scorer).parameters


def _per_row(value: Any, n: int) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, (str, bytes)) and len(value) == n
