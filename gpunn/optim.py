"""Optimizers as pure (init, update) pairs: ``update`` returns new parameters and a new state.

Nothing is written into an existing array, so the same code runs on immutable namespaces such as JAX, and a
caller that keeps the old parameters (to roll back a diverged epoch) keeps them intact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("sgd", "momentum", "adam")
_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {},
    "momentum": {"beta": 0.9, "nesterov": False},
    "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}
# The arrays each optimizer keeps per parameter; ``step`` (a Python int) is kept beside them.
SLOTS = {"sgd": (), "momentum": ("velocity",), "adam": ("m", "v")}


@dataclass(frozen=True)
class Optimizer:
    """An optimizer's name and hyper-parameters; build one with :func:`sgd`, :func:`momentum` or :func:`adam`."""

    name: str
    hyper: dict[str, Any] = field(default_factory=dict)

    def init(self, params: list[Any], xp: Any) -> dict[str, Any]:
        """Fresh state: zero slots shaped like ``params`` and step 0."""
        state: dict[str, Any] = {"step": 0}
        for slot in SLOTS[self.name]:
            state[slot] = [xp.zeros_like(p) for p in params]
        return state

    def update(
        self, params: list[Any], grads: list[Any], state: dict[str, Any], lr: float, xp: Any, donate: bool = False
    ):
        """Return ``(new_params, new_state)`` after one step of size ``lr``.

        ``donate=True`` (NumPy only) lets the update write into ``grads``, which the caller no longer needs:
        plain SGD then allocates nothing. Parameters and state are never written into.
        """
        step = state["step"] + 1
        if self.name == "sgd":
            if donate:
                for p, g in zip(params, grads):
                    g *= -lr  # p - lr * g, bit for bit, in the gradient's buffer
                    g += p
                return grads, {"step": step}
            return [p - lr * g for p, g in zip(params, grads)], {"step": step}
        if self.name == "momentum":
            beta = self.hyper["beta"]
            velocity = [beta * v - lr * g for v, g in zip(state["velocity"], grads)]
            if self.hyper["nesterov"]:
                new = [p + beta * v - lr * g for p, v, g in zip(params, velocity, grads)]
            else:
                new = [p + v for p, v in zip(params, velocity)]
            return new, {"step": step, "velocity": velocity}
        beta1, beta2, eps = self.hyper["beta1"], self.hyper["beta2"], self.hyper["eps"]
        m = [beta1 * m_ + (1.0 - beta1) * g for m_, g in zip(state["m"], grads)]
        v = [beta2 * v_ + (1.0 - beta2) * (g * g) for v_, g in zip(state["v"], grads)]
        # Bias corrections folded into two Python floats: p - lr * m_hat / (sqrt(v_hat) + eps).
        step_size = lr / (1.0 - beta1**step)
        inv_root = 1.0 / math.sqrt(1.0 - beta2**step)
        new = [p - step_size * m_ / (xp.sqrt(v_) * inv_root + eps) for p, m_, v_ in zip(params, m, v)]
        return new, {"step": step, "m": m, "v": v}


def get(optimizer: str | Optimizer) -> Optimizer:
    """An :class:`Optimizer` from a name ("sgd", "momentum", "adam") or an Optimizer itself."""
    from .errors import ConfigError

    if isinstance(optimizer, Optimizer):
        return optimizer
    if optimizer not in _DEFAULTS:
        raise ConfigError(f"optimizer {optimizer!r} is not known; use one of {', '.join(OPTIMIZERS)}")
    return Optimizer(optimizer, dict(_DEFAULTS[optimizer]))


def sgd() -> Optimizer:
    """Plain gradient descent: W <- W - lr * dW."""
    return Optimizer("sgd", {})


def momentum(beta: float = 0.9, nesterov: bool = False) -> Optimizer:
    """Heavy-ball momentum, v <- beta v - lr g, W <- W + v (Nesterov's variant on request)."""
    return Optimizer("momentum", {"beta": float(beta), "nesterov": bool(nesterov)})


def adam(beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma & Ba, 2015) with bias correction, as in PyTorch's torch.optim.Adam."""
    return Optimizer("adam", {"beta1": float(beta1), "beta2": float(beta2), "eps": float(eps)})
