"""Ensemble: K networks of the same shape trained as one stacked network, each the same computation as a lone MLP.

The members' weights live in (K, P) buffers during ``fit`` and train with one step for all of them
(:class:`gpunn.step.StackedStep`: batched ``matmul`` over weights of shape (K, out, in)), so K small networks
cost the array operations of one. Between fits, ``e.members`` holds K ordinary :class:`gpunn.MLP` objects,
each usable alone: member k is what ``MLP(sizes, seed=seeds[k], dropout=dropouts[k], ...)`` becomes when fitted
alone with member k's settings.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _backend, feed, layers, losses, optim, settings, train
from .. import _validation as check
from ..errors import ConfigError, NotFittedError, OutOfMemoryError
from ..history import History
from ..model import MLP
from . import _loop, _members
from ._io import from_checkpoint, is_ensemble_file, load, save

__all__ = ["Ensemble", "load", "from_checkpoint", "is_ensemble_file"]


def _seeds(seed: Any, k: int) -> list[int]:
    if isinstance(seed, (list, tuple, np.ndarray)):
        if len(seed) != k:
            raise ConfigError(f"seed lists {len(seed)} seeds; the ensemble has {k} members (give one int, or {k})")
        return [check.integer(s, f"seed[{i}]", 0) for i, s in enumerate(seed)]
    first = check.integer(seed, "seed", 0)
    return [first + i for i in range(k)]


def _check_memory(first: MLP, k: int) -> None:
    """K members' weights, before any is drawn: refused with the figure when they cannot fit in the host's
    memory (a lone network's weights are drawn on the host first, then moved to the device)."""
    if first.sizes is None:
        return
    need = k * layers.n_params(first.sizes) * np.dtype(first.dtype).itemsize
    free = _backend.host_memory_available()
    if free is not None and need > free:
        raise OutOfMemoryError(
            f"{k} members of sizes {first.sizes} need {need / 2**30:.2f} GiB for their weights alone, and this "
            f"machine has {free / 2**30:.2f} GiB available: use fewer members or smaller networks"
        )


class Ensemble:
    """K multilayer perceptrons of the same shape, trained together as one stacked network.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths from the input features to the outputs, as for :class:`gpunn.MLP`.
    hidden : sequence of int, optional
        Instead of ``sizes``: the hidden widths alone; the first ``fit`` infers the input and output widths as
        ``MLP(hidden=...)`` does, so that member k trains as it would in ``Ensemble(sizes)``.
    members : int
        K, the number of networks: from 1 to ``gpunn.settings.MAX_MEMBERS`` (65536).
    seed : int or list of K ints
        Member k's seed: ``seed + k``, or the k-th of the list. It draws the member's initial weights, shuffling
        orders and dropout masks exactly as it would for a lone MLP.
    dropout : float or list of K floats
        Every member's dropout rate, or one per member.
    activation, output, loss, device, dtype, xp, standardize, compile
        As for :class:`gpunn.MLP`, shared by every member.
    """

    def __init__(
        self,
        sizes: Sequence[int] | None = None,
        members: int = 5,
        *,
        hidden: Sequence[int] | None = None,
        seed: Any = 0,
        activation: Any = "relu",
        output: str = "sigmoid",
        loss: str | None = None,
        device: Any = "auto",
        dtype: str = "float32",
        xp: Any = None,
        standardize: bool = False,
        compile: Any = "auto",
        dropout: Any = 0.0,
    ):
        k = settings.members(members)
        seeds = _seeds(seed, k)
        rates = settings.per_member(dropout, k, "dropout", settings.dropout_rate)
        kwargs = dict(hidden=hidden, activation=activation, output=output, loss=loss, device=device, dtype=dtype,
                      xp=xp, standardize=standardize, compile=compile)  # fmt: skip
        first = MLP(sizes, seed=seeds[0], dropout=rates[0], **kwargs)  # checks every shared setting once
        _check_memory(first, k)
        kwargs.update(xp=first.xp, device=first.device)
        self.members: list[MLP] = [first] + [
            MLP(sizes, seed=s, dropout=d, **kwargs) for s, d in zip(seeds[1:], rates[1:])
        ]
        self.compile = first.compile
        self.diverged: list[str | None] = [None] * k

    @classmethod
    def from_members(cls, models: Sequence[MLP], *, compile: Any = None) -> Ensemble:
        """An ensemble of existing MLPs (not copied: training the ensemble trains them). They must share their
        widths, activations, output, loss, dtype, namespace, device and standardization."""
        models = list(models)
        if not models or not all(isinstance(m, MLP) for m in models):
            raise ConfigError("from_members takes a non-empty list of gpunn.MLP models")
        m0 = models[0]
        for i, m in enumerate(models[1:], 1):
            for name in ("sizes", "activation", "output", "loss", "dtype", "standardize"):
                if getattr(m, name) != getattr(m0, name):
                    raise ConfigError(f"member {i} has {name} {getattr(m, name)!r}, member 0 {getattr(m0, name)!r}; "
                                      "an ensemble's members share their shape and settings")  # fmt: skip
            if m.xp is not m0.xp or not _backend.same_device(m.device, m0.device):
                raise ConfigError(f"member {i} lives on another namespace or device than member 0; move it with .to()")
        ens = cls.__new__(cls)
        ens.members, ens.diverged = models, [None] * len(models)
        ens.compile = m0.compile if compile is None else train.check_compile(compile, m0.xp)
        return ens

    # ----------------------------------------------------------------------------------------------- state
    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        m = self.members[0]
        return (
            f"Ensemble(sizes={m.sizes}, members={len(self)}, activation={m.activation!r}, output={m.output!r}, "
            f"dtype={m.dtype!r}, xp={_backend.namespace_name(m.xp)}, device={m.device!r})"
        )

    @property
    def xp(self) -> Any:
        return self.members[0].xp

    @property
    def device(self) -> Any:
        return self.members[0].device

    @property
    def sizes(self) -> list[int]:
        return self.members[0].sizes

    @property
    def output(self) -> str:
        return self.members[0].output

    @property
    def classes(self) -> np.ndarray | None:
        """The labels the members were trained on (each member holds the same ``classes``)."""
        return self.members[0].classes

    @property
    def n_features(self) -> int:
        return self.members[0].n_features

    @property
    def n_outputs(self) -> int:
        return self.members[0].n_outputs

    @property
    def dtype(self) -> str:
        return self.members[0].dtype

    @property
    def epoch(self) -> int:
        """The most epochs any member has trained (a member stopped early has trained fewer)."""
        return max(m.epoch for m in self.members)

    @property
    def feature_names(self) -> list[str] | None:
        return self.members[0].feature_names

    @feature_names.setter
    def feature_names(self, names: list[str] | None) -> None:
        for m in self.members:
            m.feature_names = None if names is None else list(names)

    @property
    def encoding(self) -> Any:
        """The members' :class:`~gpunn.feed.encode.Encoding` of a table's columns (one for all), or None."""
        return self.members[0].encoding

    @property
    def target_name(self) -> str | None:
        return self.members[0].target_name

    @target_name.setter
    def target_name(self, name: str | None) -> None:
        for m in self.members:
            m.target_name = name

    @property
    def metadata(self) -> dict[str, Any]:
        """Member 0's notes, which :meth:`save` writes for the ensemble (set a key on every member with
        :meth:`set_metadata`)."""
        return self.members[0].metadata

    def set_metadata(self, key: str, value: Any) -> None:
        """``metadata[key] = value`` on every member."""
        for m in self.members:
            m.metadata[key] = value

    @property
    def seeds(self) -> list[int]:
        """The members' seeds."""
        return [m.seed for m in self.members]

    @property
    def histories(self) -> list[History]:
        """The members' whole histories."""
        return [m.history for m in self.members]

    @property
    def params(self) -> Any:
        """The members' parameters as one stacked (K, P) buffer (a copy), row k laid out as ``members[k].params``."""
        return self.xp.stack([m.params for m in self.members])

    def to(self, device: Any = "auto", xp: Any = None) -> Ensemble:
        """Move every member to another device or namespace; returns the ensemble."""
        for m in self.members:
            m.to(device, xp)
        return self

    # ------------------------------------------------------------------------------------------- training
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        epochs: int = 100,
        lr: Any = 0.1,
        batch_size: int | None = None,
        optimizer: str | optim.Optimizer = "sgd",
        shuffle: bool = True,
        validation_data: tuple[Any, Any] | None = None,
        verbose: int = 1,
        clip_norm: float | None = None,
        callbacks: Any = None,
        l2: Any = 0.0,
        convert: bool = False,
        copy: bool = True,
        weight_decay: Any = None,
        sample_weight: Any = None,
        class_weight: Any = None,
        rows: Any = None,
        on_epoch: Any = None,
        comm: Any = None,
        diverge_factor: float | None = settings.DIVERGE_FACTOR,
        parallel: str = "rows",
    ) -> list[History]:
        """Train every member for ``epochs`` more epochs and return their K :class:`History`.

        Takes :meth:`gpunn.MLP.fit`'s arguments, with these differences:

        lr : float, Schedule, or a list of K of them
            One rate (or schedule) for every member, or one per member. A plateau schedule follows each
            member's own losses.
        l2, weight_decay : float or list of K floats
        sample_weight : array, shape (n,) or (K, n)
            One weight per row for every member, or one row of weights per member (bagging, folds).
        rows : list of K integer arrays, optional
            Member k trains on ``X[rows[k]]`` (indices may repeat: bootstrap samples), as a lone MLP fitted on
            those rows would.
        on_epoch : callable, optional
            Called as ``on_epoch(ensemble, records)`` after every epoch, once every member's callbacks have run,
            with each member holding its state after the epoch (``records[k]`` is member k's record, empty for a
            member that has stopped): where to save a checkpoint of the whole ensemble.
        comm : gpunn.distributed.Communicator, optional
            Train with the other ranks of ``comm``, split as ``parallel`` says.
        parallel : "rows" or "members"
            With ``comm``: "rows" (the default) trains every member on every rank, each rank on its shard of
            every batch, the gradients summed in one allreduce a step, as :meth:`gpunn.MLP.fit` does; "members"
            gives each rank a contiguous slice of the members (sizes differing by at most one; at least one a
            rank) to train on all of their rows with no communication between the steps, and gathers every
            member on every rank at the end. With ``on_epoch`` on some rank, the members are gathered after every
            epoch too, and ``on_epoch`` sees the whole ensemble (see docs/distributed.md).
        callbacks : list of callables, or a list of K lists
            Called as ``callback(member, record)`` after each of a member's epochs; a stateful callback such as
            :class:`gpunn.callbacks.EarlyStopping` is copied for every member. A member whose callback returns
            False stops (keeping what the callback left it, EarlyStopping's best epoch); the fit ends when every
            member has stopped.

        diverge_factor : float or None
            As for :meth:`gpunn.MLP.fit`, member by member. A member whose loss explodes or is not finite stops
            where a lone MLP stops after its ``DivergenceError`` or ``NonFiniteError`` (the weights of the last
            good epoch), is marked in :attr:`diverged` and left out of the ensemble's predictions, with a
            warning naming it; the other members train on. If every member diverges, ``fit`` raises
            :class:`gpunn.DivergenceError`. A diverged member sits out later fits too.

        Member k ends where ``members[k].fit(...)`` with its own settings would have taken it alone (weights,
        optimizer state, shuffling generator and History): the same computation, to 1e-9 in float64 (the stacked
        step sums in another order, so in float32 the two drift apart by rounding; see docs/ensembles.md).
        """
        each_epoch = _members.check(comm, parallel, len(self), on_epoch)  # on every rank, before anything changes
        split = None
        if comm is not None and parallel == "members":
            split = functools.partial(_members.run, comm=comm, each_epoch=each_epoch)
        return _loop.fit(
            self, X, y, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, shuffle=shuffle,
            validation_data=validation_data, verbose=verbose, clip_norm=clip_norm, callbacks=callbacks, l2=l2,
            convert=convert, copy=copy, weight_decay=weight_decay, sample_weight=sample_weight,
            class_weight=class_weight, rows=rows, on_epoch=on_epoch, comm=comm, diverge_factor=diverge_factor,
            split=split,
        )  # fmt: skip

    # ----------------------------------------------------------------------------------------- inference
    def _check_fitted(self) -> None:
        if not all(m.fitted for m in self.members):
            raise NotFittedError("this Ensemble has not been trained yet: call fit() or gpunn.ensemble.load() first")

    @property
    def live(self) -> list[MLP]:
        """The members that did not diverge (:attr:`diverged`): those the ensemble's predictions average."""
        return [m for m, d in zip(self.members, self.diverged) if d is None]

    def decision_function(self, X: Any, *, convert: bool = False) -> Any:
        """The logits of every member that did not diverge (:attr:`live`), shape (K, n, n_outputs), in the
        ensemble's namespace and device."""
        z, n = self._padded_logits(X, convert)
        return feed.predict.unpad(z, n, self.xp, self.device)

    def _padded_logits(self, X: Any, convert: bool) -> tuple[Any, int]:
        self._check_fitted()
        live = self.live
        m0, xp = live[0], self.xp
        X = m0.adopt(X) if check.boolean(convert, "convert") else X
        with _backend.device_scope(xp, self.device):
            if any(not _loop.same_scaling(m.scaling, m0.scaling) for m in live):  # members scaled apart
                z = xp.stack([m.decision_function(X) for m in live])
                return z, z.shape[1]
            return feed.predict.padded_logits(m0.spec, tuple(m.params for m in live), X, m0.scaling)

    def predict_proba(self, X: Any, *, members: bool = False, convert: bool = False) -> Any:
        """The mean of the members' probabilities (values, for regression), shape (n, n_outputs); with
        ``members=True`` every member's, shape (K, n, n_outputs). Members that diverged are left out."""
        p, n = self._padded_proba(X, convert)
        with _backend.device_scope(self.xp, self.device):
            return feed.predict.unpad(p if members else self.xp.mean(p, axis=0), n, self.xp, self.device)

    def _padded_proba(self, X: Any, convert: bool) -> tuple[Any, int]:
        z, n = self._padded_logits(X, convert)
        xp, live = self.xp, self.live
        with _backend.device_scope(xp, self.device):
            p = losses.output_activation(self.output, z, xp)
            if self.output == "identity" and live[0].target_scaling is not None:
                # values in each member's target units, as its predict gives them: (K, 1, outputs) scalings
                scalings: list[Any] = [m.target_scaling for m in live]
                mean, std = (
                    _backend.from_numpy(
                        np.stack([t[j] for t in scalings])[:, None, :].astype(self.dtype), xp, self.device
                    )
                    for j in (0, 1)
                )
                p = p * std + mean
            return p, n

    def predict(self, X: Any, *, return_std: bool = False, convert: bool = False) -> Any:
        """Labels from the mean probabilities (as :meth:`gpunn.MLP.predict` gives them), or for regression the
        members' mean value (n, n_outputs); with ``return_std=True`` (regression) also their standard deviation."""
        xp = self.xp
        if return_std and self.output not in losses.REGRESSION:
            raise ConfigError("return_std is for regression (output 'identity' or 'exp'); for classifiers look at "
                              "predict_proba(X, members=True)")  # fmt: skip
        p, n = self._padded_proba(X, convert)
        with _backend.device_scope(xp, self.device):
            mean = xp.mean(p, axis=0)
            if self.output in losses.REGRESSION:
                if return_std:
                    return tuple(feed.predict.unpad(a, n, xp, self.device) for a in (mean, xp.std(p, axis=0)))
                return feed.predict.unpad(mean, n, xp, self.device)
            index = feed.predict.indices(self.output, mean, 0.5, xp, self.device)
        return feed.predict.labels(self.classes, index, n)

    def evaluate(self, X: Any, y: Any = None, *, members: bool = False, convert: bool = False) -> Any:
        """The ensemble's mean loss and (for classifiers) accuracy on ``(X, y)``, as :meth:`gpunn.MLP.evaluate`
        gives a lone model's: the loss of the members' mean probabilities (cross-entropy, or the squared error of
        the mean value in the target's units) and the accuracy of :meth:`predict`. With ``members=True``, every
        member's own :meth:`gpunn.MLP.evaluate` instead, as a list (diverged members included)."""
        if members:
            return [m.evaluate(X, y, convert=convert) for m in self.members]
        self._check_fitted()
        m0 = self.live[0]
        if check.boolean(convert, "convert"):
            X, y = m0.adopt(X), m0.adopt(y)
        p = self.predict_proba(X)
        spec = dataclasses.replace(m0.spec, target_scaling=None)  # the targets in their own units
        with _backend.device_scope(self.xp, self.device):
            t = _backend.to_numpy(feed.targets(spec, y, p.shape[0]))
        if (m0.output, m0.loss) == ("sigmoid", "binary_crossentropy"):
            t = (1.0 - t) / 2.0  # they come encoded as 1 - 2t (gpunn.losses.encode_targets)
        return feed.predict.score(m0.output, m0.loss, _backend.to_numpy(p), t, float(np.finfo(m0.dtype).eps))

    def to_onnx(
        self, path: str | os.PathLike[str], *, opset: int | None = None, classes: Any = None, nan_label: Any = None
    ) -> str:
        """Write the ensemble as one ONNX graph computing every member that did not diverge, and return the path
        (:func:`gpunn.export.to_onnx` of :func:`gpunn.export.ensemble_network`): outputs ``probabilities`` (or
        ``values``) and ``label`` as :meth:`predict_proba` and :meth:`predict` give them, and ``std``, the members'
        standard deviation: of the values for a regression, of each probability for a classifier."""
        from .. import export

        self._check_fitted()
        network = export.ensemble_network(self.live)
        return export.to_onnx(network, path, opset=opset, classes=classes, nan_label=nan_label)

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write every member (weights, optimizer state, generator, history) to one safetensors file."""
        if self.sizes is None:  # hidden= widths not inferred yet: no weights to write
            self._check_fitted()
        save(self, path)
