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

import hashlib
import inspect
import numbers
import pickle
import time
import warnings
from collections.abc import Callable
from typing import Any

import array_api_compat as aac
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

from .. import _backend, distributed, settings
from ..ensemble import Ensemble
from ..errors import ConfigError, DivergenceError, InputTypeError, NonFiniteError
from . import _lbfgs
from ._base import _BaseMLP
from ._fitted import _native


class _Folds:
    """The rows of X, y and the per-row fit parameters that each fold trains and is scored on, taken once
    (scikit-learn's ``_safe_indexing``) and shared by every candidate. Where each eager operation compiles a
    program for every new shape (JAX), indexing on the device would compile a few programs for each fold's row
    count: an array is read back to the host once for the whole search instead, each fold's rows are moved from
    there (a transfer compiles nothing), and those host rows are what the stacked training set is made of."""

    def __init__(self, X: Any, y: Any):
        self.X, self.y = X, y
        self._clear()

    def _clear(self) -> None:
        self._taken: dict[tuple, Any] = {}
        self._whole: dict[int, tuple[Any, np.ndarray]] = {}  # by id: (a user's array, its host copy)
        self._placed: dict[int, tuple[Any, np.ndarray]] = {}  # by id: (a fold's array, the host rows it came from)

    def __getstate__(self) -> dict[str, Any]:  # to joblib's processes: the data, not what this process took
        return {"X": self.X, "y": self.y}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.X, self.y = state["X"], state["y"]
        self._clear()

    def take(self, a: Any, rows: np.ndarray, key: tuple) -> Any:
        """``a``'s ``rows`` (``key`` names them: what, which fold, which part), taken the first time asked."""
        if key not in self._taken:
            self._taken[key] = self._take(a, rows)
        return self._taken[key]

    def _take(self, a: Any, rows: np.ndarray) -> Any:
        if not _compiles(a):
            return _safe_indexing(a, rows)
        whole = self._whole.get(id(a))
        if whole is None or whole[0] is not a:
            whole = self._whole[id(a)] = (a, _backend.to_numpy(a))
        return self._place(whole[1][rows], a)

    def _place(self, host: np.ndarray, like: Any) -> Any:
        placed = _backend.from_numpy(host, aac.array_namespace(like), aac.device(like))
        self._placed[id(placed)] = (placed, host)
        return placed

    def host(self, a: Any) -> Any:
        """``a`` where the stacked training set is made: the host rows a fold's array was moved from, without a
        read-back; an array the estimator made itself (its encoded targets) read back."""
        placed = self._placed.get(id(a))
        if placed is not None and placed[0] is a:
            return placed[1]
        return _backend.to_numpy(a) if _compiles(a) else a

    def subset(self, a: Any, rows: np.ndarray) -> Any:
        """``a[rows]`` (a member's early-stopping split), taken on the host and moved where each eager operation
        compiles."""
        return self._place(np.asarray(self.host(a))[rows], a) if _compiles(a) else a[rows]


def _compiles(a: Any) -> bool:
    """Whether ``a`` is an array of a namespace where each eager operation compiles a program (JAX)."""
    return _native(a) and _backend.compiles_eagerly(aac.array_namespace(a))


class _Task:
    """One (candidate, fold): its estimator, stopped where it would train, and what it would train on."""

    def __init__(self, candidate: int, fold: int, estimator: _BaseMLP, train: np.ndarray, test: np.ndarray):
        self.candidate, self.fold, self.estimator, self.train, self.test = candidate, fold, estimator, train, test
        self.fit_time = 0.0
        self.scores: dict[str, float] = {}  # test scores by metric ("score" for one metric)
        self.train_scores: dict[str, float] = {}  # with return_train_score
        self.score_time = 0.0
        self.error: str | None = None  # why the fit failed (its divergence), or None

    def prepare(self, X: Any, y: Any, fit_params: dict[str, Any]) -> None:
        """Run the estimator's fit on its fold's training rows up to its training: it validates, encodes the
        targets and draws its initial weights; the arrays it would train on are kept here."""
        est = self.estimator
        captured: dict[str, Any] = {}

        def capture(X_fit: Any, T: Any, epochs: int, incremental: bool, sample_weight: Any = None) -> None:
            captured.update(X=X_fit, T=T, epochs=epochs, sample_weight=sample_weight)

        est._train = capture  # type: ignore[method-assign, assignment]  # the instance's, for this one call
        try:
            est.fit(X, y, **fit_params)
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
            est._gpunn_optimizer(), batch, bool(est.shuffle), self.weight is not None, self.X.dtype.str,
            str(self.T.dtype),
        )  # fmt: skip


def _after_epoch(est: _BaseMLP, key: str, scale: float, n_train: int, val: tuple | None, best: dict[str, Any]) -> Any:
    """What ``_BaseMLP._train`` does after each epoch, for one member, plus the stop at ``max_iter`` that its own
    ``fit(epochs=max_iter)`` would make."""
    after_epoch = est._after_epoch(key, scale, n_train, val, best)
    return lambda model, record: after_epoch(model, record) and est.n_iter_ < est.max_iter


def _train_group(tasks: list[_Task], folds: _Folds) -> None:
    """Train the tasks' estimators as one ensemble on the rows of one X (the tasks' own arrays put back in
    place, on the host: every row is the array its estimator validated)."""
    first, n = tasks[0], len(folds.y)
    est0 = first.estimator
    X = np.zeros((n, first.X.shape[1]), dtype=first.X.dtype)
    T = np.empty((n, *first.T.shape[1:]), dtype=first.T.dtype)
    T[...] = folds.host(first.T)[0]
    weights = np.zeros((len(tasks), n)) if first.weight is not None else None
    rows, rates, l2s, callbacks, bests, vals = [], [], [], [], [], []
    lbfgs = est0.solver == "lbfgs"  # no validation split, its own iteration count and warning
    for k, task in enumerate(tasks):
        est = task.estimator
        X[task.train] = folds.host(task.X)
        T[task.train] = folds.host(task.T)
        scale = est._gradient_scale()
        rate = est._model_rate(scale)
        member_rows, val = np.arange(len(task.X)), None
        if est.early_stopping and not lbfgs:  # the estimator's own split of its rows, by the same generator
            Tk = task.T
            member_rows, held = train_test_split(
                member_rows, test_size=est.validation_fraction, random_state=est._seed_split,
                stratify=est._stratify_labels(Tk),
            )  # fmt: skip
            val = (folds.subset(task.X, held), folds.subset(Tk, held),
                   None if task.weight is None else folds.subset(task.weight, held))  # fmt: skip
        if weights is not None:
            weights[k, task.train] = folds.host(task.weight)
        rows.append(task.train[member_rows])
        rates.append(rate)
        l2s.append(est.alpha * scale)
        best: dict[str, Any] = {"weights": est._best_weights}
        bests.append(best)
        key = "loss" if task.weight is None else "weighted_loss"
        if lbfgs:
            est.n_iter_ = 0
        callbacks.append(
            [_lbfgs.callback(est, key, scale) if lbfgs else _after_epoch(est, key, scale, len(member_rows), val, best)]
        )
        vals.append((len(member_rows), val))
    for task in tasks:  # every fit starts a new optimizer and rate, as scikit-learn's
        task.estimator._model.optimizer_state, task.estimator._model.schedule = None, None
        task.estimator._new_optimizer()
    ens = Ensemble.from_members([t.estimator._model for t in tasks], compile=est0._model.compile)
    batch = None if lbfgs else first.key()[9]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="gpunn: ensemble member", category=RuntimeWarning)
        try:  # a member that diverges is set aside: its task failed, as the lone estimator's fit would have
            ens.fit(
                X, T, epochs=max(t.epochs for t in tasks), lr=rates, batch_size=batch,
                optimizer=est0._gpunn_optimizer(), shuffle=est0.shuffle, verbose=0, l2=l2s, callbacks=callbacks,
                sample_weight=weights, rows=rows, diverge_factor=None,  # as the estimators' own fits
            )  # fmt: skip
        except DivergenceError:
            pass  # every member diverged
    elapsed = (time.perf_counter() - start) / len(tasks)
    for task, best, reason, (n_train, val) in zip(tasks, bests, ens.diverged, vals):
        est = task.estimator
        est._count_steps()
        if reason is not None:  # its loss was not finite: what the estimator's own fit does then
            if val is None:
                task.error = str(est._non_finite_error())  # a failed fit
            else:
                est._non_finite(NonFiniteError(reason), n_train, val)  # a warning, a NaN score, its best weights
        est._best_weights = best["weights"]
        if est.early_stopping and best["weights"] is not None:
            est._model.set_weights(best["weights"])
        if lbfgs:
            if reason is None:
                _lbfgs.finish(est, est._model.stopped_by)
        elif reason is None and est._no_improvement_count <= est.n_iter_no_change and est.n_iter_ == est.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and the optimization hasn't "
                "converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        task.fit_time += elapsed


def _fit_part(tasks: list[_Task], folds: _Folds, score_weight: Any, scoring: Any, names: list[str],
              error_score: Any, train_scores: bool) -> tuple[list[tuple], int]:  # fmt: skip
    """Train these tasks group by group (a part of the search, in this process or another) and score them:
    ``([(fit time, test scores, train scores, score time, error) of each task], ensembles trained)``."""
    groups: dict[tuple, list[_Task]] = {}
    for task in tasks:
        groups.setdefault(task.key(), []).append(task)
    for group in groups.values():
        _train_group(group, folds)
    for task in tasks:
        start = time.perf_counter()
        parts = [("test", task.test)] + ([("train", task.train)] if train_scores else [])
        for part, rows in parts:
            if task.error is not None:
                scores = dict.fromkeys(names, float(error_score)) if not isinstance(error_score, str) else {}
            else:
                named = (("X", folds.X), ("y", folds.y), ("sample_weight", score_weight))
                X, y, w = (None if a is None else folds.take(a, rows, (name, task.fold, part)) for name, a in named)
                got = scoring(task.estimator, X, y, **({} if w is None else {"sample_weight": w}))
                scores = {k: float(v) for k, v in got.items()} if isinstance(got, dict) else {"score": float(got)}
            if part == "test":
                task.scores = scores
                task.score_time = time.perf_counter() - start  # as GridSearchCV: the test scoring's time
            else:
                task.train_scores = scores
    return [(t.fit_time, t.scores, t.train_scores, t.score_time, t.error) for t in tasks], len(groups)


def _agree(comm: Any, X: Any, y: Any, candidates: list[dict[str, Any]], splits: list[Any], estimator: Any) -> None:
    """Every rank searches the same candidates over the same folds of the same data with the same estimator: one
    ``allgather`` of digests, and the same one-line ConfigError on every rank if they differ."""
    from ..distributed import disagreement

    def digest(value: Any) -> str:
        return hashlib.sha256(pickle.dumps(value, protocol=4)).hexdigest()[:16]

    mine = {
        "data fingerprint": digest((np.asarray(X), np.asarray(y))), "candidates": digest(repr(candidates)),
        "folds": digest([(np.asarray(a), np.asarray(b)) for a, b in splits]),
        "estimator": digest(repr(sorted(estimator.get_params(deep=False).items()))),
    }  # fmt: skip
    found = disagreement(comm._collective("the agreement check of the search", comm.comm.allgather, mine))
    if found is not None:
        exc: Any = ConfigError(found[0].split(". Every rank must", 1)[0] + ". Every rank must search the same grid "
                               "over the same folds of the same data")  # fmt: skip
        exc.every_rank = True
        raise exc


def _param_arrays(candidates: list[dict[str, Any]]) -> dict[str, np.ma.MaskedArray]:
    """GridSearchCV's ``param_<name>`` columns: in the order the names first appear, each a masked array (masked
    where a candidate lacks the name) of the dtype NumPy infers, object for strings and sequences."""
    values: dict[str, dict[int, Any]] = {}
    for i, c in enumerate(candidates):
        for name, value in c.items():
            values.setdefault(f"param_{name}", {})[i] = value
    out = {}
    for key, by_index in values.items():
        try:
            inferred = np.array(list(by_index.values()))
            dtype = inferred.dtype if inferred.dtype.kind != "U" and inferred.ndim == 1 else np.dtype(object)
        except ValueError:  # sequences of different lengths
            dtype = np.dtype(object)
        column = np.ma.MaskedArray(np.empty(len(candidates), dtype=dtype), mask=True)
        for i, value in by_index.items():
            column[i] = value
        out[key] = column
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
    scoring : str, callable, list, tuple, set or dict, optional
        As for ``GridSearchCV``: one metric (the estimator's ``score`` by default), or several by name
        (``cv_results_`` then holds ``mean_test_<name>`` and so on for each).
    n_jobs : int, optional
        For estimators on the CPU: the fits, ordered by network shape, are cut into ``n_jobs`` contiguous parts
        (-1: one per CPU; at most one a fit), each trained as stacked ensembles and scored in a process of its
        own (joblib's); the results are the one-process search's. None or 1, and estimators on a GPU, train in
        this process.
    refit : bool, str or callable
        As for ``GridSearchCV``: refit the best candidate on all of ``X`` into ``best_estimator_``. With several
        metrics, the name of the one that picks the best; a callable takes ``cv_results_`` and returns the index
        of the best candidate (there is then no ``best_score_``).
    cv : int, cross-validation generator or iterable
        As for ``GridSearchCV`` (5: stratified 5-fold for classifiers, 5-fold otherwise).
    verbose : int
        As for ``GridSearchCV``: above 0 the number of fits; above 1 a line per fit (its parameters and time),
        above 2 with its score and fold. The lines come once every fit has been scored, since the fits train
        together.
    pre_dispatch : int or str
        Accepted as ``GridSearchCV`` takes it, and without effect: each part is dispatched once.
    error_score : "raise" or float
        The score of a fit that failed (its loss stopped being finite without early stopping: its member of the
        stacked ensemble was set aside), as ``GridSearchCV`` scores a fit that raised: ``np.nan`` by default, with
        one ``FitFailedWarning``; "raise" raises the estimator's ``NonFiniteError`` (a ``ValueError``).
    return_train_score : bool
        As for ``GridSearchCV``: ``cv_results_`` also holds each fit's scores on its training rows.
    comm : gpunn.distributed.Communicator, optional
        Split the fits over the ranks of an MPI job as ``n_jobs`` splits them over processes: rank r trains and
        scores its contiguous part of the fits ordered by network shape, and one ``allgather`` gives every rank
        every score; every rank then refits the best candidate and holds the same results. The ranks first
        check that they search the same grid over the same folds of the same data.

    Attributes
    ----------
    cv_results_, best_params_, best_score_, best_index_, best_estimator_, n_splits_, scorer_, refit_time_,
    multimetric_:
        As ``GridSearchCV``'s (``mean_fit_time`` shares each ensemble's time out among its members).
    n_ensembles_ : int
        How many stacked ensembles the search trained.
    """

    def __init__(
        self, estimator: Any, param_grid: Any, *, scoring: Any = None, n_jobs: int | None = None,
        refit: bool | str | Callable[..., int] = True, cv: Any = 5, verbose: int = 0,
        pre_dispatch: int | str = "2*n_jobs", error_score: Any = np.nan, return_train_score: bool = False,
        comm: Any = None,
    ):  # fmt: skip
        self.estimator = estimator
        self.param_grid = param_grid
        self.scoring = scoring
        self.n_jobs = n_jobs
        self.refit = refit
        self.cv = cv
        self.verbose = verbose
        self.pre_dispatch = pre_dispatch
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.comm = comm

    def fit(self, X: Any, y: Any, **fit_params: Any) -> MLPSearchCV:
        """Fit every candidate on every fold, stacked; then refit the best on all of ``X``. ``fit_params`` (such
        as ``sample_weight``) are indexed by fold, as ``GridSearchCV`` does."""
        if not isinstance(self.estimator, _BaseMLP):
            raise InputTypeError(f"MLPSearchCV searches gpunn.sklearn estimators; got {type(self.estimator).__name__}")
        self._check_arguments()
        X, y = indexable(X, y)
        fit_params = dict(fit_params)
        groups = fit_params.pop("groups", None)
        candidates = list(ParameterGrid(self.param_grid))
        if not candidates:  # nothing to score (GridSearchCV, too, refuses it, after an empty run)
            raise ConfigError(f"param_grid {self.param_grid!r} holds no candidates; give a dict of parameter lists, "
                              "or a list of such dicts")  # fmt: skip
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        splits = list(cv.split(X, y, groups))
        self.scorer_, scoring, refit_metric = self._scorers()
        if self.verbose > 0:
            print(f"Fitting {len(splits)} folds for each of {len(candidates)} candidates, totalling "
                  f"{len(splits) * len(candidates)} fits")  # fmt: skip
        if self.comm is not None:  # every rank searches the same grid over the same folds of the same data
            _agree(self.comm, X, y, candidates, splits, self.estimator)
        folds = _Folds(X, y)
        tasks = self._tasks(candidates, splits, folds, fit_params)
        self._fit_tasks(tasks, folds, fit_params.get("sample_weight") if _forwards_weights(scoring) else None, scoring)
        self._report(tasks, candidates, len(splits))
        self.cv_results_ = self._results(candidates, len(splits), tasks)
        self.n_splits_ = len(splits)
        if self.refit or not self.multimetric_:
            self.best_index_ = self._best_index(refit_metric)
            if not callable(self.refit):
                self.best_score_ = float(self.cv_results_[f"mean_test_{refit_metric}"][self.best_index_])
            self.best_params_ = candidates[self.best_index_]
        if self.refit:
            start = time.perf_counter()
            self.best_estimator_ = clone(self.estimator).set_params(**clone(self.best_params_, safe=False))
            self.best_estimator_.fit(X, y, **fit_params)
            self.refit_time_ = time.perf_counter() - start
        return self

    def _check_arguments(self) -> None:
        """GridSearchCV's arguments, checked before anything trains."""
        if not (isinstance(self.refit, (bool, str)) or callable(self.refit)):
            raise ConfigError(f"refit must be True, False, a metric's name or a callable; got {self.refit!r}")
        if not (isinstance(self.error_score, str) and self.error_score == "raise") and not isinstance(
            self.error_score, (int, float, np.number)
        ):
            raise ConfigError(f"error_score must be 'raise' or a number; got {self.error_score!r}")
        if self.n_jobs is not None and not (isinstance(self.n_jobs, numbers.Integral) and self.n_jobs != 0):
            raise ConfigError(f"n_jobs must be None or a non-zero integer; got {self.n_jobs!r}")
        if not isinstance(self.pre_dispatch, (numbers.Integral, str)):
            raise ConfigError(f"pre_dispatch must be an integer or a string; got {self.pre_dispatch!r}")
        settings.communicator(self.comm)
        if not isinstance(self.verbose, numbers.Integral):
            raise ConfigError(f"verbose must be an integer; got {self.verbose!r}")

    def _scorers(self) -> tuple[Any, Any, str]:
        """``(scorer_, scoring, refit_metric)`` as GridSearchCV makes them: one scorer, itself and "score"; or for
        several metrics a dict of scorers by name, the scorer of them all (a dict of scores, predicting once) and
        the name ``refit`` gives."""
        self.multimetric_ = isinstance(self.scoring, (list, tuple, set, dict))
        if not self.multimetric_:
            scorer = check_scoring(self.estimator, self.scoring)
            return scorer, scorer, "score"
        scoring = check_scoring(self.estimator, self.scoring)  # scikit-learn's checks of the names
        scorers = dict(scoring._scorers)
        if self.refit is not False and not callable(self.refit) and not (
                isinstance(self.refit, str) and self.refit in scorers):  # fmt: skip
            raise ValueError(
                "For multi-metric scoring, the parameter refit must be set to a scorer key or a callable to refit "
                "an estimator with the best parameter setting on the whole data and make the best_* attributes "
                f"available for that metric. If this is not needed, refit should be set to False explicitly. "
                f"{self.refit!r} was passed."
            )
        return scorers, scoring, str(self.refit)

    def _best_index(self, refit_metric: str) -> int:
        if callable(self.refit):
            best = self.refit(self.cv_results_)
            if not isinstance(best, numbers.Integral):
                raise TypeError("best_index_ returned is not an integer")
            if best < 0 or best >= len(self.cv_results_["params"]):
                raise IndexError("best_index_ index out of range")
            return int(best)
        return int(self.cv_results_[f"rank_test_{refit_metric}"].argmin())

    def _tasks(self, candidates: list[dict[str, Any]], splits: list[Any], folds: _Folds,
               fit_params: dict[str, Any]) -> list[_Task]:  # fmt: skip
        """Every (candidate, fold)'s estimator, validated and stopped where it would train."""
        n, tasks = len(folds.y), []
        for c, params in enumerate(candidates):
            for f, (train, test) in enumerate(splits):
                est = clone(self.estimator).set_params(**clone(params, safe=False))
                task = _Task(c, f, est, np.asarray(train), np.asarray(test))
                fold_params = {k: folds.take(v, task.train, (k, f, "train")) if _per_row(v, n) else v
                               for k, v in fit_params.items()}  # fmt: skip
                start = time.perf_counter()
                X, y = (folds.take(a, task.train, (name, f, "train")) for name, a in (("X", folds.X), ("y", folds.y)))
                task.prepare(X, y, fold_params)
                task.fit_time = time.perf_counter() - start
                tasks.append(task)
        return tasks

    def _fit_tasks(self, tasks: list[_Task], folds: _Folds, score_weight: Any, scoring: Any) -> None:
        """Train and score every task: in this process, or split over ``comm``'s ranks or ``n_jobs`` processes,
        the tasks ordered by shape group and cut into contiguous parts (a group split between two parts trains
        as two ensembles). A fit that failed scores ``error_score``, as GridSearchCV scores a failed fit (with
        one FitFailedWarning), or with ``error_score="raise"`` its error is raised."""
        groups: dict[tuple, list[_Task]] = {}
        for task in tasks:
            groups.setdefault(task.key(), []).append(task)
        ordered = [task for group in groups.values() for task in group]
        names = list(self.scorer_) if self.multimetric_ else ["score"]
        how = (folds, score_weight, scoring, names, self.error_score, self.return_train_score)
        parts = self._parts(ordered)
        if self.comm is not None:
            lo, hi = distributed.part(len(ordered), parts, self.comm.rank)
            mine = _fit_part(ordered[lo:hi], *how)
            every = self.comm._collective("the gather of the search's scores", self.comm.comm.allgather, mine)
        elif parts > 1:
            from joblib import Parallel, delayed

            cuts = [distributed.part(len(ordered), parts, i) for i in range(parts)]
            every = Parallel(n_jobs=parts)(delayed(_fit_part)(ordered[lo:hi], *how) for lo, hi in cuts)
        else:
            every = [_fit_part(ordered, *how)]
        results = [r for part, _ in every for r in part]
        for task, (fit_time, scores, train_scores, score_time, error) in zip(ordered, results):
            task.fit_time, task.scores, task.train_scores, task.score_time, task.error = (
                fit_time, scores, train_scores, score_time, error)  # fmt: skip
        self.n_ensembles_ = sum(n for _, n in every)
        failed = [task for task in tasks if task.error is not None]
        if failed and isinstance(self.error_score, str):
            exc: Any = NonFiniteError(failed[0].error)
            exc.every_rank = self.comm is not None  # with comm, every rank raises it after the gather
            raise exc
        if failed:
            warnings.warn(
                f"{len(failed)} fits failed out of a total of {len(tasks)}.\nThe score on these train-test partitions "
                f"for these parameters will be set to {self.error_score}.\nThe fits failed because they diverged: "
                + "; ".join(sorted({task.error for task in failed if task.error is not None})),
                FitFailedWarning,
                stacklevel=3,
            )

    def _parts(self, tasks: list[_Task]) -> int:
        """How many parts the tasks train in: ``comm``'s ranks, else ``n_jobs`` processes for estimators on the
        CPU (at most one a task), else one."""
        if self.comm is not None:
            return int(self.comm.size)
        if self.n_jobs in (None, 1) or not tasks or str(tasks[0].estimator._model.device) != "cpu":
            return 1
        from joblib import effective_n_jobs

        return max(1, min(effective_n_jobs(self.n_jobs), len(tasks)))

    def _report(self, tasks: list[_Task], candidates: list[dict[str, Any]], n_splits: int) -> None:
        """GridSearchCV's lines per fit, for ``verbose`` above 1 (its START line too above 9)."""
        if self.verbose <= 1:
            return
        from joblib.logger import short_format_time

        for task in sorted(tasks, key=lambda t: (t.candidate, t.fold)):
            progress = ""
            if self.verbose > 2:
                progress = f" {task.fold + 1}/{n_splits}"
                if self.verbose > 9:
                    progress += f"; {task.candidate + 1}/{len(candidates)}"
            params = candidates[task.candidate]
            message = ", ".join(f"{k}={params[k]}" for k in sorted(params))
            if self.verbose > 9:
                start = f"[CV{progress}] START {message}"
                print(start + "." * (80 - len(start)))
            message += ";" if message else ""
            if self.verbose > 2:
                if self.multimetric_:
                    for name, score in task.scores.items():
                        train = f"train={task.train_scores[name]:.3f}, " if self.return_train_score else ""
                        message += f" {name}: ({train}test={score:.3f})"
                elif self.return_train_score:
                    message += f", score=(train={task.train_scores['score']:.3f}, test={task.scores['score']:.3f})"
                else:
                    message += f", score={task.scores['score']:.3f}"
            message += f" total time={short_format_time(task.fit_time + task.score_time)}"
            end = f"[CV{progress}] END "
            print(end + "." * (80 - len(end) - len(message)) + message)

    def _results(self, candidates: list[dict[str, Any]], n_splits: int, tasks: list[_Task]) -> dict[str, Any]:
        """``cv_results_`` with GridSearchCV's keys, in its order."""
        shape = (len(candidates), n_splits)
        results: dict[str, Any] = {}

        def store(name: str, value: Any, splits: bool = False, rank: bool = False) -> None:
            array = np.empty(shape)
            for t in tasks:
                array[t.candidate, t.fold] = value(t)
            if splits:
                for f in range(n_splits):
                    results[f"split{f}_{name}"] = array[:, f]
            means = np.average(array, axis=1)
            results[f"mean_{name}"] = means
            if name.startswith(("train_", "test_")) and not np.isfinite(means).all():
                warnings.warn(f"One or more of the {name.split('_')[0]} scores are non-finite: {means}", UserWarning,
                              stacklevel=4)  # fmt: skip
            results[f"std_{name}"] = np.sqrt(np.average((array - means[:, None]) ** 2, axis=1))
            if rank:  # as GridSearchCV: failed (NaN) means tie with the worst
                filled = np.where(np.isnan(means), np.nanmin(means) - 1 if not np.isnan(means).all() else 0, means)
                results[f"rank_{name}"] = rankdata(-filled, method="min").astype(np.int32)

        store("fit_time", lambda t: t.fit_time)
        store("score_time", lambda t: t.score_time)
        results.update(_param_arrays(candidates))
        results["params"] = candidates
        for name in tasks[0].scores:
            store(f"test_{name}", lambda t: t.scores[name], splits=True, rank=True)  # noqa: B023 - used at once
            if self.return_train_score:
                store(f"train_{name}", lambda t: t.train_scores[name], splits=True)  # noqa: B023
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
        """The scorer on the refitted best estimator (with several metrics, the one ``refit`` names)."""
        best = self._best()
        if not self.multimetric_:
            return float(self.scorer_(best, X, y))
        if not isinstance(self.refit, str):
            raise ValueError("score needs refit to name one of the metrics of a multi-metric search")
        return float(self.scorer_[self.refit](best, X, y))

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
