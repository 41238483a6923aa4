"""The research API: loss_and_grads with its penalty and weights, and a JAX model's methods under jit/grad/vmap."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn


def _reference_loss(flat: np.ndarray, sizes: list[int], X: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float):
    """The weighted mean binary cross-entropy of a ReLU network plus l2 / (2 sum(w)) * sum(W**2), written here."""
    a, offset, penalty = X, 0, 0.0
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = flat[offset : offset + fan_in * fan_out].reshape(fan_out, fan_in)
        b = flat[offset + fan_in * fan_out : offset + fan_in * fan_out + fan_out]
        offset += fan_in * fan_out + fan_out
        z = a @ W.T + b
        a = np.maximum(z, 0) if i < len(sizes) - 2 else z
        penalty += np.sum(W * W)
    z = a[:, 0]
    per_row = np.logaddexp(0, z) - y * z
    return np.sum(w * per_row) / np.sum(w) + 0.5 * l2 / np.sum(w) * penalty


@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_grads_with_l2_and_sample_weight_match_finite_differences(weighted):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 3)), (rng.random(30) > 0.5).astype(float)
    w = rng.uniform(0.2, 3.0, 30) if weighted else np.ones(30)
    m = gpunn.MLP([3, 5, 1], device="cpu", dtype="float64", seed=3)
    loss, grads = m.loss_and_grads(X, y, l2=0.3, sample_weight=w if weighted else None)
    flat = np.asarray(m.params).copy()
    assert float(loss) == pytest.approx(_reference_loss(flat, m.sizes, X, y, w, 0.3), rel=1e-12)
    numeric = np.empty_like(flat)
    for i in range(flat.size):
        e = np.zeros_like(flat)
        e[i] = 1e-6
        numeric[i] = (
            _reference_loss(flat + e, m.sizes, X, y, w, 0.3) - _reference_loss(flat - e, m.sizes, X, y, w, 0.3)
        ) / 2e-6
    analytic = np.concatenate([np.concatenate([dW.reshape(-1), db]) for dW, db in grads])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def _jax_model():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    X, y = gpunn.data.make_moons(64, seed=1)
    m = gpunn.MLP([2, 8, 1], xp=jnp, device=jax.devices("cpu")[0], dtype="float64", standardize=True, seed=2)
    m.fit(X, y, epochs=5, verbose=0)
    return jax, jnp, m, jnp.asarray(X), jnp.asarray(y)


def test_a_jax_models_methods_work_under_jit_and_vmap():
    jax, jnp, m, X, y = _jax_model()
    for method in (m.predict_proba, m.decision_function):
        eager = np.asarray(method(X))
        np.testing.assert_allclose(np.asarray(jax.jit(method)(X)), eager, rtol=1e-12)
        rows = jax.vmap(lambda row, f=method: f(row[None, :])[0])(X)
        np.testing.assert_allclose(np.asarray(rows), eager, rtol=1e-12)
    loss, grads = m.loss_and_grads(X, y)
    jit_loss, jit_grads = jax.jit(m.loss_and_grads)(X, y)
    assert float(jit_loss) == pytest.approx(float(loss), rel=1e-12)
    for (dw, db), (jw, jb) in zip(grads, jit_grads):
        np.testing.assert_allclose(np.asarray(jw), np.asarray(dw), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(np.asarray(jb), np.asarray(db), rtol=1e-10, atol=1e-14)


def test_jax_grad_through_predict_proba_and_the_loss_matches_finite_differences():
    jax, jnp, m, X, y = _jax_model()
    Xh = np.asarray(X)

    def total(x):
        return jnp.sum(m.predict_proba(x))

    def loss(x):
        return m.loss_and_grads(x, y)[0]

    for f in (total, loss):
        g = np.asarray(jax.grad(f)(X))
        numeric = np.empty_like(Xh)
        for i, j in [(0, 0), (5, 1), (17, 0), (63, 1)]:
            e = np.zeros_like(Xh)
            e[i, j] = 1e-6
            numeric[i, j] = (float(f(jnp.asarray(Xh + e))) - float(f(jnp.asarray(Xh - e)))) / 2e-6
            assert g[i, j] == pytest.approx(numeric[i, j], rel=1e-5, abs=1e-9)
