"""MLPRegressor."""

from __future__ import annotations

from typing import Any

import array_api_compat as aac
import numpy as np

try:
    from sklearn.base import RegressorMixin
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.validation import validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("gpunn.sklearn needs scikit-learn: pip install 'gpunn[sklearn]'") from exc

from .. import _backend
from ._base import SPARSE, _BaseMLP, _native, as_a_whole

_LOSSES = {"squared_error": "identity", "poisson": "exp"}  # scikit-learn's loss: gpunn's output layer


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer perceptron regressor with scikit-learn's API: identity output and squared error, or with
    ``loss="poisson"`` an exp output (log link) trained on the Poisson deviance, for targets >= 0 (counts, rates);
    ``predict`` then gives the mean exp(z), and ``loss_`` is scikit-learn's half deviance."""

    _output = "identity"

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        warm_start=False,
        device="auto",
    ):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
            n_iter_no_change=n_iter_no_change, max_fun=max_fun, warm_start=warm_start, device=device,
        )  # fmt: skip
        self.loss = loss

    def _check_params(self) -> None:
        super()._check_params()
        if not (isinstance(self.loss, str) and self.loss in _LOSSES):
            raise ValueError(
                f"The 'loss' parameter of {type(self).__name__} must be a str among {set(_LOSSES)}. Got "
                f"{self.loss!r} instead."
            )

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """Train from scratch on ``(X, y)``; ``sample_weight`` (n,) weighs each row's loss."""
        return as_a_whole(self, False, lambda: self._fit(X, y, incremental=False, sample_weight=sample_weight))

    @available_if(_BaseMLP._check_solver)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over ``(X, y)``, continuing from the current weights."""
        self._check_partial_fit()
        return as_a_whole(self, True, lambda: self._fit(X, y, incremental=True, sample_weight=sample_weight))

    def _fit(self, X: Any, y: Any, incremental: bool, sample_weight: Any = None) -> MLPRegressor:
        self._check_params()
        if y is None:
            raise ValueError(f"This {type(self).__name__} estimator requires y to be passed, but the target y is None.")
        start = self._first_pass(incremental)
        X, encoding = self._table(X, start)  # text and empty cells of a table, encoded
        self._native_input = _native(X) if start else self._native_input
        if _native(X):
            X = self._validate_X(X, reset=start)
            xp, device = aac.array_namespace(X), aac.device(X)
            T = y
            if not _native(T) or aac.array_namespace(T) is not xp or not _backend.same_device(aac.device(T), device):
                # y of another namespace or device (or a list): moved to X's, as the classifier's labels are
                host = _backend.to_numpy(T) if _native(T) else np.asarray(T)
                T = xp.asarray(np.asarray(host, dtype=np.float64), device=device)
            if T.ndim == 1:  # on JAX on the host, where an eager reshape compiles a program for each shape
                T = _backend.on_host(lambda m, t: m.reshape(t, (-1, 1)), T, xp, device)
        else:
            X, T = validate_data(self, X, y, reset=start or encoding is not None, multi_output=True, y_numeric=True,
                                 dtype=[np.float64, np.float32], accept_sparse=SPARSE)  # fmt: skip
            self._keep_table(encoding)
            T = np.asarray(T, dtype=np.float64)
            self._y_1d = T.ndim == 1
            T = T.reshape(-1, 1) if T.ndim == 1 else T
        self._check_split(T, incremental)
        if start:
            self._y_1d = getattr(y, "ndim", 1) == 1
            self._output = _LOSSES[self.loss]
            self._start(X, T.shape[1], incremental)
        elif T.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {T.shape[1]} outputs but the model was fitted with {self.n_outputs_}")
        self._train(X, T, 1 if incremental else self.max_iter, incremental, self._sample_weight(sample_weight, X))
        return self

    def _score_for_stopping(self, X_val: Any, y_val: Any, weight: Any = None) -> float:
        from sklearn.metrics import r2_score

        pred = _backend.to_numpy(self._model.predict(X_val))
        if not np.isfinite(pred).all():  # weights that overflowed: scikit-learn scores them NaN
            return float("nan")
        return float(r2_score(_backend.to_numpy(y_val), pred, sample_weight=weight))

    def predict(self, X: Any) -> Any:
        """Predicted values, shape (n,) for a 1-D target, else (n, n_outputs)."""
        z = self._forward(X, "predict")  # the model's predict: values in the target's units
        if self._y_1d:  # on JAX on the host, where a reshape compiles a program for each row count
            z = _backend.on_host(lambda m, a: m.reshape(a, (-1,)), z, self._model.xp, self._model.device)
        return self._out(z)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Coefficient of determination R^2 on ``(X, y)``."""
        from sklearn.metrics import r2_score

        return self._host_score(r2_score, X, y, sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.array_api_support = True
        tags.input_tags.sparse = True
        return tags
