"""MLP: the thin stateful shell (parameters, optimizer state, RNG, history) around one pure training step."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

from . import _backend, layers, losses, optim
from . import _validation as check
from .errors import CheckpointError, ConfigError, InputError, NonFiniteError, NotFittedError
from .history import History, Reporter
from .init import init_params


def batch_gradients(params, xb, tb, *, activation, output, loss, xp):
    """Forward, fused loss and backprop on a batch: ``(grads, mean_loss, n_correct)``. Pure; reads nothing back.

    ``grads`` is ``[dW1, db1, ...]`` of the batch's mean loss; the loss and the count of correct predictions
    are 0-d arrays (the count is None for regression).
    """
    z, inputs = layers.forward(params, xb, activation, xp)
    value, delta, correct = losses.loss_and_delta(output, loss, z, tb, xp)
    return layers.backward(params, inputs, delta, activation, xp), value, correct


def add_l2(params: list[Any], grads: list[Any], value: Any, rate: float, xp: Any) -> tuple[Any, list[Any]]:
    """The L2 penalty rate/2 * sum(W**2) on the weights (every other parameter), added to loss and gradients."""
    penalty = sum(xp.sum(w * w) for w in params[::2])
    grads = [g + rate * p if i % 2 == 0 else g for i, (p, g) in enumerate(zip(params, grads))]
    return value + (0.5 * rate) * penalty, grads


def clip_by_global_norm(grads: list[Any], max_norm: float, xp: Any) -> list[Any]:
    """Scale all gradients by min(1, max_norm / ||g||), the norm taken over every parameter together."""
    norm = xp.sqrt(sum(xp.sum(g * g) for g in grads))
    factor = xp.minimum(1.0, max_norm / (norm + 1e-12))
    return [g * factor for g in grads]


class MLP:
    """A multilayer perceptron whose forward and backward passes run on any Array API namespace.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths from the input features to the outputs, e.g. ``[30, 10, 10, 10, 1]``.
    activation : {"relu", "tanh", "sigmoid"}
        Activation of the hidden layers.
    output : {"sigmoid", "softmax", "identity"}
        Output activation: binary (or multi-label) classification, several classes, or regression.
    loss : {"binary_crossentropy", "categorical_crossentropy", "mse"}, optional
        Defaults to the loss that matches ``output``. ``output="sigmoid", loss="mse"`` is also accepted.
    seed : int
        Seeds the host generator that draws the initial weights and the shuffling order.
    device : str or device object
        Without ``xp``: "auto" (CuPy when a GPU is usable, else NumPy), "cpu" or "cuda[:N]". With ``xp``: a
        device of that namespace, or None for its default.
    dtype : {"float32", "float64"}
        dtype of the parameters and of the data inside the model.
    xp : module, optional
        An array namespace array-api-compat supports: numpy, cupy, torch, jax.numpy, array_api_strict.
    standardize : bool
        Learn each feature's mean and standard deviation on the first ``fit`` and apply them to every input.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        activation: str = "relu",
        output: str = "sigmoid",
        loss: str | None = None,
        seed: int = 0,
        device: Any = "auto",
        dtype: str = "float32",
        xp: Any = None,
        standardize: bool = False,
    ):
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 2:
            raise ConfigError(f"sizes must list at least two layer widths (inputs and outputs); got {sizes!r}")
        self.sizes = [check.integer(s, "every layer width in sizes", 1) for s in sizes]
        self.activation = check.choice(activation, "activation", layers.ACTIVATIONS)
        self.output = check.choice(output, "output", losses.OUTPUTS)
        self.loss = losses.DEFAULT_LOSS[output] if loss is None else check.choice(loss, "loss", losses.LOSSES)
        if (self.output, self.loss) not in losses.PAIRS:
            pairs = ", ".join(f"{o}+{lo}" for o, lo in losses.PAIRS)
            raise ConfigError(f"output {output!r} cannot be trained with loss {loss!r}; supported: {pairs}")
        if self.output == "softmax" and self.sizes[-1] < 2:
            raise ConfigError("output 'softmax' needs at least 2 output units (one per class)")
        self.dtype = check.choice(dtype, "dtype", _backend.DTYPES)
        self.seed = check.integer(seed, "seed", 0)
        self.standardize = bool(standardize)
        self.xp, self.device = _backend.resolve(device, xp)
        self._dtype = _backend.float_dtype(self.xp, self.dtype)

        init_seed, shuffle_seed = np.random.SeedSequence(self.seed).spawn(2)
        self.rng = np.random.Generator(np.random.PCG64(shuffle_seed))
        host = init_params(self.sizes, self.activation, np.random.Generator(np.random.PCG64(init_seed)), dtype)
        self._params = self._to_device_params(host)
        self.optimizer: optim.Optimizer | None = None
        self.optimizer_state: dict[str, Any] | None = None
        # (params, optimizer state, RNG state) at the start of the last completed epoch, to step back to if
        # that epoch's final update overflowed.
        self._previous: tuple[list[Any], dict[str, Any] | None, dict[str, Any]] | None = None
        self.history = History()
        self.epoch = 0
        self.fitted = False
        self.scaling: tuple[np.ndarray, np.ndarray] | None = None
        self.feature_names: list[str] | None = None
        self.target_name: str | None = None
        self.metadata: dict[str, Any] = {}  # JSON-serializable notes saved with the model (the CLI's settings)

    # ----------------------------------------------------------------------------------------------- state
    def __getstate__(self) -> dict[str, Any]:
        """Pickle support: arrays go to the host and the namespace is saved by name (modules do not pickle)."""
        state = self.__dict__.copy()
        state["_params"], state["optimizer_state"] = self._mapped_arrays(_backend.to_numpy)
        state["_previous"] = None
        state["xp"] = _backend.namespace_name(self.xp)
        state["device"] = None if state["xp"] in ("jax", "array_api_strict") else str(self.device)
        del state["_dtype"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        name, device = state.pop("xp"), state.pop("device")
        self.__dict__.update(state)
        self.xp, self.device = _backend.resolve_by_name(name, device)
        self._dtype = _backend.float_dtype(self.xp, self.dtype)
        self._params, self.optimizer_state = self._mapped_arrays(lambda a: _backend.from_numpy(a, self.xp, self.device))

    def _mapped_arrays(self, fn: Callable[[Any], Any]) -> tuple[list[Any], dict[str, Any] | None]:
        """``fn`` applied to every parameter and every optimizer slot array (the step count is kept)."""
        state = self.optimizer_state
        if state is not None:
            state = {k: [fn(a) for a in v] if isinstance(v, list) else v for k, v in state.items()}
        return [fn(p) for p in self._params], state

    def __repr__(self) -> str:
        return (
            f"MLP(sizes={self.sizes}, activation={self.activation!r}, output={self.output!r}, "
            f"loss={self.loss!r}, dtype={self.dtype!r}, xp={_backend.namespace_name(self.xp)}, "
            f"device={self.device!r})"
        )

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return self.sizes[0]

    @property
    def n_outputs(self) -> int:
        """Number of output units."""
        return self.sizes[-1]

    @property
    def weights(self) -> list[tuple[Any, Any]]:
        """``[(W, b), ...]`` in the model's namespace, ``W`` of shape (out, in)."""
        return [(self._params[i], self._params[i + 1]) for i in range(0, len(self._params), 2)]

    def to(self, device: Any = "auto", xp: Any = None) -> MLP:
        """Move the model (weights and optimizer state) to another device or namespace; returns the model."""
        new_xp, new_device = _backend.resolve(device, xp)
        params, state = self._mapped_arrays(lambda a: _backend.from_numpy(_backend.to_numpy(a), new_xp, new_device))
        self.xp, self.device, self._dtype = new_xp, new_device, _backend.float_dtype(new_xp, self.dtype)
        self._params, self.optimizer_state, self._previous = params, state, None
        return self

    def numpy_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(W, b), ...]`` copied to the host as NumPy arrays, ``W`` of shape (out, in)."""
        return [(_backend.to_numpy(w), _backend.to_numpy(b)) for w, b in self.weights]

    def torch_state_dict(self) -> dict[str, Any]:
        """A PyTorch ``state_dict`` for ``nn.Sequential(Linear, act, Linear, act, ..., Linear)`` (imports torch).

        ``nn.Linear`` stores weights as (out, in), like gpunn, so they are copied without transposition.
        """
        import torch

        state = {}
        for i, (w, b) in enumerate(self.numpy_weights()):
            state[f"{2 * i}.weight"] = torch.from_numpy(np.array(w))
            state[f"{2 * i}.bias"] = torch.from_numpy(np.array(b))
        return state

    def set_weights(self, pairs: Sequence[tuple[Any, Any]]) -> None:
        """Replace the parameters with ``[(W, b), ...]`` (NumPy arrays or arrays on the model's device)."""
        pairs = list(pairs)
        if len(pairs) != len(self.sizes) - 1:
            raise InputError(f"set_weights got {len(pairs)} (W, b) pairs; the model has {len(self.sizes) - 1} layers")
        new = []
        for i, (pair, (fan_in, fan_out)) in enumerate(zip(pairs, zip(self.sizes[:-1], self.sizes[1:]))):
            if len(pair) != 2:
                raise InputError(f"set_weights: layer {i} must be a (W, b) pair")
            for name, value, shape in ((f"W{i}", pair[0], (fan_out, fan_in)), (f"b{i}", pair[1], (fan_out,))):
                new.append(self._as_model_array(value, name, shape))
        self._params, self._previous = new, None
        self.fitted = True

    def _as_model_array(self, value: Any, name: str, shape: tuple[int, ...]) -> Any:
        xp = self.xp
        if _backend.is_host_data(value):
            a = check.host_array(value, name)
            if a.shape != shape:
                raise InputError(f"{name} has shape {a.shape}; the model needs {shape}")
            return _backend.from_numpy(check.cast_host(a, self.dtype, name), xp, self.device)
        check.check_device_array(value, xp, self.device, name)
        if tuple(value.shape) != shape:
            raise InputError(f"{name} has shape {tuple(value.shape)}; the model needs {shape}")
        return xp.astype(value, self._dtype)

    def _to_device_params(self, host: list[np.ndarray]) -> list[Any]:
        params = [_backend.from_numpy(p, self.xp, self.device) for p in host]
        if params[0].dtype != self._dtype:
            raise ConfigError(
                f"{_backend.namespace_name(self.xp)} turned {self.dtype} parameters into {params[0].dtype} "
                "(for JAX, float64 needs jax.config.update('jax_enable_x64', True))"
            )
        return params

    # ------------------------------------------------------------------------------------------------ data
    def _prepare_x(self, X: Any, name: str = "X", scaling: tuple[np.ndarray, np.ndarray] | None = None) -> Any:
        """Validate ``X`` and return it on the model's device, in its dtype, scaled if the model standardizes."""
        return self._place_x(self._check_x(X, name), scaling if scaling is not None else self.scaling)

    def _check_x(self, X: Any, name: str) -> Any:
        """``X`` validated: a host array (in the model's dtype, or the original if scaling will cast it) or a
        device array in the model's dtype."""
        if _backend.is_host_data(X):
            a = check.host_array(X, name)
            check.check_features(a, self.n_features, name)
            cast = check.cast_host(a, self.dtype, name)
            return a if cast.dtype != a.dtype and self.standardize else cast
        xp = self.xp
        check.check_device_array(X, xp, self.device, name)
        check.check_features(X, self.n_features, name)
        x = xp.astype(X, self._dtype) if X.dtype != self._dtype else X
        if not bool(xp.all(xp.isfinite(x))):  # one read-back per call, outside the training loop
            check.check_finite_host(_backend.to_numpy(X), _backend.to_numpy(x), name, self.dtype)
        return x

    def _place_x(self, x: Any, scaling: tuple[np.ndarray, np.ndarray] | None, in_place: bool = False) -> Any:
        """A checked ``x`` scaled (when ``scaling`` is given) and on the model's device. ``in_place`` scales a
        host array of the model's dtype in place rather than into a copy."""
        xp = self.xp
        if isinstance(x, np.ndarray):
            if scaling is not None:
                own = in_place and x.dtype == self.dtype and x.flags.writeable
                x = _scale_rows(x, scaling, np.empty(x.shape, self.dtype) if not own else x)
            return _backend.from_numpy(x.astype(self.dtype, copy=False), xp, self.device)
        if scaling is not None:
            mean, scale = (_backend.from_numpy(s.astype(self.dtype), xp, self.device) for s in scaling)
            x = (x - mean) / scale
        return x

    def _fit_scaling(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and standard deviation of a checked ``x``, in float64, a block of rows at a time."""
        a = x if isinstance(x, np.ndarray) else _backend.to_numpy(x)
        blocks = _row_blocks(len(a), _rows_per_block(a))
        total, squares = np.zeros(a.shape[1]), np.zeros(a.shape[1])
        with np.errstate(all="ignore"):
            for b in blocks:
                total += a[b].sum(axis=0, dtype=np.float64)
            mean = total / len(a)
            for b in blocks:
                squares += np.square(a[b] - mean).sum(axis=0)
            std = np.sqrt(squares / len(a))
        return mean, np.where(std > 0, std, 1.0)

    def _prepare_targets(self, y: Any, n: int, name: str = "y", fitting: bool = False) -> Any:
        """Validate ``y`` and return the (n, n_outputs) float targets (one-hot rows for softmax) on the device."""
        xp = self.xp
        host = _backend.is_host_data(y)
        if host:
            a = check.host_array(y, name)
        else:
            check.check_device_array(y, xp, self.device, name)
            a = _backend.to_numpy(y)  # labels are small: check them on the host, once per call
        check.target_shape(a.shape, n, self.output, self.n_outputs, name)
        if self.output == "identity":
            check.cast_host(a, self.dtype, name)
        check.labels_host(a, self.output, self.n_outputs, name)
        if fitting and self.output != "identity" and (a.ndim == 1 or a.shape[1] == 1):
            classes = np.unique(a)
            if classes.size < 2:
                raise InputError(f"{name} holds a single class ({classes[0]}); a classifier needs at least two")
        if self.output == "softmax":
            labels = a.reshape(n).astype(np.int64)
            if host:
                return _backend.from_numpy(np.eye(self.n_outputs, dtype=self.dtype)[labels], xp, self.device)
            classes = xp.arange(self.n_outputs, device=self.device)
            return xp.astype(xp.reshape(y, (n, 1)) == xp.astype(classes, y.dtype), self._dtype)
        shape = (n, self.n_outputs)
        if host:
            return _backend.from_numpy(a.reshape(shape).astype(self.dtype), xp, self.device)
        return xp.astype(xp.reshape(y, shape), self._dtype)

    # ------------------------------------------------------------------------------------------- training
    def fit(
        self,
        X: Any,
        y: Any,
        *,
        epochs: int = 100,
        lr: float = 0.1,
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
    ) -> History:
        """Train for ``epochs`` more epochs and return their :class:`History`.

        If training is interrupted (Ctrl-C) or diverges, the model is left exactly as the last completed epoch
        left it (weights, optimizer state, shuffling generator, epoch count and history agree), so saving it
        and resuming reproduces an uninterrupted run.

        Parameters
        ----------
        X : array, shape (n_samples, n_features)
        y : array, shape (n_samples,) or (n_samples, n_outputs)
            0/1 labels for sigmoid, class indices 0..k-1 for softmax, values for identity.
        epochs : int
            Passes over the data in this call. A second ``fit`` continues: the optimizer state and the
            shuffling generator carry over, so two calls of 3 epochs equal one call of 6.
        lr : float
            Step size.
        batch_size : int, optional
            Samples per gradient step; None (the default) uses the whole training set each step.
        optimizer : {"sgd", "momentum", "adam"} or gpunn.optim.Optimizer
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
            L2 penalty on the weights (not the biases): the loss gains l2/2 * sum(W**2) / batch size, as in
            scikit-learn's ``alpha``.
        comm : gpunn.distributed.Communicator, optional
            Train data-parallel with the other ranks of ``comm``: ``batch_size`` is the global batch, each rank
            computes the gradients of its shard, one allreduce per step averages them. Only rank 0 prints.
        copy : bool
            With False, a standardizing model scales X in place when it is a writeable NumPy array of the model's
            dtype (its values change, as with scikit-learn's ``copy=False``), so training holds one copy of the
            data instead of two. Other input, and validation data, are copied as usual.
        """
        epochs = check.integer(epochs, "epochs", 0)
        lr = check.positive_float(lr, "lr")
        if batch_size is not None:
            batch_size = check.integer(batch_size, "batch_size", 1)
        opt = optim.get(optimizer)
        if clip_norm is not None:
            clip_norm = check.positive_float(clip_norm, "clip_norm")
        verbose = check.integer(verbose, "verbose", 0)
        if l2 != 0:
            l2 = check.positive_float(l2, "l2")
        if callbacks is not None and not all(callable(c) for c in callbacks):
            raise ConfigError("callbacks must be a sequence of callables callback(model, record)")
        xp = self.xp
        if convert:
            X, y = self.adopt(X), self.adopt(y)
            if validation_data is not None and isinstance(validation_data, (tuple, list)):
                validation_data = tuple(self.adopt(v) for v in validation_data)
        with _backend.device_scope(xp, self.device):
            x = self._check_x(X, "X")
            t = self._prepare_targets(y, x.shape[0], "y", fitting=True)
            xv = tv = None
            if validation_data is not None:
                if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                    raise InputError("validation_data must be a pair (X_val, y_val)")
                xv = self._check_x(validation_data[0], "validation X")
                tv = self._prepare_targets(validation_data[1], xv.shape[0], "validation y")
            # Everything is valid: from here on the call may change the model (and, with copy=False, X).
            scaling = self.scaling
            if self.standardize and scaling is None:
                scaling = self._fit_scaling(x)
            val = None if xv is None else (self._place_x(xv, scaling), tv)  # before X may be scaled in place
            x = self._place_x(x, scaling, in_place=not copy)
            self.scaling = scaling
            if comm is not None:
                self._params = comm.broadcast_arrays(self._params, xp, self.device)  # every rank starts equal
                verbose = verbose if comm.rank == 0 else 0
            if self.optimizer != opt or self.optimizer_state is None:
                self.optimizer, self.optimizer_state = opt, opt.init(self._params, xp)
                self._previous = None
            first = self.history.epochs
            reporter = Reporter(verbose, self.epoch, self.epoch + epochs)
            self.fitted = True
            try:
                with _backend.memory_guard(self.device, batch_size):
                    for _ in range(epochs):
                        record = self._run_epoch(x, t, val, lr, batch_size, shuffle, clip_norm, comm, l2)
                        reporter.epoch(self.epoch, record)
                        if [callback(self, record) for callback in callbacks or ()].count(False):
                            break
            finally:
                reporter.close()
        return self.history.since(first)

    def _run_epoch(self, x, t, val, lr, batch_size, shuffle, clip_norm, comm=None, l2=0.0) -> dict[str, float]:
        """One pass over the data; the only read-back is the epoch's metrics at the end."""
        rng_state, epoch = self.rng.bit_generator.state, self.epoch
        try:
            return self._epoch_body(x, t, val, lr, batch_size, shuffle, clip_norm, rng_state, comm, l2)
        except BaseException as exc:
            if self.epoch != epoch:
                raise  # interrupted after the epoch was committed: it stands, generator included
            # Diverged or interrupted: the permutation drawn for this epoch is put back and a half-recorded
            # epoch is dropped, so the model is exactly as the last completed epoch left it.
            self.rng.bit_generator.state = rng_state
            if isinstance(exc, NonFiniteError):
                self._step_back_if_not_finite()
            self.history.truncate(self.epoch)
            raise

    def _step_back_if_not_finite(self) -> None:
        """After a non-finite loss: if the last epoch's final update itself overflowed (its loss, computed
        before that update, was finite), return to the epoch before it. Runs only on this failure path."""
        xp = self.xp
        if self._previous is None or all(bool(xp.all(xp.isfinite(p))) for p in self._params):
            return
        self._params, self.optimizer_state, rng_state = self._previous
        self.rng.bit_generator.state = rng_state
        self.epoch -= 1
        self._previous = None

    def _epoch_body(self, x, t, val, lr, batch_size, shuffle, clip_norm, rng_state, comm=None, l2=0.0):
        xp, n = self.xp, x.shape[0]
        bs = n if batch_size is None else min(batch_size, n)
        params, state = self._params, self.optimizer_state
        order = None
        if bs < n and shuffle:
            order = _backend.from_numpy(self.rng.permutation(n), xp, self.device)
        spec = dict(activation=self.activation, output=self.output, loss=self.loss, xp=xp)
        optimizer = cast(optim.Optimizer, self.optimizer)  # fit sets both before the first epoch
        fast = _backend.numpy_fast_path(xp)  # the gradients below are fresh arrays: the update may reuse them
        state = cast(dict, state)
        batch_losses, total_loss, total_correct = [], None, None
        for start in range(0, n, bs):
            stop = min(start + bs, n)  # the standard leaves out-of-bounds slice ends unspecified
            lo, hi = (start, stop) if comm is None else comm.shard(start, stop)
            if comm is None and bs == n:
                xb, tb = x, t
            elif order is not None:
                idx = order[lo:hi]
                xb, tb = xp.take(x, idx, axis=0), xp.take(t, idx, axis=0)
            else:
                xb, tb = x[lo:hi, ...], t[lo:hi, ...]
            if hi > lo:
                grads, value, correct = batch_gradients(params, xb, tb, **spec)
            else:  # more ranks than samples in this batch: this rank contributes nothing
                grads, value, correct = self._nothing(params)
            if comm is not None:
                # Each rank's mean over its shard, weighted by its share: the sum is the global batch's mean.
                grads = comm.allreduce_sum([g * ((hi - lo) / (stop - start)) for g in grads], xp, self.device)
            if l2:
                value, grads = add_l2(params, grads, value, l2 / (stop - start), xp)
            if clip_norm is not None:
                grads = clip_by_global_norm(grads, clip_norm, xp)
            params, state = optimizer.update(params, grads, state, lr, xp, donate=fast)
            batch_losses.append(value)
            total_loss = value * (hi - lo) if total_loss is None else total_loss + value * (hi - lo)
            if correct is not None:
                total_correct = correct if total_correct is None else total_correct + correct
        names = ["loss"]
        metrics = [total_loss]
        if total_correct is not None:
            names.append("accuracy")
            metrics.append(xp.astype(total_correct, self._dtype))
        if val is not None:
            val_loss, val_correct = self._evaluate(params, *val)
            names.append("val_loss")
            metrics.append(val_loss)
            if val_correct is not None:
                names.append("val_accuracy")
                metrics.append(val_correct)
        values = _backend.to_numpy(xp.stack(metrics)).tolist()  # the epoch's one read-back
        sums = values[: 1 + (total_correct is not None)]
        if comm is not None:
            sums = comm.sum_scalars(sums)
        values[0] = sums[0] / n
        if total_correct is not None:
            values[1] = sums[1] / (n * self._labels_per_row)
        if not math.isfinite(values[0]):
            raise self._divergence(batch_losses, values[0])
        record = dict(zip(names, values))
        self.history.append(record)
        previous = (self._params, self.optimizer_state, rng_state)  # references, not copies: updates are pure
        # One statement, no calls: an interrupt lands before or after it, never half way.
        self._params, self.optimizer_state, self.epoch, self._previous = params, state, self.epoch + 1, previous
        return record

    def _nothing(self, params: list[Any]) -> tuple[list[Any], Any, Any]:
        """Zero gradients, loss and count, for a rank whose shard of a batch is empty."""
        xp = self.xp
        zero = xp.zeros((), dtype=self._dtype, device=self.device)
        count = None
        if self.output != "identity":
            count = xp.zeros((), dtype=_backend.index_dtype(xp, self.device), device=self.device)
        return [xp.zeros_like(p) for p in params], zero, count

    def _divergence(self, batch_losses: list[Any], loss: float) -> NonFiniteError:
        losses_seen = _backend.to_numpy(self.xp.stack(batch_losses))
        bad = np.flatnonzero(~np.isfinite(losses_seen))
        where = f"batch {bad[0] + 1} of {losses_seen.size}" if bad.size else "the weight update"
        return NonFiniteError(
            f"training diverged in epoch {self.epoch + 1}, {where}: loss is {loss}. The model keeps the weights "
            "of the last finite epoch; try a smaller lr, clip_norm=, or standardized features"
        )

    @property
    def _labels_per_row(self) -> int:
        return self.n_outputs if self.output == "sigmoid" else 1

    def _evaluate(self, params: list[Any], x: Any, t: Any) -> tuple[Any, Any]:
        """(mean loss, accuracy or None) as 0-d arrays on the device, EVAL_ROWS rows at a time so that a large
        validation set never holds all its activations at once."""
        xp, n = self.xp, x.shape[0]
        parts = []
        for block in _row_blocks(n, EVAL_ROWS):
            xb, tb = (x, t) if n <= EVAL_ROWS else (x[block, ...], t[block, ...])
            z, _ = layers.forward(params, xb, self.activation, xp)
            value, _, correct = losses.loss_and_delta(self.output, self.loss, z, tb, xp)
            parts.append((value, correct, xb.shape[0]))
        if len(parts) == 1:
            value, correct = parts[0][:2]
        else:  # the mean over all rows, from the blocks' means
            value = sum(v * (size / n) for v, _, size in parts)
            correct = sum(c for _, c, _ in parts) if parts[0][1] is not None else None
        if correct is None:
            return value, None
        return value, xp.astype(correct, self._dtype) / (n * self._labels_per_row)

    # ----------------------------------------------------------------------------------------- inference
    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError("this MLP has not been trained yet: call fit(), set_weights() or gpunn.load() first")

    def adopt(self, x: Any) -> Any:
        """``x`` from any namespace or device, as an array of the model's namespace on its device (DLPack)."""
        if _backend.is_host_data(x):
            return x
        import array_api_compat as aac

        if aac.array_namespace(x) is self.xp and _backend.same_device(aac.device(x), self.device):
            return x
        try:
            with _backend.device_scope(self.xp, self.device):
                moved = self.xp.from_dlpack(x)
            if _backend.same_device(aac.device(moved), self.device):
                return moved
        except Exception:  # DLPack cannot cross these devices or libraries: go through the host
            pass
        return _backend.from_numpy(_backend.to_numpy(x), self.xp, self.device)

    def decision_function(self, X: Any, *, convert: bool = False) -> Any:
        """The output layer's logits, shape (n, n_outputs), in the model's namespace and device.

        Rows go through the network EVAL_ROWS at a time (scaled and moved to the device a block at a time for
        host data), so predicting on a large X holds one block's activations, not all of them."""
        self._check_fitted()
        X = self.adopt(X) if convert else X
        xp = self.xp
        with _backend.device_scope(xp, self.device):
            x = self._check_x(X, "X")
            logits = [
                layers.forward(self._params, self._place_x(x[block, ...], self.scaling), self.activation, xp)[0]
                for block in _row_blocks(x.shape[0], EVAL_ROWS)
            ]
            return logits[0] if len(logits) == 1 else xp.concat(logits, axis=0)

    def predict_proba(self, X: Any, *, convert: bool = False) -> Any:
        """Probabilities (sigmoid, softmax) or values (identity), shape (n, n_outputs), on the model's device."""
        z = self.decision_function(X, convert=convert)
        with _backend.device_scope(self.xp, self.device):
            return losses.output_activation(self.output, z, self.xp)

    def predict(self, X: Any, *, convert: bool = False) -> Any:
        """Integer labels, shape (n,) (or (n, k) for several sigmoid outputs); values (n, k) for identity."""
        z = self.decision_function(X, convert=convert)
        xp = self.xp
        with _backend.device_scope(xp, self.device):
            if self.output == "identity":
                return z
            if self.output == "softmax":
                return xp.argmax(z, axis=1)
            labels = xp.astype(z > 0, _backend.index_dtype(xp, self.device))  # p > 0.5 exactly when z > 0
            return labels[:, 0] if self.n_outputs == 1 else labels

    def evaluate(self, X: Any, y: Any, *, convert: bool = False) -> dict[str, float]:
        """Mean loss and (for classifiers) accuracy on ``(X, y)``, as Python floats."""
        self._check_fitted()
        if convert:
            X, y = self.adopt(X), self.adopt(y)
        with _backend.device_scope(self.xp, self.device):
            x = self._prepare_x(X)
            value, acc = self._evaluate(self._params, x, self._prepare_targets(y, x.shape[0]))
            values = _backend.to_numpy(self.xp.stack([value] if acc is None else [value, acc])).tolist()
        return dict(zip(["loss", "accuracy"], values))

    def loss_and_grads(self, X: Any, y: Any, *, convert: bool = False) -> tuple[Any, list[tuple[Any, Any]]]:
        """(mean loss as a 0-d array, ``[(dW, db), ...]``): the exact gradients of the mean loss at ``(X, y)``."""
        xp = self.xp
        if convert:
            X, y = self.adopt(X), self.adopt(y)
        with _backend.device_scope(xp, self.device):
            x = self._prepare_x(X)
            t = self._prepare_targets(y, x.shape[0])
            z, inputs = layers.forward(self._params, x, self.activation, xp)
            value, delta, _ = losses.loss_and_delta(self.output, self.loss, z, t, xp)
            grads = layers.backward(self._params, inputs, delta, self.activation, xp)
        return value, [(grads[i], grads[i + 1]) for i in range(0, len(grads), 2)]

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model, its optimizer state, RNG and history to a safetensors file, atomically."""
        from .checkpoint import save

        save(self, path)

    def load_weights(self, path: str | os.PathLike[str]) -> None:
        """Load the parameters of a checkpoint whose architecture matches this model."""
        from .checkpoint import read

        ckpt = read(path)
        if ckpt.config["sizes"] != self.sizes or ckpt.config["dtype"] != self.dtype:
            raise CheckpointError(
                f"{os.fspath(path)}: checkpoint holds a {ckpt.config['dtype']} model of sizes {ckpt.config['sizes']} "
                f"but this model is {self.dtype} with sizes {self.sizes}"
            )
        self.set_weights(ckpt.weight_pairs())


EVAL_ROWS = 4096  # rows per forward pass when evaluating: bounds the activations held at once


def _row_blocks(n: int, size: int) -> list[slice]:
    """Consecutive slices of ``size`` rows covering ``range(n)``, each end in bounds (the Array API standard
    leaves out-of-bounds slice ends unspecified)."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _rows_per_block(a: np.ndarray) -> int:
    """Rows of ``a`` per block of host-side work: about a million values, so temporaries stay small."""
    return max(1, (1 << 20) // max(1, a.shape[1]))


def _scale_rows(a: np.ndarray, scaling: tuple[np.ndarray, np.ndarray], out: np.ndarray) -> np.ndarray:
    """``out[:] = (a - mean) / scale``, computed in float64 a block of rows at a time (``out`` may be ``a``)."""
    mean, scale = scaling
    for block in _row_blocks(len(a), _rows_per_block(a)):
        out[block] = (a[block] - mean) / scale
    return out
