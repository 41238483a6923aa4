"""gpunn.callbacks.EarlyStopping: stops after `patience` epochs without improvement and restores the best epoch."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn import _backend
from gpunn.callbacks import EarlyStopping


def _overfitting_problem():
    """Few noisy training rows and a wide network: the validation loss falls, then rises."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5))
    y = (X[:, 0] + rng.normal(scale=1.5, size=30) > 0).astype(int)
    Xv = rng.normal(size=(200, 5))
    yv = (Xv[:, 0] > 0).astype(int)
    return X, y, Xv, yv


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch(backend):
    X, y, Xv, yv = _overfitting_problem()
    m = gpunn.MLP([5, 64, 64, 1], dtype="float64", seed=1, **backend.kwargs())
    stop = EarlyStopping(monitor="val_loss", patience=5)
    h = m.fit(X, y, epochs=500, lr=0.05, optimizer="adam", validation_data=(Xv, yv), callbacks=[stop], verbose=0)
    val = np.array(h.val_loss)
    best = int(np.argmin(val))
    assert len(val) < 500, "the validation loss of this problem rises: training must stop early"
    assert stop.best_epoch == best + 1 and stop.stopped_epoch == len(val) == best + 1 + 5
    assert (val[best + 1 :] >= val[best]).all()
    # The model ends with the best epoch's weights: evaluating it gives that epoch's validation loss.
    assert m.evaluate(Xv, yv)["loss"] == pytest.approx(val[best], rel=1e-12)


def test_without_restore_the_model_keeps_its_last_weights():
    X, y, Xv, yv = _overfitting_problem()
    m = gpunn.MLP([5, 64, 64, 1], dtype="float64", seed=1, device="cpu")
    stop = EarlyStopping(patience=3, restore_best=False)
    h = m.fit(X, y, epochs=500, lr=0.05, optimizer="adam", validation_data=(Xv, yv), callbacks=[stop], verbose=0)
    assert m.evaluate(Xv, yv)["loss"] == pytest.approx(h.val_loss[-1], rel=1e-12)
    assert h.val_loss[-1] > min(h.val_loss)


def test_min_delta_and_accuracy_monitors():
    X, y, Xv, yv = _overfitting_problem()
    m = gpunn.MLP([5, 16, 1], dtype="float64", seed=1, device="cpu")
    stop = EarlyStopping(monitor="loss", patience=2, min_delta=1e9)  # nothing improves by 1e9
    h = m.fit(X, y, epochs=50, callbacks=[stop], verbose=0)
    assert len(h.loss) == 3 and stop.best_epoch == 1 and stop.stopped_epoch == 3 and stop.best == h.loss[0]
    before = _backend.to_numpy(m.params).copy()
    # Accuracy improves by going up. With patience 0 the first epoch that does not beat the best so far (by more
    # than min_delta = 0) stops training; epochs count on from the 3 of the first fit. Expected values follow
    # from the recorded history.
    stop = EarlyStopping(monitor="accuracy", patience=0, restore_best=False)
    h = m.fit(X, y, epochs=50, lr=0.3, callbacks=[stop], verbose=0)
    best, best_epoch, stopped = h.accuracy[0], 4, None
    for epoch, value in enumerate(h.accuracy[1:], start=5):
        if value > best:
            best, best_epoch = value, epoch
        else:
            stopped = epoch
            break
    assert stopped is not None, "the accuracy never stalled: the test needs a run that stops"
    assert (stop.stopped_epoch, stop.best_epoch, stop.best) == (stopped, best_epoch, best)
    assert len(h.accuracy) == stopped - 3 and m.epoch == stopped
    assert best_epoch > 4, "no epoch improved on the first: the improving branch went unchecked"
    assert h.accuracy[-1] == best, "this run stops on a tie with the best (equal is no improvement)"
    assert not np.array_equal(before, _backend.to_numpy(m.params))


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(monitor="val_auc"), r"monitor 'val_auc' is not known"),
        (dict(patience=-1), r"patience must be an integer >= 0"),
        (dict(min_delta=float("nan")), r"min_delta must be a finite number >= 0"),
        (dict(restore_best="no"), r"^restore_best must be True or False; got 'no'$"),  # was truthy: restored
    ],
)
def test_bad_settings_are_named(kwargs, pattern):
    with pytest.raises(gpunn.ConfigError, match=pattern):
        EarlyStopping(**kwargs)


def test_monitoring_a_metric_the_fit_does_not_record_is_an_error_before_training():
    X, y, _, _ = _overfitting_problem()
    m = gpunn.MLP([5, 4, 1], device="cpu")
    with pytest.raises(gpunn.ConfigError, match=r"EarlyStopping needs val_loss, which this fit does not record"):
        m.fit(X, y, epochs=3, callbacks=[EarlyStopping()], verbose=0)
    assert m.epoch == 0 and not m.fitted


def test_state_dict_through_a_checkpoint_stops_and_restores_as_an_unbroken_fit(tmp_path, backend):
    """fit, save with the stopping state, load, fit on: the same stop, best epoch, best value and weights as one
    fit, for an interruption before the best epoch, at it, and inside the patience."""
    X, y, Xv, yv = _overfitting_problem()
    kw = dict(lr=0.05, optimizer="adam", validation_data=(Xv, yv), verbose=0)
    ref = gpunn.MLP([5, 64, 64, 1], seed=1, **backend.kwargs())
    stop_ref = EarlyStopping(patience=4)
    ref.fit(X, y, epochs=300, callbacks=[stop_ref], **kw)
    assert stop_ref.stopped_epoch is not None and stop_ref.best_epoch > 2
    for first in (stop_ref.best_epoch - 2, stop_ref.best_epoch, stop_ref.best_epoch + 2):
        m = gpunn.MLP([5, 64, 64, 1], seed=1, **backend.kwargs())
        stop = EarlyStopping(patience=4)
        m.fit(X, y, epochs=first, callbacks=[stop, stop.store_state], **kw)
        m.save(tmp_path / "m.safetensors")
        m = gpunn.load(tmp_path / "m.safetensors", **backend.kwargs())
        resumed = EarlyStopping(patience=4)
        resumed.load_state_dict(m.metadata["callbacks"]["early_stopping"])
        m.fit(X, y, epochs=300 - first, callbacks=[resumed], **kw)
        assert (resumed.stopped_epoch, resumed.best_epoch, resumed.best) == (
            stop_ref.stopped_epoch, stop_ref.best_epoch, stop_ref.best
        )  # fmt: skip
        np.testing.assert_array_equal(_backend.to_numpy(m.params), _backend.to_numpy(ref.params))
        for slot in ("m", "v"):
            np.testing.assert_array_equal(
                _backend.to_numpy(m.optimizer_state[slot]), _backend.to_numpy(ref.optimizer_state[slot])
            )
        assert m.optimizer_state["step"] == ref.optimizer_state["step"] and m.history == ref.history


def test_state_dict_is_json_ready_apart_from_the_weights_and_checks_the_monitor():
    import json

    X, y, Xv, yv = _overfitting_problem()
    m = gpunn.MLP([5, 8, 1], device="cpu", seed=1)
    stop = EarlyStopping(patience=2)
    assert stop.state_dict()["best_params"] is None
    m.fit(X, y, epochs=3, lr=0.05, optimizer="momentum", validation_data=(Xv, yv), callbacks=[stop], verbose=0)
    state = stop.state_dict()
    assert isinstance(state["best_params"], np.ndarray) and state["best_params"].shape == (m.params.shape[0],)
    assert set(state["best_optimizer"]) == {"step", "velocity"}
    plain = {k: v for k, v in state.items() if k not in ("best_params", "best_optimizer")}
    assert json.loads(json.dumps(plain)) == plain  # floats through their repr: exact
    assert stop.state_dict()["best_params"] is state["best_params"]  # read back once, not every epoch
    with pytest.raises(gpunn.ConfigError, match=r"monitors 'val_loss', this one 'loss'"):
        EarlyStopping(monitor="loss").load_state_dict(state)
