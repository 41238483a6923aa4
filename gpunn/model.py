"""MLP: the thin stateful shell (parameters, optimizer state, RNG, history) around the pure training step.

The step itself is :mod:`gpunn.step`; the epoch loop that runs it is :mod:`gpunn.train`; checking, scaling,
placing and batching data is the feed layer, :mod:`gpunn.feed`. This class holds the state they pass around,
commits each epoch's new state, and keeps the public API. It passes them small frozen values (a
:class:`~gpunn.feed.Spec`, a :class:`~gpunn.step.Hyper`, arrays), never itself.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _backend, checkpoint, feed, fitloop, layers, losses, optim, schedules, settings, train
from . import _validation as check
from .data import Dataset
from .errors import CheckpointError, ConfigError, DeviceError, GpunnError, InputError, NonFiniteError, NotFittedError
from .history import History
from .init import init_params
from .step import Step
from .step import hyper as step_hyper


class MLP:
    """A multilayer perceptron whose forward and backward passes run on any Array API namespace.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths from the input features to the outputs, e.g. ``[30, 10, 10, 10, 1]``.
    hidden : sequence of int, optional
        Instead of ``sizes``: the hidden layers' widths alone, e.g. ``hidden=[10, 10, 10]``. The input and output
        widths are then inferred on the first ``fit``, from X's columns and from y (1 output for a binary sigmoid
        classifier or y's columns for several sigmoid labels, one per class for softmax, y's columns for
        identity), and the weights drawn then, from the same seed: ``MLP(hidden=[10, 10], seed=s)`` fitted on X
        with d columns trains exactly as ``MLP([d, 10, 10, 1], seed=s)`` does. Until then the model has no weights
        (``predict`` is a ``NotFittedError``).
    activation : str or list of str
        Activation of the hidden layers: "relu", "tanh", "sigmoid", "identity", "leaky_relu" (slope 0.01),
        "elu" (alpha 1), "gelu" (tanh approximation), "silu" or "softplus"; or a list with one name per hidden
        layer.
    output : {"sigmoid", "softmax", "identity"}
        Output activation: binary (or multi-label) classification, several classes, or regression.
    loss : {"binary_crossentropy", "categorical_crossentropy", "mse"}, optional
        Defaults to the loss that matches ``output``. ``output="sigmoid", loss="mse"`` is also accepted.
    seed : int
        Seeds the host generator that draws the initial weights and the shuffling order.
    device : str or device object
        Without ``xp``: "auto" (CuPy when a GPU is usable, else NumPy), "cpu" or "cuda[:N]". With ``xp``:
        "auto" (the namespace's GPU when it has a usable one, else its default device), a device of that
        namespace, or None for its default.
    dtype : {"float32", "float64"}
        dtype of the parameters and of the data inside the model (``np.float32`` and ``np.float64`` name them too).
    xp : module, optional
        An array namespace array-api-compat supports: numpy, cupy, torch, jax.numpy, array_api_strict.
    standardize : bool
        Learn each feature's mean and standard deviation on the first ``fit`` and apply them to every input. For a
        regression (output "identity") the target is standardized too: its mean and standard deviation per output
        (``target_scaling``) are learned on the first fit, the network trains on the standardized target, and
        ``predict`` and ``evaluate`` give values and errors in the target's own units (the training loss in
        History, ``decision_function`` and ``loss_and_grads`` stay in standardized units, what the network
        learns). The default is False, so that ``MLP`` computes exactly the network it is given; ``gpunn train``
        standardizes always, since it trains files whose columns can have any scale.
    dropout : float
        Inverted dropout on the outputs of every hidden layer while training: each is zeroed with this
        probability and the rest scaled by 1 / (1 - dropout); ``predict``, ``evaluate`` and validation use
        every unit. The masks come from a counter-based generator on the model's device
        (:mod:`gpunn.dropout`): the same seed draws the same masks on every namespace and device, and a
        resumed run draws the masks the uninterrupted run would have.
    compile : {"auto", True, False}
        Compile the training step where gpunn has a compiler for the namespace (``jax.jit`` on JAX). "auto"
        compiles where it can and falls back to the eager step, with a warning, if compiling fails; True
        requires it (a ``ConfigError`` on namespaces without one, such as NumPy); False runs eagerly.
    """

    # Set by the first fit (class attributes: models pickled before they existed read None).
    classes: np.ndarray | None = None  # the labels of a single-label classifier's outputs, sorted
    target_scaling: tuple[np.ndarray, np.ndarray] | None = None  # a regression's target mean and std (float64)
    hidden: list[int] | None = None  # MLP(hidden=...): the hidden widths, until the first fit infers the rest

    def __init__(
        self,
        sizes: Sequence[int] | None = None,
        *,
        hidden: Sequence[int] | None = None,
        activation: str = "relu",
        output: str = "sigmoid",
        loss: str | None = None,
        seed: int = 0,
        device: Any = "auto",
        dtype: str = "float32",
        xp: Any = None,
        standardize: bool = False,
        compile: Any = "auto",
        dropout: float = 0.0,
    ):
        if (sizes is None) == (hidden is None):
            raise ConfigError("give the layer widths as sizes=[inputs, ..., outputs] or as hidden=[...] (the input "
                              "and output widths then come from the first fit), not " +
                              ("both" if sizes is not None else "neither"))  # fmt: skip
        if hidden is not None:
            if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
                raise ConfigError(f"hidden must list the hidden layers' widths, e.g. [10, 10]; got {hidden!r}")
            self.hidden = [check.integer(h, "every layer width in hidden", 1) for h in hidden]
            n_hidden = len(self.hidden)
            self.sizes: list[int] = None  # type: ignore[assignment]  # until the first fit infers them
        else:
            if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 2:
                raise ConfigError(f"sizes must list at least two layer widths (inputs and outputs); got {sizes!r}")
            self.sizes = [check.integer(s, "every layer width in sizes", 1) for s in sizes]
            n_hidden = len(self.sizes) - 2
        self.activation = _activations(activation, n_hidden)
        self.output = check.choice(output, "output", losses.OUTPUTS)
        self.loss = losses.DEFAULT_LOSS[output] if loss is None else check.choice(loss, "loss", losses.LOSSES)
        if (self.output, self.loss) not in losses.PAIRS:
            pairs = ", ".join(f"{o}+{lo}" for o, lo in losses.PAIRS)
            raise ConfigError(f"output {output!r} cannot be trained with loss {loss!r}; supported: {pairs}")
        if self.output == "softmax" and self.sizes is not None and self.sizes[-1] < 2:
            raise ConfigError("output 'softmax' needs at least 2 output units (one per class)")
        self.dtype = check.choice(check.dtype_name(dtype), "dtype", _backend.DTYPES)
        self.seed = check.integer(seed, "seed", 0)
        self.standardize = bool(standardize)
        self.dropout = settings.dropout_rate(dropout)
        self.xp, self.device = _backend.resolve(device, xp)
        self.compile = train.check_compile(compile, self.xp)
        self._dtype = _backend.float_dtype(self.xp, self.dtype)

        shuffle_seed = np.random.SeedSequence(self.seed).spawn(2)[1]
        self.rng = np.random.Generator(np.random.PCG64(shuffle_seed))
        # one flat buffer (``weights`` gives the layers' views); None until the first fit infers hidden= sizes, and
        # for a loaded model, whose weights come from its file instead
        loading = self.__dict__.pop("_loading", False)
        self._params: Any = None if self.sizes is None or loading else self._initial_params(self.sizes)
        self.optimizer: optim.Optimizer | None = None
        self.optimizer_state: dict[str, Any] | None = None  # {"step": int, slot: flat buffer, ...}
        # (params, optimizer state, RNG state) at the start of the last completed epoch, to step back to if
        # that epoch's final update overflowed.
        self._previous: tuple[Any, dict[str, Any] | None, dict[str, Any], dict[str, Any]] | None = None
        self.schedule: schedules.Schedule | None = None  # the learning-rate schedule of the last fit
        self.schedule_state: dict[str, Any] = {}  # what it has learned (plateau), committed with each epoch
        self.history = History()
        self.epoch = 0
        self.fitted = False
        self.scaling: tuple[np.ndarray, np.ndarray] | None = None
        self.feature_names: list[str] | None = None
        self.target_name: str | None = None
        self.metadata: dict[str, Any] = {}  # JSON-serializable notes saved with the model (the CLI's settings)

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
            for slot in optim.SLOTS[self.optimizer.name]:
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
        }  # fmt: skip
        return config, tensors

    @classmethod
    def _from_state_map(cls, config: dict[str, Any], tensors: dict[str, np.ndarray], device: Any, xp: Any) -> MLP:
        """The model a state map describes, on ``device`` (and ``xp``). The flat buffers are views of the
        tensors where they lie end to end (a checkpoint gpunn wrote): on NumPy loading copies nothing."""
        n = 2 * (len(config["sizes"]) - 1)
        params = checkpoint.flat(tensors, [f"layers.{j // 2}.{'weight' if j % 2 == 0 else 'bias'}" for j in range(n)])
        slots = {}
        if config["optimizer"] is not None:
            for slot in optim.SLOTS[config["optimizer"]["name"]]:
                slots[slot] = checkpoint.flat(tensors, [f"optimizer.{slot}.{j}" for j in range(n)])
        return cls.restore(config, params, slots, device, xp)

    @classmethod
    def restore(
        cls, c: dict[str, Any], params: np.ndarray, slots: dict[str, np.ndarray], device: Any, xp: Any,
        compile: Any = "auto",
    ) -> MLP:  # fmt: skip
        """The model of a saved (validated) description ``c`` with its flat parameters and optimizer slots (host
        arrays), on ``device`` (and ``xp``): what a checkpoint and each member of an ensemble file hold."""
        m = cls.__new__(cls)
        m.__dict__["_loading"] = True  # the constructor draws no initial weights: the file's replace them
        m.__init__(  # type: ignore[misc]
            c["sizes"], activation=c["activation"], output=c["output"], loss=c["loss"], seed=c["seed"],
            device=device, dtype=c["dtype"], xp=xp, standardize=c["standardize"], dropout=c.get("dropout", 0.0),
            compile=compile,
        )  # fmt: skip
        m._params = m._to_device_params(params)
        m.fitted = bool(c["fitted"])
        if c["scaling"] is not None:
            m.scaling = tuple(np.asarray(s, dtype=np.float64) for s in c["scaling"])  # type: ignore[assignment]
        m.feature_names, m.target_name, m.metadata = c["feature_names"], c["target_name"], dict(c["metadata"])
        m.classes, m.target_scaling = _stored_targets(c)
        opt = c["optimizer"]
        if opt is not None:
            m.optimizer = optim.Optimizer(opt["name"], dict(opt["hyper"]))
            state: dict[str, Any] = {"step": int(opt["step"])}
            for slot in optim.SLOTS[opt["name"]]:
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
            self.__dict__.update(MLP._from_state_map(config, tensors, device, xp).__dict__)
            self.compile = state["compile"]
            return
        # A pickle of an earlier gpunn, which pickled the model's attributes as they were.
        state.setdefault("compile", "auto")
        state.setdefault("dropout", 0.0)
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

    def to(self, device: Any = "auto", xp: Any = None) -> MLP:
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
        self._check_built()
        assert self.sizes is not None
        pairs = list(pairs)
        if len(pairs) != len(self.sizes) - 1:
            raise InputError(f"set_weights got {len(pairs)} (W, b) pairs; the model has {len(self.sizes) - 1} layers")
        new, spec = [], self.spec
        for i, (pair, (fan_in, fan_out)) in enumerate(zip(pairs, zip(self.sizes[:-1], self.sizes[1:]))):
            if len(pair) != 2:
                raise InputError(f"set_weights: layer {i} must be a (W, b) pair")
            for name, value, shape in ((f"W{i}", pair[0], (fan_out, fan_in)), (f"b{i}", pair[1], (fan_out,))):
                new.append(self.xp.reshape(feed.as_model_array(spec, value, name, shape), (-1,)))
        with _backend.device_scope(self.xp, self.device):
            self._params, self._previous = self.xp.concat(new), None
        self.fitted = True

    def _to_device_params(self, flat: np.ndarray) -> Any:
        params = _backend.from_numpy(flat, self.xp, self.device)
        if params.dtype != self._dtype:
            raise ConfigError(
                f"{_backend.namespace_name(self.xp)} turned {self.dtype} parameters into {params.dtype} "
                "(for JAX, float64 needs jax.config.update('jax_enable_x64', True))"
            )
        return params

    # ------------------------------------------------------------------------------------------- training
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        epochs: int = 100,
        lr: float | schedules.Schedule = 0.1,
        batch_size: int | None = None,
        optimizer: str | optim.Optimizer = "sgd",
        shuffle: bool = True,
        validation_data: tuple[Any, Any] | None = None,
        verbose: int = 1,
        clip_norm: float | None = None,
        callbacks: Sequence[Callable[[MLP, dict[str, float]], Any]] | None = None,
        comm: Any = None,
        l2: float = 0.0,
        convert: bool = False,
        copy: bool = True,
        weight_decay: float | None = None,
        sample_weight: Any = None,
        class_weight: Any = None,
        diverge_factor: float | None = train.DIVERGE_FACTOR,
    ) -> History:
        """Train for ``epochs`` more epochs and return their :class:`History`.

        If training is interrupted (Ctrl-C) or diverges, the model is left exactly as the last completed epoch
        left it (weights, optimizer state, shuffling generator, epoch count and history agree), so saving it
        and resuming reproduces an uninterrupted run.

        Parameters
        ----------
        X : array, shape (n_samples, n_features), a pandas / polars DataFrame or pyarrow Table, or a
            :class:`gpunn.data.Dataset` (a Parquet or ``.npy`` file streamed a block at a time, with its own
            targets: ``y`` stays None; ``validation_data`` may be a Dataset too)
            A data frame's column names become the model's ``feature_names`` (on the first fit); every later
            frame (``predict``, ``evaluate``, another ``fit``) is taken by those names, in any column order,
            and one with missing or extra columns is an error that names them.
        y : array, shape (n_samples,) or (n_samples, n_outputs), or a Series
            Class labels for sigmoid (one output) and softmax: any numbers or strings, e.g. "yes"/"no" or
            {3, 7}. The first fit keeps their sorted distinct values as ``classes`` (one per output, two for one
            sigmoid output), trains label ``classes[i]`` as index i, and ``predict`` gives the labels back; every
            later fit, ``evaluate`` and ``validation_data`` take the same labels (an unknown one is an error
            naming it). Labels that are the indices 0..k-1 themselves (0/1 for sigmoid) are taken as they are.
            0/1 columns for several sigmoid outputs; values for identity (standardized when the model
            standardizes: see ``standardize``).
        epochs : int
            Passes over the data in this call. A second ``fit`` continues: the optimizer state and the
            shuffling generator carry over, so two calls of 3 epochs equal one call of 6.
        lr : float or gpunn.schedules.Schedule
            Step size, or a schedule of step sizes per epoch (``gpunn.schedules.step``, ``cosine``, ``plateau``);
            ``History.lr`` records the rate of each epoch. A second ``fit`` with the same schedule continues it.
        batch_size : int, optional
            Samples per gradient step; None (the default) uses the whole training set each step.
        optimizer : {"sgd", "momentum", "nesterov", "adam", "adamw"} or gpunn.optim.Optimizer
        shuffle : bool
            Draw a new sample order each epoch (minibatches only; a full batch does not depend on order).
        validation_data : (X_val, y_val), optional
            Evaluated after every epoch into ``val_loss`` and ``val_accuracy``.
        verbose : {0, 1, 2}
            0 silent; 1 a progress bar on a terminal, else a line every ~10% of epochs; 2 a line every epoch.
        clip_norm : float, optional
            Rescale the gradients so that their global L2 norm is at most this.
        callbacks : sequence of callables, optional
            Each is called as ``callback(model, record)`` after every epoch, with that epoch's metrics;
            ``gpunn train --checkpoint`` saves the model this way. A callback that returns False stops
            training after that epoch (early stopping).
        convert : bool
            Accept X and y from another array namespace or device, converted through DLPack (or through the
            host where DLPack cannot cross the devices). Without it such input is an error.
        l2 : float
            L2 penalty on the weights (not the biases): the loss gains l2/2 * sum(W**2) / batch size (its weight
            total with sample weights), as in scikit-learn's ``alpha``.
        comm : gpunn.distributed.Communicator, optional
            Train data-parallel with the other ranks of ``comm``: ``batch_size`` is the global batch, each rank
            computes the gradients of its shard, one allreduce per step averages them. Only rank 0 prints.
        sample_weight : array, shape (n_samples,), optional
            Non-negative weights of the rows: each batch's loss becomes the weighted mean sum(w l) / sum(w), and
            its gradients follow (integer weights equal repeating rows, in a full batch). History's metrics stay
            unweighted.
        class_weight : dict or "balanced", optional
            ``{label: weight}``, or "balanced" (n_samples / (n_classes * count)); multiplies into the sample
            weights.
        weight_decay : float, optional
            AdamW's decoupled weight decay (``optimizer="adamw"`` only; its default is 0.01, as in PyTorch):
            every parameter is multiplied by ``1 - lr * weight_decay`` before each Adam step.
        copy : bool
            With False, a standardizing model scales X in place when it is a writeable NumPy array of the model's
            dtype (its values change, as with scikit-learn's ``copy=False``), so training holds one copy of the
            data instead of two. Other input, and validation data, are copied as usual.
        diverge_factor : float or None
            Stop with :class:`gpunn.DivergenceError` (a ``NonFiniteError``) when an epoch's loss exceeds this factor
            (default 1e4) times the loss this ``fit`` started from (its first epoch's loss; for cross-entropy at
            least 1 nat): a divergence that stays finite. The model then keeps the weights from before the epoch
            whose updates exploded, and History ends there. None turns the check off.
        """
        s = settings.fit_settings(
            None, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, weight_decay=weight_decay, l2=l2,
            clip_norm=clip_norm, verbose=verbose, shuffle=shuffle, diverge_factor=diverge_factor,
        )  # fmt: skip
        callbacks = settings.callables(callbacks)
        weighted = sample_weight is not None or class_weight is not None or (isinstance(X, Dataset) and X.has_weight)
        settings.check_callbacks(callbacks, self.output, validation_data is not None, weighted)
        if convert:
            X, y = feed.adopt(self.spec_for((1, 1)), X), feed.adopt(self.spec_for((1, 1)), y)
            if validation_data is not None and isinstance(validation_data, (tuple, list)):
                validation_data = tuple(feed.adopt(self.spec_for((1, 1)), v) for v in validation_data)
        with _backend.device_scope(self.xp, self.device):
            data, val = self._prepare(X, y, validation_data, sample_weight, class_weight, copy)
            # Everything is valid: from here on the call changes the model.
            if comm is not None:  # every rank must train the same data and settings, from the same weights
                x, t = (data, None) if isinstance(data, feed.Streamed) else (data.x, data.target)
                comm.check_agreement(data.spec, x, t, getattr(data, "weight_host", None), dropout=self.dropout,
                                     generator=self.rng.bit_generator.state, scaling=self.scaling, epochs=s.epochs,
                                     batch_size=s.batch_size, shuffle=s.shuffle, optimizer=s.optimizers[0],
                                     lr=s.schedules[0], l2=s.l2[0], clip_norm=s.clip_norm)  # fmt: skip
                self._params = comm.broadcast_arrays([self._params], self.xp, self.device)[0]  # every rank starts equal
            self.begin(s.optimizers[0], s.schedules[0])
            first = self.history.epochs
            runner = train.Runner(self._hyper(s, 0), self.xp, self.device, self.dtype, self.compile, comm)
            verbose = s.verbose if comm is None or comm.rank == 0 else 0
            fitloop.run(self, data, val, runner, s, verbose, callbacks, comm)
        return self.history.since(first)

    def spec_for(self, sizes: Sequence[int]) -> feed.Spec:
        """The model's :class:`~gpunn.feed.Spec` with the widths ``sizes`` (``(1, 1)``: where its arrays live, before
        its first fit infers its widths)."""
        activation = self.activation if isinstance(self.activation, str) else tuple(self.activation)
        names = None if self.feature_names is None else tuple(self.feature_names)
        return feed.Spec(
            self.xp, self.device, self.dtype, tuple(sizes), self.output, self.loss, activation, self.standardize,
            names, feed.learn.spec_classes(self.classes), feed.learn.spec_target_scaling(self.target_scaling),
        )  # fmt: skip

    def _prepare(self, X: Any, y: Any, validation_data: Any, sample_weight: Any, class_weight: Any, copy: bool):
        """The training and validation feeds of a ``fit``, every input checked first; then the model takes what
        its first fit learns (widths and weights for ``hidden=``, classes, scalings, feature names)."""
        sizes = self.sizes or feed.learn.sizes(self.hidden or [], self.spec_for((1, 1)), X, y)
        p = feed.prepare(
            self.spec_for(sizes), self.learned, X, y, validation_data, first=not self.fitted, copy=copy,
            sample_weight=sample_weight, class_weight=class_weight,
        )  # fmt: skip
        self.build(sizes)
        self.learned = p.learned
        spec, scaling = p.spec, p.learned.scaling
        if isinstance(p.x, Dataset):
            data: Any = feed.Streamed(spec, p.x, scaling, "X", p.weight_total)
        else:
            data = feed.Memory(spec, p.x, p.target, self._weight_column(p.weight_host), p.weight_host)
        if isinstance(p.val, Dataset):
            return data, feed.Streamed(spec, p.val, scaling, "validation_data")
        return data, None if p.val is None else feed.Memory(spec, *p.val)

    def build(self, sizes: Sequence[int]) -> None:
        """Give a model made with ``hidden=`` its widths ``sizes`` and draw its weights from its seed (as they are
        drawn for ``MLP(sizes)``); a model that has its widths keeps them."""
        if self.sizes is None:
            self.sizes, self._params = list(sizes), self._initial_params(list(sizes))

    def set_state(self, params: Any, optimizer_state: dict[str, Any] | None, previous: tuple | None = None) -> None:
        """Replace the flat parameters and the optimizer state with arrays on the model's device (an epoch a
        callback returns to, a member's row of an ensemble's stacked buffers); ``previous`` is the state
        ``(params, optimizer state, generator state, schedule state)`` at the start of the last epoch, which
        :meth:`step_back` returns to (None: none)."""
        self._params, self.optimizer_state, self._previous = params, optimizer_state, previous

    @property
    def learned(self) -> feed.Learned:
        """What the model knows of its data: classes, target scaling, feature names and scaling."""
        return feed.Learned(self.classes, self.target_scaling, self.feature_names, self.scaling)

    @learned.setter
    def learned(self, value: feed.Learned) -> None:
        self.classes, self.target_scaling = value.classes, value.target_scaling
        self.feature_names, self.scaling = value.feature_names, value.scaling

    def begin(self, optimizer: optim.Optimizer, schedule: schedules.Schedule) -> None:
        """Start training with ``optimizer`` and ``schedule``: the same ones again continue where the last fit left
        them (a resumed plateau keeps its rate); new ones start afresh."""
        if self.optimizer != optimizer or self.optimizer_state is None:
            self.optimizer, self.optimizer_state = optimizer, optimizer.init(self._params, self.xp)
            self._previous = None
        if self.schedule != schedule:
            self.schedule, self.schedule_state, self._previous = schedule, schedule.init(), None
        self.fitted = True

    def _hyper(self, s: settings.FitSettings, i: int) -> Any:
        return step_hyper(self.sizes, self.activation, self.output, self.loss, s.optimizers[i],
                          s.schedules[i].params["lr"], s.l2[i], s.clip_norm, self.dropout, self.seed)  # fmt: skip

    def _weight_column(self, w: np.ndarray | None) -> Any:
        """Sample weights as the step takes them: a (n, 1) column on the device, or None."""
        return None if w is None else _backend.from_numpy(w.reshape(-1, 1).astype(self.dtype), self.xp, self.device)

    def training_state(self) -> train.State:
        """What an epoch changes, as the model holds it now (the generator as its state)."""
        rng_state = dict(self.rng.bit_generator.state)
        return train.State(self._params, self.optimizer_state, self.epoch, rng_state, self.schedule_state)

    def commit(self, old: train.State, new: train.State, record: dict[str, float]) -> None:
        """Take ``new``, the state an epoch that started from ``old`` left, and its ``record``: all at once, so that
        an interrupt leaves the model before the epoch or after it, never half way."""
        # An epoch that drew no order hands its generator's state back unchanged: the generator stays.
        rng = self.rng if new.rng_state is old.rng_state and old.epoch == self.epoch else _generator(new.rng_state)
        previous = (old.params, old.optimizer_state, old.rng_state, old.schedule_state)  # references: updates are pure
        self.history.append(record)
        # One statement, no calls: an interrupt lands before or after it, never half way.
        self._params, self.optimizer_state, self.epoch, self.rng, self._previous, self.schedule_state = (
            new.params, new.optimizer_state, new.epoch, rng, previous, new.schedule_state
        )  # fmt: skip

    def step_back(self, error: NonFiniteError) -> None:
        """After ``error`` ended an epoch, go back where the weights were last good: to the start of the last
        committed epoch, whose updates made them, when the loss exploded (a ``DivergenceError``) or when that
        epoch's final update overflowed (its loss, computed before the update, was finite: the weights are not);
        else stay. Runs only on this failure path; History is cut to the epoch the model holds."""
        xp = self.xp
        if isinstance(error, train.DivergenceError) or not bool(xp.all(xp.isfinite(self._params))):
            if self._previous is not None:
                params, state, rng_state, schedule_state = self._previous
                self._params, self.optimizer_state, self.rng, self.schedule_state, self.epoch, self._previous = (
                    params, state, _generator(rng_state), schedule_state, self.epoch - 1, None
                )  # fmt: skip
        self.history.truncate(self.epoch)

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
        self._check_fitted()
        X = self.adopt(X) if convert else X
        with _backend.device_scope(self.xp, self.device):
            return feed.predict.logits(self.spec, self._params, X, self.scaling)

    def predict_proba(self, X: Any, *, convert: bool = False) -> Any:
        """Probabilities (sigmoid, softmax), shape (n, n_outputs), on the model's device; a regression model
        (output "identity") has none: its values come from :meth:`predict`."""
        if self.output == "identity":
            raise ConfigError(
                "predict_proba gives class probabilities; this model is a regression (output 'identity'): use predict"
            )
        z = self.decision_function(X, convert=convert)
        with _backend.device_scope(self.xp, self.device):
            return losses.output_activation(self.output, z, self.xp)

    def predict(self, X: Any, *, convert: bool = False) -> Any:
        """Class labels, shape (n,) (or (n, k) 0/1 for several sigmoid outputs), or values (n, k) for identity.

        Labels are the model's ``classes``: an integer array on the model's device when they are the indices
        0..k-1, else a NumPy array of the labels (strings, {3, 7}, ...). Values are in the target's units (a
        standardized target is scaled back)."""
        z = self.decision_function(X, convert=convert)
        xp = self.xp
        with _backend.device_scope(xp, self.device):
            if self.output == "identity":
                if self.target_scaling is None:
                    return z
                mean, std = (_backend.from_numpy(s.astype(self.dtype), xp, self.device) for s in self.target_scaling)
                return z * std + mean
            index = feed.predict.indices(self.output, z, 0.0, xp, self.device)  # p > 0.5 exactly when z > 0
        return feed.predict.labels(self.classes, index)

    def evaluate(self, X: Any, y: Any = None, *, convert: bool = False) -> dict[str, float]:
        """Mean loss and (for classifiers) accuracy on ``(X, y)``, or on a :class:`gpunn.data.Dataset`, as Python
        floats. ``y`` holds the labels ``fit`` took; a regression's loss (MSE) is in the target's units, also when
        the model standardizes its target (History's training loss is then in standardized units)."""
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
            if convert:
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
        if convert:
            X, y = self.adopt(X), self.adopt(y)
        with _backend.device_scope(xp, self.device):
            x = feed.prepare_x(spec, X, self.scaling)
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

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model, its optimizer state, RNG and history to a safetensors file, atomically."""
        checkpoint.write(path, *self._state_map())

    def load_weights(self, path: str | os.PathLike[str]) -> None:
        """Load the parameters of a checkpoint whose architecture matches this model."""
        ckpt = checkpoint.read(path)
        if ckpt.config["sizes"] != self.sizes or ckpt.config["dtype"] != self.dtype:
            raise CheckpointError(
                f"{os.fspath(path)}: checkpoint holds a {ckpt.config['dtype']} model of sizes {ckpt.config['sizes']} "
                f"but this model is {self.dtype} with sizes {self.sizes}"
            )
        self.set_weights(ckpt.weight_pairs())


def _activations(activation: Any, n_hidden: int) -> str | list[str]:
    """``activation`` validated: one name, or a list of one name per hidden layer."""
    if isinstance(activation, str):
        return check.choice(activation, "activation", layers.ACTIVATIONS)
    if not isinstance(activation, Sequence) or len(activation) != n_hidden or n_hidden == 0:
        raise ConfigError(
            f"activation must be one name, or a list with one name per hidden layer ({n_hidden}); got {activation!r}"
        )
    names = layers.ACTIVATIONS
    return [check.choice(a, f"activation of hidden layer {i + 1}", names) for i, a in enumerate(activation)]


def _stored_targets(config: dict[str, Any]) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]:
    """The classes and target scaling a checkpoint's (validated) config holds; files from before them hold none.

    A classifier that ``gpunn train`` saved before models held their labels (its metadata holds the run's
    settings, "train") keeps them in its metadata only: it was trained on their indices, and its classes are those
    or none. It holds the labels as its classes, so that ``predict`` gives them. Labels that anything else put in
    the metadata stay there."""
    classes = config.get("classes")
    metadata = config["metadata"]
    if (config["output"] != "identity" and "train" in metadata
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


def _generator(state: dict[str, Any]) -> np.random.Generator:
    """A new shuffling generator in ``state`` (PCG64's, as every model's is)."""
    rng = np.random.Generator(np.random.PCG64(0))
    rng.bit_generator.state = state
    return rng


def load(path: str | os.PathLike[str], *, device: Any = "auto", xp: Any = None) -> MLP:
    """Rebuild the model saved at ``path`` on ``device`` (and ``xp``), ready to predict or continue training."""
    ckpt = checkpoint.read(path)
    try:
        return MLP._from_state_map(ckpt.config, ckpt.tensors, device, xp)
    except (CheckpointError, DeviceError):
        raise
    except GpunnError as exc:
        raise CheckpointError(f"{os.fspath(path)}: invalid model description ({exc})") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{os.fspath(path)}: invalid model description ({type(exc).__name__}: {exc})") from None
