"""``solver="lbfgs"`` for the estimators: a ``fit`` by gpunn's L-BFGS (:mod:`gpunn.lbfgs`) with scikit-learn's
semantics, as its MLP runs SciPy's L-BFGS-B: a fresh history every fit (a warm start keeps the weights only), up
to ``max_iter`` iterations and ``max_fun`` evaluations of the loss, ``tol`` on the largest gradient entry,
``n_iter_`` and ``loss_`` as SciPy reports them, no loss curve, and a ``ConvergenceWarning`` worded as
scikit-learn's unless it converged."""

from __future__ import annotations

import warnings
from typing import Any

from sklearn.exceptions import ConvergenceWarning

from .. import optim
from ..errors import NonFiniteError

# SciPy's L-BFGS-B status and message for each way the fit stops short of converging.
STATUS = {
    "max_iter": (1, "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT"),
    "max_fun": (1, "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT"),
    "line search": (2, "ABNORMAL: "),
}


def optimizer(est: Any) -> optim.Optimizer:
    """``est``'s L-BFGS: ``tol`` in gpunn's units (its loss is scikit-learn's times ``_gradient_scale``)."""
    return optim.lbfgs(tol=float(est.tol) * est._gradient_scale(), max_fun=int(est.max_fun))


def fit(est: Any, X: Any, T: Any, epochs: int, sample_weight: Any) -> None:
    """Train ``est``'s network by L-BFGS for up to ``epochs`` (``max_iter``) iterations; ``alpha`` is scaled as
    ``tol`` is (see :func:`optimizer`)."""
    m, scale = est._model, est._gradient_scale()
    m.optimizer_state, m.schedule = None, None
    key = "loss" if sample_weight is None else "weighted_loss"
    est.n_iter_ = 0
    try:
        m.fit(X, T, epochs=epochs, optimizer=optimizer(est), sample_weight=sample_weight, verbose=0,
              l2=est.alpha * scale, diverge_factor=None, callbacks=[callback(est, key, scale)])  # fmt: skip
    except NonFiniteError:
        raise est._non_finite_error() from None
    finally:
        est._exposed = {}  # the weights changed: coefs_ and intercepts_ are read anew
    finish(est, m.stopped_by)


def callback(est: Any, key: str, scale: float) -> Any:
    """After each iteration: ``n_iter_`` and ``loss_`` (the objective at the iterate, SciPy's ``fun``), and the
    stop at ``max_iter`` (for a member of :class:`~gpunn.sklearn.MLPSearchCV`'s ensemble, whose ``fit`` runs the
    most epochs any member takes)."""

    def after_iteration(model: Any, record: dict[str, float]) -> bool:
        est.n_iter_ += 1
        est.loss_ = float(record[key]) / scale
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")
        return bool(est.n_iter_ < est.max_iter)

    return after_iteration


def finish(est: Any, stopped_by: str | None) -> None:
    """scikit-learn's ``ConvergenceWarning`` unless the fit converged. As SciPy, the iteration limit is checked
    before convergence, then the evaluations' limit."""
    reason = "max_iter" if est.n_iter_ == est.max_iter else stopped_by
    if reason not in STATUS:
        return
    status, message = STATUS[str(reason)]
    text = f"lbfgs failed to converge after {est.n_iter_} iteration(s) (status={status}):\n{message}\n"
    if reason == "max_iter":
        text += f"\nIncrease the number of iterations to improve the convergence (max_iter={est.max_iter})."
    text += "\nYou might also want to scale the data as shown in:\n    https://scikit-learn.org/stable/modules/preprocessing.html"
    warnings.warn(text, ConvergenceWarning, stacklevel=5)
