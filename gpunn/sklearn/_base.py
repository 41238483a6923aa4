"""The estimators' shared base: parameters, training through gpunn.MLP, early stopping, attributes."""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import array_api_compat as aac
import numpy as np

try:
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import _check_sample_weight, check_array, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("gpunn.sklearn needs scikit-learn: pip install 'gpunn[sklearn]'") from exc

from .. import _backend, optim, schedules
from .. import _validation as check
from ..errors import ConfigError, InputError, NonFiniteError
from ..model import MLP
from ..network import undrawn
from . import _lbfgs
from ._fitted import Fitted, _native

_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid", "identity": "identity"}
# scikit-learn's intervals for the real-valued parameters, as the messages word them (finite numbers only: an
# infinite rate or penalty trains into NaN)
_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "learning_rate_init": ("> 0", lambda v: v > 0),
    "epsilon": ("> 0", lambda v: v > 0),
    "alpha": (">= 0", lambda v: v >= 0),
    "power_t": (">= 0", lambda v: v >= 0),
    "tol": (">= 0", lambda v: v >= 0),
    "momentum": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "beta_1": ("in [0, 1)", lambda v: 0 <= v < 1),
    "beta_2": ("in [0, 1)", lambda v: 0 <= v < 1),
    "validation_fraction": ("in (0, 1)", lambda v: 0 < v < 1),
}
SPARSE = ["csr", "csc", "coo"]  # scipy.sparse formats taken as they are (gpunn densifies a batch at a time)
_HELD = 2**62  # a plateau schedule's patience that is never reached: the rate is held in its state
# With device="auto", a network whose training step is smaller than this many multiply-adds (forward, weight and
# input gradients: 3 x batch rows x weights) trains on the CPU even where a GPU is usable. Such a step is launch
# bound on a GPU: about 50 array operations (Adam) at 10-25 us of CuPy's Python each, 0.5-1.3 ms a step whatever
# its size, where NumPy takes about 0.6 ms for digits' 64-32 network on batches of 200 (3.9 million).
GPU_MIN_STEP = 10_000_000


def _draw_seed(random_state: Any) -> int:
    """The first number ``check_random_state(random_state)`` draws from 0 to 2**31 - 1 (a seed for the network, or
    for the early-stopping split), as scikit-learn's estimators draw theirs; for an integer state, the same number
    every time, remembered rather than drawn from a new generator (whose seeding takes longer than a small fit's
    step)."""
    if isinstance(random_state, numbers.Integral):
        return _first_draw(int(random_state))
    return int(check_random_state(random_state).randint(0, 2**31 - 1))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=64)
def _first_draw(seed: int) -> int:
    return int(check_random_state(seed).randint(0, 2**31 - 1))  # type: ignore[arg-type]


@dataclass
class SGDRate:
    """A fitted SGD estimator's ``_optimizer``, as far as scikit-learn's ``SGDOptimizer`` tells its rate:
    ``learning_rate`` is the rate of the next update, ``learning_rate_init`` lowered by ``invscaling`` after each
    epoch (``learning_rate_init / (t_ + 1) ** power_t``) or divided by 5 by ``adaptive``."""

    learning_rate_init: float
    learning_rate: float


@dataclass
class AdamRate:
    """A fitted Adam estimator's ``_optimizer``, as far as scikit-learn's ``AdamOptimizer`` tells its rate: ``t``
    updates so far in this optimizer's life, and ``learning_rate`` the step size of the last one, both bias
    corrections folded in (``learning_rate_init`` before the first)."""

    learning_rate_init: float
    beta_1: float
    beta_2: float
    t: int = 0

    @property
    def learning_rate(self) -> float:
        if self.t == 0:
            return float(self.learning_rate_init)
        return self.learning_rate_init * math.sqrt(1 - self.beta_2**self.t) / (1 - self.beta_1**self.t)


def as_a_whole(est: Any, incremental: bool, fit: Callable[[], Any]) -> Any:
    """``fit()``, where a refusal (InputError, ConfigError) of a fit that starts from new weights leaves the
    estimator as it was: such a fit replaces the network and scikit-learn's attributes before its batches'
    weights are checked (a batch whose weights sum to 0 is refused when it comes). A warm-started fit and
    partial_fit train the same network, whose own fit leaves it at the last epoch it finished."""
    if not est._first_pass(incremental):
        return fit()
    before = dict(est.__dict__)
    try:
        return fit()
    except (InputError, ConfigError):
        est.__dict__.clear()
        est.__dict__.update(before)
        raise


class _BaseMLP(Fitted, BaseEstimator):
    _output: str  # "sigmoid"/"softmax" (set per fit for classifiers), "identity" or "exp" (set per first fit)
    _model: MLP
    _native_input: bool
    _seed_split: int
    _no_improvement_count: int
    _best_weights: Any  # the early-stopping best epoch's (W, b) pairs, kept across warm-started fits
    _encoding: Any = None  # a table's encoding (text and empty cells), learned by the fit that started anew
    _optimizer: Any  # SGDRate or AdamRate: the rate as scikit-learn's fitted ``_optimizer`` tells it
    _exposed: dict[str, tuple[list[Any], list[Any] | None]]  # coefs_/intercepts_ handed out or assigned (see below)
    n_iter_: int
    loss_: float
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
        max_fun=15000,
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
        self.max_fun = max_fun

    # -------------------------------------------------------------------------------------- validation
    def _check_params(self) -> None:
        """scikit-learn's parameter constraints, each refusal a ConfigError (a ValueError, as scikit-learn raises)
        naming the parameter, before anything trains."""
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, (int, np.integer)):
            hidden = [hidden]
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Iterable) or any(
                isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 for h in hidden):  # fmt: skip
            raise ConfigError(f"hidden_layer_sizes must be positive integers; got {self.hidden_layer_sizes!r}")
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(f"activation {self.activation!r} is not supported; use one of {list(_ACTIVATIONS)}")
        if self.solver not in ("sgd", "adam", "lbfgs"):
            raise ConfigError(f"solver {self.solver!r} is not supported; use 'lbfgs', 'sgd' or 'adam'")
        if not (
            isinstance(self.max_fun, (int, np.integer)) and not isinstance(self.max_fun, bool) and self.max_fun >= 1
        ):
            raise ConfigError(f"max_fun must be an integer >= 1; got {self.max_fun!r}")
        if self.learning_rate not in ("constant", "invscaling", "adaptive"):
            raise ConfigError(
                f"learning_rate {self.learning_rate!r} is not supported; use 'constant', 'invscaling' or 'adaptive'"
            )
        for name, (allowed, inside) in _RANGES.items():
            value = getattr(self, name)
            number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and inside(float(value))):
                raise ConfigError(f"{name} must be a finite number {allowed}; got {value!r}")
        for name in ("shuffle", "early_stopping", "warm_start", "nesterovs_momentum"):  # "no" would be truthy
            check.boolean(getattr(self, name), name)
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise ConfigError(f"max_iter must be an integer >= 1; got {self.max_iter!r}")
        patience = self.n_iter_no_change
        if not ((isinstance(patience, (int, np.integer)) and patience >= 1) or (
                isinstance(patience, (float, np.floating)) and patience == np.inf)):  # fmt: skip
            raise ConfigError(f"n_iter_no_change must be an integer >= 1 or np.inf (never stop); got {patience!r}")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1):
            raise ConfigError(f"batch_size must be 'auto' or an integer >= 1; got {self.batch_size!r}")

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

    def _check_solver(self) -> bool:
        """``partial_fit`` exists for the stochastic solvers only, as in scikit-learn (``hasattr`` says so)."""
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. {self.solver} is not stochastic."
            )
        return True

    def _check_partial_fit(self) -> None:
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")

    def _check_split(self, T: Any, incremental: bool, classes: Any = None) -> None:
        """The early-stopping split of a fit on targets ``T`` (encoded), tried before the call changes anything:
        train_test_split's refusals (a class too small to stratify), then scikit-learn's of a validation set too
        small to score (fewer than 2 rows). Neither depends on the seed the split will draw from."""
        if not self.early_stopping or incremental or self.solver == "lbfgs":  # L-BFGS splits off no validation set
            return
        n = T.shape[0]
        _, held = train_test_split(np.arange(n), test_size=self.validation_fraction, random_state=0,
                                   stratify=self._stratify_labels(T, classes))  # fmt: skip
        if len(held) < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
            )

    def _stratify_labels(self, T: Any, classes: Any = None) -> Any:
        """What the early-stopping split of targets ``T`` is stratified on (None: not stratified)."""
        return None

    def _gpunn_optimizer(self) -> optim.Optimizer:
        if self.solver == "lbfgs":
            return _lbfgs.optimizer(self)
        if self.solver == "adam":
            return optim.adam(self.beta_1, self.beta_2, self.epsilon)
        if self.momentum > 0:
            return optim.momentum(self.momentum, nesterov=self.nesterovs_momentum)
        return optim.sgd()

    def _validate_X(self, X: Any, reset: bool) -> Any:
        if not reset and self._encoding is not None:  # a table: its columns by name, encoded as the fit learned
            return check_array(self._encoding.apply(X), dtype=[np.float64])
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
        return validate_data(self, X, reset=reset, dtype=[np.float64, np.float32], accept_sparse=SPARSE)

    def _batch(self, n: int) -> int:
        """The batch size scikit-learn uses: min(200, n) for "auto"."""
        if self.solver == "lbfgs":  # full-batch
            return n
        return min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)

    @staticmethod
    def _auto_device(sizes: list[int], batch: int) -> str:
        """Where device="auto" trains NumPy input: "cpu" for a step under GPU_MIN_STEP multiply-adds, where a GPU
        would wait on kernel launches; else "auto" (a GPU when usable)."""
        weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        return "cpu" if 3 * batch * weights < GPU_MIN_STEP else "auto"

    def _model_for(self, X: Any, n_outputs: int) -> MLP:
        sizes = [X.shape[1], *self._hidden(), n_outputs]
        seed = _draw_seed(self.random_state)
        device = self.device
        if isinstance(device, str) and device == "auto":
            device = self._auto_device(sizes, self._batch(X.shape[0]))
        kwargs: dict[str, Any] = {"device": device}
        if _native(X):
            kwargs = {"xp": aac.array_namespace(X), "device": aac.device(X)}
        dtype = "float32" if str(getattr(X, "dtype", "")).endswith("float32") else "float64"
        # without weights of its own: _start gives it scikit-learn's initialization at once
        return undrawn(MLP, sizes, activation=_ACTIVATIONS[self.activation], output=self._output, seed=seed,
                       dtype=dtype, **kwargs)  # fmt: skip

    # ------------------------------------------------------------------------------------------- training
    def _gradient_scale(self) -> float:
        """gpunn's loss gradient over scikit-learn's for this output (gpunn averages over outputs too)."""
        k = self.n_outputs_
        if self._output == "identity":
            return 2.0 / k  # mean((z - y)^2) against sklearn's sum over outputs of (z - y)^2 / 2, per sample
        if self._output == "exp":
            return 2.0 / k  # the mean Poisson deviance against sklearn's half deviance summed over outputs
        return 1.0 / k if self._output == "sigmoid" else 1.0

    def _train(self, X: Any, T: Any, epochs: int, incremental: bool, sample_weight: Any = None) -> None:
        """Run up to ``epochs`` epochs with scikit-learn's stopping rules. With ``sample_weight`` the loss
        curve is the weighted loss, as scikit-learn's, so integer weights train as repeated rows do."""
        self._apply_assigned()
        if self.solver == "lbfgs":
            return _lbfgs.fit(self, X, T, epochs, sample_weight)
        m = self._model
        n = X.shape[0]
        self.n_iter_ = 0  # epochs of this call, as scikit-learn counts them (t_ and loss_curve_ go on)
        key = "loss" if sample_weight is None else "weighted_loss"
        scale = self._gradient_scale()
        if not incremental or not isinstance(getattr(self, "_optimizer", None), (SGDRate, AdamRate)):
            # every fit, a warm-started one too, starts a new optimizer and rate, as scikit-learn's
            m.optimizer_state, m.schedule = None, None
            self._new_optimizer()
        # No divergence guard: scikit-learn trains on while the loss stays finite (see _non_finite).
        fit_kw = dict(lr=self._model_rate(scale), batch_size=self._batch(n), optimizer=self._gpunn_optimizer(),
                      shuffle=self.shuffle, verbose=0, l2=self.alpha * scale, diverge_factor=None)  # fmt: skip
        try:
            if incremental:
                self._partial_epoch(X, T, key, scale, sample_weight, fit_kw)
            else:
                self._epochs(X, T, epochs, key, scale, sample_weight, fit_kw)
        finally:
            self._exposed = {}  # the weights changed: coefs_ and intercepts_ are read anew
            self._count_steps()

    def _partial_epoch(self, X: Any, T: Any, key: str, scale: float, sample_weight: Any, fit_kw: dict) -> None:
        """``partial_fit``'s one epoch, with scikit-learn's bookkeeping (no early stopping: it refuses it)."""
        m = self._model
        try:
            m.fit(X, T, epochs=1, sample_weight=sample_weight, **fit_kw)
        except NonFiniteError as exc:
            self._non_finite(exc, X.shape[0], None)  # raises: partial_fit has no early stopping
        self._record_epoch(getattr(m.history, key)[-1] / scale, X.shape[0])
        improving = self.loss_curve_[-1] <= self.best_loss_ - self.tol
        self.best_loss_ = min(self.best_loss_, self.loss_curve_[-1])
        self._no_improvement_count = 0 if improving else self._no_improvement_count + 1
        self._epoch_end(m, scale)

    def _epochs(
        self, X: Any, T: Any, epochs: int, key: str, scale: float, sample_weight: Any, fit_kw: dict
    ) -> None:  # fmt: skip
        """``fit``'s epochs: the early-stopping split, the stopping rules after each epoch, the best weights."""
        m = self._model
        val = None
        if self.early_stopping:
            split = train_test_split(
                X, T, *([] if sample_weight is None else [sample_weight]), test_size=self.validation_fraction,
                random_state=self._seed_split, stratify=self._stratify_labels(T),
            )  # fmt: skip
            X, X_val, T, y_val = split[:4]
            sample_weight, w_val = split[4:] if sample_weight is not None else (None, None)
            val = (X_val, y_val, w_val)
        best: dict[str, Any] = {"weights": self._best_weights}  # a warm-started fit keeps the best so far
        after_epoch = self._after_epoch(key, scale, X.shape[0], val, best)
        diverged = False
        try:
            m.fit(X, T, epochs=epochs, callbacks=[after_epoch], sample_weight=sample_weight, **fit_kw)
        except NonFiniteError as exc:
            self._non_finite(exc, X.shape[0], val)
            diverged = True
        self._best_weights = best["weights"]
        if self.early_stopping and best["weights"] is not None:
            m.set_weights(best["weights"])
        if not diverged and self._no_improvement_count <= self.n_iter_no_change and self.n_iter_ == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization hasn't "
                "converged yet.",
                ConvergenceWarning,
                stacklevel=4,
            )

    def _non_finite(self, exc: NonFiniteError, n_train: int, val: tuple | None) -> None:
        """After an epoch whose loss was not finite (``exc``; the model is back at its last finite weights).
        Without early stopping (``val`` None), scikit-learn's ``ValueError`` (a :class:`NonFiniteError`). With it,
        scikit-learn's record of that epoch (a NaN validation score, which resets the no-improvement count), and a
        warning; training stops there, where scikit-learn trains on to max_iter on non-finite weights, and the
        best validation epoch's weights are kept, as in scikit-learn."""
        if val is None:
            raise self._non_finite_error() from None
        self._record_epoch(float("nan"), n_train)
        self.validation_scores_.append(float("nan"))
        self._no_improvement_count = 0
        warnings.warn(
            f"Training diverged in epoch {self.n_iter_} of this fit: its loss is not finite, so is its validation "
            "score (NaN). Training stops there and keeps the weights of the best validation epoch "
            f"(score {self.best_validation_score_:.6g}); a smaller learning_rate_init may help.",
            ConvergenceWarning,
            stacklevel=5,
        )

    def _non_finite_error(self) -> NonFiniteError:
        """scikit-learn's error for non-finite weights, saying where the loss stopped being finite."""
        return NonFiniteError(
            "Solver produced non-finite parameter weights. The input data may contain large values and need to "
            f"be preprocessed. (The loss was not finite in epoch {self.n_iter_ + 1} of this call; the estimator "
            "keeps the weights of its last finite epoch. A smaller learning_rate_init may also help.)"
        )

    def _new_optimizer(self) -> None:
        """A new ``_optimizer`` (its rate), as scikit-learn's MLP makes one for every fit."""
        if self.solver == "lbfgs":  # scikit-learn's L-BFGS keeps no optimizer object
            return
        if self.solver == "sgd":
            self._optimizer = SGDRate(self.learning_rate_init, float(self.learning_rate_init))
        else:
            self._optimizer = AdamRate(self.learning_rate_init, self.beta_1, self.beta_2)

    def _model_rate(self, scale: float) -> Any:
        """The rate the gpunn model trains at: SGD's over ``scale`` (gpunn's loss gradient over scikit-learn's),
        held in the state of a plateau schedule when a schedule changes it (see _epoch_end)."""
        if self.solver != "sgd":
            return self.learning_rate_init
        lr = self.learning_rate_init / scale
        # a plateau that never lowers the rate itself: _epoch_end sets it as scikit-learn's SGD does
        return schedules.plateau(lr, factor=0.2, patience=_HELD) if self._sgd_schedule() else lr

    def _count_steps(self) -> None:
        """Adam's update count, which its rate depends on, read from the model once a call."""
        state = self._model.optimizer_state
        if isinstance(getattr(self, "_optimizer", None), AdamRate) and state is not None:
            self._optimizer.t = int(state["step"])

    def _after_epoch(
        self, key: str, scale: float, n_train: int, val: tuple | None, best: dict[str, Any]
    ) -> Callable[[MLP, dict[str, float]], bool]:
        """The callback that does after each epoch what scikit-learn's loop does: the loss curve (``key`` of the
        record over ``scale``), scikit-learn's rule (count epochs that fail to beat the best by tol, on the
        validation split ``val`` or on the loss; stop past n_iter_no_change), the best weights into ``best``."""

        def after_epoch(model: MLP, record: dict[str, float]) -> bool:
            self._record_epoch(record[key] / scale, n_train)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_curve_[-1]:.8f}")
            if val is not None:
                score = self._score_for_stopping(*val)
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

        return after_epoch

    def _sgd_schedule(self) -> bool:
        return self.solver == "sgd" and self.learning_rate != "constant"

    def _epoch_end(self, model: MLP, scale: float) -> bool:
        """scikit-learn's end of an epoch: invscaling's next rate, learning_rate_init / (t_ + 1) ** power_t; past
        n_iter_no_change epochs without improvement, adaptive's rate / 5 (while above 1e-6) in place of stopping.
        The rate is ``_optimizer.learning_rate``, the model's over ``scale``. Returns whether training goes on."""
        rate = self._optimizer
        if self._sgd_schedule() and self.learning_rate == "invscaling":
            rate.learning_rate = float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t
            model.schedule_state = {**model.schedule_state, "lr": rate.learning_rate / scale}
        if self._no_improvement_count <= self.n_iter_no_change:
            return True
        if self._sgd_schedule() and self.learning_rate == "adaptive" and rate.learning_rate > 1e-6:
            rate.learning_rate /= 5.0
            model.schedule_state = {**model.schedule_state, "lr": rate.learning_rate / scale}
            self._no_improvement_count = 0
            return True
        return False

    def _record_epoch(self, loss: float, n: int) -> None:
        self.loss_ = float(loss)  # the last epoch's mean loss, its L2 term included, as scikit-learn's
        self.loss_curve_.append(self.loss_)
        self.n_iter_ += 1
        self.t_ += n

    def _start(self, X: Any, n_outputs: int, incremental: bool) -> None:
        """A first fit's new network, initialized as scikit-learn's, and scikit-learn's fitted attributes. Weights
        assigned to ``coefs_``/``intercepts_`` before it are trained from by ``partial_fit`` and a warm-started
        ``fit`` (checked here, before anything changes), and dropped by a ``fit`` that starts over, as in
        scikit-learn."""
        self._check_params()
        sizes = [X.shape[1], *self._hidden(), n_outputs]
        keep = incremental or self.warm_start
        if keep:
            self._assigned_pairs(sizes)
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
        if not keep:
            self._exposed = {}
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(self._hidden()) + 2
        self.out_activation_ = {"sigmoid": "logistic", "softmax": "softmax", "identity": "identity", "exp": "exp"}[
            self._output
        ]
        self._best_weights = None
        self.n_iter_ = 0
        self.t_ = 0
        self._no_improvement_count = 0
        self._seed_split = _draw_seed(self.random_state)
        if self.solver == "lbfgs":  # scikit-learn keeps no loss curve or stopping record for L-BFGS
            return
        self.loss_curve_: list[float] = []
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf

    def _first_pass(self, incremental: bool) -> bool:
        """Whether this fit starts from new weights: the first one, or ``fit`` without ``warm_start``. A
        warm-started ``fit`` keeps the weights, the loss curve, ``t_`` and the stopping counters (and, as every
        ``fit``, starts its optimizer afresh: see ``_train``)."""
        return not hasattr(self, "_model") or (not incremental and not self.warm_start)
