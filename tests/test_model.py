"""The MLP API on NumPy: training semantics, continuation, convergence, optimizers against torch."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import gpunn
from gpunn import data, optim


def _weights(m):
    return [np.asarray(a).copy() for pair in m.weights for a in pair]


def _problem(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, (X[:, 0] + 0.5 * X[:, 1] ** 2 > 0.3).astype(np.int64)


def test_tutorial_network_reaches_95_percent_on_the_builtin_dataset():
    X, y = data.make_moons(1000, seed=0)
    X_train, X_test, y_train, y_test = data.train_test_split(X, y, test_size=0.2, seed=0)
    m = gpunn.MLP([2, 10, 10, 10, 1], device="cpu", standardize=True)
    h = m.fit(X_train, y_train, epochs=1000, lr=0.1, verbose=0)
    assert h.loss[-1] < h.loss[0]
    assert m.evaluate(X_test, y_test)["accuracy"] >= 0.95
    assert float(np.mean(m.predict(X_test) == y_test)) >= 0.95


@pytest.mark.parametrize("optimizer,batch_size", [("sgd", None), ("momentum", 16), ("adam", 25)])
def test_two_fits_equal_one_longer_fit_bitwise(optimizer, batch_size):
    X, y = _problem()
    kw = dict(lr=0.05, batch_size=batch_size, optimizer=optimizer, verbose=0)
    a = gpunn.MLP([4, 8, 8, 1], device="cpu", seed=5)
    a.fit(X, y, epochs=3, **kw)
    a.fit(X, y, epochs=3, **kw)
    b = gpunn.MLP([4, 8, 8, 1], device="cpu", seed=5)
    hb = b.fit(X, y, epochs=6, **kw)
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(wa, wb)
    assert a.history.loss == hb.loss
    assert a.epoch == b.epoch == 6


def test_save_load_then_fit_continues_bitwise(tmp_path):
    X, y = _problem()
    kw = dict(lr=0.01, batch_size=32, optimizer="adam", verbose=0)
    a = gpunn.MLP([4, 8, 1], device="cpu", seed=2, standardize=True)
    a.fit(X, y, epochs=2, **kw)
    a.save(tmp_path / "a.safetensors")
    resumed = gpunn.load(tmp_path / "a.safetensors", device="cpu")
    resumed.fit(X, y, epochs=3, **kw)
    b = gpunn.MLP([4, 8, 1], device="cpu", seed=2, standardize=True)
    b.fit(X, y, epochs=5, **kw)
    for wa, wb in zip(_weights(resumed), _weights(b)):
        np.testing.assert_array_equal(wa, wb)
    assert resumed.history.loss == b.history.loss


def test_epoch_loss_is_the_batch_size_weighted_mean():
    """With a vanishing step the weights stay put, so the epoch loss must equal the loss on all the data."""
    X, y = _problem(n=103)
    m = gpunn.MLP([4, 8, 1], device="cpu", dtype="float64")
    h = m.fit(X, y, epochs=1, lr=1e-300, batch_size=10, verbose=0)  # 10 batches of 10 and one of 3
    value, _ = m.loss_and_grads(X, y)
    assert h.loss[0] == pytest.approx(float(value), rel=1e-12)
    assert h.accuracy[0] == pytest.approx(float(np.mean(m.predict(X) == y)), abs=1e-12)


def test_history_records_every_epoch_and_validation():
    X, y = _problem()
    m = gpunn.MLP([4, 8, 1], device="cpu")
    h = m.fit(X, y, epochs=4, validation_data=(X[:20], y[:20]), verbose=0)
    assert len(h.loss) == len(h.accuracy) == len(h.val_loss) == len(h.val_accuracy) == 4
    assert all(isinstance(v, float) for v in h.loss + h.val_accuracy)
    assert h.val_loss[-1] == pytest.approx(m.evaluate(X[:20], y[:20])["loss"], rel=1e-6)


def test_a_history_prints_its_epoch_count_and_last_values_not_every_list():
    # print(history) of the README's 1000-epoch fit was some 100,000 characters of lists
    X, y = _problem()
    h = gpunn.MLP([4, 8, 1], device="cpu").fit(X, y, epochs=300, validation_data=(X[:20], y[:20]), verbose=0)
    expected = (f"History(epochs=300; last: loss={h.loss[-1]:.6g}, accuracy={h.accuracy[-1]:.6g}, "
                f"val_loss={h.val_loss[-1]:.6g}, val_accuracy={h.val_accuracy[-1]:.6g}, lr=0.1)")  # fmt: skip
    assert repr(h) == str(h) == expected and len(h.loss) == 300
    assert repr(gpunn.History()) == "History(epochs=0)"


def test_gradient_descent_step_is_w_minus_lr_dw():
    X, y = _problem()
    m = gpunn.MLP([4, 8, 1], device="cpu", dtype="float64")
    before = _weights(m)
    _, grads = m.loss_and_grads(X, y)
    m.fit(X, y, epochs=1, lr=0.3, verbose=0)
    for w0, g, w1 in zip(before, [g for pair in grads for g in pair], _weights(m)):
        np.testing.assert_allclose(w1, w0 - 0.3 * g, rtol=0, atol=1e-15)


def test_regression_with_identity_output_learns_a_linear_map():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    Y = X @ np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]]) + 0.1
    m = gpunn.MLP([3, 2], output="identity", device="cpu", dtype="float64")
    h = m.fit(X, Y, epochs=300, lr=0.1, verbose=0)
    assert h.accuracy == []
    assert h.loss[-1] < 1e-6
    assert m.predict(X).shape == (200, 2)


def test_softmax_predicts_class_indices_and_probabilities():
    X, y = data.make_spirals(600, seed=1)
    m = gpunn.MLP([2, 32, 32, 3], output="softmax", device="cpu", standardize=True)
    m.fit(X, y, epochs=300, lr=0.01, optimizer="adam", batch_size=64, verbose=0)
    p = m.predict_proba(X)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(m.predict(X), p.argmax(axis=1))
    assert m.evaluate(X, y)["accuracy"] > 0.9


def test_sigmoid_predict_thresholds_at_one_half():
    X, y = _problem()
    m = gpunn.MLP([4, 8, 1], device="cpu")
    m.fit(X, y, epochs=5, verbose=0)
    p = m.predict_proba(X)[:, 0]
    np.testing.assert_array_equal(m.predict(X), (p > 0.5).astype(np.int64))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_optimizers_match_torch(name):
    import torch

    rng = np.random.default_rng(0)
    params = [rng.normal(size=(3, 4)), rng.normal(size=3)]
    grads_seq = [[rng.normal(size=(3, 4)), rng.normal(size=3)] for _ in range(5)]
    opt = {
        "sgd": optim.sgd(),
        "momentum": optim.momentum(0.9),
        "nesterov": optim.get("nesterov"),
        "adam": optim.adam(),
        "adamw": optim.get("adamw", weight_decay=0.05),
    }[name]
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    lr = 0.05
    topt = {
        "sgd": lambda: torch.optim.SGD(tparams, lr=lr),
        "momentum": lambda: torch.optim.SGD(tparams, lr=lr, momentum=0.9),
        "nesterov": lambda: torch.optim.SGD(tparams, lr=lr, momentum=0.9, nesterov=True),
        "adam": lambda: torch.optim.Adam(tparams, lr=lr),
        "adamw": lambda: torch.optim.AdamW(tparams, lr=lr, weight_decay=0.05),
    }[name]()
    flat = np.concatenate([p.reshape(-1) for p in params])  # gpunn keeps every parameter in one buffer
    state = opt.init(flat, np)
    for grads in grads_seq:
        # The step hands the optimizer a gradient and the factor that turns it into the mean loss's gradient.
        flat, state = opt.update(flat, 4.0 * np.concatenate([g.reshape(-1) for g in grads]), state, lr, np, scale=0.25)
        for t, g in zip(tparams, grads):
            t.grad = torch.tensor(g)
        topt.step()
    expected = np.concatenate([t.detach().numpy().reshape(-1) for t in tparams])
    np.testing.assert_allclose(flat, expected, rtol=1e-12, atol=1e-14)


def test_clip_norm_bounds_the_update():
    X, y = _problem()
    m = gpunn.MLP([4, 8, 1], device="cpu", dtype="float64")
    before = _weights(m)
    m.fit(X, y, epochs=1, lr=1.0, clip_norm=1e-3, verbose=0)
    step = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(_weights(m), before)))
    assert step == pytest.approx(1e-3, rel=1e-9)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_raises_and_keeps_the_last_finite_weights():
    X, y = _problem()
    X, yv = X * 1e3, y.astype(float) * 1e3
    m = gpunn.MLP([4, 8, 1], device="cpu", output="identity")
    m.fit(X, yv, epochs=2, lr=1e-12, batch_size=32, optimizer="momentum", verbose=0)
    good, velocity = _weights(m), [m.optimizer_state["velocity"].copy()]
    with pytest.raises(gpunn.NonFiniteError, match=r"diverged in epoch 3, batch \d of 4"):
        m.fit(X, yv, epochs=50, lr=1e3, batch_size=32, optimizer="momentum", verbose=0)
    assert m.epoch == 2 == len(m.history.loss)
    for a, b in zip(good + velocity, _weights(m) + [m.optimizer_state["velocity"]]):
        np.testing.assert_array_equal(a, b)


def test_verbose_prints_plain_lines_when_not_a_terminal(capsys):
    X, y = _problem()
    gpunn.MLP([4, 8, 1], device="cpu").fit(X, y, epochs=20, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("epoch 20/20  loss ")
    gpunn.MLP([4, 8, 1], device="cpu").fit(X, y, epochs=3, verbose=0)
    assert capsys.readouterr().out == ""


def test_set_weights_accepts_numpy_pairs_and_casts():
    m = gpunn.MLP([3, 2, 1], device="cpu")
    pairs = [(np.ones((2, 3)), np.zeros(2)), (np.ones((1, 2)), np.zeros(1))]
    m.set_weights(pairs)
    assert m.weights[0][0].dtype == np.float32
    np.testing.assert_allclose(m.predict_proba(np.ones((1, 3))), [[1 / (1 + np.exp(-6.0))]], rtol=1e-6)


def test_an_update_that_overflows_after_a_finite_loss_is_rolled_back_too():
    """Epoch 1's loss is finite but its update overflows float32; epoch 2 fails and the model returns to
    the weights before epoch 1, the last finite ones."""
    X, y = _problem()
    m = gpunn.MLP([4, 8, 1], device="cpu", output="identity")
    initial = _weights(m)
    rng_state = m.rng.bit_generator.state
    with pytest.raises(gpunn.NonFiniteError, match="epoch 2"):
        m.fit(X * 1e3, y * 1e3, epochs=5, lr=1e35, batch_size=None, verbose=0)
    assert m.epoch == 0 and m.history.loss == []
    for a, b in zip(initial, _weights(m)):
        np.testing.assert_array_equal(a, b)
    assert m.rng.bit_generator.state == rng_state


def test_l2_penalty_adds_rate_times_weights_to_the_gradient():
    X, y = _problem()
    m = gpunn.MLP([4, 8, 1], device="cpu", dtype="float64")
    before = _weights(m)
    value, grads = m.loss_and_grads(X, y)
    h = m.fit(X, y, epochs=1, lr=0.3, l2=0.5, verbose=0)
    rate = 0.5 / len(X)
    for i, (w0, g, w1) in enumerate(zip(before, [g for pair in grads for g in pair], _weights(m))):
        expected = w0 - 0.3 * (g + rate * w0) if i % 2 == 0 else w0 - 0.3 * g  # biases are not penalized
        np.testing.assert_allclose(w1, expected, rtol=0, atol=1e-15)
    penalty = 0.5 * rate * sum(float(np.sum(w * w)) for w in before[::2])
    assert h.loss[0] == pytest.approx(float(value) + penalty, rel=1e-12)


def test_a_callback_returning_false_stops_training():
    X, y = _problem()
    m = gpunn.MLP([4, 8, 1], device="cpu")
    h = m.fit(X, y, epochs=50, verbose=0, callbacks=[lambda model, record: model.epoch < 7])
    assert m.epoch == 7 == len(h.loss)


def test_model_pickles_and_keeps_training_identically():
    import pickle

    X, y = _problem()
    kw = dict(lr=0.01, batch_size=16, optimizer="adam", verbose=0)
    a = gpunn.MLP([4, 8, 1], device="cpu", seed=1)
    a.fit(X, y, epochs=2, **kw)
    b = pickle.loads(pickle.dumps(a))
    a.fit(X, y, epochs=2, **kw)
    b.fit(X, y, epochs=2, **kw)
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_without_copy_scales_x_in_place_and_trains_identically(dtype):
    X, y = _problem(n=90, seed=5)
    X = (X * [1.0, 10.0, 100.0, 0.1] + 3.0).astype(dtype)
    X_val, y_val = X[:15].copy(), y[:15]
    kwargs = dict(epochs=3, lr=0.05, batch_size=16, verbose=0, validation_data=(X_val, y_val))
    ref = gpunn.MLP([4, 8, 1], device="cpu", dtype=dtype, standardize=True, seed=1)
    ref.fit(X, y, **kwargs)
    m = gpunn.MLP([4, 8, 1], device="cpu", dtype=dtype, standardize=True, seed=1)
    mine, original = X.copy(), X.copy()
    with pytest.raises(gpunn.InputError):  # a rejected call leaves X alone too
        m.fit(mine, y[:10], copy=False, **kwargs)
    np.testing.assert_array_equal(mine, original)
    m.fit(mine, y, copy=False, **kwargs)
    for a, b in zip(_weights(m), _weights(ref)):
        np.testing.assert_array_equal(a, b)
    assert m.history.val_loss == ref.history.val_loss
    mean, scale = m.scaling
    np.testing.assert_array_equal(mine, ((original - mean) / scale).astype(dtype))  # scaled once, in place
    np.testing.assert_array_equal(X_val, X[:15])  # validation data is copied, never scaled in place


def test_scaling_and_evaluation_in_blocks_match_whole_array_numpy(monkeypatch):
    from gpunn.feed import checks, evaluate

    rng = np.random.default_rng(2)
    X = rng.normal(loc=[5.0, -3.0, 0.0], scale=[0.1, 20.0, 1.0], size=(1000, 3)).astype(np.float32)
    y = rng.integers(0, 4, 1000)
    m = gpunn.MLP([3, 6, 4], output="softmax", device="cpu", standardize=True, dtype="float64")
    whole = checks.fit_scaling(X)
    whole_loss = m.fit(X, y, epochs=1, lr=1e-3, verbose=0, validation_data=(X, y)).val_loss[0]
    m2 = gpunn.MLP([3, 6, 4], output="softmax", device="cpu", standardize=True, dtype="float64")
    monkeypatch.setattr(checks, "rows_per_block", lambda a: 7)  # 143 blocks, the last one partial
    monkeypatch.setattr(evaluate, "EVAL_ROWS", 64)
    blocked = checks.fit_scaling(X)
    np.testing.assert_allclose(blocked[0], X.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(blocked[1], X.astype(np.float64).std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(blocked, whole, rtol=1e-12)
    h = m2.fit(X, y, epochs=1, lr=1e-3, verbose=0, validation_data=(X, y))
    assert h.val_loss[0] == pytest.approx(whole_loss, rel=1e-12)
    assert h.val_accuracy[0] == pytest.approx(np.mean(m2.predict(X) == y), abs=1e-12)


def test_weight_decay_is_adamws_and_is_checked():
    X, y = _problem()
    m = gpunn.MLP([4, 8, 1], device="cpu", dtype="float64")
    with pytest.raises(gpunn.ConfigError, match="weight_decay is AdamW's decoupled decay; optimizer 'adam' has none"):
        m.fit(X, y, epochs=1, optimizer="adam", weight_decay=0.1, verbose=0)
    with pytest.raises(gpunn.ConfigError, match="weight_decay must be a finite number >= 0"):
        m.fit(X, y, epochs=1, optimizer="adamw", weight_decay=-1.0, verbose=0)
    assert m.epoch == 0
    start = m.numpy_weights()
    h = m.fit(X, y, epochs=2, lr=0.05, optimizer="adamw", weight_decay=0.2, verbose=0)
    assert m.optimizer == optim.adamw(weight_decay=0.2)

    # The oracle: two full-batch steps of torch.optim.AdamW(lr, weight_decay=0.2) from the same weights, on
    # torch autograd's gradients of the mean binary cross-entropy.
    torch = pytest.importorskip("torch")
    params = [torch.tensor(a, requires_grad=True) for pair in start for a in pair]
    opt = torch.optim.AdamW(params, lr=0.05, weight_decay=0.2)
    losses = []
    for _ in range(2):
        opt.zero_grad()
        z = torch.relu(torch.tensor(X) @ params[0].T + params[1]) @ params[2].T + params[3]
        value = torch.nn.functional.binary_cross_entropy_with_logits(z[:, 0], torch.tensor(y, dtype=torch.float64))
        value.backward()
        losses.append(value.item())
        opt.step()
    np.testing.assert_allclose(h.loss, losses, rtol=1e-12)  # each epoch's loss, before its step
    for got, want in zip(_weights(m), params):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-13)
    # the decay matters: Adam without it ends elsewhere
    plain = gpunn.MLP([4, 8, 1], device="cpu", dtype="float64")
    plain.fit(X, y, epochs=2, lr=0.05, optimizer="adam", verbose=0)
    assert not np.allclose(_weights(plain)[0], _weights(m)[0], rtol=0, atol=1e-4)
