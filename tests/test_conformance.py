"""The conformance matrix: every backend, trained through ``gpunn.MLP(...).fit(...)``, equals a textbook trainer.

The oracle is an independent float64 NumPy trainer written below from the definitions in README.md,
docs/math.md and the docstrings of ``MLP.fit``: forward pass, per-row losses, backpropagation by hand, L2,
clipping by global norm, sample and class weights, the five optimizers, the learning-rate schedules,
standardization and the shuffling order. It shares no code with gpunn: only the initial weights of a freshly
built model are taken from gpunn (``numpy_weights()``; every backend must start from those same numbers, bit
for bit), and the shuffling orders are drawn from the stream gpunn draws them from, reproduced here from the
seed with numpy.random (:func:`shuffle_generator`, pinned by ``test_the_reference_draws_gpunn_s_shuffling_stream``).
The reference itself is checked against torch autograd (gradients and losses) and ``torch.optim`` (updates).

The option values form a covering design rather than the full product: ``CONFIGS`` below is a fixed list of 60
configurations in which every pair of option values (of any two options) meets at least once
(``test_every_pair_of_option_values_meets``); each configuration trains a 4-6-5-k network on 48 rows for 3
epochs on every namespace and device of the ``backend`` fixture (JAX: the 20 of ``JAX_CONFIGS``), and must
reproduce the reference's weights and per-epoch History (loss, accuracy, val_loss, val_accuracy, weighted_loss,
lr) within 1e-9 in float64.

Dropout: the reference applies a multiplier per hidden layer from a hook, ``masks(layer, step, shape)``;
:func:`dropout_masks` builds gpunn's inverted-dropout masks from the hash's definition, written here
(:func:`dropout_hash`), for hidden layer ``layer`` at optimizer step ``step`` for the global batch's ``shape``.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pytest

import gpunn
from gpunn import _backend, schedules

# ============================================================================================ the configurations
# Every option and its values. "mixed" is a per-layer list of hidden activations (MIXED).
OPTIONS: dict[str, tuple[str, ...]] = {
    "activation": ("relu", "tanh", "sigmoid", "identity", "leaky_relu", "elu", "gelu", "silu", "softplus", "mixed"),
    "head": ("bce", "multilabel", "softmax", "mse", "sigmoid_mse"),
    "optimizer": ("sgd", "momentum", "nesterov", "adam", "adamw"),
    "batching": ("full", "shuffled", "ordered"),
    "l2": ("none", "l2"),
    "clip": ("none", "clip"),
    "weights": ("none", "sample", "class", "both"),
    "schedule": ("constant", "step", "cosine"),
    "standardize": ("raw", "standardized"),
    "validation": ("none", "val"),
    "dropout": ("none", "dropout"),
}
DROPOUT = 0.3
MIXED = ["sigmoid", "relu"]  # one activation per hidden layer: a tanh-form one, then a masked one
# head: (output, loss, outputs k). "multilabel" is sigmoid + binary cross-entropy over 3 independent labels.
HEADS = {
    "bce": ("sigmoid", "binary_crossentropy", 1),
    "multilabel": ("sigmoid", "binary_crossentropy", 3),
    "softmax": ("softmax", "categorical_crossentropy", 3),
    "mse": ("identity", "mse", 3),
    "sigmoid_mse": ("sigmoid", "mse", 1),
}
LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 0.01, "adamw": 0.01}  # the base rate per optimizer
WEIGHT_DECAY = 0.1  # AdamW's, passed explicitly
L2 = 0.1
CLIP = 0.1  # below most gradient norms of these problems: the clipping branch runs (checked by the test)
# shuffled: 20 rows per batch, so each epoch ends with a shuffled remainder batch of 8; ordered: 3 batches of 16
BATCH_SIZE = {"full": None, "shuffled": 20, "ordered": 16}
EPOCHS = 3
ROWS, VAL_ROWS, FEATURES = 48, 20, 4
HIDDEN_UNITS = [6, 5]


def class_weights_allowed(head: str) -> bool:
    """class_weight needs one class label per row: not for regression nor multi-label."""
    return head not in ("mse", "multilabel")


class Config(NamedTuple):
    activation: str
    head: str
    optimizer: str
    batching: str
    l2: str
    clip: str
    weights: str
    schedule: str
    standardize: str
    validation: str
    dropout: str = "none"


# A covering design of strength 2, made by a greedy search: the 50 (activation, head) pairs (the largest two
# options, 10 x 5) each once; the optimizer in a Latin square over them (optimizer = activation index + head
# index, mod 5), so it meets every activation and every head; the other options chosen row by row to meet every
# value they had not met yet. Pairs of class weights with regression or multi-label targets are impossible
# (class_weights_allowed) and are not asked for.
CONFIGS = [Config(*c) for c in [
    ("relu", "bce", "sgd", "ordered", "l2", "none", "sample", "step", "raw", "none"),
    ("relu", "multilabel", "momentum", "shuffled", "none", "clip", "none", "cosine", "standardized", "val"),
    ("relu", "softmax", "nesterov", "full", "none", "none", "both", "constant", "standardized", "none"),
    ("relu", "mse", "adam", "ordered", "none", "clip", "sample", "constant", "raw", "val"),
    ("relu", "sigmoid_mse", "adamw", "full", "l2", "clip", "class", "cosine", "raw", "val"),
    ("tanh", "bce", "momentum", "full", "none", "none", "class", "step", "standardized", "val"),
    ("tanh", "multilabel", "nesterov", "ordered", "l2", "clip", "none", "constant", "raw", "none"),
    ("tanh", "softmax", "adam", "shuffled", "l2", "none", "both", "cosine", "raw", "none"),
    ("tanh", "mse", "adamw", "shuffled", "l2", "none", "none", "step", "standardized", "none"),
    ("tanh", "sigmoid_mse", "sgd", "shuffled", "none", "none", "sample", "constant", "standardized", "val"),
    ("sigmoid", "bce", "nesterov", "shuffled", "none", "clip", "both", "step", "raw", "val"),
    ("sigmoid", "multilabel", "adam", "full", "l2", "none", "sample", "step", "standardized", "none"),
    ("sigmoid", "softmax", "adamw", "ordered", "none", "clip", "class", "constant", "standardized", "val"),
    ("sigmoid", "mse", "sgd", "full", "none", "clip", "none", "cosine", "raw", "val"),
    ("sigmoid", "sigmoid_mse", "momentum", "ordered", "l2", "clip", "both", "step", "raw", "none"),
    ("identity", "bce", "adam", "ordered", "none", "clip", "none", "cosine", "standardized", "none"),
    ("identity", "multilabel", "adamw", "full", "l2", "none", "sample", "constant", "raw", "val"),
    ("identity", "softmax", "sgd", "shuffled", "none", "none", "class", "step", "standardized", "none"),
    ("identity", "mse", "momentum", "shuffled", "none", "clip", "sample", "constant", "raw", "none"),
    ("identity", "sigmoid_mse", "nesterov", "shuffled", "l2", "clip", "both", "cosine", "raw", "val"),
    ("leaky_relu", "bce", "adamw", "shuffled", "l2", "clip", "both", "constant", "standardized", "val"),
    ("leaky_relu", "multilabel", "sgd", "ordered", "none", "none", "none", "step", "raw", "none"),
    ("leaky_relu", "softmax", "momentum", "full", "none", "none", "sample", "cosine", "raw", "val"),
    ("leaky_relu", "mse", "nesterov", "shuffled", "none", "none", "sample", "step", "raw", "none"),
    ("leaky_relu", "sigmoid_mse", "adam", "ordered", "l2", "none", "class", "constant", "raw", "none"),
    ("elu", "bce", "sgd", "shuffled", "l2", "clip", "both", "constant", "standardized", "val"),
    ("elu", "multilabel", "momentum", "full", "none", "none", "none", "step", "raw", "none"),
    ("elu", "softmax", "nesterov", "ordered", "none", "none", "class", "cosine", "raw", "val"),
    ("elu", "mse", "adam", "ordered", "l2", "clip", "sample", "constant", "standardized", "val"),
    ("elu", "sigmoid_mse", "adamw", "ordered", "none", "none", "none", "step", "standardized", "none"),
    ("gelu", "bce", "momentum", "shuffled", "l2", "none", "sample", "constant", "standardized", "none"),
    ("gelu", "multilabel", "nesterov", "full", "none", "clip", "none", "cosine", "raw", "val"),
    ("gelu", "softmax", "adam", "ordered", "none", "none", "class", "step", "raw", "none"),
    ("gelu", "mse", "adamw", "full", "l2", "clip", "sample", "constant", "standardized", "none"),
    ("gelu", "sigmoid_mse", "sgd", "ordered", "none", "clip", "both", "cosine", "standardized", "val"),
    ("silu", "bce", "nesterov", "full", "l2", "clip", "both", "cosine", "standardized", "val"),
    ("silu", "multilabel", "adam", "ordered", "none", "none", "none", "step", "raw", "none"),
    ("silu", "softmax", "adamw", "shuffled", "none", "clip", "none", "constant", "raw", "val"),
    ("silu", "mse", "sgd", "ordered", "none", "none", "sample", "cosine", "raw", "val"),
    ("silu", "sigmoid_mse", "momentum", "ordered", "none", "clip", "class", "step", "standardized", "val"),
    ("softplus", "bce", "adam", "shuffled", "none", "clip", "none", "cosine", "standardized", "val"),
    ("softplus", "multilabel", "adamw", "full", "l2", "none", "sample", "constant", "raw", "none"),
    ("softplus", "softmax", "sgd", "ordered", "none", "clip", "both", "step", "raw", "val"),
    ("softplus", "mse", "momentum", "shuffled", "none", "clip", "sample", "cosine", "raw", "val"),
    ("softplus", "sigmoid_mse", "nesterov", "shuffled", "l2", "clip", "class", "step", "standardized", "none"),
    ("mixed", "bce", "adamw", "shuffled", "l2", "none", "none", "constant", "raw", "val"),
    ("mixed", "multilabel", "sgd", "ordered", "none", "clip", "sample", "cosine", "standardized", "none"),
    ("mixed", "softmax", "momentum", "full", "none", "none", "both", "step", "raw", "val"),
    ("mixed", "mse", "nesterov", "full", "l2", "clip", "none", "step", "raw", "val"),
    ("mixed", "sigmoid_mse", "adam", "shuffled", "l2", "none", "class", "cosine", "standardized", "none"),
]]  # fmt: skip
# Dropout: the 50 above run without it; these 10 run with it and between them take every value of every other
# option, so that dropout meets each (class weights only with heads that allow them).
CONFIGS += [Config(*c, dropout="dropout") for c in [
    ("relu", "bce", "adam", "shuffled", "l2", "clip", "class", "constant", "raw", "val"),
    ("tanh", "multilabel", "adamw", "full", "none", "none", "none", "step", "raw", "none"),
    ("sigmoid", "softmax", "sgd", "ordered", "l2", "clip", "both", "cosine", "standardized", "val"),
    ("identity", "mse", "momentum", "shuffled", "none", "none", "sample", "constant", "standardized", "none"),
    ("leaky_relu", "sigmoid_mse", "nesterov", "full", "l2", "clip", "sample", "step", "raw", "val"),
    ("elu", "bce", "adam", "ordered", "none", "none", "both", "cosine", "raw", "none"),
    ("gelu", "multilabel", "adamw", "shuffled", "l2", "clip", "sample", "constant", "standardized", "val"),
    ("silu", "softmax", "sgd", "full", "none", "none", "class", "step", "standardized", "none"),
    ("softplus", "mse", "momentum", "ordered", "l2", "clip", "none", "cosine", "raw", "val"),
    ("mixed", "sigmoid_mse", "nesterov", "shuffled", "none", "none", "none", "constant", "raw", "none"),
]]  # fmt: skip


def config_id(i: int, cfg: Config) -> str:
    return f"{i:02d}-" + "-".join(cfg)


def seed_of(cfg: Config) -> int:
    """The model seed of a configuration (each its own)."""
    return CONFIGS.index(cfg) + 100


# ============================================================================================== the data
@dataclass
class Problem:
    X: np.ndarray  # (ROWS, FEATURES)
    y: np.ndarray  # labels (n,) or (n, k) 0/1, or values (n, k)
    X_val: np.ndarray
    y_val: np.ndarray
    sample_weight: np.ndarray | None = None
    class_weight: dict[int, float] | str | None = None


def _rounded(a: np.ndarray) -> np.ndarray:
    """Values a float32 model holds exactly, so float32 (GPU) runs see the data the float64 reference sees."""
    return a.astype(np.float32).astype(np.float64)


def _draw(rng: np.random.Generator, n: int, head: str) -> tuple[np.ndarray, np.ndarray]:
    # Features off-centre and of different scales, so that standardize=True changes something.
    X = _rounded(rng.normal(size=(n, FEATURES)) * [1.0, 2.0, 0.5, 1.5] + [0.5, -1.0, 0.0, 2.0])
    u = X[:, 0] - 0.5 * X[:, 1] * X[:, 2] + 0.3 * (X[:, 3] - 2.0)
    if head in ("bce", "sigmoid_mse"):
        y = (u > 0.8).astype(np.int64)  # unbalanced, so "balanced" class weights differ from 1
    elif head == "multilabel":
        y = np.stack([u > 0.8, X[:, 1] > -1.0, X[:, 0] * X[:, 3] > 1.0], axis=1).astype(np.int64)
    elif head == "softmax":
        y = np.digitize(u, [0.0, 1.5]).astype(np.int64)
    else:
        y = _rounded(np.stack([np.sin(u), 0.5 * X[:, 1], X[:, 0] * X[:, 2]], axis=1))
    return X, y


@functools.cache
def problem(head: str, weights: str) -> Problem:
    rng = np.random.default_rng(2024)
    X, y = _draw(rng, ROWS, head)
    X_val, y_val = _draw(rng, VAL_ROWS, head)
    p = Problem(X, y, X_val, y_val)
    if weights in ("sample", "both"):
        p.sample_weight = 0.5 + 0.5 * (np.arange(ROWS) % 4)  # 0.5, 1, 1.5, 2, ...
    if weights == "class":
        p.class_weight = {0: 0.5, 2: 2.0} if head == "softmax" else {0: 1.0, 1: 2.5}  # class 1 of softmax: 1
    elif weights == "both":
        p.class_weight = "balanced"
    return p


# ============================================================================================ the reference
# Hidden activations g and their derivatives g', as functions of the pre-activation z, from their definitions.
def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


GELU_C = np.sqrt(2.0 / np.pi)


def gelu(z: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation: z/2 (1 + tanh(c (z + 0.044715 z^3)))."""
    return 0.5 * z * (1.0 + np.tanh(GELU_C * (z + 0.044715 * z**3)))


def gelu_prime(z: np.ndarray) -> np.ndarray:
    t = np.tanh(GELU_C * (z + 0.044715 * z**3))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t**2) * GELU_C * (1.0 + 3 * 0.044715 * z**2)


ACTIVATIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: np.where(z > 0, 1.0, 0.0)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "sigmoid": (sigmoid, lambda z: sigmoid(z) * (1.0 - sigmoid(z))),
    "identity": (lambda z: z, np.ones_like),
    "leaky_relu": (lambda z: np.where(z > 0, z, 0.01 * z), lambda z: np.where(z > 0, 1.0, 0.01)),
    "elu": (lambda z: np.where(z > 0, z, np.exp(np.minimum(z, 0.0)) - 1.0), lambda z: np.exp(np.minimum(z, 0.0))),
    "gelu": (gelu, gelu_prime),
    "silu": (lambda z: z * sigmoid(z), lambda z: sigmoid(z) * (1.0 + z * (1.0 - sigmoid(z)))),
    "softplus": (lambda z: np.log(1.0 + np.exp(z)), sigmoid),
}


def row_losses(output: str, loss: str, z: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row losses l_i (an element-wise loss is averaged over the row's k outputs) and dl_i/dz_i, (m, k).

    T holds the targets as an (m, k) matrix: 0/1 labels, one-hot rows (softmax) or values."""
    k = z.shape[1]
    if output == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        return -np.sum(T * np.log(p), axis=1), p - T
    if output == "identity":
        return np.mean((z - T) ** 2, axis=1), 2.0 * (z - T) / k
    p = sigmoid(z)
    if loss == "mse":
        return np.mean((p - T) ** 2, axis=1), 2.0 * (p - T) * p * (1.0 - p) / k
    return np.mean(-(T * np.log(p) + (1.0 - T) * np.log(1.0 - p)), axis=1), (p - T) / k


def correct_predictions(output: str, z: np.ndarray, T: np.ndarray) -> int | None:
    """Correct labels: argmax for softmax, p > 1/2 per output for sigmoid; None for regression."""
    if output == "identity":
        return None
    if output == "softmax":
        return int(np.sum(np.argmax(z, axis=1) == np.argmax(T, axis=1)))
    return int(np.sum((sigmoid(z) > 0.5) == (T > 0.5)))


MaskHook = Callable[[int, int, tuple[int, int]], "np.ndarray | None"]


M31 = 2**31 - 1


def dropout_hash(x: Any, key: int) -> Any:
    """gpunn's dropout hash by its definition (gpunn/dropout.py's docstring), on Python ints or int64 arrays, with
    the plain product modulo 2**31 - 1 (no overflow in int64)."""
    x = x ^ key
    for _ in range(3):
        x = ((48271 * (x ^ (x >> 15))) % M31) ^ key
    return x


def dropout_masks(seed: int, rate: float) -> MaskHook:
    """The hook of a model of ``seed`` with dropout ``rate``: the hidden layers' units side by side (H of them),
    element (r, c) of the batch's (rows, H) table kept when its hash under the step's key reaches rate * M31."""
    seed_key = int(np.random.SeedSequence(seed, spawn_key=(2,)).generate_state(1, np.uint32)[0]) >> 1
    width = sum(HIDDEN_UNITS)
    offsets = np.cumsum([0, *HIDDEN_UNITS])

    def hook(layer: int, step: int, shape: tuple[int, int]) -> np.ndarray | None:
        rows, units = shape
        position = np.arange(rows * width, dtype=np.int64).reshape(rows, width)
        keep = dropout_hash(position, dropout_hash(step, seed_key)) >= round(rate * M31)
        return keep[:, offsets[layer] : offsets[layer] + units] / (1.0 - rate)

    return hook


def no_dropout(layer: int, step: int, shape: tuple[int, int]) -> np.ndarray | None:
    """The dropout hook's default: no multiplier on hidden layer ``layer`` at optimizer step ``step``.

    A hook returns the (rows, units) = ``shape`` multiplier of hidden layer ``layer``'s outputs (0-based) for
    the batch of optimizer step ``step`` (0-based, counted over every fit of the model): 0 where a unit is
    dropped, 1 / (1 - rate) where it is kept (inverted dropout); or None for no dropout."""
    return None


@dataclass
class Network:
    """Layers [(W, b), ...], W of shape (out, in), and one hidden activation name per hidden layer."""

    layers: list[list[np.ndarray]]
    activations: list[str]

    def forward(self, x: np.ndarray, masks: list[np.ndarray | None] | None = None):
        """Logits, and what backprop needs: every layer's input A_{l-1}, every hidden Z_l and its mask."""
        masks = masks or [None] * len(self.activations)
        inputs, zs = [x], []
        a = x
        for (W, b), name, mask in zip(self.layers[:-1], self.activations, masks):
            z = a @ W.T + b
            a = ACTIVATIONS[name][0](z)
            if mask is not None:
                a = a * mask
            zs.append(z)
            inputs.append(a)
        W, b = self.layers[-1]
        return a @ W.T + b, inputs, zs

    def backward(self, delta: np.ndarray, inputs, zs, masks=None) -> list[list[np.ndarray]]:
        """[[dW, db], ...] from delta = dJ/dZ_L by the chain rule."""
        masks = masks or [None] * len(self.activations)
        grads: list[list[np.ndarray]] = [[]] * len(self.layers)
        for i in reversed(range(len(self.layers))):
            grads[i] = [delta.T @ inputs[i], delta.sum(axis=0)]
            if i > 0:
                d_a = delta @ self.layers[i][0]
                if masks[i - 1] is not None:
                    d_a = d_a * masks[i - 1]
                delta = d_a * ACTIVATIONS[self.activations[i - 1]][1](zs[i - 1])
        return grads

    def weight_squares(self) -> float:
        return float(sum(np.sum(W**2) for W, _ in self.layers))


@dataclass
class BatchResult:
    grads: list[list[np.ndarray]]
    loss_sum: float  # sum of the rows' losses l_i (unweighted)
    weighted_sum: float  # sum of w_i l_i
    penalty: float  # l2 / 2 * sum(W^2)
    correct: int | None


def batch_gradients(net: Network, x, T, w, output, loss, l2, masks=None) -> BatchResult:
    """The gradients of the batch's objective J = sum(w_i l_i) / sum(w_i) + l2 / (2 sum(w_i)) * sum(W^2)
    (w_i = 1 without sample weights: the mean loss plus scikit-learn's alpha penalty)."""
    z, inputs, zs = net.forward(x, masks)
    losses, d_losses = row_losses(output, loss, z, T)
    total = w.sum()
    grads = net.backward(w[:, None] * d_losses / total, inputs, zs, masks)
    for (dW, _), (W, _) in zip(grads, net.layers):
        dW += (l2 / total) * W
    penalty = 0.5 * l2 * net.weight_squares()
    correct = correct_predictions(output, z, T)
    return BatchResult(grads, float(losses.sum()), float((w * losses).sum()), penalty, correct)


def clip_by_global_norm(grads: list[list[np.ndarray]], max_norm: float) -> tuple[list[list[np.ndarray]], bool]:
    norm = np.sqrt(sum(np.sum(g**2) for pair in grads for g in pair))
    if norm <= max_norm:
        return grads, False
    return [[g * (max_norm / norm) for g in pair] for pair in grads], True


class Optimizer:
    """The textbook updates, one parameter array at a time, state kept across epochs (and fit calls)."""

    def __init__(self, name: str, weight_decay: float = 0.0, beta=0.9, beta1=0.9, beta2=0.999, eps=1e-8):
        self.name, self.weight_decay = name, weight_decay
        self.beta, self.beta1, self.beta2, self.eps = beta, beta1, beta2, eps
        self.t = 0
        self.slots: dict[int, dict[str, np.ndarray]] = {}

    def update(self, params: list[np.ndarray], grads: list[np.ndarray], lr: float) -> None:
        """Update ``params`` in place along ``grads`` (the objective's gradients)."""
        self.t += 1
        for i, (p, g) in enumerate(zip(params, grads)):
            s = self.slots.setdefault(i, {"v": np.zeros_like(p), "m": np.zeros_like(p)})
            if self.name == "sgd":
                p -= lr * g
            elif self.name in ("momentum", "nesterov"):  # v <- beta v - lr g; p <- p + v (Nesterov: + beta v - lr g)
                s["v"] = self.beta * s["v"] - lr * g
                p += self.beta * s["v"] - lr * g if self.name == "nesterov" else s["v"]
            else:  # Adam (torch.optim.Adam); AdamW first decays every parameter: p <- p (1 - lr wd)
                if self.name == "adamw":
                    p *= 1.0 - lr * self.weight_decay
                s["m"] = self.beta1 * s["m"] + (1.0 - self.beta1) * g
                s["v"] = self.beta2 * s["v"] + (1.0 - self.beta2) * g**2
                m_hat = s["m"] / (1.0 - self.beta1**self.t)
                v_hat = s["v"] / (1.0 - self.beta2**self.t)
                p -= lr * m_hat / (np.sqrt(v_hat) + self.eps)


def learning_rate(schedule: tuple, epoch: int) -> float:
    """The rate of ``epoch`` (0-based, counted from the model's first fit) of a schedule description."""
    kind, lr, *args = schedule
    if kind == "constant":
        return lr
    if kind == "step":  # lr * gamma ** (epoch // every)
        every, gamma = args
        return lr * gamma ** (epoch // every)
    epochs, warmup, final = args  # cosine: linear warm-up to lr over `warmup` epochs, then a half cosine to `final`
    if epoch < warmup:
        return lr * (epoch + 1) / warmup
    progress = min(1.0, (epoch - warmup) / max(1, epochs - warmup))
    return final + (lr - final) * (1.0 + np.cos(np.pi * progress)) / 2.0


def shuffle_generator(seed: int) -> np.random.Generator:
    """The generator of gpunn's shuffling orders: a model's seed spawns two SeedSequence children, the first
    for the initial weights and the second for shuffling; each shuffled epoch draws ``permutation(n)`` from it
    (only when there is more than one batch)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])


def standardization(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's mean and (population) standard deviation, a deviation of 0 replaced by 1."""
    std = X.std(axis=0)
    return X.mean(axis=0), np.where(std > 0, std, 1.0)


def target_matrix(output: str, k: int, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if output == "softmax":
        return np.eye(k)[y.reshape(-1)]
    return y.reshape(len(y), k).astype(np.float64)


def row_weights(p: Problem) -> np.ndarray:
    """sample_weight times the class weight of each row's label ("balanced": n / (classes * count))."""
    w = np.ones(len(p.X)) if p.sample_weight is None else p.sample_weight.astype(np.float64)
    if p.class_weight is not None:
        labels = np.asarray(p.y).reshape(-1)
        if p.class_weight == "balanced":
            present, counts = np.unique(labels, return_counts=True)
            table = {c: len(labels) / (len(present) * n) for c, n in zip(present, counts)}
        else:
            table = p.class_weight
        w = w * np.array([table.get(c, 1.0) for c in labels])
    return w


@dataclass
class Spec:
    """What reference_fit trains: the network and the fit arguments, as plain descriptions."""

    activations: list[str]
    output: str
    loss: str
    k: int
    optimizer: str
    schedule: tuple
    epochs: int = EPOCHS
    batch_size: int | None = None
    shuffle: bool = True
    l2: float = 0.0
    clip_norm: float | None = None
    weight_decay: float = 0.0
    standardize: bool = False
    validation: bool = False  # record val_loss (and val_accuracy) on the problem's validation rows


@dataclass
class Result:
    layers: list[list[np.ndarray]]
    history: dict[str, list[float]]
    clipped_steps: int = 0  # steps whose gradients clip_norm rescaled
    initial: list[list[np.ndarray]] = field(default_factory=list)


def reference_fit(
    spec: Spec, initial: list[tuple[np.ndarray, np.ndarray]], p: Problem, seed: int, masks: MaskHook = no_dropout
) -> Result:
    """Train from ``initial`` weights on ``p`` as ``MLP.fit`` is documented to, in float64, and record History.
    A standardizing model scales the features, and a standardizing regression its target too (History's losses
    are then in the standardized target's units).

    History per epoch: ``loss`` is the batches' unweighted objectives (mean loss plus l2 / (2 m_b) sum(W^2)),
    each at the parameters its batch saw, averaged with weights m_b / n; ``accuracy`` the fraction of correct
    labels counted likewise; ``weighted_loss`` (with sample or class weights) the weighted objectives J_b
    averaged with weights sum_b(w) / sum(w); ``val_loss`` / ``val_accuracy`` the plain mean loss and accuracy
    on the validation data after the epoch; ``lr`` the epoch's rate.
    """
    net = Network([[np.array(W, np.float64), np.array(b, np.float64)] for W, b in initial], spec.activations)
    X, X_val = p.X.astype(np.float64), p.X_val.astype(np.float64)
    if spec.standardize:
        mean, std = standardization(X)
        X, X_val = (X - mean) / std, (X_val - mean) / std
    T, T_val = target_matrix(spec.output, spec.k, p.y), target_matrix(spec.output, spec.k, p.y_val)
    if spec.standardize and spec.output == "identity":  # a standardizing regression trains on its target scaled
        t_mean, t_std = standardization(T)
        T, T_val = (T - t_mean) / t_std, (T_val - t_mean) / t_std
    w = row_weights(p)
    weighted = p.sample_weight is not None or p.class_weight is not None
    n = len(X)
    bs = n if spec.batch_size is None else min(spec.batch_size, n)
    labels_per_row = spec.k if spec.output == "sigmoid" else 1
    opt = Optimizer(spec.optimizer, spec.weight_decay)
    rng = shuffle_generator(seed)
    history: dict[str, list[float]] = {key: [] for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr")}
    history["weighted_loss"] = []
    result = Result(net.layers, history, initial=[[np.array(a) for a in pair] for pair in initial])
    for epoch in range(spec.epochs):
        lr = learning_rate(spec.schedule, epoch)
        order = rng.permutation(n) if spec.shuffle and bs < n else np.arange(n)
        loss_total = weighted_total = 0.0
        correct = 0
        for start in range(0, n, bs):
            rows = order[start : start + bs]
            step = opt.t
            units = [W.shape[0] for W, _ in net.layers[:-1]]
            batch_masks = [masks(i, step, (len(rows), u)) for i, u in enumerate(units)]
            b = batch_gradients(net, X[rows], T[rows], w[rows], spec.output, spec.loss, spec.l2, batch_masks)
            loss_total += b.loss_sum + b.penalty  # m_b * (mean loss + l2 / (2 m_b) sum W^2)
            weighted_total += b.weighted_sum + b.penalty  # sum_b(w) * J_b
            correct += b.correct or 0
            grads = b.grads
            if spec.clip_norm is not None:
                grads, clipped = clip_by_global_norm(grads, spec.clip_norm)
                result.clipped_steps += clipped
            opt.update([a for pair in net.layers for a in pair], [g for pair in grads for g in pair], lr)
        history["loss"].append(loss_total / n)
        if weighted:
            history["weighted_loss"].append(weighted_total / w.sum())
        if spec.output != "identity":
            history["accuracy"].append(correct / (n * labels_per_row))
        if spec.validation:
            z_val, _, _ = net.forward(X_val)
            history["val_loss"].append(float(np.mean(row_losses(spec.output, spec.loss, z_val, T_val)[0])))
            if spec.output != "identity":
                val_correct = correct_predictions(spec.output, z_val, T_val)
                history["val_accuracy"].append(val_correct / (len(X_val) * labels_per_row))
        history["lr"].append(lr)
    return result


# =============================================================================== configurations as arguments
def schedule_description(cfg: Config) -> tuple:
    lr = LR[cfg.optimizer]
    return {
        "constant": ("constant", lr),
        "step": ("step", lr, 1, 0.5),  # halved every epoch
        "cosine": ("cosine", lr, 3, 1, 0.1 * lr),  # 1 warm-up epoch, then from lr down to lr / 10 at epoch 3
    }[cfg.schedule]


def gpunn_schedule(description: tuple) -> Any:
    kind, lr, *args = description
    if kind == "constant":
        return lr
    if kind == "step":
        return schedules.step(lr, every=args[0], gamma=args[1])
    return schedules.cosine(lr, args[0], warmup=args[1], final=args[2])


def spec_of(cfg: Config) -> Spec:
    output, loss, k = HEADS[cfg.head]
    activations = MIXED if cfg.activation == "mixed" else [cfg.activation] * len(HIDDEN_UNITS)
    return Spec(
        activations, output, loss, k, cfg.optimizer, schedule_description(cfg),
        batch_size=BATCH_SIZE[cfg.batching], shuffle=cfg.batching != "ordered",
        l2=L2 if cfg.l2 == "l2" else 0.0, clip_norm=CLIP if cfg.clip == "clip" else None,
        weight_decay=WEIGHT_DECAY if cfg.optimizer == "adamw" else 0.0, standardize=cfg.standardize == "standardized",
        validation=cfg.validation == "val",
    )  # fmt: skip


def model_kwargs(cfg: Config) -> dict[str, Any]:
    output, loss, k = HEADS[cfg.head]
    return {
        "sizes": [FEATURES, *HIDDEN_UNITS, k], "activation": MIXED if cfg.activation == "mixed" else cfg.activation,
        "output": output, "loss": loss, "seed": seed_of(cfg), "standardize": cfg.standardize == "standardized",
        "dropout": DROPOUT if cfg.dropout == "dropout" else 0.0,
    }  # fmt: skip


def fit_kwargs(cfg: Config) -> dict[str, Any]:
    p, spec = problem(cfg.head, cfg.weights), spec_of(cfg)
    return {
        "epochs": spec.epochs, "lr": gpunn_schedule(spec.schedule), "batch_size": spec.batch_size,
        "optimizer": cfg.optimizer, "shuffle": spec.shuffle, "l2": spec.l2, "clip_norm": spec.clip_norm,
        "weight_decay": WEIGHT_DECAY if cfg.optimizer == "adamw" else None,
        "sample_weight": None if p.sample_weight is None else p.sample_weight.copy(), "class_weight": p.class_weight,
        "validation_data": (p.X_val.copy(), p.y_val.copy()) if cfg.validation == "val" else None, "verbose": 0,
    }  # fmt: skip


def ref_problem_X(cfg: Config) -> np.ndarray:
    return problem(cfg.head, cfg.weights).X.copy()  # fit never gets the cached arrays themselves


def labels_per_evaluation(cfg: Config) -> tuple[int, int]:
    """Labels behind an accuracy (training rows, validation rows): one per output for sigmoid, else one."""
    output, _, k = HEADS[cfg.head]
    per_row = k if output == "sigmoid" else 1
    return ROWS * per_row, VAL_ROWS * per_row


@functools.cache
def reference(cfg: Config, dtype: str) -> Result:
    """The reference run of ``cfg``, from the initial weights of a fresh NumPy model of ``dtype``."""
    initial = gpunn.MLP(**model_kwargs(cfg), device="cpu", dtype=dtype).numpy_weights()
    masks = dropout_masks(seed_of(cfg), DROPOUT) if cfg.dropout == "dropout" else no_dropout
    return reference_fit(spec_of(cfg), initial, problem(cfg.head, cfg.weights), seed_of(cfg), masks)


# ============================================================================================ the comparison
@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These matrices are tiny: torch's OpenMP workers only wait for each other, and on a busy 2-core machine
    that wait made a 4 ms fit take 0.6 s. One intra-op thread while this module runs; restored after."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# float64 on CPU namespaces: the two trainers compute the same quantities in different orders, so they agree to a
# few units in the last place (about 1e-15); 1e-9 leaves room for 9 steps of growth and catches any real
# difference of definition.
FLOAT64_TOL = 1e-9
# float32 on a GPU (CuPy, torch CUDA), against the float64 reference started from the same (float32) initial
# weights and data: with u = 2**-24 = 6e-8, each sum of at most 48 products (dW over a full batch's rows; 4 to 6
# terms elsewhere) carries a relative error of at most 48 u = 3e-6 in any summation order (cuBLAS's included), and
# the 6 sums chained through a step (3 layers forward, 3 back) give at most about 2e-5 relative on a gradient. A
# step moves a weight by at most about 0.5 here (SGD at lr 0.1 on O(1) gradients; momentum's velocity sums at most
# 1 / (1 - 0.9) = 10 of them at lr 0.05; Adam's step is at most lr = 0.01 per coordinate), so 9 steps accumulate
# at most about 9 x 0.5 x 2e-5 = 1e-4 on a weight, besides the float32 rounding of the weights and data (6e-8
# relative). Losses and rates are O(1): the same absolute bound holds for them. The tolerance is twice that
# bound; float32 on the CPU (NumPy, torch) stays within 4e-7 of the reference on the weights and 9e-7 on History
# (test_float32_on_the_cpu_stays_well_within_the_gpu_tolerance). TF32 (u = 2**-11, which gpunn leaves to the
# user, off by default in CuPy and PyTorch) would break the bound and fail the test, as it should. Accuracies
# may differ by one label per evaluation: a logit within that error of 0 may fall on either side.
FLOAT32_TOL = 2e-4


def _host(pairs: Any) -> list[np.ndarray]:
    return [_backend.to_numpy(a).astype(np.float64) for pair in pairs for a in pair]


def assert_matches(got_layers, got_history: dict[str, list[float]], ref: Result, tol: float, rows: tuple[int, int]):
    for i, (a, b) in enumerate(zip(_host(got_layers), [a for pair in ref.layers for a in pair])):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"parameter array {i} ([W1, b1, W2, ...])")
    for key, expected in ref.history.items():
        got = got_history[key]
        assert len(got) == len(expected), f"History.{key} has {len(got)} epochs; the reference {len(expected)}"
        if key.endswith("accuracy") and tol > FLOAT64_TOL:  # float32: a logit within the error of 0 may flip
            n_labels = rows[key.startswith("val")]
            np.testing.assert_allclose(got, expected, rtol=0, atol=1.0 / n_labels + 1e-12, err_msg=f"History.{key}")
        else:
            np.testing.assert_allclose(got, expected, rtol=tol, atol=tol, err_msg=f"History.{key}")


# JAX compiles each configuration's programs (a second or more each: most of this matrix's time), traced from the
# functions every namespace runs. What is JAX's own (tracing, the compiled epoch loop) meets every value of every
# option on these 20, with dropout and without (test_jax_meets_every_option_value): the 10 dropout configurations
# and 10 of the others, picked greedily to keep the most pairs (535 of the 694 all 60 cover). The other namespaces
# run all 60.
JAX_CONFIGS = [0, 5, 14, 19, 21, 28, 31, 37, 44, 49, *range(50, 60)]


def _backends_and_configs() -> list[Any]:
    from conftest import _backends  # the backend fixture's parameters, given to it here (indirect)

    return [
        pytest.param(b.values[0], cfg, id=f"{b.id}-{config_id(i, cfg)}", marks=b.marks)
        for b in _backends()
        for i, cfg in enumerate(CONFIGS)
        if b.values[0][1] != "jax.numpy" or i in JAX_CONFIGS
    ]


@pytest.mark.parametrize(("backend", "cfg"), _backends_and_configs(), indirect=["backend"])
def test_fit_matches_the_reference(backend, cfg):
    dtype = "float32" if backend.gpu else "float64"
    m = gpunn.MLP(**model_kwargs(cfg), dtype=dtype, **backend.kwargs())
    ref = reference(cfg, dtype)
    for a, b in zip(_host(m.weights), [a for pair in ref.initial for a in pair]):
        np.testing.assert_array_equal(a, b, err_msg="the same seed must give the same initial weights everywhere")
    with warnings.catch_warnings():  # JAX must run its compiled step (compile="auto"), not fall back to eager
        warnings.filterwarnings("error", message="gpunn: compiling the step")
        history = m.fit(ref_problem_X(cfg), problem(cfg.head, cfg.weights).y.copy(), **fit_kwargs(cfg))
    tol = FLOAT32_TOL if dtype == "float32" else FLOAT64_TOL
    assert_matches(m.weights, history.to_dict(), ref, tol, labels_per_evaluation(cfg))
    if cfg.clip == "clip":
        assert ref.clipped_steps > 0, "this configuration means to test clipping, but no step was clipped"


def test_float32_on_the_cpu_stays_well_within_the_gpu_tolerance():
    """The float32 comparison of the GPU backends, run here on NumPy: every configuration within FLOAT32_TOL,
    and in fact within a fiftieth of it (the tolerance is a worst-case bound, not a measurement)."""
    for cfg in CONFIGS:
        m = gpunn.MLP(**model_kwargs(cfg), dtype="float32", device="cpu")
        history = m.fit(ref_problem_X(cfg), problem(cfg.head, cfg.weights).y.copy(), **fit_kwargs(cfg))
        ref = reference(cfg, "float32")
        assert_matches(m.weights, history.to_dict(), ref, FLOAT32_TOL / 50, labels_per_evaluation(cfg))


# ========================================================================================== the design itself
def test_every_pair_of_option_values_meets():
    names = list(OPTIONS)
    assert all(set(cfg._fields) == set(names) for cfg in CONFIGS)
    for cfg in CONFIGS:
        for name in names:
            assert getattr(cfg, name) in OPTIONS[name], (cfg, name)
        assert class_weights_allowed(cfg.head) or cfg.weights in ("none", "sample"), cfg
    assert len(set(CONFIGS)) == len(CONFIGS)
    met = {(a, getattr(c, a), b, getattr(c, b)) for c in CONFIGS for a, b in itertools.combinations(names, 2)}
    missing = []
    for a, b in itertools.combinations(names, 2):
        for va, vb in itertools.product(OPTIONS[a], OPTIONS[b]):
            pair = {a: va, b: vb}
            if pair.get("weights") in ("class", "both") and not class_weights_allowed(pair.get("head", "bce")):
                continue  # impossible: class weights need one class label per row
            if (a, va, b, vb) not in met:
                missing.append(f"{a}={va} with {b}={vb}")
    assert not missing, f"pairs no configuration covers: {missing}"


def test_jax_meets_every_option_value():
    for dropout in OPTIONS["dropout"]:
        ran = [CONFIGS[i] for i in JAX_CONFIGS if CONFIGS[i].dropout == dropout]
        for name in OPTIONS:
            if name != "dropout":
                assert {getattr(c, name) for c in ran} == set(OPTIONS[name]), (name, dropout)


def test_the_reference_draws_gpunn_s_shuffling_stream():
    """The shuffling generator the reference reproduces is the one a fresh model holds (so the orders match)."""
    for seed in (0, 7, 123):
        m = gpunn.MLP([3, 2, 1], seed=seed, device="cpu")
        assert m.rng.bit_generator.state == shuffle_generator(seed).bit_generator.state


def test_the_reference_schedules_by_hand():
    assert [learning_rate(("step", 1.0, 1, 0.5), e) for e in range(3)] == [1.0, 0.5, 0.25]
    np.testing.assert_allclose([learning_rate(("cosine", 1.0, 3, 1, 0.1), e) for e in range(4)], [1, 1, 0.55, 0.1])


# ================================================================================ the reference against torch
torch_only = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")


def _torch_objective(torch, layers, activations, output, loss, x, T, w, l2):
    """J written with torch's own functions, for autograd."""
    F = torch.nn.functional
    act = {
        "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda z: z,
        "leaky_relu": lambda z: F.leaky_relu(z, 0.01), "elu": F.elu, "gelu": lambda z: F.gelu(z, approximate="tanh"),
        "silu": F.silu, "softplus": F.softplus,
    }  # fmt: skip
    a = x
    for (W, b), name in zip(layers[:-1], activations):
        a = act[name](F.linear(a, W, b))
    z = F.linear(a, *layers[-1])
    if output == "softmax":
        per_row = F.cross_entropy(z, T.argmax(dim=1), reduction="none")
    elif output == "identity":
        per_row = F.mse_loss(z, T, reduction="none").mean(dim=1)
    elif loss == "mse":
        per_row = F.mse_loss(torch.sigmoid(z), T, reduction="none").mean(dim=1)
    else:
        per_row = F.binary_cross_entropy_with_logits(z, T, reduction="none").mean(dim=1)
    total = w.sum()
    return (w * per_row).sum() / total + l2 / (2 * total) * sum((W**2).sum() for W, _ in layers)


@torch_only
@pytest.mark.parametrize("activation", OPTIONS["activation"])
def test_reference_gradients_equal_torch_autograd(activation):
    """Every hidden activation with every head, sample weights and L2: the reference's objective and
    hand-written gradients against torch autograd, to 1e-12."""
    import torch

    rng = np.random.default_rng(5)
    activations = MIXED if activation == "mixed" else [activation] * 2
    for head, (output, loss, k) in HEADS.items():
        shapes = zip([4, 6, 5], [6, 5, k])
        layers = [[rng.normal(scale=0.8, size=(o, i)), rng.normal(scale=0.3, size=o)] for i, o in shapes]
        x = rng.normal(size=(9, 4))
        T = target_matrix(output, k, rng.integers(0, k, 9) if output == "softmax" else rng.integers(0, 2, (9, k)))
        if output == "identity":
            T = rng.normal(size=(9, k))
        w = rng.uniform(0.2, 2.0, size=9)
        b = batch_gradients(Network(layers, activations), x, T, w, output, loss, 0.3)
        tl = [[torch.tensor(a, requires_grad=True) for a in pair] for pair in layers]
        tx, tT, tw = torch.tensor(x), torch.tensor(T), torch.tensor(w)
        J = _torch_objective(torch, tl, activations, output, loss, tx, tT, tw, 0.3)
        J.backward()
        assert abs(J.item() - (b.weighted_sum + b.penalty) / w.sum()) < 1e-12, head
        for pair, tpair in zip(b.grads, tl):
            for g, t in zip(pair, tpair):
                np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=head)


@torch_only
@pytest.mark.parametrize("name", OPTIONS["optimizer"])
def test_reference_optimizers_equal_torch_optim(name):
    """Five updates along fixed gradients at a constant rate: the reference's updates against torch.optim
    (whose momentum keeps v without the rate: equal at a constant rate)."""
    import torch

    rng = np.random.default_rng(6)
    params = [rng.normal(size=(3, 2)), rng.normal(size=3)]
    grads = [[rng.normal(size=p.shape) * 0.1 for p in params] for _ in range(5)]
    lr = 0.05
    tp = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = {
        "sgd": lambda: torch.optim.SGD(tp, lr=lr),
        "momentum": lambda: torch.optim.SGD(tp, lr=lr, momentum=0.9),
        "nesterov": lambda: torch.optim.SGD(tp, lr=lr, momentum=0.9, nesterov=True),
        "adam": lambda: torch.optim.Adam(tp, lr=lr),
        "adamw": lambda: torch.optim.AdamW(tp, lr=lr, weight_decay=WEIGHT_DECAY),
    }[name]()
    ours = Optimizer(name, WEIGHT_DECAY if name == "adamw" else 0.0)
    for g in grads:
        ours.update(params, g, lr)
        for t, gi in zip(tp, g):
            t.grad = torch.tensor(gi)
        opt.step()
    for p, t in zip(params, tp):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-12, atol=1e-14)


# ============================================================================================ two ranks (MPI)
def _mpiexec() -> str | None:
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec")


RANKS = textwrap.dedent(
    """
    import pickle, sys
    import gpunn
    from gpunn.distributed import Communicator

    comm = Communicator()
    with open(sys.argv[1], "rb") as f:
        runs = pickle.load(f)
    out = []
    for model_kwargs, X, y, fit_kwargs in runs:
        m = gpunn.MLP(**model_kwargs, device="cpu", dtype="float64")
        history = m.fit(X, y, comm=comm, **fit_kwargs)
        out.append((m.numpy_weights(), history.to_dict()))
    if comm.rank == 0:
        with open(sys.argv[2], "wb") as f:
            pickle.dump(out, f)
    """
)
# Shuffled minibatches with a remainder, AdamW, sample x balanced class weights, L2, clipping, standardization and
# validation; ordered minibatches with Adam, sample weights, L2 and clipping; shuffled minibatches with momentum,
# sample weights and clipping on a regression; a full batch with a per-layer list and sample x class weights.
DISTRIBUTED = [CONFIGS[20], CONFIGS[28], CONFIGS[43], CONFIGS[47], CONFIGS[56]]
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or _mpiexec() is None,
    reason="mpi4py and mpiexec are needed (pip install 'gpunn[mpi]')",
)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, list[float]]]]:
    """Every DISTRIBUTED configuration trained data-parallel on two MPI ranks (one mpiexec for all): each rank
    computes the gradients of its half of every global batch; rank 0's (weights, History) per configuration."""
    where = tmp_path_factory.mktemp("ranks")
    runs = [(model_kwargs(c), ref_problem_X(c), problem(c.head, c.weights).y, fit_kwargs(c)) for c in DISTRIBUTED]
    (where / "runs.pkl").write_bytes(pickle.dumps(runs))
    script = where / "ranks.py"
    script.write_text(RANKS)
    r = subprocess.run(
        [_mpiexec(), "-n", "2", sys.executable, str(script), str(where / "runs.pkl"), str(where / "out.pkl")],
        capture_output=True, text=True, cwd=where, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return pickle.loads((where / "out.pkl").read_bytes())


DISTRIBUTED_IDS = [config_id(CONFIGS.index(c), c) for c in DISTRIBUTED]


@needs_mpi
@pytest.mark.parametrize("i", range(len(DISTRIBUTED)), ids=DISTRIBUTED_IDS)
def test_two_ranks_give_the_reference_weights(two_ranks, i):
    weights, _ = two_ranks[i]
    ref = reference(DISTRIBUTED[i], "float64")
    for j, (a, b) in enumerate(zip(_host(weights), [a for pair in ref.layers for a in pair])):
        np.testing.assert_allclose(a, b, rtol=FLOAT64_TOL, atol=FLOAT64_TOL, err_msg=f"parameter array {j}")


@needs_mpi
@pytest.mark.parametrize("i", range(len(DISTRIBUTED)), ids=DISTRIBUTED_IDS)
def test_two_ranks_give_the_reference_history(two_ranks, i):
    """History included: with l2, the penalty counts once in the ranks' summed loss (it counted once per rank
    before this test found it)."""
    weights, history = two_ranks[i]
    cfg = DISTRIBUTED[i]
    assert_matches(weights, history, reference(cfg, "float64"), FLOAT64_TOL, labels_per_evaluation(cfg))
