"""A network's weights and what they compute: the state a model saves and restores, its widths and arrays, its
predictions and its gradients. :class:`gpunn.MLP` is a :class:`Network` that also trains.

Everything here reads the weights; nothing here trains them. Predictions go through the feed layer's one block
loop (:func:`gpunn.feed.predict.logits`), which an ensemble's mean goes through too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from . import _backend, checkpoint, feed, layers, losses, optim, schedules, train
from . import _validation as check
from .data import Dataset
from .errors import ConfigError, InputError, InputTypeError, NotFittedError
from .history import History
from .init import init_params
from .step import Step
from .step import hyper as step_hyper

N = TypeVar("N", bound="Network")


class Network:
    """The weights of a multilayer perceptron, where they live, and what they compute (see :class:`gpunn.MLP`,
    which makes and trains one)."""

    # What a model holds (set by MLP.__init__ and its fits).
    sizes: list[int]
    activation: str | list[str]
    output: str
    loss: str
    dtype: str
    seed: int
    standardize: bool
    dropout: float
    label_smoothing: float
    preset: str | None
    xp: Any
    device: Any
    compile: Any
    _dtype: Any
    _params: Any
    _previous: Any
    rng: np.random.Generator
    optimizer: optim.Optimizer | None
    optimizer_state: dict[str, Any] | None
    schedule: schedules.Schedule | None
    schedule_state: dict[str, Any]
    history: History
    epoch: int
    fitted: bool
    scaling: tuple[np.ndarray, np.ndarray] | None
    feature_names: list[str] | None
    target_name: str | None
    metadata: dict[str, Any]
    # Set by the first fit (class attributes: models pickled before they existed read None).
    classes: np.ndarray | None = None  # the labels of a single-label classifier's outputs, sorted
    target_scaling: tuple[np.ndarray, np.ndarray] | None = None  # a regression's target mean and std (float64)
    hidden: list[int] | None = None  # MLP(hidden=...): the hidden widths, until the first fit infers the rest
    encoding: feed.encode.Encoding | None = None  # a table's columns as the inputs: categories, empty cells

    # ----------------------------------------------------------------------------------------------- state
    def _state_map(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Everything a saved model holds, as ``(config, tensors)``: the JSON-safe description (architecture,
        scaling, names, optimizer, schedule, generator, epoch, history, metadata) and the host arrays in the flat
        buffers' order (``layers.{i}.weight``, ``layers.{i}.bias``, then ``optimizer.{slot}.{j}``). Checkpoints
        (:func:`gpunn.checkpoint.write`) and pickles both carry this one map."""
        tensors: dict[str, np.ndarray] = {}
        host = _backend.to_numpy(self._params)
        for i, (w, b) in enumerate(layers.unflatten(host, self.sizes, np)):
            tensors[f"layers.{i}.weight"], tensors[f"layers.{i}.bias"] = w, b
        opt = None
        if self.optimizer is not None and self.optimizer_state is not None:
            opt = {
                "name": self.optimizer.name,
                "hyper": self.optimizer.hyper,
                "step": int(self.optimizer_state["step"]),
            }
            for slot in optim.slots(self.optimizer.name, self.optimizer.hyper):
                for j, a in enumerate(
                    p
                    for pair in layers.unflatten(_backend.to_numpy(self.optimizer_state[slot]), self.sizes, np)
                    for p in pair
                ):
                    tensors[f"optimizer.{slot}.{j}"] = a
        config = {
            "sizes": self.sizes, "activation": self.activation, "output": self.output, "loss": self.loss,
            "dtype": self.dtype, "seed": self.seed, "standardize": self.standardize, "dropout": self.dropout,
            "scaling": None if self.scaling is None else [s.tolist() for s in self.scaling],
            "feature_names": self.feature_names, "target_name": self.target_name, "metadata": self.metadata,
            "classes": None if self.classes is None else np.asarray(self.classes).tolist(),
            "target_scaling": None if self.target_scaling is None else [s.tolist() for s in self.target_scaling],
            "optimizer": opt, "schedule": None if self.schedule is None else self.schedule.to_dict(),
            "schedule_state": self.schedule_state, "rng": self.rng.bit_generator.state, "epoch": self.epoch,
            "fitted": self.fitted, "history": self.history.to_dict(),
            "label_smoothing": self.label_smoothing, "preset": self.preset,
        }  # fmt: skip
        if self.encoding is not None:  # absent otherwise: such a file is what gpunn wrote before encodings
            config["encoding"] = self.encoding.to_dict()
        return config, tensors

    @classmethod
    def _from_state_map(cls, config: dict[str, Any], tensors: dict[str, np.ndarray], device: Any, xp: Any) -> Any:
        """The model a state map describes, on ``device`` (and ``xp``). The flat buffers are views of the
        tensors where they lie end to end (a checkpoint gpunn wrote): on NumPy loading copies nothing."""
        n = 2 * (len(config["sizes"]) - 1)
        params = checkpoint.flat(tensors, [f"layers.{j // 2}.{'weight' if j % 2 == 0 else 'bias'}" for j in range(n)])
        slots = {}
        if config["optimizer"] is not None:
            for slot in optim.slots(config["optimizer"]["name"], config["optimizer"]["hyper"]):
                slots[slot] = checkpoint.flat(tensors, [f"optimizer.{slot}.{j}" for j in range(n)])
        return cls.restore(config, params, slots, device, xp)

    @classmethod
    def restore(
        cls, c: dict[str, Any], params: np.ndarray, slots: dict[str, np.ndarray], device: Any, xp: Any,
        compile: Any = "auto",
    ) -> Any:  # fmt: skip
        """The model of a saved (validated) description ``c`` with its flat parameters and optimizer slots (host
        arrays), on ``device`` (and ``xp``): what a checkpoint and each member of an ensemble file hold."""
        m = undrawn(cls,  # the file's weights replace them
            c["sizes"], activation=c["activation"], output=c["output"], loss=c["loss"], seed=c["seed"],
            device=device, dtype=c["dtype"], xp=xp, standardize=c["standardize"], dropout=c.get("dropout", 0.0),
            compile=compile, label_smoothing=c.get("label_smoothing", 0.0), preset=c.get("preset"),
        )  # fmt: skip
        m._params = m._to_device_params(params)
        m.fitted = bool(c["fitted"])
        if c["scaling"] is not None:
            m.scaling = tuple(np.asarray(s, dtype=np.float64) for s in c["scaling"])  # type: ignore[assignment]
        m.feature_names, m.target_name, m.metadata = c["feature_names"], c["target_name"], dict(c["metadata"])
        m.classes, m.target_scaling = _stored_targets(c)
        if c.get("encoding") is not None:  # validated with the file
            m.encoding = feed.encode.from_dict(c["encoding"], c["sizes"][0], c["feature_names"])
        opt = c["optimizer"]
        if opt is not None:
            m.optimizer = optim.Optimizer(opt["name"], dict(opt["hyper"]))
            state: dict[str, Any] = {"step": int(opt["step"])}
            for slot in optim.slots(opt["name"], opt["hyper"]):
                state[slot] = _backend.from_numpy(slots[slot], m.xp, m.device)
            m.optimizer_state = state
        if c.get("schedule") is not None:  # checkpoints from before schedules have none
            m.schedule, m.schedule_state = schedules.Schedule.from_dict(c["schedule"]), dict(c["schedule_state"])
        m.rng.bit_generator.state = c["rng"]
        m.epoch = int(c["epoch"])
        m.history = History.from_dict(c["history"])
        return m

    def __getstate__(self) -> dict[str, Any]:
        """Pickle support: the model's state map (as checkpoints hold it), its compile setting, and the namespace
        and device by name (modules do not pickle)."""
        return {
            "state_map": self._state_map(), "compile": self.compile,
            "xp": _backend.namespace_name(self.xp), "device": _backend.device_name(self.xp, self.device),
        }  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        name, device = state.pop("xp"), state.pop("device")
        if "state_map" in state:
            xp, device = _backend.resolve_by_name(name, device)
            config, tensors = state["state_map"]
            self.__dict__.update(type(self)._from_state_map(config, tensors, device, xp).__dict__)
            self.compile = state["compile"]
            return
        # A pickle of an earlier gpunn, which pickled the model's attributes as they were.
        state.setdefault("compile", "auto")
        state.setdefault("dropout", 0.0)
        state.setdefault("label_smoothing", 0.0)
        state.setdefault("preset", None)
        state.setdefault("schedule", None)
        state.setdefault("schedule_state", {})
        if isinstance(state["_params"], list):  # pickled by gpunn 0.1, which kept a list of arrays
            state["_params"] = np.concatenate([np.reshape(p, -1) for p in state["_params"]])
            opt = state["optimizer_state"] or {}
            for slot, value in opt.items():
                if isinstance(value, list):
                    opt[slot] = np.concatenate([np.reshape(p, -1) for p in value])
        self.__dict__.update(state)
        self.xp, self.device = _backend.resolve_by_name(name, device)
        self._dtype = _backend.float_dtype(self.xp, self.dtype)
        self._params, self.optimizer_state = self._mapped_arrays(lambda a: _backend.from_numpy(a, self.xp, self.device))

    def _mapped_arrays(self, fn: Callable[[Any], Any]) -> tuple[Any, dict[str, Any] | None]:
        """``fn`` applied to the parameter buffer and every optimizer slot (the step count becomes an int)."""
        state = self.optimizer_state
        if state is not None:
            state = {k: int(v) if k == "step" else fn(v) for k, v in state.items()}
        return (None if self._params is None else fn(self._params)), state

    def _initial_params(self, sizes: list[int]) -> Any:
        """The initial weights of ``sizes``, drawn from the model's seed (the same whenever they are drawn)."""
        init_seed = np.random.SeedSequence(self.seed).spawn(2)[0]
        host = init_params(sizes, self.activation, np.random.Generator(np.random.PCG64(init_seed)), self.dtype)
        return self._to_device_params(np.concatenate([p.reshape(-1) for p in host]))

    def _check_built(self) -> None:
        if self.sizes is None or self._params is None:
            raise NotFittedError(
                f"this MLP(hidden={self.hidden}) has no weights yet: its input and output widths come from the first "
                "fit(); call fit() first (or give sizes=[inputs, ..., outputs])"
            )

    def __repr__(self) -> str:
        widths = f"hidden={self.hidden}" if self.sizes is None else f"sizes={self.sizes}"
        return (
            f"MLP({widths}, activation={self.activation!r}, output={self.output!r}, "
            f"loss={self.loss!r}, dtype={self.dtype!r}, xp={_backend.namespace_name(self.xp)}, "
            f"device={self.device!r}{f', dropout={self.dropout}' if self.dropout else ''})"
        )

    @property
    def n_features(self) -> int:
        """Number of input features."""
        self._check_built()
        assert self.sizes is not None
        return self.sizes[0]

    @property
    def n_outputs(self) -> int:
        """Number of output units."""
        self._check_built()
        assert self.sizes is not None
        return self.sizes[-1]

    @property
    def spec(self) -> feed.Spec:
        """The frozen description of this model that the feed layer takes (namespace, device, dtype, widths,
        activation, output, feature names)."""
        self._check_built()
        return self.spec_for(self.sizes)

    @property
    def params(self) -> Any:
        """Every parameter in one flat buffer, ``[W1, b1, W2, b2, ...]`` with each ``W`` row-major (out, in), in the
        model's namespace (read-only: change parameters with :meth:`set_weights`)."""
        self._check_built()
        return self._params

    @property
    def weights(self) -> list[tuple[Any, Any]]:
        """``[(W, b), ...]`` in the model's namespace, ``W`` of shape (out, in): views of one flat buffer on
        NumPy, CuPy and PyTorch."""
        self._check_built()
        assert self.sizes is not None
        return layers.unflatten(self._params, self.sizes, self.xp)

    def to(self: N, device: Any = "auto", xp: Any = None) -> N:
        """Move the model (weights and optimizer state) to another device or namespace; returns the model."""
        new_xp, new_device = _backend.resolve(device, xp)
        compile = train.check_compile(self.compile, new_xp) if self.compile is True else self.compile
        params, state = self._mapped_arrays(lambda a: _backend.from_numpy(_backend.to_numpy(a), new_xp, new_device))
        self.xp, self.device, self._dtype = new_xp, new_device, _backend.float_dtype(new_xp, self.dtype)
        self._params, self.optimizer_state, self._previous, self.compile = params, state, None, compile
        return self

    def numpy_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(W, b), ...]`` copied to the host as NumPy arrays, ``W`` of shape (out, in)."""
        self._check_built()
        assert self.sizes is not None
        host = _backend.to_numpy(self._params)
        return [(np.array(w), np.array(b)) for w, b in layers.unflatten(host, self.sizes, np)]

    def torch_state_dict(self) -> dict[str, Any]:
        """A PyTorch ``state_dict`` for ``nn.Sequential(Linear, act, Linear, act, ..., Linear)`` (imports torch).

        ``nn.Linear`` stores weights as (out, in), like gpunn, so they are copied without transposition.
        """
        import torch

        state = {}
        for i, (w, b) in enumerate(self.numpy_weights()):
            state[f"{2 * i}.weight"] = torch.from_numpy(w)
            state[f"{2 * i}.bias"] = torch.from_numpy(b)
        return state

    def to_onnx(
        self, path: str | os.PathLike[str], *, opset: int | None = None, classes: Any = None, nan_label: Any = None
    ) -> str:
        """Write the model as an ONNX graph, standardization included, and return the path
        (:func:`gpunn.export.to_onnx`; needs ``pip install 'gpunn[onnx]'``). The graph's ``label`` gives the
        model's ``classes``, or with ``classes`` given ``classes[index]``; ``nan_label`` is the label of rows
        holding NaN or inf."""
        from . import export

        return export.to_onnx(export.network(self), path, opset=opset, classes=classes, nan_label=nan_label)

    def set_weights(self, pairs: Sequence[tuple[Any, Any]]) -> None:
        """Replace the parameters with ``[(W, b), ...]`` (NumPy arrays or arrays on the model's device)."""
        if self.sizes is None:  # widths that the first fit infers; a model made without its weights has its widths
            self._check_built()
        assert self.sizes is not None
        pairs = _pair_list(pairs)
        if len(pairs) != len(self.sizes) - 1:
            raise InputError(f"set_weights got {len(pairs)} (W, b) pairs; the model has {len(self.sizes) - 1} layers")
        new, spec = [], self.spec_for(self.sizes)
        for i, (pair, (fan_in, fan_out)) in enumerate(zip(pairs, zip(self.sizes[:-1], self.sizes[1:]))):
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise InputError(f"set_weights: layer {i} must be a (W, b) pair")
            for name, value, shape in ((f"W{i}", pair[0], (fan_out, fan_in)), (f"b{i}", pair[1], (fan_out,))):
                new.append(feed.as_model_array(spec, value, name, shape))
        with _backend.device_scope(self.xp, self.device):
            self._params, self._previous = _backend.flat_concat(new, self.xp, self.device), None
        self.fitted = True

    def _to_device_params(self, flat: np.ndarray) -> Any:
        params = _backend.from_numpy(flat, self.xp, self.device)
        if params.dtype != self._dtype:
            raise ConfigError(
                f"{_backend.namespace_name(self.xp)} turned {self.dtype} parameters into {params.dtype} "
                "(for JAX, float64 needs jax.config.update('jax_enable_x64', True))"
            )
        return params

    def spec_for(self, sizes: Sequence[int], encoding: Any = None) -> feed.Spec:
        """The model's :class:`~gpunn.feed.Spec` with the widths ``sizes`` (``(1, 1)``: where its arrays live, before
        its first fit infers its widths), and ``encoding`` (default: the model's)."""
        activation = self.activation if isinstance(self.activation, str) else tuple(self.activation)
        names = None if self.feature_names is None else tuple(self.feature_names)
        return feed.Spec(
            self.xp, self.device, self.dtype, tuple(sizes), self.output, self.loss, activation, self.standardize,
            names, feed.learn.spec_classes(self.classes), feed.learn.spec_target_scaling(self.target_scaling),
            self.encoding if encoding is None else encoding,
            self.label_smoothing,
        )  # fmt: skip

    def build(self, sizes: Sequence[int]) -> None:
        """Give a model made with ``hidden=`` its widths ``sizes`` and draw its weights from its seed (as they are
        drawn for ``MLP(sizes)``); a model that has its widths keeps them."""
        if self.sizes is None:
            self.sizes, self._params = list(sizes), self._initial_params(list(sizes))

    @property
    def learned(self) -> feed.Learned:
        """What the model knows of its data: classes, target scaling, feature names, scaling and encoding."""
        return feed.Learned(self.classes, self.target_scaling, self.feature_names, self.scaling, self.encoding)

    @learned.setter
    def learned(self, value: feed.Learned) -> None:
        self.classes, self.target_scaling = value.classes, value.target_scaling
        self.feature_names, self.scaling, self.encoding = value.feature_names, value.scaling, value.encoding

    # ----------------------------------------------------------------------------------------- inference
    def _check_fitted(self) -> None:
        """A model that standardizes needs the scaling its first ``fit`` learns (or ``load`` restores)."""
        self._check_built()
        if self.standardize and self.scaling is None:
            raise NotFittedError(
                "this MLP standardizes its inputs and has not been trained yet, so it has no scaling: call fit() or "
                "gpunn.load() first"
            )

    def adopt(self, x: Any) -> Any:
        """``x`` from any namespace or device, as an array of the model's namespace on its device (DLPack)."""
        return feed.adopt(self.spec, x)

    def decision_function(self, X: Any, *, convert: bool = False) -> Any:
        """The output layer's logits, shape (n, n_outputs), in the model's namespace and device.

        Rows go through the network EVAL_ROWS at a time (scaled and moved to the device a block at a time for
        host data), so predicting on a large X holds one block's activations, not all of them. A model that
        has not been trained computes with its initial weights (it has weights from the start, unless it was made
        with ``hidden=``); a standardized regression target is not scaled back here (``predict`` does); under
        ``jax.jit``, ``jax.grad`` and ``jax.vmap`` a JAX model's methods take traced arrays."""
        return feed.predict.unpad(*self._padded_logits(X, convert), self.xp, self.device)

    def _padded_logits(self, X: Any, convert: bool) -> tuple[Any, int]:
        self._check_fitted()
        X = self.adopt(X) if check.boolean(convert, "convert") else X
        with _backend.device_scope(self.xp, self.device):
            return feed.predict.padded_logits(self.spec, self._params, X, self.scaling)

    def predict_proba(self, X: Any, *, convert: bool = False) -> Any:
        """Probabilities (sigmoid, softmax), shape (n, n_outputs), on the model's device; a regression model
        (output "identity" or "exp") has none: its values come from :meth:`predict`."""
        if self.output in losses.REGRESSION:
            raise ConfigError(
                f"predict_proba gives class probabilities; this model is a regression (output {self.output!r}): use "
                "predict"
            )
        z, n = self._padded_logits(X, convert)
        with _backend.device_scope(self.xp, self.device):
            return feed.predict.unpad(losses.output_activation(self.output, z, self.xp), n, self.xp, self.device)

    def predict(self, X: Any, *, convert: bool = False) -> Any:
        """Class labels, shape (n,) (or (n, k) 0/1 for several sigmoid outputs), or values (n, k) for identity, or
        the Poisson means exp(z) (n, k) for output "exp".

        Labels are the model's ``classes``: an integer array on the model's device when they are the indices
        0..k-1, else a NumPy array of the labels (strings, {3, 7}, ...). Values are in the target's units (a
        standardized target is scaled back)."""
        z, n = self._padded_logits(X, convert)
        xp = self.xp
        with _backend.device_scope(xp, self.device):
            if self.output == "identity" and self.target_scaling is not None:
                mean, std = (_backend.from_numpy(s.astype(self.dtype), xp, self.device) for s in self.target_scaling)
                z = z * std + mean
            if self.output in losses.REGRESSION:  # on the padded rows, which unpad drops last
                return feed.predict.unpad(xp.exp(z) if self.output == "exp" else z, n, xp, self.device)
            index = feed.predict.indices(self.output, z, 0.0, xp, self.device)  # p > 0.5 exactly when z > 0
        return feed.predict.labels(self.classes, index, n)

    def evaluate(self, X: Any, y: Any = None, *, convert: bool = False) -> dict[str, float]:
        """Mean loss and (for classifiers) accuracy on ``(X, y)``, or on a :class:`gpunn.data.Dataset`, as Python
        floats. ``y`` holds the labels ``fit`` took; a regression's loss (MSE) is in the target's units, also when
        the model standardizes its target (History's training loss is then in standardized units); a Poisson
        model's (output "exp") is the mean Poisson deviance, as History's training loss."""
        self._check_fitted()
        # A standardized target is compared in its own units: the targets as given, against the network with
        # its output layer scaled back (W std, b std + mean), which computes what predict gives.
        spec = dataclasses.replace(self.spec, target_scaling=None)
        params = self._params if self.target_scaling is None else self._unscaled_params()
        if isinstance(X, Dataset):
            if y is not None:
                raise InputError("a Dataset brings its own targets (its target column): call evaluate(dataset)")
            data: Any = feed.Streamed(spec, feed.learn.check_dataset(spec, X, "X"), self.scaling, "X")
        else:
            if check.boolean(convert, "convert"):
                X, y = self.adopt(X), self.adopt(y)
            with _backend.device_scope(self.xp, self.device):
                x = feed.prepare_x(spec, X, self.scaling)
                data = feed.Memory(spec, x, feed.targets(spec, y, x.shape[0]))
        with _backend.device_scope(self.xp, self.device):
            loss_sums, corrects = data.evaluate_sums(params)
        return train.summarize(spec, loss_sums, corrects, data.n_rows)

    def _unscaled_params(self) -> Any:
        """The flat parameters with the output layer computing values in the target's units (``target_scaling``
        folded in: W std, b std + mean)."""
        xp = self.xp
        assert self.target_scaling is not None and self.sizes is not None
        with _backend.device_scope(xp, self.device):
            mean, std = (_backend.from_numpy(s.astype(self.dtype), xp, self.device) for s in self.target_scaling)
            weights = layers.unflatten(self._params, self.sizes, xp)
            w, b = weights[-1]
            weights[-1] = (w * xp.reshape(std, (-1, 1)), b * std + mean)
            return xp.concat([xp.reshape(a, (-1,)) for pair in weights for a in pair])

    def loss_and_grads(
        self, X: Any, y: Any, *, l2: float = 0.0, sample_weight: Any = None, convert: bool = False
    ) -> tuple[Any, list[tuple[Any, Any]]]:
        """(mean loss as a 0-d array, ``[(dW, db), ...]``): the exact gradients of the mean loss at ``(X, y)``.

        With ``sample_weight`` (shape (n,)) the loss is the weighted mean sum(w l) / sum(w); ``l2`` adds the
        penalty l2 / (2 m) * sum(W**2) over the weights (not the biases), m being the rows or their weight
        total, as ``fit(l2=)`` trains it. ``y`` holds the labels ``fit`` took; a standardized regression target is
        standardized first (the loss ``fit`` trains). Works inside ``jax.jit``, ``jax.grad`` and ``jax.vmap`` on JAX."""
        xp, spec = self.xp, self.spec
        l2 = check.non_negative_float(l2, "l2")
        if check.boolean(convert, "convert"):
            X, y = self.adopt(X), self.adopt(y)
        with _backend.device_scope(xp, self.device):
            x = feed.sparse.placed(feed.prepare_x(spec, X, self.scaling))  # a sparse X whole: one full batch
            n = x.shape[0]
            t = feed.targets(spec, y, n)
            w_host = feed.sample_weights(spec, sample_weight, None, y, n)
            w = (
                None
                if w_host is None
                else _backend.from_numpy(w_host.reshape(-1, 1).astype(self.dtype), xp, self.device)
            )
            hyper = step_hyper(self.sizes, self.activation, self.output, self.loss, optim.sgd(), 0.0, l2, None)
            step = Step(hyper, xp, self.device, self.dtype)
            grads, loss_sum, _ = step.gradients(self._params, x, t, w)
            loss_scale, grad_scale = losses.scales(self.output, self.loss, n, self.n_outputs)
            m = float(n)
            if w_host is not None:  # the weighted sum over the weight total instead of the rows
                loss_sum, m = loss_sum[1], float(np.sum(w_host))
                loss_scale, grad_scale = loss_scale * n / m, grad_scale * n / m
            loss, grads = loss_sum * loss_scale, grads * grad_scale
            if l2:
                weights = self._params * step.mask
                loss, grads = loss + (0.5 * l2 / m) * xp.sum(weights * weights), grads + (l2 / m) * weights
            return loss, layers.unflatten(grads, self.sizes, xp)


def _stored_targets(config: dict[str, Any]) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]:
    """The classes and target scaling a checkpoint's (validated) config holds; files from before them hold none.

    A classifier that ``gpunn train`` saved before models held their labels (its metadata holds the run's
    settings, "train") keeps them in its metadata only: it was trained on their indices, and its classes are those
    or none. It holds the labels as its classes, so that ``predict`` gives them. Labels that anything else put in
    the metadata stay there."""
    classes = config.get("classes")
    metadata = config["metadata"]
    if (config["output"] not in losses.REGRESSION and "train" in metadata
            and (classes is None or feed.checks.are_indices(np.asarray(classes)))):  # fmt: skip
        classes = _metadata_labels(metadata.get("classes")) or classes
    scaling = config.get("target_scaling")
    return (
        None if classes is None else np.asarray(classes),
        None if scaling is None else (np.asarray(scaling[0], np.float64), np.asarray(scaling[1], np.float64)),
    )


def _metadata_labels(labels: Any) -> list[Any] | None:
    """Labels listed in a file's metadata (validated: one per class, distinct) as classes the model can hold: all
    text or all whole numbers, sorted (the CLI wrote them so); None when they are the indices 0..k-1 or not so."""
    if not isinstance(labels, list) or not labels:
        return None
    text = all(isinstance(c, str) for c in labels)
    whole = all(isinstance(c, int) and not isinstance(c, bool) and abs(c) < 2**63 for c in labels)
    if not (text or whole) or labels != sorted(labels) or labels == list(range(len(labels))):
        return None
    return labels


def _pair_list(pairs: Any) -> list[Any]:
    """``set_weights``'s argument as a list, or an InputTypeError naming what came instead (None, a number)."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
        raise InputTypeError(f"set_weights takes a list of (W, b) pairs, one per layer; got {type(pairs).__name__}")
    return list(pairs)


def undrawn(cls: type[N], *args: Any, **kwargs: Any) -> N:
    """``cls(*args, **kwargs)`` without the initial weights its constructor draws from the seed, for a caller that
    gives it weights at once (a file's, or :meth:`Network.set_weights`')."""
    m = cls.__new__(cls)
    m.__dict__["_loading"] = True
    m.__init__(*args, **kwargs)  # type: ignore[misc]
    return m


def generator(state: dict[str, Any]) -> np.random.Generator:
    """A new shuffling generator in ``state`` (PCG64's, as every model's is)."""
    rng = np.random.Generator(np.random.PCG64(0))
    rng.bit_generator.state = state
    return rng
