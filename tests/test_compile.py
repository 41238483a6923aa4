"""MLP(compile=...): the step compiled with jax.jit equals the eager step, and every guarantee holds with it."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn import _backend, train

jax = pytest.importorskip("jax")
jnp = jax.numpy


def _problem(n=103, k=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    if k == 0:  # regression
        return X, X[:, :1] * X[:, 1:2] + 0.1 * rng.normal(size=(n, 1))
    score = X[:, 0] * X[:, 1] + X[:, 2]
    y = (score > 0).astype(int) if k == 1 else np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    return X, y


def _host(m):
    return np.array(_backend.to_numpy(m.params))


CONFIGS = [  # every optimizer, output and batching mode, l2 and clipping, shuffling on and off
    dict(k=1, activation="relu", fit=dict(optimizer="sgd", lr=0.3)),
    dict(k=1, activation="tanh", fit=dict(optimizer="momentum", lr=0.1, batch_size=16, l2=0.01)),
    dict(k=3, activation="sigmoid", fit=dict(optimizer="adam", lr=0.01, batch_size=10, clip_norm=0.5)),
    dict(k=0, activation="relu", fit=dict(optimizer=gpunn.optim.momentum(nesterov=True), lr=0.05, batch_size=32,
                                          shuffle=False)),
]  # fmt: skip


@pytest.mark.parametrize("cfg", CONFIGS, ids=["sgd-full", "momentum-l2", "adam-softmax-clip", "nesterov-mse"])
def test_compiled_jax_equals_eager_jax_and_numpy(cfg):
    X, y = _problem(k=cfg["k"])
    sizes = [4, 8, 8, 3 if cfg["k"] == 3 else 1]
    output = {0: "identity", 1: "sigmoid", 3: "softmax"}[cfg["k"]]
    runs = {}
    for name, where in [
        ("compiled", dict(xp=jnp, device="cpu", compile=True)),
        ("eager", dict(xp=jnp, device="cpu", compile=False)),
        ("numpy", dict(device="cpu")),
    ]:
        m = gpunn.MLP(sizes, activation=cfg["activation"], output=output, dtype="float64", seed=2, **where)
        h = m.fit(X, y, epochs=5, verbose=0, validation_data=(X[:20], y[:20]), **cfg["fit"])
        runs[name] = (_host(m), h)
    for name in ("eager", "numpy"):
        np.testing.assert_allclose(runs["compiled"][0], runs[name][0], rtol=0, atol=1e-9)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(getattr(runs["compiled"][1], key), getattr(runs[name][1], key), rtol=1e-9)


def test_compiled_minibatch_epochs_train_on_segments_as_numpy_trains_the_flat_buffer(monkeypatch):
    """A compiled JAX epoch of several batches carries the parameters and Adam's slots as per-layer segments, and
    gathers each shuffled batch inside the step: the weights and History equal eager NumPy's on the flat buffer,
    with every part of the update that treats weights and biases apart (l2, AdamW's decay, clipping by the
    global norm) and sample weights and dropout."""
    train._compiled.cache_clear()
    traced = []
    real = train._join

    def spy(xp, params, state):
        traced.append((type(params), sorted(state)))
        return real(xp, params, state)

    monkeypatch.setattr(train, "_join", spy)
    X, y = _problem(k=3)
    w = np.random.default_rng(3).uniform(0.5, 2.0, size=len(y))
    runs = []
    for where in (dict(xp=jnp, device="cpu", compile=True), dict(device="cpu")):
        m = gpunn.MLP([4, 8, 8, 3], output="softmax", dtype="float64", seed=4, dropout=0.2, **where)
        h = m.fit(X, y, epochs=4, batch_size=16, optimizer="adamw", lr=0.01, l2=0.01, clip_norm=0.3,
                  sample_weight=w, verbose=0)  # fmt: skip
        runs.append(
            (
                _host(m),
                h,
                {k: np.asarray(v if k == "step" else _backend.to_numpy(v)) for k, v in m.optimizer_state.items()},
            )
        )
    assert traced == [(tuple, ["m", "step", "v"])]  # joined once per epoch by one compiled function
    (p_jax, h_jax, s_jax), (p_np, h_np, s_np) = runs
    np.testing.assert_allclose(p_jax, p_np, rtol=0, atol=1e-9)
    for key in ("m", "v"):
        np.testing.assert_allclose(s_jax[key], s_np[key], rtol=0, atol=1e-9)
    assert int(s_jax["step"]) == int(s_np["step"]) == 4 * 7
    for key in ("loss", "weighted_loss", "accuracy"):
        np.testing.assert_allclose(getattr(h_jax, key), getattr(h_np, key), rtol=1e-9)
    train._compiled.cache_clear()


def test_compile_is_validated():
    with pytest.raises(gpunn.ConfigError, match="compile must be 'auto', True or False; got 'yes'"):
        gpunn.MLP([2, 3, 1], device="cpu", compile="yes")
    with pytest.raises(gpunn.ConfigError, match="compile must be"):
        gpunn.MLP([2, 3, 1], device="cpu", compile=1)
    with pytest.raises(gpunn.ConfigError, match="no compiler for numpy"):
        gpunn.MLP([2, 3, 1], device="cpu", compile=True)
    assert gpunn.MLP([2, 3, 1], device="cpu").compile == "auto"  # NumPy under "auto": eager, no error


def test_an_epoch_compiles_at_most_twice(monkeypatch):
    """Full batches and the remainder are the only two shapes: more epochs, and a second fit, compile nothing."""
    train._compiled.cache_clear()
    jitted = []

    def recording_jit(fn, **kwargs):
        jitted.append(jax.jit(fn, **kwargs))
        return jitted[-1]

    monkeypatch.setattr(_backend, "compiler", lambda xp, required=False: recording_jit)
    X, y = _problem(n=100)
    m = gpunn.MLP([4, 8, 1], xp=jnp, device="cpu", dtype="float64", compile=True)
    m.fit(X, y, epochs=2, batch_size=32, verbose=0)  # 3 batches of 32 and one of 4
    m.fit(X, y, epochs=2, batch_size=32, verbose=0)
    # made once: the step, the step on gathered rows, its two halves (for distributed training), split, join and
    # the loop over a run of batches of one size
    assert len(jitted) == 7
    loop, step, rows, _, _, split, join = jitted
    assert step._cache_size() == 0  # shuffled batches all go through the step on gathered rows
    assert loop._cache_size() == 1  # the 3 batches of 32 as one loop
    assert rows._cache_size() == 1  # the remainder of 4
    assert split._cache_size() == join._cache_size() == 1
    train._compiled.cache_clear()


class _FailingJit:
    """A compiler that compiles anything and fails when the result runs, as a broken compiler would."""

    def __call__(self, fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("the compiler failed on the step")

        return run


@pytest.fixture
def failing_compiler(monkeypatch):
    train._compiled.cache_clear()
    monkeypatch.setattr(_backend, "compiler", lambda xp, required=False: _FailingJit())
    yield
    train._compiled.cache_clear()


@pytest.mark.parametrize("name", ["numpy", "jax"])
def test_a_failing_compiler_falls_back_to_eager_with_one_warning_under_auto(failing_compiler, name):
    """On JAX the first compiled call of a minibatch epoch is the split into segments; it falls back as well."""
    X, y = _problem()
    where = dict(device="cpu") if name == "numpy" else dict(xp=jnp, device="cpu")
    m = gpunn.MLP([4, 8, 1], dtype="float64", compile="auto", **where)
    with pytest.warns(RuntimeWarning, match=f"compiling the step on {name} failed .*training eagerly") as record:
        m.fit(X, y, epochs=3, batch_size=16, verbose=0)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    ref = gpunn.MLP([4, 8, 1], dtype="float64", compile=False, **where)
    ref.fit(X, y, epochs=3, batch_size=16, verbose=0)
    np.testing.assert_array_equal(_host(m), _host(ref))
    np.testing.assert_array_equal(m.history.loss, ref.history.loss)


def test_a_failing_compiler_raises_under_true(failing_compiler):
    X, y = _problem()
    m = gpunn.MLP([4, 8, 1], device="cpu", compile=True)
    before = _host(m)
    with pytest.raises(RuntimeError, match="the compiler failed on the step"):
        m.fit(X, y, epochs=3, verbose=0)
    assert m.epoch == 0 and not m.history.loss
    np.testing.assert_array_equal(_host(m), before)


def _model(**kwargs):
    return gpunn.MLP([4, 8, 8, 1], xp=jnp, device="cpu", dtype="float64", seed=5, compile=True, **kwargs)


def test_compiled_resume_is_bit_identical(tmp_path):
    X, y = _problem()
    whole = _model()
    whole.fit(X, y, epochs=6, batch_size=16, optimizer="adam", lr=0.01, verbose=0)
    first = _model()
    first.fit(X, y, epochs=3, batch_size=16, optimizer="adam", lr=0.01, verbose=0)
    first.save(tmp_path / "m.safetensors")
    resumed = gpunn.load(tmp_path / "m.safetensors", xp=jnp, device="cpu")
    resumed.fit(X, y, epochs=3, batch_size=16, optimizer="adam", lr=0.01, verbose=0)
    np.testing.assert_array_equal(_host(resumed), _host(whole))
    assert resumed.history.loss == whole.history.loss


def test_compiled_interrupt_leaves_a_model_that_resumes_exactly():
    X, y = _problem()
    whole = _model()
    whole.fit(X, y, epochs=5, batch_size=16, optimizer="momentum", verbose=0)
    m = _model()

    def interrupt(model, record):
        if model.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y, epochs=5, batch_size=16, optimizer="momentum", verbose=0, callbacks=[interrupt])
    assert m.epoch == 2 == len(m.history.loss)
    m.fit(X, y, epochs=3, batch_size=16, optimizer="momentum", verbose=0)
    np.testing.assert_array_equal(_host(m), _host(whole))
    assert m.history.loss == whole.history.loss


def test_compiled_divergence_keeps_the_last_finite_weights():
    X, y = _problem()
    X, yv = X * 1e3, y.astype(float) * 1e3
    m = gpunn.MLP([4, 8, 1], xp=jnp, device="cpu", output="identity", dtype="float32", compile=True)
    m.fit(X, yv, epochs=2, lr=1e-12, batch_size=32, optimizer="momentum", verbose=0)
    good = (_host(m), np.array(m.optimizer_state["velocity"]))
    with pytest.raises(gpunn.NonFiniteError, match=r"diverged in epoch 3, batch \d of 4"):
        m.fit(X, yv, epochs=50, lr=1e3, batch_size=32, optimizer="momentum", verbose=0)
    assert m.epoch == 2 == len(m.history.loss)
    np.testing.assert_array_equal(_host(m), good[0])
    np.testing.assert_array_equal(np.array(m.optimizer_state["velocity"]), good[1])


def test_torch_compile_on_request_equals_eager_torch(monkeypatch):
    """compile=True on PyTorch runs the step through torch.compile; "auto" leaves PyTorch eager (see
    docs/performance.md: the first compilation costs more than short runs gain)."""
    torch = pytest.importorskip("torch")
    compiled, calls = [], []  # what went through torch.compile, and each call of a compiled function
    real = _backend._torch_compile

    def recording_compile(fn, static_argnums=None):
        name = getattr(fn, "__name__", type(fn).__name__)  # a Step instance, or its bound halves
        compiled.append(name)
        run = real(fn, static_argnums)
        assert run is not fn

        def counted(*args, **kwargs):
            calls.append(name)
            return run(*args, **kwargs)

        return counted

    from torch._dynamo.utils import counters

    train._compiled.cache_clear()  # a step compiled by an earlier test would not go through the recorder
    monkeypatch.setattr(_backend, "_torch_compile", recording_compile)
    X, y = _problem(k=3)
    runs = []
    for compile in (True, False, "auto"):
        counters.clear()
        m = gpunn.MLP([4, 8, 3], output="softmax", xp=torch, device="cpu", dtype="float64", seed=1, compile=compile)
        m.fit(X, y, epochs=3, batch_size=32, optimizer="adam", lr=0.01, l2=0.01, verbose=0)
        runs.append((_host(m), m.history.loss))
        if compile is True:
            # the step's forms wrapped once (torch.compile compiles a form on its first call); the whole step ran on
            # each of 3 x 4 batches (PyTorch slices without copies: no gathered-rows form, no segments)
            forms = ["Step", "apply", "gradients", "partial", "partial", "rows"]
            assert sorted(compiled) == forms and calls == ["Step"] * 12
            assert counters["stats"]["unique_graphs"] >= 1  # Dynamo traced the step into a graph
        else:
            assert not counters["stats"]["unique_graphs"]
    train._compiled.cache_clear()
    assert len(compiled) == 6 and len(calls) == 12, "compile=False or 'auto' went through torch.compile"
    for params, loss in runs[1:]:
        np.testing.assert_allclose(runs[0][0], params, rtol=0, atol=1e-9)
        np.testing.assert_allclose(runs[0][1], loss, rtol=1e-9)
