"""optimizer="lbfgs" on JAX (issue 28.3): a compiled fit's full batch is padded to a power-of-two bucket of rows
with rows that count for nothing, so a new row count in the same bucket compiles nothing. The padded fit is held
to the NumPy fit of the same data, which pads nothing (float64, 1e-11): weights, every record, iterations and why
it stopped, for a lone MLP (softmax, multilabel sigmoid, Poisson) and an ensemble (also on its own rows), with
and without sample weights, with l2. XLA compilations are counted with JAX's own backend-compile events."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn import _backend, lbfgs, optim

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

TOL = 1e-11
RECORDS = ("loss", "weighted_loss", "accuracy", "lr")


@pytest.fixture(scope="module")
def compiles():
    """XLA compilations, counted by JAX's monitoring events (tests/jax_compiles.py): ``compiles.during(fn)``."""
    import jax_compiles

    return jax_compiles


@pytest.fixture
def held_rows(monkeypatch):
    """The rows of every L-BFGS solver's data, as the solver holds them on the device."""
    seen = []
    real = lbfgs.Solver.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen.append(self.data[0].shape[0])

    monkeypatch.setattr(lbfgs.Solver, "__init__", init)
    return seen


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    labels = np.argmax(X @ rng.normal(size=(4, 3)) + rng.normal(scale=1.5, size=(n, 3)), axis=1)
    return X, labels, rng.uniform(0.5, 2.0, size=(3, n))


def _jax(**kw):
    return dict(xp=jnp, device=jax.devices("cpu")[0], compile=True, **kw)


def _numpy(**kw):
    return dict(device="cpu", **kw)


def fit_mlp(n, where, weighted=False, epochs=15, seed=0, output="softmax"):
    X, labels, w = data(n, seed)
    y = {"softmax": labels, "sigmoid": np.eye(3, dtype=int)[labels] | (X[:, :3] > 1),  # multilabel
         "exp": np.random.default_rng(seed).poisson(np.exp(0.5 * X[:, :2])).astype(float)}[output]  # fmt: skip
    m = gpunn.MLP([4, 6, y.shape[1] if y.ndim == 2 else 3], activation="tanh", output=output, dtype="float64",
                  seed=seed, **where)  # fmt: skip
    h = m.fit(X, y, epochs=epochs, optimizer=optim.lbfgs(tol=0.0), l2=1e-2, verbose=0,
              sample_weight=w[0] if weighted else None)  # fmt: skip
    return [m], [h]


def fit_ensemble(n, where, weighted=False, epochs=15, seed=0, own_rows=False):
    X, labels, w = data(n, seed)
    ens = gpunn.Ensemble([4, 6, 3], 3, activation="tanh", output="softmax", dtype="float64",
                         seed=[seed, seed + 1, seed + 2], **where)  # fmt: skip
    rows = [np.arange(j, n - 2 * j) for j in range(3)] if own_rows else None
    hs = ens.fit(X, labels, epochs=epochs, optimizer=optim.lbfgs(tol=5e-3), l2=[0.0, 1e-2, 10.0], verbose=0,
                 sample_weight=w if weighted else None, rows=rows)  # fmt: skip
    return ens.members, hs


CASES = {
    "mlp": fit_mlp,
    "mlp-weighted": lambda n, where: fit_mlp(n, where, weighted=True),
    "mlp-multilabel": lambda n, where: fit_mlp(n, where, output="sigmoid"),
    "mlp-poisson-weighted": lambda n, where: fit_mlp(n, where, weighted=True, output="exp"),
    "ensemble": fit_ensemble,
    "ensemble-weighted": lambda n, where: fit_ensemble(n, where, weighted=True),
    "ensemble-own-rows-weighted": lambda n, where: fit_ensemble(n, where, weighted=True, own_rows=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_padded_jax_fit_equals_the_numpy_fit(case, held_rows):
    """230 rows padded to 256 on JAX; NumPy's fit of the same 230 rows, which pads nothing, is the oracle: the
    weights, every iteration's record (the loss, the weighted loss, the accuracy, the accepted step), the
    iterations run and why each network stopped."""
    fit = CASES[case]
    padded, h_padded = fit(230, _jax())
    plain, h_plain = fit(230, _numpy())
    assert held_rows == [256, 230]  # JAX's solver on the bucket's rows, NumPy's on the data's
    for a, b, ha, hb in zip(padded, plain, h_padded, h_plain):
        np.testing.assert_allclose(_backend.to_numpy(a.params), b.params, rtol=0, atol=TOL)
        assert a.epoch == b.epoch and a.stopped_by == b.stopped_by and len(ha.loss) == len(hb.loss) > 3
        assert a.optimizer_state["step"] == b.optimizer_state["step"]
        for name in RECORDS:
            if getattr(hb, name, None):
                np.testing.assert_allclose(getattr(ha, name), getattr(hb, name), rtol=0, atol=TOL, err_msg=name)


def test_uncompiled_jax_and_a_sparse_x_pad_nothing(held_rows):
    """Padding is for a compiled fit on a namespace whose eager operations compile: JAX with compile=False, and
    a sparse X (placed whole, its rows densified), train on the data's rows as before."""
    sparse = pytest.importorskip("scipy.sparse")
    fit_mlp(230, dict(xp=jnp, device=jax.devices("cpu")[0], compile=False), epochs=2)
    X, labels, _ = data(230)
    m = gpunn.MLP([4, 6, 3], output="softmax", dtype="float64", seed=0, **_jax())
    m.fit(sparse.csr_matrix(X), labels, epochs=2, optimizer="lbfgs", verbose=0)
    assert held_rows == [230, 230]


@pytest.mark.parametrize("kind", ["mlp", "ensemble"])
def test_a_new_row_count_in_the_same_bucket_compiles_nothing(kind, compiles, held_rows):
    """200 and 230 rows share the bucket of 256: the second fit (a fresh model, other data, weighted as the
    first) compiles no program; 300 rows cross into the bucket of 512 and compile again (the count sees it)."""
    fit = {"mlp": fit_mlp, "ensemble": fit_ensemble}[kind]
    lbfgs._functions.cache_clear()  # no program kept from an earlier test's shapes
    fit(200, _jax(), weighted=True, epochs=4, seed=1)
    assert compiles.during(lambda: fit(230, _jax(), weighted=True, epochs=4, seed=2)) == 0
    assert compiles.during(lambda: fit(300, _jax(), weighted=True, epochs=4, seed=3)) > 0
    assert held_rows == [256, 256, 512]
