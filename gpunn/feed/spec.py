"""The frozen description of a model that the feed layer needs: where its arrays live and what they mean."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import _backend


@dataclass(frozen=True)
class Spec:
    """What checking, scaling and placing data needs to know of a model, and nothing else.

    ``xp`` and ``device`` say where the model's arrays live, ``dtype`` ("float32"/"float64") their precision;
    ``sizes``, ``activation``, ``output`` and ``loss`` say what the network computes; ``feature_names`` (None for plain
    arrays) the columns a data frame is read by, in order; ``standardize`` whether inputs are scaled;
    ``classes`` (None when the labels are the indices 0..k-1 themselves) the labels of a classifier's outputs, which
    its targets are given as; ``target_scaling`` (None for none) the per-output mean and standard deviation a
    regression's targets are standardized by; ``encoding`` (None for none) the :class:`~gpunn.feed.encode.Encoding`
    that turns a table's ``feature_names`` columns into the ``sizes[0]`` inputs."""

    xp: Any
    device: Any
    dtype: str
    sizes: tuple[int, ...]
    output: str
    loss: str
    activation: str | tuple[str, ...] = "relu"
    standardize: bool = False
    feature_names: tuple[str, ...] | None = None
    classes: tuple[Any, ...] | None = None
    target_scaling: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    encoding: Any = None
    label_smoothing: float = 0.0  # a classifier's training targets are smoothed by this (gpunn.losses.smooth_targets)

    @property
    def n_features(self) -> int:
        return self.sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.sizes[-1]

    @property
    def float_dtype(self) -> Any:
        """The model's dtype as an object of its namespace."""
        return _backend.float_dtype(self.xp, self.dtype)

    def __hash__(self) -> int:  # namespaces and devices need not hash: identity is enough for a cache key
        return hash((id(self.xp), self.dtype, self.sizes, self.activation, self.output, self.loss))
