"""Optimizers as pure (init, update) pairs over one flat parameter buffer.

``update`` returns new parameters and a new state; nothing is written into an existing array, so the same code
runs on immutable namespaces such as JAX, and a caller that keeps the old parameters (to roll back a diverged
epoch) keeps them intact. Because all parameters sit in one buffer, an update is a handful of operations
whatever the number of layers: SGD two, Adam twelve, AdamW thirteen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import _backend
from . import _validation as check
from .errors import ConfigError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "lbfgs")
_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {},
    "momentum": {"beta": 0.9, "nesterov": False},
    "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    "adamw": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
    # scipy's L-BFGS-B defaults: maxcor, gtol, ftol (factr 1e7 times float64's epsilon) and maxfun
    "lbfgs": {"history": 10, "tol": 1e-5, "ftol": 2.220446049250313e-09, "max_fun": 15000},
}
# The buffers each optimizer keeps, shaped like the parameters; ``step`` (an int) is kept beside them. L-BFGS keeps
# its ``history`` pairs (s, y), oldest first, as ``s0, ..., y0, ...``: see :func:`slots`.
SLOTS = {"sgd": (), "momentum": ("velocity",), "adam": ("m", "v"), "adamw": ("m", "v"), "lbfgs": ()}


def slots(name: str, hyper: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The buffers an optimizer ``name`` with ``hyper`` keeps, each shaped like the parameters."""
    if name == "lbfgs":
        m = int((hyper or _DEFAULTS["lbfgs"])["history"])
        return tuple(f"s{i}" for i in range(m)) + tuple(f"y{i}" for i in range(m))
    return SLOTS[name]


@dataclass(frozen=True)
class Optimizer:
    """An optimizer's name and hyper-parameters; build one with :func:`sgd`, :func:`momentum` or :func:`adam`."""

    name: str
    hyper: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:  # a compiled step is cached by its hyper-parameters
        return hash((self.name, tuple(sorted(self.hyper.items()))))

    def init(self, params: Any, xp: Any) -> dict[str, Any]:
        """Fresh state: zero slots shaped like ``params`` and step 0."""
        state: dict[str, Any] = {"step": 0}
        for slot in slots(self.name, self.hyper):
            state[slot] = _backend.zeros_like(params, xp)
        return state

    def values(self) -> dict[str, float]:
        """The optimizer's numbers as :meth:`update` takes them (a compiled step takes them as 0-d arrays):
        its hyper-parameters and the complements 1 - beta, formed here in double precision (in float32,
        1 - 0.999 would lose four digits)."""
        out = {k: float(v) for k, v in self.hyper.items() if k != "nesterov"}
        for beta in ("beta1", "beta2"):
            if beta in out:
                out[f"1-{beta}"] = 1.0 - out[beta]
        return out

    def structure(self) -> Optimizer:
        """What a compiled update's program depends on: the name, and Nesterov's variant (its numbers are data)."""
        return Optimizer(self.name, {k: v for k, v in self.hyper.items() if k == "nesterov"})

    def update(
        self, params: Any, grads: Any, state: dict[str, Any], lr: float, xp: Any, scale: float = 1.0,
        donate: bool = False, values: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:  # fmt: skip
        """Return ``(new_params, new_state)`` after one step of size ``lr`` along ``scale * grads``.

        ``scale`` turns ``grads`` into the gradient of the mean loss; it is folded into Python floats rather
        than spent as an array operation. ``donate=True`` (NumPy only) lets the update write into ``grads``,
        which the caller no longer needs: plain SGD then allocates nothing. Parameters and state are never
        written into. ``values`` are the numbers of :meth:`values` (0-d arrays in a compiled step), by default
        this optimizer's own.
        """
        if self.name == "lbfgs":
            raise ValueError("L-BFGS takes no step from one gradient: gpunn.lbfgs runs it over whole iterations")
        if isinstance(params, tuple):  # the parameters' segments (gpunn.layers.segments): each updated alone
            return self._update_segments(params, grads, state, lr, xp, scale, values)
        hp = self.values() if values is None else values
        step = state["step"] + 1
        rate = lr * scale
        if self.name == "sgd":
            if donate:
                grads *= -rate  # p - rate * g, bit for bit, in the gradient's buffer
                grads += params
                return grads, {"step": step}
            return params - rate * grads, {"step": step}
        if self.name == "momentum":
            beta = hp["beta"]
            velocity = beta * state["velocity"] - rate * grads
            if self.hyper["nesterov"]:
                new = params + beta * velocity - rate * grads
            else:
                new = params + velocity
            return new, {"step": step, "velocity": velocity}
        beta1, beta2, eps = hp["beta1"], hp["beta2"], hp["eps"]
        if self.name == "adamw":  # decoupled weight decay, before the Adam step, as torch.optim.AdamW does
            params = (1.0 - lr * hp["weight_decay"]) * params
        m = beta1 * state["m"] + (hp["1-beta1"] * scale) * grads
        v = beta2 * state["v"] + (hp["1-beta2"] * scale * scale) * (grads * grads)
        # p - lr * m_hat / (sqrt(v_hat) + eps) with both bias corrections folded into two scalars (Python
        # floats when eager; ``step`` is traced when compiled).
        t = step if isinstance(step, int) else xp.astype(step, params.dtype)  # traced: stay in the params' dtype
        root2 = (1.0 - beta2**t) ** 0.5
        step_size = lr * root2 / (1.0 - beta1**t)
        new = params - step_size * (m / (xp.sqrt(v) + eps * root2))
        return new, {"step": step, "m": m, "v": v}

    def _update_segments(
        self, params: tuple[Any, ...], grads: tuple[Any, ...], state: dict[str, Any], lr: Any, xp: Any, scale: Any,
        values: dict[str, Any] | None,
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:  # fmt: skip
        names = SLOTS[self.name]
        new, step = [], state["step"]
        new_slots: dict[str, list[Any]] = {slot: [] for slot in names}
        for i, (p, g) in enumerate(zip(params, grads)):
            one = {"step": state["step"], **{slot: state[slot][i] for slot in names}}
            p, one = self.update(p, g, one, lr, xp, scale, values=values)
            new.append(p)
            for slot in names:
                new_slots[slot].append(one[slot])
            step = one["step"]
        return tuple(new), {"step": step, **{slot: tuple(v) for slot, v in new_slots.items()}}


def get(optimizer: str | Optimizer, weight_decay: float | None = None) -> Optimizer:
    """An :class:`Optimizer` from a name ("sgd", "momentum", "nesterov", "adam", "adamw", "lbfgs") or an Optimizer
    itself; ``weight_decay`` sets AdamW's (decoupled) decay, the one optimizer that has it."""
    if not isinstance(optimizer, Optimizer):
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {optimizer!r} is not known; use one of {', '.join(OPTIMIZERS)}")
        if optimizer == "nesterov":
            optimizer = momentum(nesterov=True)
        else:
            optimizer = Optimizer(optimizer, dict(_DEFAULTS[optimizer]))
    if weight_decay is not None:
        if optimizer.name != "adamw":
            raise ConfigError(
                f"weight_decay is AdamW's decoupled decay; optimizer {optimizer.name!r} has none "
                "(use optimizer='adamw', or l2= for a penalty in the loss)"
            )
        optimizer = Optimizer("adamw", {**optimizer.hyper, "weight_decay": weight_decay})
    return optimizer


def sgd() -> Optimizer:
    """Plain gradient descent: W <- W - lr * dW."""
    return Optimizer("sgd", {})


def momentum(beta: float = 0.9, nesterov: bool = False) -> Optimizer:
    """Heavy-ball momentum, v <- beta v - lr g, W <- W + v (Nesterov's variant on request); ``beta`` in [0, 1]
    (scikit-learn's range for ``momentum``)."""
    beta = check.unit_interval(beta, "beta", closed=True)
    return Optimizer("momentum", {"beta": beta, "nesterov": check.boolean(nesterov, "nesterov")})


def adam(beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma & Ba, 2015) with bias correction, as in PyTorch's torch.optim.Adam: ``beta1`` and ``beta2``
    in [0, 1) (at 1 the bias correction divides by zero), ``eps`` > 0."""
    return Optimizer("adam", _adam_hyper(beta1, beta2, eps))


def adamw(beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.01) -> Optimizer:
    """AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay, W <- W (1 - lr wd) before the Adam
    step, on every parameter, as in PyTorch's torch.optim.AdamW; ``weight_decay`` >= 0, the rest as :func:`adam`."""
    hyper = {**_adam_hyper(beta1, beta2, eps), "weight_decay": check.non_negative_float(weight_decay, "weight_decay")}
    return Optimizer("adamw", hyper)


def _adam_hyper(beta1: Any, beta2: Any, eps: Any) -> dict[str, float]:
    return {
        "beta1": check.unit_interval(beta1, "beta1"),
        "beta2": check.unit_interval(beta2, "beta2"),
        "eps": check.positive_float(eps, "eps"),  # > 0, as a checkpoint's eps must be (and scikit-learn's epsilon)
    }


def lbfgs(history: int = 10, tol: float = 1e-5, ftol: float = 2.220446049250313e-09, max_fun: int = 15000) -> Optimizer:
    """L-BFGS (Nocedal & Wright, algorithm 7.4/7.5) on the full batch, stopping as scipy's L-BFGS-B does: one
    ``fit`` epoch is one iteration, of at most 20 evaluations of the loss and its gradient (a line search for
    the strong Wolfe conditions, c1=1e-4, c2=0.9). ``history`` pairs (s, y) make the quasi-Newton direction.
    A member stops when its largest gradient entry is at most ``tol``, when an iteration reduces the loss by
    at most ``ftol`` relative to max(|f|, |f_new|, 1), or when its evaluations in this ``fit`` exceed
    ``max_fun`` (scikit-learn's ``max_fun``); see :mod:`gpunn.lbfgs`."""
    hyper = {
        "history": _history(history),
        "tol": check.non_negative_float(tol, "tol"),
        "ftol": check.non_negative_float(ftol, "ftol"),
        "max_fun": check.integer(max_fun, "max_fun", 1),
    }
    return Optimizer("lbfgs", hyper)


def _history(value: Any) -> int:
    """L-BFGS's number of pairs: 1 to 1000, what a checkpoint holds (a longer history saved a file load refused)."""
    history = check.integer(value, "history", 1)
    if history > 1000:
        raise ConfigError(f"history must be an integer from 1 to 1000; got {value!r}")
    return history
