"""scikit-learn drop-in estimators: change one import line and train the same MLP on a GPU.

``gpunn.sklearn.MLPClassifier`` and ``MLPRegressor`` take scikit-learn's constructor parameters (plus
``device``), expose the same fitted attributes, and pass ``sklearn.utils.estimator_checks.check_estimator``.
NumPy input trains on ``device`` ("auto": a GPU when usable); CuPy, PyTorch and JAX input trains on that
array's own device, and outputs come back in the input's namespace.
"""

from __future__ import annotations

import warnings
from typing import Any

import array_api_compat as aac
import numpy as np

try:
    from sklearn import get_config
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state
    from sklearn.utils.class_weight import compute_sample_weight
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("gpunn.sklearn needs scikit-learn: pip install 'gpunn[sklearn]'") from exc

from . import _backend, optim, schedules
from .model import MLP

_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid", "identity": "identity"}
_HELD = 2**62  # a plateau schedule's patience that is never reached: the rate is held in its state


def _native(X: Any) -> bool:
    """True for arrays of a namespace gpunn trains on directly (CuPy, PyTorch, JAX), not NumPy or lists."""
    return aac.is_array_api_obj(X) and not isinstance(X, np.ndarray)


class _BaseMLP(BaseEstimator):
    _output: str  # "sigmoid"/"softmax" (set per fit for classifiers) or "identity"
    _model: MLP
    _native_input: bool
    _seed_split: int
    _no_improvement_count: int
    _best_weights: Any  # the early-stopping best epoch's (W, b) pairs, kept across warm-started fits
    n_iter_: int
    best_loss_: Any  # float, or None with early stopping (as in scikit-learn)
    best_validation_score_: Any
    validation_scores_: Any

    def __init__(
        self,
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
        warm_start=False,
        device="auto",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.device = device

    # -------------------------------------------------------------------------------------- validation
    def _check_params(self) -> None:
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, (int, np.integer)) else list(hidden)
        if any(not isinstance(h, (int, np.integer)) or h < 1 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be positive integers; got {self.hidden_layer_sizes!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not supported; use one of {list(_ACTIVATIONS)}")
        if self.solver not in ("sgd", "adam"):
            raise ValueError(f"solver {self.solver!r} is not supported; use 'sgd' or 'adam'")
        if self.learning_rate not in ("constant", "invscaling", "adaptive"):
            raise ValueError(
                f"learning_rate {self.learning_rate!r} is not supported; use 'constant', 'invscaling' or 'adaptive'"
            )
        if isinstance(self.power_t, bool) or not isinstance(self.power_t, (int, float)) or not self.power_t >= 0:
            raise ValueError(f"power_t must be a number >= 0; got {self.power_t!r}")
        for name in ("learning_rate_init", "epsilon"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)!r}")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0; got {self.alpha!r}")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be an integer >= 1; got {self.max_iter!r}")
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1]; got {self.momentum!r}")
        if not (0 <= self.beta_1 < 1 and 0 <= self.beta_2 < 1):
            raise ValueError("beta_1 and beta_2 must be in [0, 1)")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1); got {self.validation_fraction!r}")
        if not (isinstance(self.n_iter_no_change, (int, np.integer)) and self.n_iter_no_change >= 1):
            raise ValueError(f"n_iter_no_change must be an integer >= 1; got {self.n_iter_no_change!r}")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be 'auto' or an integer >= 1; got {self.batch_size!r}")

    @staticmethod
    def _sample_weight(sample_weight: Any, X: Any) -> np.ndarray | None:
        """``sample_weight`` checked as scikit-learn checks it (shape (n,), finite, non-negative), on the host."""
        if sample_weight is None:
            return None
        if _native(sample_weight):
            sample_weight = _backend.to_numpy(sample_weight)
        return _check_sample_weight(sample_weight, np.empty((X.shape[0], 0)), ensure_non_negative=True)

    def _hidden(self) -> list[int]:
        hidden: Any = self.hidden_layer_sizes
        return [int(hidden)] if isinstance(hidden, (int, np.integer)) else [int(h) for h in hidden]

    def _optimizer(self) -> optim.Optimizer:
        if self.solver == "adam":
            return optim.adam(self.beta_1, self.beta_2, self.epsilon)
        if self.momentum > 0:
            return optim.momentum(self.momentum, nesterov=self.nesterovs_momentum)
        return optim.sgd()

    def _validate_X(self, X: Any, reset: bool) -> Any:
        if _native(X):
            if X.ndim != 2:
                raise ValueError(f"Expected 2D array, got {X.ndim}D array instead")
            if reset:
                self.n_features_in_ = X.shape[1]
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input"
                )
            return X
        return validate_data(self, X, reset=reset, dtype=[np.float64, np.float32])

    def _model_for(self, X: Any, n_outputs: int) -> MLP:
        sizes = [X.shape[1], *self._hidden(), n_outputs]
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {"device": self.device}
        if _native(X):
            kwargs = {"xp": aac.array_namespace(X), "device": aac.device(X)}
        dtype = "float32" if str(getattr(X, "dtype", "")).endswith("float32") else "float64"
        return MLP(sizes, activation=_ACTIVATIONS[self.activation], output=self._output, seed=seed, dtype=dtype,
                   **kwargs)  # fmt: skip

    # ------------------------------------------------------------------------------------------- training
    def _gradient_scale(self) -> float:
        """gpunn's loss gradient over scikit-learn's for this output (gpunn averages over outputs too)."""
        k = self.n_outputs_
        if self._output == "identity":
            return 2.0 / k  # mean((z - y)^2) against sklearn's sum over outputs of (z - y)^2 / 2, per sample
        return 1.0 / k if self._output == "sigmoid" else 1.0

    def _train(self, X: Any, T: Any, epochs: int, incremental: bool, sample_weight: Any = None) -> None:
        """Run up to ``epochs`` epochs with scikit-learn's stopping rules. With ``sample_weight`` the loss
        curve is the weighted loss, as scikit-learn's, so integer weights train as repeated rows do."""
        m = self._model
        n = X.shape[0]
        self.n_iter_ = 0  # epochs of this call, as scikit-learn counts them (t_ and loss_curve_ go on)
        key = "loss" if sample_weight is None else "weighted_loss"
        batch = min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)
        scale = self._gradient_scale()
        lr: Any = self.learning_rate_init / scale if self.solver == "sgd" else self.learning_rate_init
        if self._sgd_schedule():
            # The rate lives in the state of a plateau schedule that never lowers it itself; _epoch_end sets it
            # as scikit-learn's SGD does.
            lr = schedules.plateau(lr, factor=0.2, patience=_HELD)
        if not incremental:  # every fit, a warm-started one too, starts a new optimizer and rate, as scikit-learn's
            m.optimizer_state, m.schedule = None, None
        fit_kw = dict(lr=lr, batch_size=batch, optimizer=self._optimizer(), shuffle=self.shuffle,
                      verbose=0, l2=self.alpha * scale)  # fmt: skip
        if incremental:
            m.fit(X, T, epochs=1, sample_weight=sample_weight, **fit_kw)
            self._record_epoch(getattr(m.history, key)[-1] / scale, n)
            if not self.early_stopping:
                improving = self.loss_curve_[-1] <= self.best_loss_ - self.tol
                self.best_loss_ = min(self.best_loss_, self.loss_curve_[-1])
                self._no_improvement_count = 0 if improving else self._no_improvement_count + 1
            self._epoch_end(m, scale)
            return
        X_val = y_val = w_val = None
        if self.early_stopping:
            # stratified for one label per row, as scikit-learn's MLP (binary targets are one 0/1 column)
            stratify = T if isinstance(self, MLPClassifier) and (T.ndim == 1 or T.shape[1] == 1) else None
            split = train_test_split(
                X, T, *([] if sample_weight is None else [sample_weight]), test_size=self.validation_fraction,
                random_state=self._seed_split, stratify=stratify,
            )  # fmt: skip
            X, X_val, T, y_val = split[:4]
            if sample_weight is not None:
                sample_weight, w_val = split[4:]
        best: dict[str, Any] = {"weights": self._best_weights}  # a warm-started fit keeps the best so far

        def after_epoch(model: MLP, record: dict[str, float]) -> bool:
            self._record_epoch(record[key] / scale, X.shape[0])
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_curve_[-1]:.8f}")
            # scikit-learn's rule: count epochs that fail to beat the best by tol; stop past n_iter_no_change.
            if self.early_stopping:
                score = self._score_for_stopping(X_val, y_val, w_val)
                self.validation_scores_.append(score)
                improving = score >= self.best_validation_score_ + self.tol
                if score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    best["weights"] = model.weights
            else:
                improving = self.loss_curve_[-1] <= self.best_loss_ - self.tol
                self.best_loss_ = min(self.best_loss_, self.loss_curve_[-1])
            self._no_improvement_count = 0 if improving else self._no_improvement_count + 1
            return self._epoch_end(model, scale)

        m.fit(X, T, epochs=epochs, callbacks=[after_epoch], sample_weight=sample_weight, **fit_kw)
        self._best_weights = best["weights"]
        if self.early_stopping and best["weights"] is not None:
            m.set_weights(best["weights"])
        if self._no_improvement_count <= self.n_iter_no_change and self.n_iter_ == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization hasn't "
                "converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _sgd_schedule(self) -> bool:
        return self.solver == "sgd" and self.learning_rate != "constant"

    def _epoch_end(self, model: MLP, scale: float) -> bool:
        """scikit-learn's end of an epoch: invscaling's next rate, learning_rate_init / (t_ + 1) ** power_t; past
        n_iter_no_change epochs without improvement, adaptive's rate / 5 (while above 1e-6) in place of stopping.
        Returns whether training goes on."""
        if self._sgd_schedule() and self.learning_rate == "invscaling":
            rate = self.learning_rate_init / (self.t_ + 1) ** self.power_t / scale
            model.schedule_state = {**model.schedule_state, "lr": rate}
        if self._no_improvement_count <= self.n_iter_no_change:
            return True
        if self._sgd_schedule() and self.learning_rate == "adaptive" and model.schedule_state["lr"] * scale > 1e-6:
            model.schedule_state = {**model.schedule_state, "lr": model.schedule_state["lr"] / 5}
            self._no_improvement_count = 0
            return True
        return False

    def _record_epoch(self, loss: float, n: int) -> None:
        self.loss_curve_.append(float(loss))
        self.n_iter_ += 1
        self.t_ += n

    def _start(self, X: Any, n_outputs: int) -> None:
        self._check_params()
        self._model = self._model_for(X, n_outputs)
        # scikit-learn's initialization (Glorot-uniform weights and biases, factor 2 for logistic units), so
        # that the same hyper-parameters train the same way.
        rng = check_random_state(self.random_state)
        factor = 2.0 if self.activation == "logistic" else 6.0
        pairs = []
        for fan_in, fan_out in zip(self._model.sizes[:-1], self._model.sizes[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            pairs.append((rng.uniform(-bound, bound, (fan_in, fan_out)).T, rng.uniform(-bound, bound, fan_out)))
        self._model.set_weights(pairs)
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(self._hidden()) + 2
        self.out_activation_ = {"sigmoid": "logistic", "softmax": "softmax", "identity": "identity"}[self._output]
        self.loss_curve_: list[float] = []
        self._best_weights = None
        self.n_iter_ = 0
        self.t_ = 0
        self._no_improvement_count = 0
        self._seed_split = int(check_random_state(self.random_state).randint(0, 2**31 - 1))  # type: ignore[arg-type]
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf

    # ------------------------------------------------------------------------------------------ attributes
    @property
    def coefs_(self) -> list[Any]:
        """Weight matrices in scikit-learn's (in, out) layout, in the input's namespace."""
        check_is_fitted(self, "_model")
        return [self._out(w).T for w, _ in self._model.weights]

    @property
    def intercepts_(self) -> list[Any]:
        """Bias vectors, in the input's namespace."""
        check_is_fitted(self, "_model")
        return [self._out(b) for _, b in self._model.weights]

    def _check_same_namespace(self, X: Any, method: str) -> None:
        """Under scikit-learn's ``array_api_dispatch``, ``X`` must come from the namespace and device of the
        data ``fit`` saw, as scikit-learn's own Array API estimators require (without it, NumPy input is moved to
        the model's device)."""
        if not get_config().get("array_api_dispatch", False):
            return
        m = self._model
        fitted = (_backend.namespace_name(m.xp), str(m.device)) if self._native_input else ("numpy", "cpu")
        given = ("numpy", "cpu")
        if _native(X):
            given = (_backend.namespace_name(aac.array_namespace(X)), str(aac.device(X)))
        if given != fitted:
            raise ValueError(
                f"Inputs passed to {type(self).__name__}.{method}() must use the same namespace and the same "
                f"device as those passed to fit(): fit saw {fitted[0]} on {fitted[1]}, {method}() got "
                f"{given[0]} on {given[1]}"
            )

    def _out(self, a: Any) -> Any:
        """Model arrays back in the namespace of the data the estimator was fitted on."""
        return a if self._native_input else _backend.to_numpy(a)

    def _forward(self, X: Any, method: str) -> Any:
        check_is_fitted(self, "_model")
        self._check_same_namespace(X, method)
        X = self._validate_X(X, reset=False)
        return self._model.predict_proba(X)

    def _host_score(self, metric: Any, X: Any, y: Any, sample_weight: Any) -> float:
        """``metric(y, predict(X))`` computed on the host, whatever namespace X and y are in."""
        pred = self.predict(X)
        pred = _backend.to_numpy(pred) if _native(pred) else pred
        y = _backend.to_numpy(y) if _native(y) else y
        return float(metric(y, pred, sample_weight=sample_weight))

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_model")

    def _first_pass(self, incremental: bool) -> bool:
        """Whether this fit starts from new weights: the first one, or ``fit`` without ``warm_start``. A
        warm-started ``fit`` keeps the weights, the loss curve, ``t_`` and the stopping counters (and, as every
        ``fit``, starts its optimizer afresh: see ``_train``)."""
        return not hasattr(self, "_model") or (not incremental and not self.warm_start)

    def to_onnx(self, path: Any, *, opset: int | None = None) -> str:
        """Write the fitted estimator as an ONNX graph and return the path (:func:`gpunn.export.to_onnx`; needs
        ``pip install 'gpunn[onnx]'``). Input ``X`` (batch, n_features_in_), of the dtype the estimator was fitted
        on. A classifier's ``label`` is what :meth:`predict` gives (``classes_``, or the 0/1 indicator matrix for
        multilabel targets) and ``probabilities`` what ``predict_proba`` gives (two columns for binary problems);
        a regressor's ``values`` are (batch, n_outputs_)."""
        from .export import to_onnx

        check_is_fitted(self, "_model")
        return to_onnx(self._model, path, opset=opset, **self._onnx_outputs())

    def _onnx_outputs(self) -> dict[str, Any]:
        return {}


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer perceptron classifier with scikit-learn's API, trained by gpunn on CPU or GPU.

    Binary targets use one sigmoid output, several classes a softmax, and a 2-D 0/1 indicator matrix several
    sigmoid outputs (multilabel). Class labels may be any values, strings included.
    """

    def __init__(
        self,
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
        warm_start=False,
        device="auto",
        class_weight=None,
    ):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, warm_start=warm_start, device=device,
        )  # fmt: skip
        self.class_weight = class_weight

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPClassifier:
        """Train from scratch on ``(X, y)``; ``sample_weight`` (n,) weighs each row's loss."""
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    def partial_fit(self, X: Any, y: Any, classes: Any = None, sample_weight: Any = None) -> MLPClassifier:
        """One epoch over ``(X, y)``; the first call needs ``classes`` (all labels that will be seen)."""
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(f"partial_fit is only available for stochastic optimizers; got {self.solver!r}")
        first = not hasattr(self, "_model")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        if not first and classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"`classes={classes!r}` is not the same as on the first call: {self.classes_!r}")
        return self._fit(X, y, incremental=True, classes=classes if first else None, sample_weight=sample_weight)

    def _fit(self, X: Any, y: Any, incremental: bool, classes: Any = None, sample_weight: Any = None) -> MLPClassifier:
        self._check_params()
        if y is None:
            raise ValueError(f"This {type(self).__name__} estimator requires y to be passed, but the target y is None.")
        start = self._first_pass(incremental)
        self._native_input = _native(X) if start else self._native_input
        y_host = _backend.to_numpy(y) if _native(y) else y
        if _native(X):
            X = self._validate_X(X, reset=start)
        else:  # X as given, so that a DataFrame's column names become feature_names_in_
            X, y_host = validate_data(self, X, y_host, reset=start, multi_output=True, dtype=[np.float64, np.float32])
        y_host = np.asarray(y_host)
        if y_host.ndim == 2 and y_host.shape[1] == 1:
            y_host = column_or_1d(y_host, warn=True)
        if y_host.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {y_host.shape[0]}")
        check_classification_targets(y_host)
        if start:
            self._binarizer = LabelBinarizer()
            self._binarizer.fit(y_host if classes is None else np.asarray(classes))
            self.classes_ = self._binarizer.classes_
            multilabel = type_of_target(y_host) == "multilabel-indicator"
            if len(self.classes_) < 2 and not multilabel:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes in the data; got one class only "
                    f"({self.classes_[0]!r})"
                )
            n_outputs = y_host.shape[1] if multilabel else (1 if len(self.classes_) == 2 else len(self.classes_))
            self._output = "softmax" if n_outputs > 1 and not multilabel else "sigmoid"
            self._start(X, n_outputs)
        elif self.warm_start and not incremental and y_host.ndim == 1:
            if set(np.unique(y_host)) != set(self.classes_):
                raise ValueError(
                    "warm_start can only be used where `y` has the same classes as in the previous call to fit. "
                    f"Previously got {self.classes_}, `y` has {np.unique(y_host)}"
                )
        else:
            unseen: Any = np.setdiff1d(np.unique(y_host), self.classes_) if y_host.ndim == 1 else []
            if len(unseen):
                raise ValueError(f"y holds labels not in classes_: {unseen!r}")
        if self._output == "softmax":
            T = np.searchsorted(self.classes_, y_host)
        else:
            T = self._binarizer.transform(y_host) if y_host.ndim == 1 else y_host
            T = T.astype(np.float64)
        weight = self._sample_weight(sample_weight, X)
        if self.class_weight is not None:
            if y_host.ndim != 1:
                raise ValueError("class_weight is not supported for multilabel targets")
            per_class = compute_sample_weight(self.class_weight, y_host)
            weight = per_class if weight is None else weight * per_class
        self._train(X, T, 1 if incremental else self.max_iter, incremental, weight)
        return self

    def _score_for_stopping(self, X_val: Any, y_val: Any, weight: Any = None) -> float:
        """Accuracy on the validation rows (subset accuracy for multilabel), whose targets ``y_val`` are the
        encoded ones: class indices (softmax) or 0/1 columns (sigmoid)."""
        labels = _backend.to_numpy(self._model.predict(X_val))
        truth = np.asarray(y_val)
        right = labels.reshape(truth.shape) == truth
        return float(np.average(right if right.ndim == 1 else right.all(axis=1), weights=weight))

    def _onnx_outputs(self) -> dict[str, Any]:
        if self._output == "sigmoid" and self.n_outputs_ > 1:  # multilabel: the indicator matrix, as predict
            return {}
        return {"classes": self.classes_, "two_column_binary": True}

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, shape (n, n_classes) (two columns for binary problems)."""
        return self._probabilities(X, "predict_proba")

    def _probabilities(self, X: Any, method: str) -> Any:
        p = self._forward(X, method)
        xp = self._model.xp
        if self._output == "sigmoid" and self.n_outputs_ == 1:
            p = xp.concat([1 - p, p], axis=1)
        return self._out(p)

    def predict_log_proba(self, X: Any) -> Any:
        """Logarithm of :meth:`predict_proba`."""
        p = self._probabilities(X, "predict_log_proba")
        return aac.array_namespace(p).log(p)

    def predict(self, X: Any) -> Any:
        """Predicted class labels (a 0/1 indicator matrix for multilabel targets)."""
        check_is_fitted(self, "_model")
        self._check_same_namespace(X, "predict")
        labels = _backend.to_numpy(self._model.predict(self._validate_X(X, reset=False)))
        if self._output == "sigmoid" and self.n_outputs_ > 1:
            out = labels
        else:
            out = self.classes_[labels]
        if self._native_input and out.dtype.kind in "biuf":
            return _backend.from_numpy(out, self._model.xp, self._model.device)
        return out

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy on ``(X, y)``."""
        from sklearn.metrics import accuracy_score

        return self._host_score(accuracy_score, X, y, sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.array_api_support = True  # scikit-learn's Array API checks: tests/test_sklearn_array_api.py
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer perceptron regressor (identity output, squared error) with scikit-learn's API."""

    _output = "identity"

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """Train from scratch on ``(X, y)``; ``sample_weight`` (n,) weighs each row's loss."""
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over ``(X, y)``, continuing from the current weights."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def _fit(self, X: Any, y: Any, incremental: bool, sample_weight: Any = None) -> MLPRegressor:
        self._check_params()
        if y is None:
            raise ValueError(f"This {type(self).__name__} estimator requires y to be passed, but the target y is None.")
        start = self._first_pass(incremental)
        self._native_input = _native(X) if start else self._native_input
        if _native(X):
            X = self._validate_X(X, reset=start)
            xp, device = aac.array_namespace(X), aac.device(X)
            T = y
            if not _native(T) or aac.array_namespace(T) is not xp or not _backend.same_device(aac.device(T), device):
                # y of another namespace or device (or a list): moved to X's, as the classifier's labels are
                host = _backend.to_numpy(T) if _native(T) else np.asarray(T)
                T = xp.asarray(np.asarray(host, dtype=np.float64), device=device)
            if T.ndim == 1:
                T = aac.array_namespace(T).reshape(T, (-1, 1))
        else:
            X, T = validate_data(self, X, y, reset=start, multi_output=True, y_numeric=True,
                                 dtype=[np.float64, np.float32])  # fmt: skip
            T = np.asarray(T, dtype=np.float64)
            self._y_1d = T.ndim == 1
            T = T.reshape(-1, 1) if T.ndim == 1 else T
        if start:
            self._y_1d = getattr(y, "ndim", 1) == 1
            self._start(X, T.shape[1])
        elif T.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {T.shape[1]} outputs but the model was fitted with {self.n_outputs_}")
        self._train(X, T, 1 if incremental else self.max_iter, incremental, self._sample_weight(sample_weight, X))
        return self

    def _score_for_stopping(self, X_val: Any, y_val: Any, weight: Any = None) -> float:
        from sklearn.metrics import r2_score

        pred = _backend.to_numpy(self._model.predict(X_val))
        return float(r2_score(_backend.to_numpy(y_val), pred, sample_weight=weight))

    def predict(self, X: Any) -> Any:
        """Predicted values, shape (n,) for a 1-D target, else (n, n_outputs)."""
        z = self._forward(X, "predict")
        if self._y_1d:
            z = self._model.xp.reshape(z, (-1,))
        return self._out(z)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Coefficient of determination R^2 on ``(X, y)``."""
        from sklearn.metrics import r2_score

        return self._host_score(r2_score, X, y, sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.array_api_support = True
        return tags
