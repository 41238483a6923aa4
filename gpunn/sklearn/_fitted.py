"""What a fitted gpunn.sklearn estimator exposes: its layers as scikit-learn's ``coefs_`` and ``intercepts_``
(assignable), its predictions in the namespace it was fitted on, and its ONNX graph. A mixin of the estimators'
base class (gpunn.sklearn._base), which trains the network these read."""

from __future__ import annotations

import dataclasses
from typing import Any

import array_api_compat as aac
import numpy as np

try:
    from sklearn import get_config
    from sklearn.utils.validation import check_is_fitted
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("gpunn.sklearn needs scikit-learn: pip install 'gpunn[sklearn]'") from exc

from .. import _backend, losses
from ..errors import InputError
from ..feed import encode
from ..model import MLP


def _native(X: Any) -> bool:
    """True for arrays of a namespace gpunn trains on directly (CuPy, PyTorch, JAX), not NumPy or lists."""
    return aac.is_array_api_obj(X) and not isinstance(X, np.ndarray)


class Fitted:
    """The fitted estimator's attributes and read-only methods (see the module's docstring)."""

    _model: MLP
    _native_input: bool
    _exposed: dict[str, Any]
    _validate_X: Any  # the estimator's (gpunn.sklearn._base)
    predict: Any

    # ------------------------------------------------------------------------------------------ attributes
    # coefs_ and intercepts_ are lists, as scikit-learn's, that set the network's weights when assigned: the whole
    # list (est.coefs_ = [...]) or an item of it (est.coefs_[0] = W). A list handed out is kept in _exposed with a
    # copy of its items, so that an item replaced in it is seen at the next call that uses the weights
    # (_apply_assigned); an assigned list has no copy (None): all of it is new. Writing into the arrays themselves
    # (est.coefs_[0][0, 0] = 1) changes a copy only.
    @property
    def coefs_(self) -> list[Any]:
        """Weight matrices in scikit-learn's (in, out) layout, in the input's namespace; assignable."""
        return self._layers("coefs_")

    @coefs_.setter
    def coefs_(self, value: Any) -> None:
        self._assign("coefs_", value)

    @property
    def intercepts_(self) -> list[Any]:
        """Bias vectors, in the input's namespace; assignable."""
        return self._layers("intercepts_")

    @intercepts_.setter
    def intercepts_(self, value: Any) -> None:
        self._assign("intercepts_", value)

    def _layers(self, name: str) -> list[Any]:
        if name not in self.__dict__.get("_exposed", {}):
            check_is_fitted(self, "_model")
            i = 0 if name == "coefs_" else 1
            values = [self._out(pair[i]) for pair in self._model.weights]
            values = [v.T for v in values] if i == 0 else values
            self.__dict__.setdefault("_exposed", {})[name] = (values, list(values))
        return self._exposed[name][0]

    def _assign(self, name: str, value: Any) -> None:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or hasattr(value, "shape"):
            raise InputError(f"{name} must be a list of arrays, one per layer; got {type(value).__name__}")
        self.__dict__.setdefault("_exposed", {})[name] = (value if isinstance(value, list) else list(value), None)

    def _assigned_pairs(self, sizes: list[int]) -> list[tuple[Any, Any]] | None:
        """The (W, b) pairs, in gpunn's (out, in) layout, that assigned ``coefs_``/``intercepts_`` give a network
        of widths ``sizes`` (a layer not assigned keeps its weights), or None where nothing was assigned; a list
        that does not fit is an error, raised before anything changes."""
        changed = {name: values for name, (values, _) in self._assigned().items()}
        if not changed:
            return None
        layers = len(sizes) - 1
        current = self._model.weights if hasattr(self, "_model") and self._model.sizes == sizes else None
        pairs = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            pair: list[Any] = []
            for name, shape in (("coefs_", (fan_in, fan_out)), ("intercepts_", (fan_out,))):
                values = changed.get(name)
                if values is None:  # (before a first fit: only checked, the new network's weights go there)
                    pair.append(None if current is None else current[i][len(pair)])
                    continue
                if len(values) != layers:
                    raise InputError(f"{name} has {len(values)} arrays; this network has {layers} layers")
                value = values[i] if _native(values[i]) else np.asarray(values[i])
                if tuple(value.shape) != shape:
                    raise InputError(f"{name}[{i}] has shape {tuple(value.shape)}; this network needs {shape}")
                pair.append(value.T if name == "coefs_" else value)
            pairs.append((pair[0], pair[1]))
        return pairs

    def _apply_assigned(self) -> None:
        """Give the network the weights assigned to ``coefs_``/``intercepts_`` since it last used them."""
        pairs = self._assigned_pairs(self._model.sizes)
        if pairs is not None:
            self._model.set_weights(pairs)
            self._exposed = {}

    def _assigned(self) -> dict[str, tuple[list[Any], list[Any] | None]]:
        """The entries of ``_exposed`` that were assigned, or handed out and had an item replaced since."""
        return {
            name: (values, kept) for name, (values, kept) in self.__dict__.get("_exposed", {}).items()
            if kept is None or len(kept) != len(values) or any(a is not b for a, b in zip(values, kept))
        }  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        """A list handed out and left as it was is not pickled: it is read anew from the network."""
        state = super().__getstate__()  # type: ignore[misc]  # BaseEstimator's, after this mixin
        state["_exposed"] = self._assigned()
        return state

    def _table(self, X: Any, reset: bool) -> tuple[Any, Any]:
        """A table with text or empty cells as the float64 array of its encoding (:mod:`gpunn.feed.encode`,
        learned by a fit that starts anew), and the encoding; anything else as it is, and None."""
        encoding = encode.learn(X) if reset and encode.needs_encoding(X) else None if reset else self._encoding
        return (X, None) if encoding is None else (encoding.apply(X), encoding)

    def _keep_table(self, encoding: Any) -> None:
        """After a fit's checks: the encoding it took X by, and the table's columns as ``feature_names_in_``."""
        self._encoding = encoding
        if encoding is not None:
            self.feature_names_in_ = np.asarray(encoding.names, dtype=object)
            self.n_features_in_ = len(encoding.names)

    def _fitted_model(self) -> MLP:
        check_is_fitted(self, "_model")
        self._apply_assigned()
        return self._model

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
        model = self._fitted_model()
        self._check_same_namespace(X, method)
        X = self._validate_X(X, reset=False)
        return model.predict(X) if model.output in losses.REGRESSION else model.predict_proba(X)

    def _host_score(self, metric: Any, X: Any, y: Any, sample_weight: Any) -> float:
        """``metric(y, predict(X))`` computed on the host, whatever namespace X and y are in."""
        pred = self.predict(X)
        pred = _backend.to_numpy(pred) if _native(pred) else pred
        y = _backend.to_numpy(y) if _native(y) else y
        return float(metric(y, pred, sample_weight=sample_weight))

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_model")

    def to_onnx(self, path: Any, *, opset: int | None = None) -> str:
        """Write the fitted estimator as an ONNX graph and return the path (:func:`gpunn.export.to_onnx`; needs
        ``pip install 'gpunn[onnx]'``). Input ``X`` (batch, n_features_in_), of the dtype the estimator was fitted
        on. A classifier's ``label`` is what :meth:`predict` gives (``classes_``, or the 0/1 indicator matrix for
        multilabel targets) and ``probabilities`` what ``predict_proba`` gives (two columns for binary problems);
        a regressor's ``values`` are (batch, n_outputs_)."""
        from ..export import network, to_onnx

        model: Any = self._fitted_model()
        encoding = getattr(self, "_encoding", None)
        if encoding is not None:  # fitted on a table's text and empty cells: one input per column, encoded
            net = network(model)
            spec = dataclasses.replace(net.spec, encoding=encoding, feature_names=encoding.names)
            model = dataclasses.replace(net, spec=spec)
        return to_onnx(model, path, opset=opset, **self._onnx_outputs())

    def _onnx_outputs(self) -> dict[str, Any]:
        return {}
