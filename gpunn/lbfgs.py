"""L-BFGS over stacked (K, P) parameter buffers: K networks, each with its own history and line search.

A lone network is the case K = 1 of the same code (its (P,) buffer as a (1, P) one), so member k of an
ensemble computes what a lone MLP computes. The loss and gradient are those the SGD step minimizes: the
stacked step's :meth:`~gpunn.step.StackedStep.gradients` on the full batch, sample weights honoured, with the
L2 penalty added here (its rates are arrays, not constants, so a compiler builds one program for every l2).

One iteration (one ``fit`` epoch):

1. the direction ``d = -H g`` by the two-loop recursion over the member's ``history`` pairs (s, y), oldest
   first, H0 = (s.y / y.y) I from the newest pair; with no pair, ``d = -g / ||g||`` (scipy's first step);
2. a line search along ``d`` for the strong Wolfe conditions (c1 = 1e-4, c2 = 0.9): bracketing, then a zoom
   by cubic interpolation (as torch.optim.LBFGS's ``strong_wolfe``), at most :data:`MAX_LS` evaluations;
3. the pair (s, y) of the accepted step joins the history, unless its curvature ``s.y <= eps y.y`` (``eps``
   the dtype's machine epsilon), which would make H indefinite.

The direction, the trial points and the history are device arrays, computed by pure functions (compiled on
JAX); the line search's decisions are made on the host from each evaluation's losses, directional
derivatives, largest gradient entries and correct counts, read back together: one transfer per evaluation,
and nothing else is read back. A member stops as scipy's L-BFGS-B stops: its largest gradient entry at most
``tol`` (``gtol``), an iteration that lowered the loss by at most ``ftol * max(|f|, |f_new|, 1)``, more than
``max_fun`` evaluations in this fit, or a line search that found no lower loss.

The optimizer state a model keeps is the history pairs (and the iteration count): the loss and gradient at the
current weights are computed again when a fit starts, bit for bit the ones the last iteration accepted, so that
a fit resumed from a checkpoint continues exactly as one that never stopped.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backend, layers, losses, optim, train
from .errors import ConfigError
from .feed.sparse import Placed
from .step import Hyper, StackedHyper, StackedStep, Step, stacked_hyper

C1, C2 = 1e-4, 0.9  # the strong Wolfe conditions' constants: sufficient decrease and curvature
MAX_LS = 20  # evaluations per iteration at most, scipy's ``maxls``
TOLERANCE_CHANGE = 1e-9  # a zoom stops when its bracket moves the weights by less than this
# Why a member stopped: the first two are convergence (scikit-learn warns about the others).
CONVERGED = ("gtol", "ftol")
# Columns of an evaluation's read-back: the objective, the directional derivative, correct predictions, the
# largest gradient entry, the unweighted loss (History's "loss"), then the direction's g.d and largest entry.
# the point's pair with the iteration's start (s.y, y.y: whether it would join the history), then the direction's
# g.d and largest entry.
_F, _GTD, _CORRECT, _GMAX, _PLAIN, _SY, _YY, _GTD0, _DMAX = range(9)


def check(s: Any, dropout: list[float], comm: Any, streamed: bool) -> None:
    """The settings L-BFGS refuses in a fit's checked settings ``s`` (one clear error each): it is full-batch and
    deterministic, takes no rate, and runs on one process's arrays in memory."""
    if s.optimizers[0].name != "lbfgs":
        return
    refused = [
        (s.batch_size is not None, "batch_size (L-BFGS is full-batch: leave batch_size=None)"),
        (s.clip_norm is not None, "clip_norm (its line search already bounds each step)"),
        (any(r.name != "constant" for r in s.schedules), "a learning-rate schedule (its line search picks each step)"),
        (any(dropout), "dropout (its line search needs the same loss at every evaluation)"),
        (comm is not None, "comm= (it trains on one process)"),
        (streamed, "a streamed Dataset (it evaluates the whole training set many times an iteration)"),
    ]
    for bad, what in refused:
        if bad:
            raise ConfigError(f"optimizer 'lbfgs' does not take {what}")


def runner(hyper: Any, xp: Any, device: Any, dtype: str, compile: Any, data: Any, comm: Any) -> Any:
    """A lone network's epoch runner: :class:`Runner` under L-BFGS, else :class:`gpunn.train.Runner`."""
    if hyper.optimizer.name == "lbfgs":
        return Runner(hyper, xp, device, dtype, compile, data)
    return train.Runner(hyper, xp, device, dtype, compile, comm)


# ------------------------------------------------------------------------------------- device functions
def _dot(a: Any, b: Any, xp: Any) -> Any:
    """Each row's dot product, (K, 1)."""
    return xp.vecdot(a, b)[:, None]


def _stacked_gradients(step: StackedStep, p: Any, x: Any, target: Any, weight: Any, mask: Any):
    return step.gradients(p, {"step": 0}, x, target, weight, mask)


def _lone_gradients(step: Step, p: Any, x: Any, target: Any, weight: Any, mask: Any):
    """A lone network's gradients (one member, all rows) by its own step, shaped as the stacked step's: the same
    function, computed with 2-D products, which NumPy runs through BLAS where it loops over a stacked axis.
    ``mask`` (rows, 1), 0 at the rows :func:`_pad` appended, is None where nothing was padded."""
    xp = step.xp
    grads, loss_sum, correct = step.gradients(xp.reshape(p, (-1,)), x, target, weight, mask=mask)
    loss_sum = xp.reshape(loss_sum, (1, -1) if loss_sum.ndim else (1,))
    return xp.reshape(grads, (1, -1)), loss_sum, None if correct is None else xp.reshape(correct, (1,))


def _evaluate(xp: Any, gradients: Any, wmask: Any, x0: Any, g0: Any, d: Any, t: Any, x: Any, target: Any,
              weight: Any, mask: Any, consts: Any, extra: Any) -> tuple[Any, Any, Any]:  # fmt: skip
    """The objective at ``x0 + t d`` (t (K, 1)): ``(point, gradient, read-back (K, 7))``. ``consts`` (K, 4) are,
    per member, l2 / m, 1 / (outputs m), the loss's gradient factor / (outputs m) and 1 / (outputs n), m being
    the rows (or the weight total) and n the rows."""
    if x0.shape[0] == 1 and _backend.numpy_fast_path(xp):
        return _evaluate_numpy(gradients, wmask, x0, g0, d, t, x, target, weight, mask, consts, extra)
    p = x0 + t * d
    grads, loss_sum, correct = gradients(p, x, target, weight, mask)
    l2m, fscale, gscale, pscale = (consts[:, j : j + 1] for j in range(4))
    w = p * wmask
    square = _dot(w, w, xp)
    g = gscale * grads + l2m * w
    if loss_sum.ndim == 2:  # with sample weights: [summed loss, summed weighted loss]
        plain_sum, objective_sum = loss_sum[:, 0:1], loss_sum[:, 1:2]
    else:
        plain_sum = objective_sum = xp.reshape(loss_sum, (-1, 1))
    penalty = 0.5 * l2m * square  # in the mean loss: l2 / (2 m) * sum(W**2), as Step.apply adds it
    f = fscale * objective_sum + penalty
    plain = pscale * plain_sum + penalty * (pscale / fscale)
    if correct is None:
        correct = xp.zeros_like(f)
    else:
        correct = xp.reshape(xp.astype(correct, f.dtype), (-1, 1))
    gmax = xp.max(xp.abs(g), axis=1, keepdims=True)
    ds, dy = p - x0, g - g0
    out = xp.concat([f, _dot(g, d, xp), correct, gmax, plain, _dot(ds, dy, xp), _dot(dy, dy, xp), extra], axis=1)
    return p, g, out


def _evaluate_numpy(gradients: Any, wmask: Any, x0: Any, g0: Any, d: Any, t: Any, x: Any, target: Any, weight: Any,
                    mask: Any, consts: Any, extra: Any) -> tuple[Any, Any, Any]:  # fmt: skip
    """:func:`_evaluate` of one network on NumPy, equal to the bit: the same operations in the same order, with the
    network's numbers as scalars of the dtype where the general form spends an array operation on each (1, 1) of
    them."""
    p = x0 + t * d
    grads, loss_sum, correct = gradients(p, x, target, weight, mask)
    l2m, fscale, gscale, pscale = consts[0]
    w = p * wmask
    square = np.dot(w[0], w[0])
    g = np.multiply(grads, gscale)
    g += np.multiply(w, l2m, out=w)
    plain_sum, objective_sum = (loss_sum[0, 0], loss_sum[0, 1]) if loss_sum.ndim == 2 else (loss_sum[0], loss_sum[0])
    penalty = 0.5 * l2m * square
    f = fscale * objective_sum + penalty
    plain = pscale * plain_sum + penalty * (pscale / fscale)
    ds, dy = p - x0, g - g0
    row = [f, np.dot(g[0], d[0]), 0 if correct is None else correct[0], np.abs(g).max(), plain, np.dot(ds[0], dy[0]),
           np.dot(dy[0], dy[0]), extra[0, 0], extra[0, 1]]  # fmt: skip
    return p, g, np.array([row], dtype=g.dtype)


def _direction(xp: Any, g: Any, s: tuple[Any, ...], y: tuple[Any, ...], sy: Any = None) -> tuple[Any, Any]:
    """``(d, extra)``: the two-loop recursion's ``-H g`` (rows without a pair: ``-g / ||g||``) and, per member,
    ``[g.d, max |d|]`` (K, 2). Empty history slots are zeros, whose curvature 0 makes them no-ops. ``sy``: one
    network's ``s.y`` of each pair, known already (see :func:`_direction_numpy`); the general form computes them."""
    if g.shape[0] == 1 and _backend.numpy_fast_path(xp):
        return _direction_numpy(g, s, y, sy)
    m = len(s)
    sy = xp.concat([_dot(a, b, xp) for a, b in zip(s, y)], axis=1)  # (K, m)
    held = sy > 0
    one, zero = xp.ones_like(sy), xp.zeros_like(sy)
    rho_all = xp.where(held, one / xp.where(held, sy, one), zero)
    rho = [rho_all[:, i : i + 1] for i in range(m)]
    q, alphas = g, [None] * m
    for i in reversed(range(m)):
        alphas[i] = a = rho[i] * _dot(s[i], q, xp)
        q = q - a * y[i]
    # H0 = (s.y / y.y) I from the newest slot, which holds a pair when any does (pairs shift in from the end);
    # without one, d = -g / ||g||: the factor is 1 / (y.y / s.y) or 1 / ||g||
    newest = held[:, -1:]
    yy, gg = _dot(y[-1], y[-1], xp), _dot(g, g, xp)
    scale = xp.where(newest, yy * rho[-1], xp.sqrt(gg))
    r = q / xp.where(scale > 0, scale, xp.ones_like(scale))
    for i in range(m):
        r = r + (alphas[i] - rho[i] * _dot(y[i], r, xp)) * s[i]
    d = -r
    return d, xp.concat([_dot(g, d, xp), xp.max(xp.abs(d), axis=1, keepdims=True)], axis=1)


def _direction_numpy(g: Any, s: tuple[Any, ...], y: tuple[Any, ...], sy: Any = None) -> tuple[Any, Any]:
    """:func:`_direction` of one network on NumPy, equal to the bit: the same products and sums in the same order,
    with the per-pair numbers as scalars of the dtype where the generic form spends an array operation on each
    (1, 1) of them, updates in place, and the slots without a pair skipped (their terms are zeros). ``sy``, each
    pair's ``s.y`` as scalars of the dtype, where known (:meth:`Solver.iterate` keeps those of the read-back rows,
    computed by the same product), saves computing them again."""
    q, sv, yv = g[0].copy(), [a[0] for a in s], [b[0] for b in y]
    one, m = g.dtype.type(1), len(s)
    if sy is None:
        sy = _curvatures(s, y)
    rho = [one / v if v > 0 else None for v in sy]
    alphas = [0.0] * m
    for i in reversed(range(m)):
        if rho[i] is not None:
            alphas[i] = a = rho[i] * np.dot(sv[i], q)
            q -= a * yv[i]
    scale = np.dot(yv[-1], yv[-1]) * rho[-1] if rho[-1] is not None else np.sqrt(np.dot(g[0], g[0]))
    r = q
    r /= scale if scale > 0 else one
    for i in range(m):
        if rho[i] is not None:
            r += (alphas[i] - rho[i] * np.dot(yv[i], r)) * sv[i]
    d = np.negative(r, out=r)[None, :]
    return d, np.array([[np.dot(g[0], d[0]), np.abs(d).max()]], dtype=g.dtype)


def _curvatures(s: tuple[Any, ...], y: tuple[Any, ...]) -> list[Any]:
    """One network's ``s.y`` of each pair on NumPy, as scalars of the dtype: the products :func:`_evaluate_numpy`
    reads back for the pair of an accepted step."""
    return [np.dot(a[0], b[0]) for a, b in zip(s, y)]


def _remember(xp: Any, x0: Any, p: Any, g0: Any, g: Any, s: tuple[Any, ...], y: tuple[Any, ...], ok: Any):
    """The histories with the pair of the step ``x0 -> p`` appended (the oldest dropped) for the members ``ok``
    (K, 1) marks: those whose pair has curvature ``s.y > eps y.y``, as the host read it."""
    ds, dy = p - x0, g - g0
    new_s = tuple(xp.where(ok, s[i + 1], s[i]) for i in range(len(s) - 1)) + (xp.where(ok, ds, s[-1]),)
    new_y = tuple(xp.where(ok, y[i + 1], y[i]) for i in range(len(y) - 1)) + (xp.where(ok, dy, y[-1]),)
    return new_s, new_y


@dataclass(frozen=True)
class Functions:
    """The device functions of one problem shape, compiled where asked, and their eager forms."""

    step: StackedStep
    evaluate: Any
    direction: Any
    remember: Any
    eager: tuple[Any, Any, Any]
    compiled: bool


@functools.lru_cache(maxsize=16)
def _functions(hyper: StackedHyper, xp: Any, device: Any, dtype: str, compile: Any, lone: bool) -> Functions:
    """A stacked step without penalty (L-BFGS adds it, with its rates as arrays) and the device functions; with
    ``lone``, the gradients of one member on all rows by a lone network's step."""
    step = StackedStep(hyper, xp, device, dtype)
    if lone:
        one = Hyper(hyper.sizes, hyper.activation, hyper.output, hyper.loss, hyper.optimizer, 0.0,
                    label_smoothing=hyper.label_smoothing)  # fmt: skip
        gradients: Any = functools.partial(_lone_gradients, Step(one, xp, device, dtype))
    else:
        gradients = functools.partial(_stacked_gradients, step)
    wmask = layers.weight_mask(hyper.sizes, dtype, xp, device)
    eager = (
        functools.partial(_evaluate, xp, gradients, wmask),
        functools.partial(_direction, xp),
        functools.partial(_remember, xp),
    )
    jit = None if compile is False else _backend.compiler(xp, compile is True)
    if jit is None:
        return Functions(step, eager[0], eager[1], eager[2], eager, False)
    return Functions(step, jit(eager[0]), jit(eager[1]), jit(eager[2]), eager, True)


def _pad(data: tuple[Any, Any, Any, Any], xp: Any, device: Any) -> tuple[Any, Any, Any, Any]:
    """The full batch ``(x, target, weight, mask)`` with rows of zeros appended up to :func:`gpunn._backend.bucket`
    of its rows, and a mask that leaves them out (the given one, each member's row counts, padded with zeros;
    else (rows, 1), 1 at the data's rows): for a compiler that makes a program for each shape, so that a new row
    count in the same bucket compiles nothing. Padding rows weigh 0, so every sum is the unpadded one's."""
    x, target, weight, mask = (None if a is None else _backend.to_numpy(a) for a in data)
    assert x is not None and target is not None
    n = x.shape[0]
    rows = _backend.bucket(n)

    def pad(a: np.ndarray) -> Any:  # rows are the next-to-last axis: (rows, columns) or (K, rows, 1)
        return _backend.from_numpy(_backend.pad_host(a, rows, axis=a.ndim - 2), xp, device)

    mask = np.ones((n, 1), dtype=x.dtype) if mask is None else mask
    return pad(x), pad(target), None if weight is None else pad(weight), pad(mask)


# ------------------------------------------------------------------------------------------ line search
def _cubic(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float, bounds: tuple[float, float] | None = None):
    """The minimizer of the cubic through (x1, f1, g1) and (x2, f2, g2), within ``bounds`` (default: between x1
    and x2); their middle where the cubic has none or a value is not finite."""
    lo, hi = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    with np.errstate(all="ignore"):
        d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2) if x1 != x2 else math.nan
        d2_square = d1 * d1 - g1 * g2
        if math.isfinite(d2_square) and d2_square >= 0:
            d2 = math.sqrt(d2_square)
            if x1 <= x2:
                t = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)) if g2 - g1 + 2 * d2 else math.nan
            else:
                t = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)) if g1 - g2 + 2 * d2 else math.nan
            if math.isfinite(t):
                return min(max(t, lo), hi)
    return (lo + hi) / 2.0


Search = Generator[tuple[bool, float], tuple[float, float], tuple[bool, float, bool]]


def wolfe(f0: float, max_evals: int = MAX_LS, c1: float = C1, c2: float = C2) -> Search:
    """One member's line search from loss ``f0``, as a generator: it yields ``(keep, t)`` (``keep``: whether the
    point evaluated last must be kept, being the best candidate so far; ``t``: the next trial step) and is sent
    each trial's ``(f, g.d)``; the first send also carries ``(g0.d, max |d|)`` of the start. It returns
    ``(keep, t, ok)``: the accepted step (the last kept point) and whether it lowered the loss.

    It is torch.optim.LBFGS's ``_strong_wolfe`` (bracketing, then a zoom by cubic interpolation, with its
    safeguards), counting every evaluation against ``max_evals``; a loss that is not finite counts as +inf."""
    t = 1.0
    f_new, gtd_new, gtd0, dmax = yield False, t  # type: ignore[misc]
    f_new = f_new if math.isfinite(f_new) else math.inf
    if not gtd0 < 0:  # not a descent direction (or not finite): no step along it lowers the loss
        return False, 0.0, False
    evals = 1
    t_prev, f_prev, gtd_prev = 0.0, f0, gtd0
    bracket: list[float] = []
    bf: list[float] = []
    bg: list[float] = []
    while True:
        if f_new > f0 + c1 * t * gtd0 or (evals > 1 and f_new >= f_prev) or gtd_new >= 0:
            bracket, bf, bg = [t_prev, t], [f_prev, f_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd0 or evals >= max_evals:
            return True, t, f_new < f0
        t_next = _cubic(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, (t + 0.01 * (t - t_prev), t * 10))
        t_prev, f_prev, gtd_prev, t = t, f_new, gtd_new, t_next
        f_new, gtd_new = yield True, t  # the point just evaluated is the bracket's left end from now on
        f_new = f_new if math.isfinite(f_new) else math.inf
        evals += 1
    low, high = (0, 1) if bf[0] <= bf[1] else (1, 0)
    keep = low == 1  # the bracket's left end is the point kept before; its right end was evaluated last
    insufficient = False
    while evals < max_evals and abs(bracket[1] - bracket[0]) * dmax >= TOLERANCE_CHANGE:
        t = _cubic(bracket[0], bf[0], bg[0], bracket[1], bf[1], bg[1])
        top, bottom = max(bracket), min(bracket)
        eps = 0.1 * (top - bottom)
        if min(top - t, t - bottom) < eps:  # too close to an end: move away from it, unless progress was made
            if insufficient or t >= top or t <= bottom:
                t = top - eps if abs(t - top) < abs(t - bottom) else bottom + eps
                insufficient = False
            else:
                insufficient = True
        else:
            insufficient = False
        f_new, gtd_new = yield keep, t
        f_new = f_new if math.isfinite(f_new) else math.inf
        evals += 1
        if f_new > f0 + c1 * t * gtd0 or f_new >= bf[low]:
            bracket[high], bf[high], bg[high] = t, f_new, gtd_new
            old_high = high
            low, high = (0, 1) if bf[0] <= bf[1] else (1, 0)
            keep = low == old_high
        else:
            if abs(gtd_new) <= -c2 * gtd0:
                bracket[low], bf[low], bg[low] = t, f_new, gtd_new
                return True, t, f_new < f0
            if gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bf[high], bg[high] = bracket[low], bf[low], bg[low]
            bracket[low], bf[low], bg[low] = t, f_new, gtd_new
            keep = True
    return keep, bracket[low], bracket[low] > 0 and bf[low] < f0


# --------------------------------------------------------------------------------------------- solver
@dataclass(frozen=True)
class Result:
    """One iteration of every member, on the host: the accepted point's read-back row (K, 7), the accepted
    steps, which members took part, and why members stopped (None: not stopped)."""

    rows: np.ndarray
    steps: np.ndarray
    ran: np.ndarray
    reasons: list[str | None]


class Solver:
    """L-BFGS for K stacked networks on one full batch.

    ``data`` is ``(x, target, weight, mask)`` as :meth:`gpunn.step.StackedStep.gradients` takes them (x shared by
    every member), padded to a bucket of rows where ``compile`` compiles on JAX (:func:`_pad`); ``m`` the members'
    rows (or weight totals) and ``n`` their rows, ``l2`` their penalties. The loss and gradient at the weights an
    iteration starts from are kept between iterations (keyed by the weights' array), computed afresh for any other
    weights; counts of evaluations are this solver's, one fit's."""

    def __init__(self, hyper: StackedHyper, optimizer: optim.Optimizer, xp: Any, device: Any, dtype: str,
                 compile: Any, data: tuple[Any, Any, Any, Any], m: list[float], n: list[int],
                 l2: tuple[float, ...]):  # fmt: skip
        k = hyper.members
        lone = k == 1 and data[3] is None  # one network on all its rows: by a lone network's step
        if isinstance(data[0], Placed):  # a sparse X: full-batch L-BFGS evaluates every row, so it is placed whole
            data = (data[0].rows(), *data[1:])
        elif compile is not False and _backend.compiles_eagerly(xp):
            data = _pad(data, xp, device)
        bare = stacked_hyper(hyper.sizes, hyper.activation, hyper.output, hyper.loss, optim.sgd(), (0.0,) * k, None,
                             (0.0,) * k, (0,) * k, label_smoothing=hyper.label_smoothing)  # fmt: skip
        self.fns = _functions(bare, xp, device, dtype, compile, lone)
        self.mode, self.xp, self.device, self.k, self.data = compile, xp, device, k, data
        self.dtype, self.host_dtype = self.fns.step.zero.dtype, np.dtype(dtype)
        self.history = int(optimizer.hyper["history"])
        self.tol, self.ftol = float(optimizer.hyper["tol"]), float(optimizer.hyper["ftol"])
        self.max_fun = int(optimizer.hyper["max_fun"])
        outputs, factor = (1.0 / v for v in losses.scales(hyper.output, hyper.loss, 1, hyper.sizes[-1]))
        factor = outputs / factor  # scales' (1 / outputs, factor / outputs)
        consts = [[lk / mk, 1.0 / (outputs * mk), factor / (outputs * mk), 1.0 / (outputs * nk)]
                  for lk, mk, nk in zip(l2, m, n)]  # fmt: skip
        self.consts = self._up(np.asarray(consts, dtype=np.float64))
        self.eps = float(np.finfo(dtype).eps)  # a pair joins the history where s.y > eps y.y
        self.evals = np.zeros(k, dtype=np.int64)
        self.reasons: list[str | None] = [None] * k
        self._at: tuple[Any, Any, np.ndarray] | None = None  # (weights, their gradient, their read-back row)
        self._sy: tuple[tuple, list[Any]] | None = None  # one network's pairs s and their s.y (NumPy's fast path)

    @property
    def compiled(self) -> bool:
        return self.fns.compiled

    def _up(self, a: np.ndarray) -> Any:
        return _backend.from_numpy(np.ascontiguousarray(a, dtype=self.host_dtype), self.xp, self.device)

    def _call(self, which: int, *args: Any) -> Any:
        fns = self.fns
        if fns.compiled and self.mode is not False:
            try:
                return (fns.evaluate, fns.direction, fns.remember)[which](*args)
            except Exception as exc:
                train.fall_back(exc, self.mode, self.xp, "L-BFGS")
                self.mode = False
        return fns.eager[which](*args)

    def _evaluate(self, x0: Any, g0: Any, d: Any, t: Any, extra: Any) -> tuple[Any, Any, np.ndarray]:
        x, target, weight, mask = self.data
        p, g, out = self._call(0, x0, g0, d, t, x, target, weight, mask, self.consts, extra)
        return p, g, np.asarray(_backend.to_numpy(out), dtype=np.float64)  # the evaluation's one read-back

    def _remember(self, x0: Any, p: Any, g0: Any, g: Any, s: tuple, y: tuple, ok: list[bool]) -> tuple[tuple, tuple]:
        """The histories after the step ``x0 -> p`` of the members ``ok``: shifted as Python tuples when every
        member takes its pair (one network, usually), by :func:`_remember` when only some do."""
        if not any(ok):
            return s, y
        if all(ok):
            return s[1:] + (p - x0,), y[1:] + (g - g0,)
        mask = _backend.from_numpy(np.array(ok).reshape(-1, 1), self.xp, self.device)
        return self._call(2, x0, p, g0, g, s, y, mask)

    def start(self, params: Any, active: list[bool]) -> np.ndarray:
        """The read-back row (K, 7) at ``params`` (evaluated, and counted, unless the last iteration ended
        there); members whose largest gradient entry is already at most ``tol`` stop (reason "gtol")."""
        if self._at is None or self._at[0] is not params:
            xp, k = self.xp, self.k
            zero_d = xp.zeros_like(params)
            zero_t = xp.zeros((k, 1), dtype=self.dtype, device=self.device)
            extra = xp.zeros((k, 2), dtype=self.dtype, device=self.device)
            _, g, host = self._evaluate(params, zero_d, zero_d, zero_t, extra)
            self.evals += np.asarray(active, dtype=np.int64)
            self._at = (params, g, host)
        host = self._at[2]
        for i in range(self.k):
            if active[i] and self.reasons[i] is None and host[i, _GMAX] <= self.tol:
                self.reasons[i] = "gtol"
        return host

    def iterate(self, params: Any, s: tuple[Any, ...], y: tuple[Any, ...], active: list[bool]):
        """One iteration of the members ``active`` (that have not stopped): ``(params, s, y, Result)``. Members
        that sit out keep their weights and history."""
        xp, k = self.xp, self.k
        start = self.start(params, active)
        g0 = self._at[1]  # type: ignore[index]
        # The members' host bookkeeping is Python lists: K is small, and a NumPy operation on K numbers costs
        # more than the loop over them (a tenth of a small network's iteration).
        ran = [active[i] and self.reasons[i] is None for i in range(k)]
        if k == 1 and _backend.numpy_fast_path(xp):  # the pairs' s.y, as the read-back rows held them
            if self._sy is None or self._sy[0] is not s:
                self._sy = (s, _curvatures(s, y))
            d, extra = self._call(1, g0, s, y, self._sy[1])
        else:
            d, extra = self._call(1, g0, s, y)
        searches = {i: wolfe(float(start[i, _F])) for i in range(k) if ran[i]}
        t = np.zeros(k)
        for i, search in searches.items():
            t[i] = next(search)[1]
        kept_p, kept_g, rows, steps, ok = params, g0, start.copy(), [0.0] * k, [False] * k
        first = True
        while searches:
            p, g, host = self._evaluate(params, g0, d, self._up(t.reshape(k, 1)), extra)
            keep = [False] * k
            for i, search in list(searches.items()):
                self.evals[i] += 1
                sent = (host[i, _F], host[i, _GTD]) + ((host[i, _GTD0], host[i, _DMAX]) if first else ())
                try:
                    keep[i], t_next = search.send(sent)  # type: ignore[arg-type]
                except StopIteration as stop:
                    keep[i], steps[i], ok[i] = stop.value
                    del searches[i]
                    t_next = 0.0
                if keep[i]:
                    rows[i], steps[i] = host[i], t[i]
                t[i] = t_next
            first = False
            if all(keep):  # one network, usually
                kept_p, kept_g = p, g
            elif any(keep):
                mask = _backend.from_numpy(np.array(keep).reshape(k, 1), xp, self.device)
                kept_p, kept_g = xp.where(mask, p, kept_p), xp.where(mask, g, kept_g)
        failed = [ran[i] and not ok[i] for i in range(k)]
        if any(failed):  # a member whose search found no lower loss stays where it was
            back = _backend.from_numpy(np.array(failed).reshape(k, 1), xp, self.device)
            kept_p, kept_g = xp.where(back, params, kept_p), xp.where(back, g0, kept_g)
        taken = [bool(ran[i] and ok[i] and rows[i, _SY] > self.eps * rows[i, _YY]) for i in range(k)]
        old_s, (s, y) = s, self._remember(params, kept_p, g0, kept_g, s, y, taken)
        if self._sy is not None and self._sy[0] is old_s and s is not old_s:  # the kept row's s.y joins with its pair
            self._sy = (s, self._sy[1][1:] + [self.host_dtype.type(rows[0, _SY])])
        for i in (i for i in range(k) if ran[i]):
            f0, f1 = float(start[i, _F]), float(rows[i, _F])
            if not ok[i]:
                self.reasons[i] = "line search"
                rows[i], steps[i] = start[i], 0.0
            elif self.evals[i] > self.max_fun:  # before convergence, as SciPy checks its limits first
                self.reasons[i] = "max_fun"
            elif rows[i, _GMAX] <= self.tol:
                self.reasons[i] = "gtol"
            elif (f0 - f1) <= self.ftol * max(abs(f0), abs(f1), 1.0):
                self.reasons[i] = "ftol"
        self._at = (kept_p, kept_g, rows)
        return kept_p, s, y, Result(rows, np.array(steps, dtype=np.float64), np.array(ran), list(self.reasons))

    def pairs(self, state: dict[str, Any], stacked: bool) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """An optimizer state's history as (K, P) buffers, oldest first."""
        xp, m = self.xp, self.history

        def one(name: str) -> Any:
            a = state[name]
            return a if stacked else xp.reshape(a, (1, -1))

        return tuple(one(f"s{i}") for i in range(m)), tuple(one(f"y{i}") for i in range(m))


REASONS = {
    "gtol": "the largest gradient entry fell to tol",
    "ftol": "the loss changed by less than ftol",
    "max_fun": "the evaluations exceeded max_fun",
    "line search": "the line search found no lower loss",
}


# ------------------------------------------------------------------------------------- a lone network
@dataclass(frozen=True)
class Ran:
    """An iteration of a lone network: the states before and after it, its host read-back row and step, and the
    validation sums at the new weights (on the device)."""

    old: train.State
    new: train.State
    row: np.ndarray
    step: float
    val_loss: list[Any]
    val_correct: list[Any]


class Runner:
    """:mod:`gpunn.fitloop`'s runner for ``optimizer="lbfgs"``: one iteration an epoch (a :class:`Solver` of one
    member), in place of :class:`gpunn.train.Runner`'s pass over batches."""

    def __init__(self, hyper: Any, xp: Any, device: Any, dtype: str, compile: Any, data: Any):
        stacked = stacked_hyper(hyper.sizes, hyper.activation, hyper.output, hyper.loss, hyper.optimizer,
                                (hyper.l2,), None, (0.0,), (0,), label_smoothing=hyper.label_smoothing)  # fmt: skip
        weight = getattr(data, "weight", None)
        m = data.n_rows if data.weight_total is None else data.weight_total
        self.solver = Solver(stacked, hyper.optimizer, xp, device, dtype, compile,
                             (data.x, data.target, weight, None), [m], [data.n_rows], (hyper.l2,))  # fmt: skip
        self.hyper, self.xp = hyper, xp
        self.step = self.solver.fns.step  # what gpunn.train reads the hyper-parameters and namespace from
        self._rows: tuple[Any, Any] | None = None  # the last weights (P,) and the solver's (1, P) of them
        self._pairs: tuple[Any, tuple, tuple] | None = None  # the last optimizer state and its pairs as (1, P)
        self._compiles_before = _backend.compiles()
        self._slots = optim.slots("lbfgs", hyper.optimizer.hyper)  # the state's names of the pairs s and y
        self._last_views: tuple[tuple, tuple, list[Any]] | None = None  # pairs s and y and their (P,) views

    def compiles(self) -> tuple[int, float]:
        """``(programs, seconds)`` compiled since this runner was made, as :meth:`gpunn.train.Runner.compiles`."""
        return train.compiles_since(self._compiles_before)

    @property
    def reason(self) -> str | None:
        """Why the network stopped in this fit (None: it has not)."""
        return self.solver.reasons[0]

    def _row(self, params: Any) -> Any:
        """The (P,) weights as the solver's (1, P), the same array for the same weights (the solver knows the
        weights it evaluated last by their array: a fit's first iteration starts from the evaluation done() made)."""
        if self._rows is None or self._rows[0] is not params:
            self._rows = (params, self.xp.reshape(params, (1, -1)))
        return self._rows[1]

    def _views(self, before: tuple[tuple, tuple], s: tuple, y: tuple) -> list[Any]:
        """The state's (P,) views of the pairs ``s`` and ``y`` (1, P): those of the pairs ``before`` the iteration,
        shifted by the pair it took, where they are known (a pair stays in the history for many iterations)."""
        m, last = len(s), self._last_views
        views = None
        if last is not None and last[0] is before[0] and last[1] is before[1]:
            if s is before[0] and y is before[1]:  # no pair taken
                views = last[2]
            elif all(a is b for a, b in zip(s[:-1] + y[:-1], before[0][1:] + before[1][1:])):
                views = last[2][1:m] + [s[-1][0, :]] + last[2][m + 1 :] + [y[-1][0, :]]
        if views is None:
            views = [a[0, :] for a in s + y]
        self._last_views = (s, y, views)
        return views

    def done(self, state: train.State) -> bool:
        """True once the network has stopped (evaluating it at ``state`` first, at a fit's start)."""
        self.solver.start(self._row(state.params), [True])
        return self.reason is not None

    def start_epoch(self, state: train.State, val: Any) -> Ran:
        """One iteration from ``state``; its validation sums queued on the device."""
        if self._pairs is not None and self._pairs[0] is state.optimizer_state:
            s, y = self._pairs[1:]  # the (1, P) rows of the state the last iteration left
        else:
            s, y = self.solver.pairs(state.optimizer_state, False)
        before = (s, y)
        new, s, y, result = self.solver.iterate(self._row(state.params), s, y, [True])
        opt = {"step": int(state.optimizer_state["step"]) + 1, **dict(zip(self._slots, self._views(before, s, y)))}
        self._pairs = (opt, s, y)
        params = new[0, :]
        self._rows = (params, new)
        val_loss, val_correct = ([], []) if val is None else val.evaluate_sums(params)
        new_state = train.State(params, opt, state.epoch + 1, state.rng_state, state.schedule_state)
        return Ran(state, new_state, result.rows[0], float(result.steps[0]), list(val_loss), list(val_correct))

    def finish_epochs(self, ran: list[Ran], data: Any, val: Any, schedule: Any) -> Iterator[tuple[train.State, dict]]:
        """The iterations ``ran`` as ``(new state, record)``, their validation sums read back together."""
        hyper = self.hyper
        floats, counts = train.read_back([a for r in ran for a in r.val_loss], self.xp,
                                         [a for r in ran for a in r.val_correct])  # fmt: skip
        f = c = 0
        for r in ran:
            record = row_record(r.row, hyper, data.weight_total is not None, data.n_rows)
            if not math.isfinite(record["loss"]):
                raise train.non_finite(r.old.epoch, np.asarray([record["loss"]]), record["loss"])
            if val is not None:
                nv, nc = len(r.val_loss), len(r.val_correct)
                record["val_loss"] = float(np.sum(floats[f : f + nv])) * train.loss_scale(hyper, val.n_rows)
                if nc:
                    labels = val.n_rows * train.labels_per_row(hyper)
                    record["val_accuracy"] = float(np.sum(counts[c : c + nc])) / labels
                f, c = f + nv, c + nc
            record["lr"] = r.step
            new = train.State(r.new.params, r.new.optimizer_state, r.new.epoch, r.new.rng_state,
                              schedule.update(r.old.schedule_state, record))  # fmt: skip
            yield new, record


def row_record(row: np.ndarray, spec: Any, weighted: bool, n: int) -> dict[str, float]:
    """History's loss (and weighted loss, accuracy) from an evaluation's read-back row of ``n`` training rows."""
    record = {"loss": float(row[_PLAIN])}
    if weighted:
        record["weighted_loss"] = float(row[_F])
    if spec.output not in losses.REGRESSION:
        record["accuracy"] = float(row[_CORRECT]) / (n * train.labels_per_row(spec))
    return record
