"""MLP: the thin stateful shell (parameters, optimizer state, RNG, history) around the pure training step.

The step itself is :mod:`gpunn.step`; the epoch loop that runs it is :mod:`gpunn.train`, driven by
:mod:`gpunn.fitloop`; checking, scaling, placing and batching data is the feed layer, :mod:`gpunn.feed`; a fit's
arguments are checked by :mod:`gpunn.settings`. What a model's weights compute, and how its state is saved,
is :class:`gpunn.network.Network`, which MLP extends with training: it holds the state the floors below pass
around and commits each epoch's new state, and passes them small frozen values (a :class:`~gpunn.feed.Spec`, a
:class:`~gpunn.step.Hyper`, a :class:`~gpunn.settings.FitSettings`, arrays), never itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _backend, checkpoint, feed, fitloop, layers, lbfgs, losses, optim, presets, schedules, settings, train
from . import _validation as check
from . import callbacks as gpunn_callbacks
from .data import Dataset
from .errors import CheckpointError, ConfigError, NonFiniteError
from .history import History
from .network import Network, generator
from .step import hyper as step_hyper


class MLP(Network):
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
    output : {"sigmoid", "softmax", "identity", "exp"}
        Output activation: binary (or multi-label) classification, several classes, regression, or Poisson
        regression of counts or rates (the log link: ``predict`` gives the mean exp(z)).
    loss : {"binary_crossentropy", "categorical_crossentropy", "mse", "poisson"}, optional
        Defaults to the loss that matches ``output`` ("poisson", the Poisson deviance, for "exp"). ``output="sigmoid",
        loss="mse"`` is also accepted.
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
        learns). A Poisson target (output "exp") is never standardized: its counts must stay >= 0, and exp(z) is
        their mean in their own units. The default is False (the ``tabular`` preset's True), so that ``MLP``
        computes exactly the network it is given; ``gpunn train`` standardizes always, since it trains files whose
        columns can have any scale.
    dropout : float
        Default 0 (the ``tabular`` preset's 0.1). Inverted dropout on the outputs of every hidden layer while
        training: each is zeroed with this probability and the rest scaled by 1 / (1 - dropout); ``predict``,
        ``evaluate`` and validation use every unit. The masks come from a counter-based generator on the model's device
        (:mod:`gpunn.dropout`): the same seed draws the same masks on every namespace and device, and a
        resumed run draws the masks the uninterrupted run would have.
    label_smoothing : float, optional
        For classifiers: train on targets moved this far towards the uniform distribution, ``(1 - e) y + e / k``
        with k the classes (two for a sigmoid output); the reported training loss is that of the smoothed
        targets, while validation, ``evaluate`` and ``predict`` use the labels as given. Default 0 (the
        ``tabular`` preset's 0.1).
    preset : {None, "tabular", "tutorial"}
        Defaults for what is not given, here and in ``fit`` (see :mod:`gpunn.presets` and docs/api.md). None and
        "tutorial" are the defaults below. "tabular" is the recipe of ``gpunn train --data``: ``hidden=[128,
        128]`` (when neither ``sizes`` nor ``hidden`` is given), ``dropout=0.1``, ``standardize=True``,
        ``label_smoothing=0.1``, and ``fit`` with 200 epochs, AdamW (lr 1e-3 on a cosine schedule, weight decay
        0.01), minibatches of about a tenth of the rows (16 to 256, a power of two), and 10% of the rows held out
        (in memory: arrays and data frames) to stop after 40 epochs without a better ``val_loss`` and restore
        the best epoch.
    compile : {"auto", True, False}
        Compile the training step where gpunn has a compiler for the namespace (``jax.jit`` on JAX). "auto"
        compiles where it can and falls back to the eager step, with a warning, if compiling fails; True
        requires it (a ``ConfigError`` on namespaces without one, such as NumPy); False runs eagerly.
    """

    # Why the last fit ended before its epochs ran out, where it converged or gave up (L-BFGS: "gtol", "ftol",
    # "max_fun" or "line search"); None when it ran them all.
    stopped_by: str | None = None

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
        standardize: bool | None = None,
        compile: Any = "auto",
        dropout: float | None = None,
        label_smoothing: float | None = None,
        preset: str | None = None,
    ):
        recipe = presets.get(preset)
        self.preset = None if recipe is None else recipe.name
        if sizes is None and hidden is None and recipe is not None:
            hidden = list(recipe.hidden)
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
        if standardize is None:
            standardize = recipe.standardize if recipe else False
        self.standardize = check.boolean(standardize, "standardize")
        regression = self.output in losses.REGRESSION
        if label_smoothing is None:  # (a preset's is for its classifiers)
            label_smoothing = recipe.label_smoothing if recipe and not regression else 0.0
        self.label_smoothing = settings.fraction(label_smoothing, "label_smoothing")
        if self.label_smoothing and regression:  # it was ignored
            raise ConfigError(f"label_smoothing is for classifiers (a softmax or sigmoid output); output "
                              f"{self.output!r} predicts values: leave it at 0")  # fmt: skip
        self.dropout = settings.dropout_rate((recipe.dropout if recipe else 0.0) if dropout is None else dropout)
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

    # ------------------------------------------------------------------------------------------- training
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        epochs: int | None = None,
        lr: float | schedules.Schedule | None = None,
        batch_size: int | None = None,
        optimizer: str | optim.Optimizer | None = None,
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
            Passes over the data in this call (default 100, the ``tabular`` preset's 200). A second ``fit``
            continues: the optimizer state and the shuffling generator carry over, so two calls of 3 epochs equal
            one call of 6.
        lr : float or gpunn.schedules.Schedule
            Step size (default 0.1; the ``tabular`` preset's 1e-3 on its cosine schedule, which a number given
            here then starts from), or a schedule of step sizes per epoch (``gpunn.schedules.step``, ``cosine``,
            ``plateau``);
            ``History.lr`` records the rate of each epoch. A second ``fit`` with the same schedule continues it.
        batch_size : int, optional
            Samples per gradient step; None (the default) uses the whole training set each step (with the
            ``tabular`` preset: about a tenth of the rows, see ``preset``).
        optimizer : {"sgd", "momentum", "nesterov", "adam", "adamw", "lbfgs"} or gpunn.optim.Optimizer
            Default "sgd" (the ``tabular`` preset's "adamw" with weight decay 0.01). "lbfgs" (or
            ``gpunn.optim.lbfgs(history=, tol=, ftol=, max_fun=)``) runs one L-BFGS iteration an epoch on the full
            batch and stops early when it converges (see :mod:`gpunn.lbfgs`); it takes no ``batch_size``,
            ``clip_norm``, schedule, dropout or ``comm``, and ignores ``lr``.
        shuffle : bool
            Draw a new sample order each epoch (minibatches only; a full batch does not depend on order).
        validation_data : (X_val, y_val), optional
            Evaluated after every epoch into ``val_loss`` and ``val_accuracy``. With the ``tabular`` preset and
            none given, 10% of in-memory X and y are held out as validation data; either way that preset adds
            early stopping (``EarlyStopping(patience=40)``, restoring the best epoch) unless ``callbacks`` holds
            an EarlyStopping of its own.
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
        given = dict(epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, weight_decay=weight_decay)
        recipe = presets.get(self.preset)
        X, y, sample_weight, validation_data, callbacks, chosen = _preset_fit(
            recipe, self.seed, given, X, y, sample_weight, validation_data, callbacks
        )  # fmt: skip
        epochs, lr, batch_size, optimizer, weight_decay = (chosen[k] for k in given)
        s = settings.fit_settings(
            None, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, weight_decay=weight_decay, l2=l2,
            clip_norm=clip_norm, verbose=verbose, shuffle=shuffle, diverge_factor=diverge_factor, comm=comm,
            convert=convert, copy=copy,
        )  # fmt: skip
        callbacks = settings.callables(callbacks)
        lbfgs.check(s, [self.dropout], comm, isinstance(X, Dataset))
        weighted = sample_weight is not None or class_weight is not None or (isinstance(X, Dataset) and X.has_weight)
        settings.check_callbacks(callbacks, self.output, validation_data is not None, weighted)
        if convert:
            X, y, validation_data = feed.adopt_fit(self.spec_for((1, 1)), X, y, validation_data)
        with _backend.device_scope(self.xp, self.device):
            data, val = self._prepare(X, y, validation_data, sample_weight, class_weight, copy)
            # Everything is valid: from here on the call changes the model.
            if comm is not None:  # every rank must train the same data and settings, from the same weights
                x, t = (data, None) if isinstance(data, feed.Streamed) else (data.x, data.target)
                comm.check_agreement(data.spec, x, t, getattr(data, "weight_host", None), dropout_rate=self.dropout,
                                     generator=self.rng.bit_generator.state, scaling=self.scaling, epochs=s.epochs,
                                     batch_size=s.batch_size, shuffle=s.shuffle, optimizer=s.optimizers[0],
                                     lr=s.schedules[0], l2=s.l2[0], clip_norm=s.clip_norm)  # fmt: skip
                self._params = comm.broadcast_arrays([self._params], self.xp, self.device)[0]  # every rank starts equal
            self.begin(s.optimizers[0], s.schedules[0])
            first = self.history.epochs
            runner = lbfgs.runner(self._hyper(s, 0), self.xp, self.device, self.dtype, self.compile, data, comm)
            verbose = s.verbose if comm is None or comm.rank == 0 else 0
            fitloop.run(self, data, val, runner, s, verbose, callbacks, comm)
        history = self.history.since(first)
        history.compiles, history.compile_seconds = runner.compiles()
        return history

    def _prepare(self, X: Any, y: Any, validation_data: Any, sample_weight: Any, class_weight: Any, copy: bool):
        """The training and validation feeds of a ``fit``, every input checked first; then the model takes what
        its first fit learns (widths and weights for ``hidden=``, classes, scalings, feature names)."""
        encoding = feed.learn.encoding(self.encoding, X, not self.fitted)
        sizes = self.sizes or feed.learn.sizes(self.hidden or [], self.spec_for((1, 1), encoding), X, y)
        p = feed.prepare(
            self.spec_for(sizes, encoding), self.learned, X, y, validation_data, first=not self.fitted, copy=copy,
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

    def set_state(self, params: Any, optimizer_state: dict[str, Any] | None, previous: tuple | None = None) -> None:
        """Replace the flat parameters and the optimizer state with arrays on the model's device (an epoch a
        callback returns to, a member's row of an ensemble's stacked buffers); ``previous`` is the state
        ``(params, optimizer state, generator state, schedule state)`` at the start of the last epoch, which
        :meth:`step_back` returns to (None: none)."""
        self._params, self.optimizer_state, self._previous = params, optimizer_state, previous

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
                          s.schedules[i].params["lr"], s.l2[i], s.clip_norm, self.dropout, self.seed,
                          self.label_smoothing)  # fmt: skip

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
        rng = self.rng if new.rng_state is old.rng_state and old.epoch == self.epoch else generator(new.rng_state)
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
        if isinstance(error, train.DivergenceError) or not _backend.finite_rows(self._params, self.xp):
            if self._previous is not None:
                params, state, rng_state, schedule_state = self._previous
                self._params, self.optimizer_state, self.rng, self.schedule_state, self.epoch, self._previous = (
                    params, state, generator(rng_state), schedule_state, self.epoch - 1, None
                )  # fmt: skip
        self.history.truncate(self.epoch)

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model, its optimizer state, RNG and history to a safetensors file, atomically."""
        self._check_built()
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


def _preset_fit(
    recipe: presets.Preset | None, seed: int, given: dict[str, Any], X: Any, y: Any, sample_weight: Any,
    validation_data: Any, callbacks: Any,
) -> tuple[Any, Any, Any, Any, Any, dict[str, Any]]:  # fmt: skip
    """A fit's data and settings with the preset's defaults in for what ``given`` leaves None (without a preset,
    ``fit``'s documented defaults): with the ``tabular`` preset, the validation rows held out of X and y and its
    early stopping added. Returns ``(X, y, sample_weight, validation_data, callbacks, settings)``."""
    chosen = dict(given)
    r = recipe or presets.TUTORIAL
    chosen["epochs"] = r.epochs if given["epochs"] is None else given["epochs"]
    if given["optimizer"] is None:
        chosen["optimizer"] = r.optimizer
        if given["weight_decay"] is None and r.optimizer == "adamw":
            chosen["weight_decay"] = r.weight_decay
    lr = r.lr if given["lr"] is None else given["lr"]
    if recipe is None or isinstance(lr, schedules.Schedule):
        chosen["lr"] = lr
        return X, y, sample_weight, validation_data, callbacks, chosen
    full_batch = getattr(chosen["optimizer"], "name", chosen["optimizer"]) == "lbfgs"  # its line search sets steps
    chosen["lr"] = lr
    if not full_batch:
        chosen["lr"] = recipe.schedule_of(settings.rate(lr, "lr").params["lr"], check.integer(chosen["epochs"],
                                                                                              "epochs", 0))  # fmt: skip
    callbacks = list(settings.callables(callbacks) or [])
    stopping = any(isinstance(c, gpunn_callbacks.EarlyStopping) for c in callbacks)
    if validation_data is None and recipe.validation_split and not stopping:
        held = feed.holdout.hold_out(X, y, sample_weight, recipe.validation_split, seed)
        if held is not None:
            X, y, sample_weight, validation_data = held
    if validation_data is not None and recipe.patience is not None and not stopping:
        callbacks.append(gpunn_callbacks.EarlyStopping(patience=recipe.patience, restore_best=True))
    if given["batch_size"] is None and hasattr(X, "__len__") and not full_batch:
        chosen["batch_size"] = recipe.batch_size(len(X))
    return X, y, sample_weight, validation_data, callbacks, chosen


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


def load(path: str | os.PathLike[str], *, device: Any = "auto", xp: Any = None) -> MLP:
    """Rebuild the model saved at ``path`` on ``device`` (and ``xp``), ready to predict or continue training."""
    return from_checkpoint(checkpoint.read(path), path, device, xp)


def from_checkpoint(ckpt: checkpoint.Checkpoint, path: str | os.PathLike[str], device: Any, xp: Any) -> MLP:
    """The model that a one-network file read from ``path`` holds, on ``device`` (and ``xp``)."""
    with checkpoint.rebuilding(path, "model"):
        return MLP._from_state_map(ckpt.config, ckpt.tensors, device, xp)
