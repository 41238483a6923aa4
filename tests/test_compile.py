"""MLP(compile=...): the step compiled with jax.jit equals the eager step, and every guarantee holds with it."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import gpunn
from gpunn import _backend, train

jax = pytest.importorskip("jax")

import jax_compiles  # noqa: E402

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


# Eager JAX (its operations compile one by one, per shape: 10-20 s a configuration under load) is held to NumPy
# where a failing compiler hands the fit to it (test_a_failing_compiler_falls_back_to_eager_with_one_warning_under_auto:
# adam, clipping and validation on a full batch and on shuffled minibatches with a remainder); its step's every
# optimizer and output is checked eagerly in tests/test_step.py.
@pytest.mark.parametrize("cfg", CONFIGS, ids=["sgd-full", "momentum-l2", "adam-softmax-clip", "nesterov-mse"])
def test_compiled_jax_equals_numpy(cfg):
    X, y = _problem(k=cfg["k"])
    sizes = [4, 8, 8, 3 if cfg["k"] == 3 else 1]
    output = {0: "identity", 1: "sigmoid", 3: "softmax"}[cfg["k"]]
    runs = {}
    for name, where in [
        ("compiled", dict(xp=jnp, device="cpu", compile=True)),
        ("numpy", dict(device="cpu")),
    ]:
        m = gpunn.MLP(sizes, activation=cfg["activation"], output=output, dtype="float64", seed=2, **where)
        h = m.fit(X, y, epochs=5, verbose=0, validation_data=(X[:20], y[:20]), **cfg["fit"])
        runs[name] = (_host(m), h)
    for name in runs.keys() - {"compiled"}:
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


_compiles = jax_compiles.seconds  # every XLA program's compile time, from JAX's own events
_compiled_by = jax_compiles.during  # how many XLA programs fn() compiled


@pytest.fixture
def fresh_caches():
    """No compiled step or evaluation kept from an earlier test (each compiles anew: jax.jit caches by function)."""
    from gpunn.feed import evaluate

    caches = (train._compiled, evaluate._compiled_block, evaluate._compiled_masked)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


@pytest.mark.parametrize("batch_size", [None, 32], ids=["full-batch", "minibatch"])
def test_a_first_fit_compiles_two_programs_and_another_fit_none(fresh_caches, batch_size):
    """The epoch (its every batch, the remainder's too, and the parameters' segments split and joined inside) and
    the validation pass are the only programs: no eager set-up operation compiles one of its own."""
    X, y = _problem(n=100)
    m = gpunn.MLP([4, 8, 1], xp=jnp, device="cpu", dtype="float64", compile=True, seed=1)
    fit = dict(epochs=2, batch_size=batch_size, optimizer="adam", verbose=0, validation_data=(X[:30], y[:30]))
    assert _compiled_by(lambda: m.fit(X, y, **fit)) == 2
    assert _compiled_by(lambda: m.fit(X, y, **fit)) == 0
    fresh = gpunn.MLP([4, 8, 1], xp=jnp, device="cpu", dtype="float64", compile=True, seed=2)
    assert _compiled_by(lambda: fresh.fit(X, y, **fit)) == 0


NEW_VALUES = [  # (the first fit, the second: the same structure, every number new)
    (dict(optimizer="sgd", lr=0.1, l2=0.01), dict(optimizer="sgd", lr=0.05, l2=0.03)),
    (dict(optimizer=gpunn.optim.momentum(0.9), clip_norm=1.0),
     dict(optimizer=gpunn.optim.momentum(0.5), clip_norm=0.2)),
    (dict(optimizer=gpunn.optim.adam(0.9, 0.999, 1e-8), lr=0.01),
     dict(optimizer=gpunn.optim.adam(0.8, 0.99, 1e-3), lr=0.02)),
    (dict(optimizer="adamw", lr=0.01, weight_decay=0.01), dict(optimizer="adamw", lr=0.03, weight_decay=0.2)),
]  # fmt: skip


@pytest.mark.parametrize("first, second", NEW_VALUES, ids=["sgd", "momentum-clip", "adam", "adamw"])
@pytest.mark.parametrize("batch_size", [None, 16], ids=["full-batch", "minibatch"])
def test_new_hyper_parameter_values_compile_nothing_and_train_as_numpy(fresh_caches, first, second, batch_size):
    """Rates, penalties, betas, eps, clip norms, weight decay and dropout rates are the compiled step's data: a
    second model with new values compiles nothing, and trains as NumPy does with those values (not the first's)."""
    X, y = _problem()
    where = dict(xp=jnp, device="cpu", compile=True)
    m = gpunn.MLP([4, 8, 8, 1], dtype="float64", seed=3, dropout=0.1, **where)
    m.fit(X, y, epochs=2, batch_size=batch_size, verbose=0, **first)
    again = gpunn.MLP([4, 8, 8, 1], dtype="float64", seed=4, dropout=0.3, **where)
    assert _compiled_by(lambda: again.fit(X, y, epochs=3, batch_size=batch_size, verbose=0, **second)) == 0
    assert train._compiled.cache_info().currsize == 1  # one step for both: keyed by its structure only
    ref = gpunn.MLP([4, 8, 8, 1], dtype="float64", seed=4, dropout=0.3, device="cpu")
    ref.fit(X, y, epochs=3, batch_size=batch_size, verbose=0, **second)
    np.testing.assert_allclose(_host(again), _host(ref), rtol=0, atol=1e-9)
    np.testing.assert_allclose(again.history.loss, ref.history.loss, rtol=1e-9)


def test_a_new_structure_compiles_once_more(fresh_caches):
    """Turning a feature on (l2 from 0, clipping, another optimizer) is a new program; its next value is not."""
    X, y = _problem(n=100)
    m = gpunn.MLP([4, 8, 1], xp=jnp, device="cpu", dtype="float64", compile=True)
    assert _compiled_by(lambda: m.fit(X, y, epochs=1, verbose=0)) == 1
    assert _compiled_by(lambda: m.fit(X, y, epochs=1, l2=0.1, verbose=0)) == 1
    assert _compiled_by(lambda: m.fit(X, y, epochs=1, l2=0.2, verbose=0)) == 0
    assert _compiled_by(lambda: m.fit(X, y, epochs=1, l2=0.2, clip_norm=1.0, verbose=0)) == 1
    assert _compiled_by(lambda: m.fit(X, y, epochs=1, l2=0.3, clip_norm=2.0, verbose=0)) == 0
    assert train._compiled.cache_info().currsize == 3


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


@pytest.mark.parametrize("batch_size", [16, None], ids=["minibatch", "full-batch"])
@pytest.mark.parametrize("name", ["numpy", "jax"])
def test_a_failing_compiler_falls_back_to_eager_with_one_warning_under_auto(failing_compiler, name, batch_size):
    """On JAX the first compiled call is the epoch's, on data padded for it: the eager steps that take over
    train on the data's own rows, as the eager fit does to the bit, and as NumPy does (the eager JAX fit's
    oracle: adam, clipping and validation, on a full batch and on shuffled minibatches with a remainder)."""
    X, y = _problem()
    where = dict(device="cpu") if name == "numpy" else dict(xp=jnp, device="cpu")
    fit = dict(epochs=3, batch_size=batch_size, optimizer="adam", lr=0.01, clip_norm=0.5, verbose=0,
               validation_data=(X[:20], y[:20]))  # fmt: skip
    m = gpunn.MLP([4, 8, 1], dtype="float64", compile="auto", seed=2, **where)
    with pytest.warns(RuntimeWarning, match=f"compiling the step on {name} failed .*training eagerly") as record:
        m.fit(X, y, **fit)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    ref = gpunn.MLP([4, 8, 1], dtype="float64", compile=False, seed=2, **where)
    ref.fit(X, y, **fit)
    np.testing.assert_array_equal(_host(m), _host(ref))
    np.testing.assert_array_equal(m.history.loss, ref.history.loss)
    if name == "jax":
        numpy = gpunn.MLP([4, 8, 1], dtype="float64", seed=2, device="cpu")
        numpy.fit(X, y, **fit)
        np.testing.assert_allclose(_host(m), _host(numpy), rtol=0, atol=1e-9)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(getattr(m.history, key), getattr(numpy.history, key), rtol=1e-9)


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
            forms = ["Step", "apply", "gradients", "masked", "rows"]
            assert sorted(compiled) == forms and calls == ["Step"] * 12
            assert counters["stats"]["unique_graphs"] >= 1  # Dynamo traced the step into a graph
        else:
            assert not counters["stats"]["unique_graphs"]
    train._compiled.cache_clear()
    assert len(compiled) == 5 and len(calls) == 12, "compile=False or 'auto' went through torch.compile"
    for params, loss in runs[1:]:
        np.testing.assert_allclose(runs[0][0], params, rtol=0, atol=1e-9)
        np.testing.assert_allclose(runs[0][1], loss, rtol=1e-9)


@pytest.mark.parametrize("bad, message", [
    (dict(lr=float("nan")), "lr must be a finite number > 0"),
    (dict(l2=-1.0), "l2"),
    (dict(clip_norm=float("inf")), "clip_norm"),
    (dict(optimizer="adamw", weight_decay=float("nan")), "weight_decay"),
])  # fmt: skip
def test_a_bad_hyper_parameter_is_refused_before_anything_compiles(fresh_caches, bad, message):
    X, y = _problem(n=50)
    m = gpunn.MLP([4, 8, 1], xp=jnp, device="cpu", compile=True)
    before = _host(m)
    with pytest.raises(gpunn.ConfigError, match=message):
        assert _compiled_by(lambda: m.fit(X, y, epochs=1, verbose=0, **bad)) == 0
    assert train._compiled.cache_info().currsize == 0 and m.epoch == 0
    np.testing.assert_array_equal(_host(m), before)


def test_torch_compile_takes_new_values_without_a_new_graph():
    """Under torch.compile the numbers come as 0-d tensors, which Dynamo does not specialize on (a Python float
    it would): a new lr, l2 and clip norm add no graph, and train as eager PyTorch does."""
    torch = pytest.importorskip("torch")
    from torch._dynamo.utils import counters

    train._compiled.cache_clear()
    X, y = _problem(k=3)
    fit = dict(epochs=2, batch_size=32, optimizer="adam", verbose=0)
    m = gpunn.MLP([4, 8, 3], output="softmax", xp=torch, device="cpu", dtype="float64", seed=1, compile=True)
    m.fit(X, y, lr=0.01, l2=0.01, clip_norm=1.0, **fit)
    counters.clear()
    m2 = gpunn.MLP([4, 8, 3], output="softmax", xp=torch, device="cpu", dtype="float64", seed=1, compile=True)
    m2.fit(X, y, lr=0.03, l2=0.2, clip_norm=0.1, **fit)
    assert not counters["stats"]["unique_graphs"]  # nothing traced anew: Dynamo's cache held every call
    ref = gpunn.MLP([4, 8, 3], output="softmax", xp=torch, device="cpu", dtype="float64", seed=1, compile=False)
    ref.fit(X, y, lr=0.03, l2=0.2, clip_norm=0.1, **fit)
    np.testing.assert_allclose(_host(m2), _host(ref), rtol=0, atol=1e-9)
    train._compiled.cache_clear()


CACHED_FIT = """
import sys
import numpy as np, jax.numpy as jnp
import gpunn
from gpunn import _backend
if sys.argv[1]:
    gpunn.compile_cache(sys.argv[1])
rng = np.random.default_rng(0)
X = rng.normal(size=(64, 3))
y = (X[:, 0] > 0).astype(int)
m = gpunn.MLP([3, 5, 1], xp=jnp, device="cpu", compile=True)
m.fit(X, y, epochs=2, batch_size=20, verbose=0, validation_data=(X[:10], y[:10]))
print(_backend.compiles()[0], m.history.loss[-1])
"""


def test_a_second_process_loads_its_programs_from_the_compile_cache(tmp_path):
    """gpunn.compile_cache(path) in one process, GPUNN_COMPILE_CACHE=path in the next: the second compiles
    nothing (programs loaded from JAX's persistent cache are not counted) and trains the same."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GPUNN_COMPILE_CACHE"}
    cache = str(tmp_path / "cache")

    def run(arg, **more):
        done = subprocess.run([sys.executable, "-c", CACHED_FIT, arg], env={**env, **more}, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        count, loss = done.stdout.split()
        return int(count), float(loss)

    first = run(cache)
    second = run("", GPUNN_COMPILE_CACHE=cache)
    assert 1 <= first[0] <= 4 and second[0] == 0
    assert second[1] == first[1]
    assert os.listdir(cache)


@pytest.mark.parametrize("path", [123, "", None])
def test_compile_cache_takes_a_folder(path, tmp_path):
    with pytest.raises(gpunn.ConfigError, match="compile_cache takes a folder's path"):
        gpunn.compile_cache(path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(gpunn.ConfigError, match="is a file"):
        gpunn.compile_cache(tmp_path / "f")


def test_history_and_verbose_show_what_a_fit_compiled(fresh_caches, capsys):
    """A fit's History says how many programs it compiled, as JAX's own compile events count them; verbose=2
    prints it, and a fit that compiles nothing prints nothing of it."""
    X, y = _problem(n=100)
    m = gpunn.MLP([4, 8, 1], xp=jnp, device="cpu", dtype="float64", compile=True)
    before, seconds = len(_compiles), sum(_compiles)
    h = m.fit(X, y, epochs=2, batch_size=16, verbose=2, validation_data=(X[:20], y[:20]))
    assert h.compiles == len(_compiles) - before == 2
    assert h.compile_seconds == pytest.approx(sum(_compiles) - seconds) and h.compile_seconds > 0
    assert "compiled 2 program(s) in " in capsys.readouterr().out
    h = m.fit(X, y, epochs=1, batch_size=16, lr=0.01, verbose=2, validation_data=(X[:20], y[:20]))
    assert h.compiles == 0 and "compiled" not in capsys.readouterr().out
    assert gpunn.History().compiles == 0


@pytest.mark.parametrize("batch_size", [None, 16], ids=["full-batch", "minibatch"])
def test_a_new_row_count_compiles_once_per_power_of_two_and_trains_as_numpy(fresh_caches, batch_size):
    """Data are padded to the next power of two with rows that count for nothing: 70, 100 and 128 rows share one
    program (the remainder batch of a minibatch epoch is masked in it), 129 rows compile once more; each trains
    as NumPy does on its rows alone (loss, accuracy, weights, sample weights and dropout's masks included)."""
    X, y = _problem(n=200, k=3)
    w = np.random.default_rng(5).uniform(0.5, 2.0, size=len(y))
    fit = dict(epochs=3, batch_size=batch_size, optimizer="adam", lr=0.01, l2=0.01, verbose=0)
    counts = []
    for n in (100, 70, 128, 129):
        where = dict(xp=jnp, device="cpu", compile=True)
        m = gpunn.MLP([4, 8, 3], output="softmax", dtype="float64", seed=n, dropout=0.2, **where)
        val = (X[n:], y[n:])
        counts.append(_compiled_by(functools.partial(m.fit, X[:n], y[:n], sample_weight=w[:n], validation_data=val,
                                                     **fit)))  # fmt: skip
        ref = gpunn.MLP([4, 8, 3], output="softmax", dtype="float64", seed=n, dropout=0.2, device="cpu")
        ref.fit(X[:n], y[:n], sample_weight=w[:n], validation_data=val, **fit)
        np.testing.assert_allclose(_host(m), _host(ref), rtol=0, atol=1e-9)
        for key in ("loss", "weighted_loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(getattr(m.history, key), getattr(ref.history, key), rtol=1e-9)
    # the epoch and the validation pass (100 rows left: 128), 70 rows' validation (130 left: 256), then 129 rows
    assert counts == [2, 1, 0, 1]
