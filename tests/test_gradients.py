"""Backprop against oracles: central finite differences in float64, and torch autograd.

The finite differences run on an independent NumPy float64 implementation of the network and of the loss
definitions, written here from the formulas, so a wrong loss or a wrong gradient in gpunn both show up.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import gpunn
from gpunn import _backend

PAIRS = [
    ("sigmoid", "binary_crossentropy", 1),
    ("sigmoid", "binary_crossentropy", 3),  # multi-label: mean over all elements
    ("softmax", "categorical_crossentropy", 4),
    ("identity", "mse", 2),
    ("sigmoid", "mse", 1),
    ("exp", "poisson", 2),  # counts, zeros among them (0 log 0 = 0)
]
HIDDEN = [[], [5], [6, 4, 5]]


REFERENCE_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "identity": lambda z: z,
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "elu": lambda z: np.where(z > 0, z, np.exp(np.minimum(z, 0.0)) - 1.0),
    "gelu": lambda z: 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3))),
    "silu": lambda z: z / (1.0 + np.exp(-z)),
    "softplus": lambda z: np.log1p(np.exp(z)),
}
NEW_ACTIVATIONS = ["leaky_relu", "elu", "gelu", "silu", "softplus"]


def reference_loss(params: list[np.ndarray], X, y, activation, output: str, loss: str) -> float:
    """The network and its loss written from the definitions, in float64 NumPy (``activation``: one name or one
    per hidden layer)."""
    n_hidden = len(params) // 2 - 1
    names = [activation] * n_hidden if isinstance(activation, str) else activation
    a = X
    for i, name in zip(range(0, len(params) - 2, 2), names):
        a = REFERENCE_ACTIVATIONS[name](a @ params[i].T + params[i + 1])
    z = a @ params[-2].T + params[-1]
    if output == "softmax":
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-np.mean(log_p[np.arange(len(y)), y]))
    target = y.reshape(z.shape)
    if output == "identity":
        return float(np.mean((z - target) ** 2))
    if output == "exp":  # the Poisson deviance 2 (y log(y / mu) - y + mu) of mu = e^z, each element's, averaged
        mu = np.exp(z)
        y_log_y_over_mu = np.where(target > 0, target * (np.log(np.where(target > 0, target, 1.0)) - z), 0.0)
        return float(np.mean(2.0 * (y_log_y_over_mu - target + mu)))
    p = 1.0 / (1.0 + np.exp(-z))
    if loss == "mse":
        return float(np.mean((p - target) ** 2))
    return float(np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p))))


def make_problem(rng, sizes, output):
    n = 7
    X = rng.normal(size=(n, sizes[0]))
    k = sizes[-1]
    if output == "softmax":
        y = rng.integers(0, k, size=n)
    elif output == "identity":
        y = rng.normal(size=(n, k))
    elif output == "exp":
        y = rng.poisson(1.5, size=(n, k)).astype(float)
        y[0, 0] = 0.0
    else:
        y = rng.integers(0, 2, size=(n, k)).astype(float)
        y = y[:, 0] if k == 1 else y
    return X, y


def finite_differences(params, X, y, activation, output, loss, h=1e-6):
    grads = []
    for p in params:
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up = reference_loss(params, X, y, activation, output, loss)
            p[idx] = old - h
            down = reference_loss(params, X, y, activation, output, loss)
            p[idx] = old
            g[idx] = (up - down) / (2 * h)
        grads.append(g)
    return grads


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


def _backends_and_hidden() -> list:
    """Every namespace with every HIDDEN, except JAX with one hidden layer: JAX's eager operations compile once
    per shape, and one hidden layer runs the code that three run (on JAX too)."""
    from conftest import _backends  # the backend fixture's parameters, given to it here (indirect)

    return [
        pytest.param(b.values[0], hidden, id=f"{b.id}-{'x'.join(map(str, hidden)) or 'none'}", marks=b.marks)
        for b in _backends()
        for hidden in HIDDEN
        if b.values[0][1] != "jax.numpy" or len(hidden) != 1
    ]


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "identity"])
@pytest.mark.parametrize("output,loss,k", PAIRS)
@pytest.mark.parametrize(("backend", "hidden"), _backends_and_hidden(), indirect=["backend"])
def test_backprop_matches_finite_differences(backend, rng, activation, output, loss, k, hidden):
    sizes = [3, *hidden, k]
    m = gpunn.MLP(sizes, activation=activation, output=output, loss=loss, dtype="float64", seed=3, **backend.kwargs())
    # Non-zero biases so that every parameter matters.
    m.set_weights([(_backend.to_numpy(w), rng.normal(scale=0.5, size=w.shape[0])) for w, _ in m.weights])
    X, y = make_problem(rng, sizes, output)
    value, grads = m.loss_and_grads(X, y)
    params = [_backend.to_numpy(a).copy() for pair in m.weights for a in pair]
    expected_loss = reference_loss(params, X, y, activation, output, loss)
    assert float(value) == pytest.approx(expected_loss, rel=1e-12, abs=1e-14)
    numeric = finite_differences(params, X, y, activation, output, loss)
    analytic = [_backend.to_numpy(g) for pair in grads for g in pair]
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        assert a.shape == n.shape
        assert relative_error(a, n) <= 1e-6, f"parameter {i}: analytic {a} vs numeric {n}"


@pytest.mark.parametrize(
    "activation", [*NEW_ACTIVATIONS, ["gelu", "relu", "softplus"], ["elu", "tanh", "silu"]], ids=str
)
@pytest.mark.parametrize("output,loss,k", PAIRS[:2])
def test_backprop_of_more_activations_matches_finite_differences(backend, rng, activation, output, loss, k):
    """The activations beyond the seed's, and one per hidden layer, on every namespace."""
    sizes = [3, 6, 4, 5, k]
    m = gpunn.MLP(sizes, activation=activation, output=output, loss=loss, dtype="float64", seed=3, **backend.kwargs())
    m.set_weights([(_backend.to_numpy(w), rng.normal(scale=0.5, size=w.shape[0])) for w, _ in m.weights])
    X, y = make_problem(rng, sizes, output)
    value, grads = m.loss_and_grads(X, y)
    params = [_backend.to_numpy(a).copy() for pair in m.weights for a in pair]
    assert float(value) == pytest.approx(reference_loss(params, X, y, activation, output, loss), rel=1e-12)
    numeric = finite_differences(params, X, y, activation, output, loss)
    for i, (a, n) in enumerate(zip((_backend.to_numpy(g) for pair in grads for g in pair), numeric)):
        assert relative_error(a, n) <= 1e-6, f"parameter {i}: analytic {a} vs numeric {n}"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("output,loss,k", PAIRS)
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", *NEW_ACTIVATIONS])
def test_backprop_matches_torch_autograd(rng, activation, output, loss, k):
    import torch

    sizes = [4, 8, 6, k]
    m = gpunn.MLP(sizes, activation=activation, output=output, loss=loss, dtype="float64", device="cpu")
    X, y = make_problem(rng, sizes, output)
    value, grads = m.loss_and_grads(X, y)

    params = [torch.tensor(np.asarray(a), requires_grad=True) for pair in m.weights for a in pair]
    f = torch.nn.functional
    act = {
        "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "leaky_relu": f.leaky_relu, "elu": f.elu,
        "gelu": lambda z: f.gelu(z, approximate="tanh"), "silu": f.silu, "softplus": f.softplus,
    }[activation]  # fmt: skip
    a = torch.tensor(X)
    for i in range(0, len(params) - 2, 2):
        a = act(a @ params[i].T + params[i + 1])
    z = a @ params[-2].T + params[-1]
    if output == "softmax":
        ref = torch.nn.functional.cross_entropy(z, torch.tensor(y))
    elif output == "identity":
        ref = torch.nn.functional.mse_loss(z, torch.tensor(y).reshape(z.shape))
    elif output == "exp":  # torch's Poisson NLL, e^z - y z, plus the deviance's terms in y alone
        t = torch.tensor(y).reshape(z.shape)
        ref = 2.0 * (f.poisson_nll_loss(z, t, log_input=True, full=False) + torch.mean(torch.special.xlogy(t, t) - t))
    elif loss == "mse":
        ref = torch.nn.functional.mse_loss(torch.sigmoid(z), torch.tensor(y).reshape(z.shape))
    else:
        ref = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(y).reshape(z.shape))
    ref.backward()
    assert float(value) == pytest.approx(ref.item(), rel=1e-12)
    for g, p in zip((g for pair in grads for g in pair), params):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("output,loss,k", [p for p in PAIRS if p[0] not in ("identity", "exp")])
def test_loss_and_gradients_stay_finite_for_huge_logits(backend, output, loss, k):
    """Logits of +-1e3 in float32: the log-sum-exp forms keep loss and gradients finite, and equal to torch
    autograd's in float64 at the same weights (about 1e3 for the cross-entropies, with gradients of +-1 per row
    before averaging)."""
    xp = backend.xp
    m = gpunn.MLP([1, k], output=output, loss=loss, dtype="float32", **backend.kwargs())
    w = np.full((k, 1), 1e3)
    if output == "softmax":
        w[1:] = np.array([[-1e3]] + [[0.0]] * (k - 2))  # class 0 wins for x = 1, class 1 for x = -1
    m.set_weights([(w, np.zeros(k))])
    X = np.array([[1.0], [-1.0]])
    y = np.array([0, 1])
    if output == "softmax":
        y = 1 - y
    target = y if k == 1 or output == "softmax" else np.stack([y] * k, axis=1)
    value, grads = m.loss_and_grads(X, target)
    assert bool(xp.isfinite(value))
    if loss != "mse":
        assert float(value) > 100  # both samples are confidently wrong: the loss is about 1e3
    for pair in grads:
        for g in pair:
            assert bool(xp.all(xp.isfinite(g)))

    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    W = torch.tensor(w, requires_grad=True)  # 1e3 and 0 are exact in float32: the same weights in float64
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    z = torch.tensor(X) @ W.T + b
    t = torch.tensor(target)
    if output == "softmax":
        ref = f.cross_entropy(z, t)
    elif loss == "mse":
        ref = f.mse_loss(torch.sigmoid(z), t.reshape(z.shape).double())
    else:
        ref = f.binary_cross_entropy_with_logits(z, t.reshape(z.shape).double())
    ref.backward()
    # float32: the loss (about 1e3) to a few units in the last place, relative 1e-6; the gradients are means
    # of two terms of size <= 1, so an absolute 1e-6 is about 8 float32 ulps of 1.
    assert float(value) == pytest.approx(ref.item(), rel=1e-6, abs=1e-6)
    ((dW, db),) = [tuple(_backend.to_numpy(g) for g in pair) for pair in grads]
    np.testing.assert_allclose(dW, W.grad.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(db, b.grad.numpy(), rtol=0, atol=1e-6)
    assert np.abs(W.grad.numpy()).max() > 0.3 or loss == "mse"  # a vanishing gradient would check little


@pytest.mark.parametrize("width", [9, 70])  # the fast path runs narrow layers transposed, wide ones not
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("output,loss,k", PAIRS)
def test_numpy_fast_path_equals_the_generic_path(monkeypatch, rng, activation, output, loss, k, optimizer, width):
    sizes = [4, width, 7, k]
    X, y = make_problem(rng, sizes, output)
    results = []
    for fast in (True, False):
        monkeypatch.setattr(_backend, "NUMPY_FAST_PATHS", fast)
        m = gpunn.MLP(sizes, activation=activation, output=output, loss=loss, dtype="float64", device="cpu")
        value, grads = m.loss_and_grads(X, y)
        m.fit(X, y, epochs=3, batch_size=3, optimizer=optimizer, lr=0.01, verbose=0)
        results.append((float(value), [np.array(g) for pair in grads for g in pair], m.history.loss,
                        [np.array(w) for pair in m.weights for w in pair]))  # fmt: skip
    (v1, g1, h1, w1), (v2, g2, h2, w2) = results
    assert v1 == pytest.approx(v2, rel=1e-14)  # softplus: logaddexp against its textbook form
    for a, b in zip(g1 + w1, g2 + w2):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)  # only the order of sums differs
    np.testing.assert_allclose(h1, h2, rtol=1e-13)


@pytest.mark.parametrize("stacked", [False, True])
def test_torch_relu_fast_form_equals_the_generic_path_and_torch_autograd(monkeypatch, rng, stacked):
    """PyTorch runs ReLU through torch.relu and its backward kernel (``_backend.relu_form``): the same gradients
    and training as the standard's where() form, bit for bit, and as torch autograd's (ReLU's subgradient at 0
    is 0 in all three: z exactly 0 is drawn here too)."""
    torch = pytest.importorskip("torch")
    sizes = [4, 9, 7, 1]
    X, y = make_problem(rng, sizes, "sigmoid")
    X[:3, :] = 0.0  # rows whose first layer's pre-activations are the biases alone
    results = []
    for fast in (True, False):
        monkeypatch.setattr(_backend, "TORCH_RELU", fast)
        kw = dict(output="sigmoid", dtype="float64", xp=torch, device="cpu", seed=1)
        m = gpunn.Ensemble(sizes, 2, **kw) if stacked else gpunn.MLP(sizes, **kw)
        m.fit(X, y, epochs=3, batch_size=5, optimizer="adam", lr=0.01, verbose=0)
        member = m.members[1] if stacked else m
        value, grads = member.loss_and_grads(X, y)
        results.append((float(value), [np.array(g) for pair in grads for g in pair], np.array(member.params)))
    (v1, g1, p1), (v2, g2, p2) = results
    assert v1 == v2 and all(np.array_equal(a, b) for a, b in zip(g1, g2)) and np.array_equal(p1, p2)
    # the oracle: torch autograd of the same network at the trained weights
    layers = [(torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True))
              for w, b in member.numpy_weights()]  # fmt: skip
    a = torch.tensor(X)
    for i, (w, b) in enumerate(layers):
        a = a @ w.T + b
        a = torch.relu(a) if i < len(layers) - 1 else a
    t = torch.tensor(np.asarray(y, dtype=np.float64).reshape(-1, 1))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(a, t)
    loss.backward()
    want = [g.grad.numpy() for pair in layers for g in pair]
    for got, ref in zip(g1, want):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
