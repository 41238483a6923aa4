"""The training loop's divergence guard (issue 20.2) and its batched read-backs (issue 20.9).

A divergence that stays finite stops the fit with a DivergenceError and the weights of the last good epoch; the
metrics of epochs queued between progress lines are read back together, and History stays what reading them
back every epoch gives.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from sklearn.datasets import load_iris

import gpunn
from gpunn import errors, history, optim, step, train


def _iris():
    X, y = load_iris(return_X_y=True)
    return X, y


def _host(m):
    return [a for pair in m.numpy_weights() for a in pair]


def _good_iris_model():
    X, y = _iris()
    m = gpunn.MLP([4, 8, 3], output="softmax", device="cpu")
    m.fit(X, y, epochs=30, verbose=0)
    return m


def test_a_finite_explosion_stops_with_the_good_weights_kept():
    """lr=1e6 on iris: the loss goes 0.9 -> 6e12 -> 3e22 and then oscillates around 3e5, finite all along.
    Before, the fit ended normally with the good weights overwritten."""
    X, y = _iris()
    m = _good_iris_model()
    good, history, good_opt = _host(m), m.history.to_dict(), int(m.optimizer_state["step"])
    with pytest.raises(gpunn.DivergenceError, match=r"diverged in epoch 32: the loss grew to .*diverge_factor=None"):
        m.fit(X, y, epochs=10, lr=1e6, verbose=0)
    assert issubclass(gpunn.DivergenceError, gpunn.NonFiniteError)
    assert errors.DivergenceError is gpunn.DivergenceError
    for a, b in zip(_host(m), good):
        np.testing.assert_array_equal(a, b)  # bit for bit the model before the exploding fit
    assert m.history.to_dict() == history and m.epoch == 30
    assert int(int(m.optimizer_state["step"])) == int(good_opt)
    # and it trains on from there as if the bad fit had never happened
    ref = _good_iris_model()
    m.fit(X, y, epochs=3, verbose=0)
    ref.fit(X, y, epochs=3, verbose=0)
    for a, b in zip(_host(m), _host(ref)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("namespace", ["numpy", "jax"])
def test_an_update_that_overflows_in_the_last_epoch_fails_that_epoch(namespace):
    """An epoch's loss is computed on the weights the epoch before it left, so no loss measures a fit's last
    update: with a rate of 1e306 (inf in float32) in its third and last epoch, fit returned normally with weights
    that are not finite, and the next fit, failing at once, kept them. Now that epoch fails as a NaN loss fails
    the one after it: NonFiniteError, the model where two epochs at lr 0.1 leave it (weights, optimizer state,
    History), and it trains on from there as that model does."""
    kw = {"numpy": dict(device="cpu"), "jax": dict(xp=pytest.importorskip("jax.numpy"))}[namespace]
    X, y = _iris()
    m = gpunn.MLP([4, 8, 3], output="softmax", **kw)
    rate = gpunn.schedules.step(0.1, every=2, gamma=1e307)  # 0.1, 0.1, then 1e306
    with pytest.raises(gpunn.NonFiniteError, match="epoch 3: its last weight update left weights that are not"):
        m.fit(X, y, epochs=3, lr=rate, optimizer="momentum", verbose=0)
    ref = gpunn.MLP([4, 8, 3], output="softmax", **kw)
    ref.fit(X, y, epochs=2, lr=0.1, optimizer="momentum", verbose=0)
    assert m.epoch == 2 and m.history.to_dict() == ref.history.to_dict()
    for a, b in zip(_host(m), _host(ref)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        np.asarray(m.optimizer_state["velocity"]), np.asarray(ref.optimizer_state["velocity"])
    )
    m.fit(X, y, epochs=2, lr=0.1, verbose=0)
    ref.fit(X, y, epochs=2, lr=0.1, verbose=0)
    for a, b in zip(_host(m), _host(ref)):
        np.testing.assert_array_equal(a, b)


def test_the_check_turns_off():
    X, y = _iris()
    m = _good_iris_model()
    h = m.fit(X, y, epochs=5, lr=1e6, verbose=0, diverge_factor=None)
    assert h.epochs == 5 and max(h.loss) > 1e10  # the oracle: the exploding losses of the issue, all recorded
    with pytest.raises(gpunn.ConfigError, match="diverge_factor must be above 1"):
        m.fit(X, y, epochs=1, diverge_factor=0.5)


def test_the_first_epoch_of_a_fit_is_its_reference():
    guard = train.DivergenceGuard(10.0, "mse")
    guard.check(0, {"loss": 2.0})
    guard.check(1, {"loss": 19.9})
    with pytest.raises(gpunn.DivergenceError, match="epoch 3"):
        guard.check(2, {"loss": 20.1})
    # cross-entropy measures from 1 nat at least: a warm start at a tiny loss may fluctuate
    guard = train.DivergenceGuard(10.0, "categorical_crossentropy")
    guard.check(0, {"loss": 1e-6})
    guard.check(1, {"loss": 9.0})
    train.DivergenceGuard(None, "mse").check(5, {"loss": 1e300})


def _runs(xp, device, compile, batch_size=None, **fit):
    X, y = _iris()
    kw = dict(output="softmax", xp=xp, device=device, compile=compile)
    queued, per_epoch = gpunn.MLP([4, 8, 3], **kw), gpunn.MLP([4, 8, 3], **kw)
    out = []
    for m, callbacks in ((queued, None), (per_epoch, [lambda model, record: None])):  # a callback: every epoch
        try:
            m.fit(X, y, epochs=23, batch_size=batch_size, callbacks=callbacks, verbose=0, **fit)
        except gpunn.DivergenceError as exc:
            out.append(str(exc))
    return queued, per_epoch, out


@pytest.mark.parametrize("namespace", ["numpy", "jax"])
@pytest.mark.parametrize("lr,batch_size", [(0.1, None), (0.05, 32), (1e6, None)])
def test_queued_epochs_record_what_per_epoch_read_backs_record(namespace, lr, batch_size):
    if namespace == "jax":
        xp, device, compile = pytest.importorskip("jax.numpy"), None, True
    else:
        xp, device, compile = np, "cpu", False
    queued, per_epoch, errors_seen = _runs(xp, device, compile, batch_size, lr=lr)
    assert queued.history == per_epoch.history and queued.epoch == per_epoch.epoch
    for a, b in zip(_host(queued), _host(per_epoch)):
        np.testing.assert_array_equal(a, b)
    assert len(errors_seen) == (2 if lr == 1e6 else 0) and len(set(errors_seen)) <= 1


def test_metrics_are_read_back_once_per_progress_line(monkeypatch, capsys):
    X, y = _iris()
    calls = []
    real = train.read_back

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "read_back", counting)
    m = gpunn.MLP([4, 8, 3], output="softmax", device="cpu")
    m.fit(X, y, epochs=40, verbose=1)  # not a terminal: a line every 4 epochs
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 10 and len(calls) == 10 and m.history.epochs == 40
    calls.clear()
    m.fit(X, y, epochs=5, verbose=2)
    assert len(calls) == 5
    calls.clear()
    m.fit(X, y, epochs=40, lr=gpunn.schedules.plateau(0.1, patience=2), verbose=0)
    assert len(calls) == 40  # plateau needs every epoch's loss before the next epoch's rate


def test_an_interrupt_between_progress_lines_keeps_the_queued_epochs(monkeypatch):
    X, y = _iris()
    real, started = train.start_epoch, []

    def interrupted(*args, **kwargs):
        if len(started) == 6:
            raise KeyboardInterrupt
        started.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "start_epoch", interrupted)
    m = gpunn.MLP([4, 8, 3], output="softmax", device="cpu", seed=3)
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y, epochs=20, batch_size=16, verbose=0)
    assert m.epoch == 6 == m.history.epochs  # 4 committed at the line of epoch 4, 2 queued ones kept
    monkeypatch.setattr(train, "start_epoch", real)
    m.fit(X, y, epochs=14, batch_size=16, verbose=0)
    ref = gpunn.MLP([4, 8, 3], output="softmax", device="cpu", seed=3)
    ref.fit(X, y, epochs=20, batch_size=16, verbose=0)
    assert m.history == ref.history
    for a, b in zip(_host(m), _host(ref)):
        np.testing.assert_array_equal(a, b)


def test_a_compiled_step_makes_each_rate_once():
    jnp = pytest.importorskip("jax.numpy")
    m = gpunn.MLP([4, 8, 3], output="softmax", xp=jnp, device=None, compile=True)
    hyper = step.hyper(m.sizes, m.activation, m.output, m.loss, optim.sgd(), 0.1, 0.0, None)
    runner = train.Runner(hyper, jnp, m.device, "float32", True)
    assert runner.rate(0.1) is runner.rate(0.1) and runner.rate(0.2) is not runner.rate(0.1)
    assert float(runner.rate(0.2)) == pytest.approx(0.2)
    for i in range(100):  # a schedule that changes the rate every epoch keeps a small cache
        runner.rate(1.0 / (i + 3))
    assert len(runner._rates) <= 64


def test_reporter_lines_set_the_read_backs():
    r = history.Reporter(1, 0, 40, stream=io.StringIO())
    assert [e for e in range(1, 41) if r.due(e)] == list(range(4, 41, 4))
    assert all(history.Reporter(2, 0, 5, stream=io.StringIO()).due(e) for e in range(1, 6))


def test_the_merged_read_back_returns_what_was_summed():
    """read_back(merge=True), the accelerator's single transfer (the counts cast to the losses' dtype on the
    device and joined to them), against the numbers written here: 0-d and 1-d arrays, a weighted pair."""
    floats = [np.float32(1.5), np.array([2.25, -3.0], dtype=np.float32), np.float32(7.0)]
    counts = [np.int64(4), np.array([5, 6], dtype=np.int64), np.int64(2**23)]
    host_floats, host_counts = train.read_back(floats, np, counts, stack=True, merge=True)
    np.testing.assert_array_equal(host_floats, [1.5, 2.25, -3.0, 7.0])
    np.testing.assert_array_equal(host_counts, [4, 5, 6, 2**23])
    assert host_floats.dtype == host_counts.dtype == np.float64
    one = train.read_back([np.float32(0.5)], np, [np.int64(3)], stack=True, merge=True)
    np.testing.assert_array_equal(one[0], [0.5]) and np.testing.assert_array_equal(one[1], [3])


@pytest.mark.parametrize("namespace", ["numpy", "torch"])
@pytest.mark.parametrize("case", ["softmax", "weighted", "multilabel"])
def test_merged_read_backs_record_what_separate_ones_record(monkeypatch, namespace, case):
    """The accelerator's merged read-back forced on the CPU (train.MERGE_READS): History and weights bit for bit
    those of the plain path's two transfers, with minibatches, validation, sample weights and sigmoid labels."""
    xp = np if namespace == "numpy" else pytest.importorskip("torch")
    X, y = _iris()
    sizes, kw, fit = [4, 8, 3], dict(output="softmax"), {}
    if case == "weighted":
        fit["sample_weight"] = np.linspace(0.5, 2.0, len(y))
    if case == "multilabel":
        sizes, kw, y = [4, 8, 2], dict(output="sigmoid"), np.c_[y == 0, y == 2].astype(np.int64)
    runs, real = [], train.read_back
    for merge in (False, True):
        monkeypatch.setattr(train, "MERGE_READS", merge)
        seen: list = []
        monkeypatch.setattr(train, "read_back", lambda *a, seen=seen, **k: seen.append(k.get("merge")) or real(*a, **k))
        m = gpunn.MLP(sizes, xp=xp, device="cpu", seed=4, **kw)
        m.fit(X, y, epochs=6, batch_size=40, validation_data=(X[::3], y[::3]), verbose=0, **fit)
        runs.append(m)
        assert seen and set(seen) == {merge}
    assert runs[0].history == runs[1].history
    for a, b in zip(_host(runs[0]), _host(runs[1])):
        np.testing.assert_array_equal(a, b)
