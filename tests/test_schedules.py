"""gpunn.schedules: the rate of each epoch, against PyTorch's schedulers, recorded, resumed and compiled."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn import _backend, schedules


def _problem(n=96, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)


def _torch_rates(make_scheduler, epochs, metrics=None):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = make_scheduler(opt)
    rates = []
    for e in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        scheduler.step(metrics[e]) if metrics is not None else scheduler.step()
    return rates


def _rates(schedule, epochs, metrics=None):
    state, rates = schedule.init(), []
    for e in range(epochs):
        rates.append(schedule.rate(e, state))
        if metrics is not None:
            state = schedule.update(state, {"loss": metrics[e]})
    return rates


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()` before")  # no optimizer step here
def test_step_and_cosine_rates_match_torch():
    torch = pytest.importorskip("torch")
    sched = torch.optim.lr_scheduler
    expected = _torch_rates(lambda o: sched.StepLR(o, step_size=3, gamma=0.5), 10)
    np.testing.assert_allclose(_rates(schedules.step(0.1, every=3, gamma=0.5), 10), expected, rtol=1e-12)
    expected = _torch_rates(lambda o: sched.CosineAnnealingLR(o, T_max=8, eta_min=0.01), 8)
    np.testing.assert_allclose(_rates(schedules.cosine(0.1, epochs=8, final=0.01), 8), expected, rtol=1e-12)


def test_cosine_warmup_is_linear_then_follows_the_half_cosine():
    rates = _rates(schedules.cosine(0.1, epochs=10, warmup=4, final=0.0), 12)
    np.testing.assert_allclose(rates[:4], [0.025, 0.05, 0.075, 0.1], rtol=1e-12)
    np.testing.assert_allclose(rates[4:10], [0.05 * (1 + np.cos(np.pi * k / 6)) for k in range(6)], rtol=1e-12)
    assert rates[10] == rates[11] == 0.0


def test_plateau_matches_torchs_reduce_on_plateau():
    torch = pytest.importorskip("torch")
    losses = [1.0, 0.9, 0.95, 0.93, 0.92, 0.91, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    expected = _torch_rates(
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=2, threshold=0.0,
                                                             threshold_mode="abs"),
        len(losses), losses,
    )  # fmt: skip
    np.testing.assert_allclose(_rates(schedules.plateau(0.1, factor=0.5, patience=2), len(losses), losses), expected)


def test_history_records_each_epochs_rate_and_training_follows_it():
    """A step schedule trains exactly as fits with those rates one after the other (plain SGD)."""
    X, y = _problem()
    m = gpunn.MLP([4, 8, 1], dtype="float64", device="cpu")
    h = m.fit(X, y, epochs=4, lr=schedules.step(0.2, every=2, gamma=0.5), batch_size=32, verbose=0)
    assert h.lr == [0.2, 0.2, 0.1, 0.1]
    ref = gpunn.MLP([4, 8, 1], dtype="float64", device="cpu")
    ref.fit(X, y, epochs=2, lr=0.2, batch_size=32, verbose=0)
    ref.fit(X, y, epochs=2, lr=0.1, batch_size=32, verbose=0)
    np.testing.assert_array_equal(m.params, ref.params)
    assert m.history.lr == ref.history.lr


def test_a_resumed_plateau_schedule_equals_an_uninterrupted_run(tmp_path, backend):
    X, y = _problem()
    Xv, yv = _problem(40, seed=1)

    def fit(model, epochs):
        schedule = schedules.plateau(4.0, factor=0.5, patience=0)  # a rate so large that val_loss stalls
        model.fit(X, y, epochs=epochs, lr=schedule, batch_size=32, validation_data=(Xv, yv), verbose=0)

    def model():
        return gpunn.MLP([4, 8, 1], dtype="float64", seed=2, **backend.kwargs())

    whole = model()
    fit(whole, 8)
    first = model()
    fit(first, 4)
    first.save(tmp_path / "m.safetensors")
    resumed = gpunn.load(tmp_path / "m.safetensors", **backend.kwargs())
    fit(resumed, 4)
    assert len(set(whole.history.lr)) > 1, "the rate must drop in this run for the test to mean something"
    assert resumed.history.lr == whole.history.lr
    np.testing.assert_array_equal(_backend.to_numpy(resumed.params), _backend.to_numpy(whole.params))


def test_a_compiled_step_takes_each_epochs_rate_without_compiling_again():
    jax = pytest.importorskip("jax")
    from gpunn import train

    X, y = _problem()
    schedule = schedules.cosine(0.1, epochs=5, warmup=1)
    eager = gpunn.MLP([4, 8, 1], dtype="float64", device="cpu")
    eager.fit(X, y, epochs=5, lr=schedule, batch_size=32, optimizer="adam", verbose=0)
    train._compiled.cache_clear()
    m = gpunn.MLP([4, 8, 1], dtype="float64", xp=jax.numpy, device="cpu", compile=True)
    m.fit(X, y, epochs=5, lr=schedule, batch_size=32, optimizer="adam", verbose=0)
    np.testing.assert_allclose(np.asarray(m.params), eager.params, rtol=0, atol=1e-9)
    assert train._compiled.cache_info().currsize == 1  # one compiled step for all five rates
    assert m.history.lr == eager.history.lr


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda: schedules.step(0.1, every=0), r"every must be an integer >= 1"),
        (lambda: schedules.plateau(0.1, factor=2.0), r"factor must be below 1"),
        (lambda: schedules.cosine(0.1, epochs=5, final=-1.0), r"final must be a finite number >= 0"),
        # the rate went from the warm-up's end straight to `final` (0) for the rest of training
        (lambda: schedules.cosine(0.1, epochs=5, warmup=10), r"^warmup \(10\) must be below epochs \(5\)"),
        (lambda: schedules.constant(float("inf")), r"lr must be a finite number > 0"),
    ],
)
def test_bad_schedules_are_named(make, pattern):
    with pytest.raises(gpunn.ConfigError, match=pattern):
        make()


def test_a_schedule_that_gives_a_negative_rate_stops_before_the_epoch():
    X, y = _problem()
    m = gpunn.MLP([4, 8, 1], device="cpu")
    before = np.array(m.params)
    bad = schedules.Schedule("constant", {"lr": -1.0})  # built around the checks of schedules.constant
    with pytest.raises(gpunn.ConfigError, match=r"schedule gave -1.0 for epoch 1; a rate is finite and >= 0"):
        m.fit(X, y, epochs=3, lr=bad, verbose=0)
    assert m.epoch == 0
    np.testing.assert_array_equal(m.params, before)
