"""MLPClassifier."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import array_api_compat as aac
import numpy as np

try:
    from sklearn.base import ClassifierMixin
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils.class_weight import compute_sample_weight
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import type_of_target, unique_labels
    from sklearn.utils.validation import column_or_1d, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("gpunn.sklearn needs scikit-learn: pip install 'gpunn[sklearn]'") from exc

from .. import _backend
from ._base import SPARSE, _BaseMLP, _native, as_a_whole

# Whether unique_labels takes the kind found already (newer scikit-learn), rather than finding it again.
_KIND_GIVEN = "ys_types" in inspect.signature(unique_labels).parameters


def _classification_kind(y: np.ndarray) -> str:
    """``y``'s kind (``type_of_target``), refused as scikit-learn's ``check_classification_targets`` refuses it.
    Found once a fit: that check, ``LabelBinarizer.fit`` and ``unique_labels`` would each find it again, at a
    tenth of a small L-BFGS fit each."""
    kind = type_of_target(y, input_name="y")
    if kind not in ("binary", "multiclass", "multiclass-multioutput", "multilabel-indicator", "multilabel-sequences"):
        raise ValueError(f"Unknown label type: {kind}. Maybe you are trying to fit a classifier, which expects "
                         "discrete classes on a regression target with continuous values.")  # fmt: skip
    if "multiclass" in kind and len(y) > 20 and len(np.unique(y)) > round(0.5 * len(y)):
        warnings.warn("The number of unique classes is greater than 50% of the number of samples. `y` could represent "
                      "a regression problem, not a classification problem.", UserWarning, stacklevel=4)  # fmt: skip
    return kind


def _binarizer(y: np.ndarray, kind: str) -> LabelBinarizer:
    """``LabelBinarizer().fit(y)`` for ``y`` of the ``kind`` found already: its checks, then its fitted state."""
    if "multioutput" in kind:
        raise ValueError("Multioutput target data is not supported with label binarization")
    if len(y) == 0:
        raise ValueError(f"y has 0 samples: {y!r}")
    binarizer = LabelBinarizer()
    binarizer.y_type_, binarizer.sparse_input_ = kind, False  # y is a NumPy array here
    binarizer.classes_ = unique_labels(y, ys_types={kind}) if _KIND_GIVEN else unique_labels(y)
    return binarizer


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer perceptron classifier with scikit-learn's API, trained by gpunn on CPU or GPU.

    Binary targets use one sigmoid output, several classes a softmax, and a 2-D 0/1 indicator matrix several
    sigmoid outputs (multilabel). Class labels may be any values, strings included.
    """

    _binarizer: LabelBinarizer

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
        max_fun=15000,
    ):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, warm_start=warm_start, device=device,
            max_fun=max_fun,
        )  # fmt: skip
        self.class_weight = class_weight

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPClassifier:
        """Train from scratch on ``(X, y)``; ``sample_weight`` (n,) weighs each row's loss."""
        return as_a_whole(self, False, lambda: self._fit(X, y, incremental=False, sample_weight=sample_weight))

    @available_if(_BaseMLP._check_solver)
    def partial_fit(self, X: Any, y: Any, classes: Any = None, sample_weight: Any = None) -> MLPClassifier:
        """One epoch over ``(X, y)``; the first call needs ``classes`` (all labels that will be seen). A batch may
        hold one class only (one row at a time, say)."""
        self._check_partial_fit()
        first = not hasattr(self, "_model")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        if not first and classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to partial_fit, was: "
                             f"{self.classes_!r}")  # fmt: skip
        return as_a_whole(self, True, lambda: self._fit(X, y, incremental=True, classes=classes if first else None,
                                                        sample_weight=sample_weight))  # fmt: skip

    def _fit(self, X: Any, y: Any, incremental: bool, classes: Any = None, sample_weight: Any = None) -> MLPClassifier:
        self._check_params()
        if y is None:
            raise ValueError(f"This {type(self).__name__} estimator requires y to be passed, but the target y is None.")
        start = self._first_pass(incremental)
        X, encoding = self._table(X, start)  # text and empty cells of a table, encoded
        self._native_input = _native(X) if start else self._native_input
        y_host = _backend.to_numpy(y) if _native(y) else y
        if _native(X):
            X = self._validate_X(X, reset=start)
        else:  # X as given, so that a DataFrame's column names become feature_names_in_
            X, y_host = validate_data(self, X, y_host, reset=start or encoding is not None, multi_output=True,
                                      dtype=[np.float64, np.float32], accept_sparse=SPARSE)  # fmt: skip
            self._keep_table(encoding)
        y_host = np.asarray(y_host)
        if y_host.ndim == 2 and y_host.shape[1] == 1:
            y_host = column_or_1d(y_host, warn=True)
        if y_host.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {y_host.shape[0]}")
        kind = _classification_kind(y_host)
        # What this fit learns is kept in locals until every check has passed: a refused call changes nothing.
        if start:
            binarizer = _binarizer(y_host, kind) if classes is None else LabelBinarizer().fit(np.asarray(classes))
            multilabel = kind == "multilabel-indicator"
            k = len(binarizer.classes_)
            # one class (scikit-learn's MLP takes it): one sigmoid output trained towards 0, predict gives the class
            n_outputs = y_host.shape[1] if multilabel else (1 if k <= 2 else k)
            output = "softmax" if n_outputs > 1 and not multilabel else "sigmoid"
        else:
            binarizer, output = self._binarizer, self._output
        known = binarizer.classes_
        if not start and self.warm_start and not incremental and y_host.ndim == 1:
            if set(np.unique(y_host)) != set(known):
                raise ValueError(
                    "warm_start can only be used where `y` has the same classes as in the previous call to fit. "
                    f"Previously got {known}, `y` has {np.unique(y_host)}"
                )
        if (incremental or not start) and y_host.ndim == 1:  # partial_fit's classes= bound y from its first call
            if len(np.setdiff1d(np.unique(y_host), known)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has {known}. 'y' has {np.unique(y_host)}."
                )
        if output == "softmax":
            T = np.searchsorted(known, y_host)
        elif y_host.ndim == 1 and len(known) == 2:  # the binarizer's column, without its detour through a sparse matrix
            T = (y_host == known[1]).astype(np.float64).reshape(-1, 1)
        else:
            T = (binarizer.transform(y_host) if y_host.ndim == 1 else y_host).astype(np.float64)
        weight = self._sample_weight(sample_weight, X)
        if self.class_weight is not None:
            if y_host.ndim != 1:
                raise ValueError("class_weight is not supported for multilabel targets")
            per_class = compute_sample_weight(self.class_weight, y_host)
            weight = per_class if weight is None else weight * per_class
        self._check_split(T, incremental, known)
        if start:
            self._binarizer, self.classes_, self._output = binarizer, known, output
            self._start(X, n_outputs, incremental)
        self._train(X, T, 1 if incremental else self.max_iter, incremental, weight)
        return self

    def _score_for_stopping(self, X_val: Any, y_val: Any, weight: Any = None) -> float:
        """Accuracy on the validation rows (subset accuracy for multilabel), whose targets ``y_val`` are the
        encoded ones: class indices (softmax) or 0/1 columns (sigmoid)."""
        labels = _backend.to_numpy(self._model.predict(X_val))
        truth = np.asarray(y_val)
        right = labels.reshape(truth.shape) == truth
        if len(self.classes_) == 1:  # predict gives the one class, always right
            right = np.ones_like(right)
        return float(np.average(right if right.ndim == 1 else right.all(axis=1), weights=weight))

    def _stratify_labels(self, T: Any, classes: Any = None) -> Any:
        """The early-stopping split is stratified as scikit-learn's on binary targets: on the 0/1 column as
        booleans (a class too small to split is named 'True' or 'False', as there); on several classes (which
        scikit-learn leaves unstratified) on the labels (``classes``, default ``classes_``; T holds their indices);
        multilabel targets are not stratified."""
        if T.ndim == 1:
            return (self.classes_ if classes is None else classes)[T]
        return T.astype(bool) if T.shape[1] == 1 else None

    def _labels(self, indices: np.ndarray) -> np.ndarray:
        """Class labels of the network's predicted indices (multilabel: the indicator matrix itself)."""
        if self._output == "sigmoid" and self.n_outputs_ > 1:
            return indices
        if len(self.classes_) == 1:  # as scikit-learn's LabelBinarizer gives for one class
            return np.repeat(self.classes_, len(indices))
        return self.classes_[indices]

    def _onnx_outputs(self) -> dict[str, Any]:
        if self._output == "sigmoid" and self.n_outputs_ > 1:  # multilabel: the indicator matrix, as predict
            return {}
        classes = np.repeat(self.classes_, 2) if len(self.classes_) == 1 else self.classes_  # either index: it
        return {"classes": classes, "two_column_binary": True}

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, shape (n, n_classes) (two columns for binary problems)."""
        return self._probabilities(X, "predict_proba")

    def _probabilities(self, X: Any, method: str) -> Any:
        p = self._forward(X, method)
        xp = self._model.xp
        if self._output == "sigmoid" and self.n_outputs_ == 1:  # on JAX on the host: no program per row count
            p = _backend.on_host(lambda m, q: m.concat([1 - q, q], axis=1), p, xp, self._model.device)
        return self._out(p)

    def predict_log_proba(self, X: Any) -> Any:
        """Logarithm of :meth:`predict_proba`."""
        p = self._probabilities(X, "predict_log_proba")
        # on JAX on the host, where an eager log compiles a program for each row count
        return _backend.on_host(lambda m, q: m.log(q), p, aac.array_namespace(p), aac.device(p))

    def predict(self, X: Any) -> Any:
        """Predicted class labels (a 0/1 indicator matrix for multilabel targets)."""
        model = self._fitted_model()
        self._check_same_namespace(X, "predict")
        out = self._labels(_backend.to_numpy(model.predict(self._validate_X(X, reset=False))))
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
        tags.input_tags.sparse = True
        return tags
