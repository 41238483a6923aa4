"""Dropout: the counter-based masks against their definition in Python integers, training against torch autograd
with the same masks on every namespace, inference without dropout, and bit-identical resume."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import gpunn
from gpunn import _backend, dropout, losses, optim
from gpunn.step import Hyper, Step

M = 2**31 - 1


def reference_hash(x: int, key: int) -> int:
    """The generator's definition (docs/api.md), in Python's unbounded integers: no Schrage, no int32."""
    x ^= key
    for _ in range(3):
        x = ((48271 * (x ^ (x >> 15))) % M) ^ key
    return x


def _namespace(backend):
    return _backend.resolve("cpu") if backend.name == "numpy" else _backend.resolve(backend.device, backend.xp)


def _ints(a) -> list[int]:
    return [int(v) for v in np.asarray(_backend.to_numpy(a)).reshape(-1)]


def test_the_hash_equals_its_definition_on_every_namespace(backend):
    xp, device = _namespace(backend)
    rng = np.random.default_rng(0)
    values = np.concatenate([[0, 1, 2**15, 2**31 - 2, 2**31 - 1, M // 48271], rng.integers(0, 2**31, 500)])
    for key in (0, 1, 12345, 2**31 - 1, int(rng.integers(0, 2**31))):
        x = _backend.from_numpy(values.astype(np.int32), xp, device)
        got = _ints(dropout._hash(x, key))
        assert got == [reference_hash(int(v), key) for v in values]
        assert all(0 <= g < 2**31 for g in got)
    # the same function on Python ints (the host derives keys with it)
    assert dropout._hash(2**31 - 1, 7) == reference_hash(2**31 - 1, 7)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_masks_drop_the_rate_scale_the_rest_and_change_every_step_and_layer(rate):
    xp, device = _backend.resolve("cpu")
    key = dropout.seed_key(4)
    shapes = [(300, 40), (300, 20)]
    steps = [dropout.masks(rate, key, step, 300, [40, 20], xp.float64, xp, device) for step in range(4)]
    for masks in steps:
        for mask, shape in zip(masks, shapes):
            assert mask.shape == shape
            assert set(np.unique(mask)) <= {0.0, 1.0 / (1.0 - rate)}
            n = mask.size
            dropped = int(np.sum(mask == 0))
            assert abs(dropped - rate * n) < 5 * math.sqrt(n * rate * (1 - rate))  # binomial, 5 sigma
    keep = [(m[0][:, :20] > 0).ravel().astype(float) for m in steps] + [(steps[0][1] > 0).ravel().astype(float)]
    corr = np.corrcoef(keep)
    assert np.all(np.abs(corr[np.triu_indices(len(keep), 1)]) < 0.1), "masks repeat across steps or layers"
    # a shard (a rank's rows) is the matching part of the global mask
    part = dropout.masks(rate, key, 2, 100, [40, 20], xp.float64, xp, device, row_offset=150)
    for layer in range(2):
        np.testing.assert_array_equal(part[layer], steps[2][layer][150:250])
    # the table's definition: row r, column c of the hidden units side by side
    table = np.concatenate(steps[3], axis=1) > 0
    step_key = reference_hash(3, key)
    for r, c in [(0, 0), (0, 59), (7, 40), (299, 13)]:
        assert table[r, c] == (reference_hash(r * 60 + c, step_key) >= round(rate * M))


def reference_masks(rate: float, key: int, step: int, rows: int, units: list[int]) -> list[np.ndarray]:
    """The masks of optimizer step ``step`` from their definition (gpunn.dropout.masks), in Python integers: the
    hidden layers' units side by side, H in all; element (r, c) is kept when
    reference_hash(r * H + c, reference_hash(step, key)) >= round(rate * M), and a kept unit is scaled by
    1 / (1 - rate)."""
    width = sum(units)
    step_key = reference_hash(step, key)
    limit = round(rate * M)
    keep = np.array(
        [[reference_hash(r * width + c, step_key) >= limit for c in range(width)] for r in range(rows)], dtype=float
    )
    table = keep / (1.0 - rate)
    bounds = np.cumsum([0, *units])
    return [table[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def test_stacked_masks_of_a_shard_are_each_members_reference_rows():
    """masks_stacked with a row offset (a rank's shard of K members' batch): member k's rows are rows
    offset..offset+rows of its own reference table, with its own key and rate (0: every unit kept)."""
    xp, device = _backend.resolve("cpu")
    rates, seeds, units, step, offset, rows = [0.2, 0.5, 0.0], [3, 8, 1], [5, 3], 6, 11, 4
    keys = xp.reshape(xp.asarray([dropout.seed_key(s) for s in seeds], dtype=xp.int32), (3, 1, 1))
    thresholds = xp.reshape(xp.asarray([dropout.threshold(r) for r in rates], dtype=xp.int32), (3, 1, 1))
    scales = xp.reshape(xp.asarray([1.0 / (1.0 - r) for r in rates]), (3, 1, 1))
    got = dropout.masks_stacked(keys, thresholds, scales, step, rows, units, xp.float64, xp, device, row_offset=offset)
    for k, (rate, seed) in enumerate(zip(rates, seeds)):
        if rate == 0.0:
            expected = [np.ones((rows, u)) for u in units]
        else:
            expected = [
                m[offset : offset + rows] for m in reference_masks(rate, dropout.seed_key(seed), step, 20, units)
            ]
        for layer in range(len(units)):
            np.testing.assert_array_equal(got[layer][k], expected[layer])


def _torch_steps(activation, output, pairs, batches, masks_per_step, lr):
    """Adam steps by torch autograd from ``pairs`` ``[W1, b1, ...]``, every hidden layer's output times the
    given mask."""
    import torch
    import torch.nn.functional as F

    params = [torch.tensor(a.copy(), requires_grad=True) for a in pairs]
    act = {"relu": torch.relu, "tanh": torch.tanh, "gelu": lambda z: F.gelu(z, approximate="tanh")}[activation]
    opt = torch.optim.Adam(params, lr=lr)
    for (x, t), masks in zip(batches, masks_per_step):
        opt.zero_grad()
        a = torch.tensor(x)
        for i in range(0, len(params) - 2, 2):
            a = act(a @ params[i].T + params[i + 1]) * torch.tensor(masks[i // 2])
        z = a @ params[-2].T + params[-1]
        if output == "softmax":
            value = F.cross_entropy(z, torch.tensor(t))
        else:
            value = F.binary_cross_entropy_with_logits(z, torch.tensor(t))
        value.backward()
        opt.step()
    return np.concatenate([p.detach().numpy().reshape(-1) for p in params])


@pytest.mark.parametrize("activation,output", [("relu", "sigmoid"), ("tanh", "softmax"), ("gelu", "sigmoid")])
def test_steps_with_dropout_match_torch_autograd_with_the_same_masks(backend, activation, output):
    """Three steps (the optimizer's step count 0, 1, 2) against torch autograd with masks built here from the
    generator's definition; the weights start from explicit (W, b) pairs, laid out for gpunn as its flat
    buffer defines (per layer W (out, in) row-major, then b)."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    k = 3 if output == "softmax" else 1
    sizes = (4, 7, 6, k)
    loss = losses.DEFAULT_LOSS[output]
    pairs = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        pairs += [rng.normal(scale=0.6, size=(fan_out, fan_in)), rng.normal(scale=0.6, size=fan_out)]
    flat = np.concatenate([p.reshape(-1) for p in pairs])
    batches = []
    for n in (9, 9, 5):
        x = rng.normal(size=(n, 4))
        t = np.eye(k)[rng.integers(0, k, n)] if k > 1 else rng.integers(0, 2, (n, 1)).astype(float)
        batches.append((x, t))
    key, rate = 987654321, 0.4  # any 31-bit key
    hyper = Hyper(sizes, activation, output, loss, optim.adam(), 0.05, dropout=rate, dropout_key=key)
    xp, device = _namespace(backend)
    step = Step(hyper, xp, device, "float64")
    params = _backend.from_numpy(flat, xp, device)
    state = hyper.optimizer.init(params, xp)
    for x, t in batches:
        target = _backend.from_numpy(losses.encode_targets(output, loss, t), xp, device)
        params, state, _, _ = step(params, state, _backend.from_numpy(x, xp, device), target)
    ref_masks = [reference_masks(rate, key, s, x.shape[0], list(sizes[1:-1])) for s, (x, _) in enumerate(batches)]
    dropped = np.mean([np.mean(m == 0) for masks in ref_masks for m in masks])
    assert 0.2 < dropped < 0.6  # about the rate: the masks drop units, and not all of them
    want = _torch_steps(activation, output, pairs, batches, ref_masks, 0.05)
    np.testing.assert_allclose(_backend.to_numpy(params), want, rtol=1e-9, atol=1e-11)
    # the masks matter: the same steps without them end elsewhere
    no_masks = [[np.ones((x.shape[0], u)) for u in sizes[1:-1]] for x, _ in batches]
    assert not np.allclose(_torch_steps(activation, output, pairs, batches, no_masks, 0.05), want, atol=1e-4)


def _problem(n=80):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64)
    return X, y


def _numpy_probabilities(model, X):
    """The network without dropout, written here from the model's weights."""
    a = X
    pairs = model.numpy_weights()
    for w, b in pairs[:-1]:
        a = np.maximum(a @ w.T + b, 0.0)
    w, b = pairs[-1]
    return 1.0 / (1.0 + np.exp(-(a @ w.T + b)))


def test_predict_evaluate_and_validation_use_every_unit():
    X, y = _problem()
    m = gpunn.MLP([5, 16, 16, 1], dropout=0.5, dtype="float64", device="cpu", seed=2)
    h = m.fit(X, y, epochs=3, lr=0.05, optimizer="adam", batch_size=16, validation_data=(X[:30], y[:30]), verbose=0)
    p = _numpy_probabilities(m, X)
    np.testing.assert_allclose(m.predict_proba(X)[:, 0], p[:, 0], rtol=1e-12)
    pv = _numpy_probabilities(m, X[:30])[:, 0]
    bce = -np.mean(y[:30] * np.log(pv) + (1 - y[:30]) * np.log(1 - pv))
    np.testing.assert_allclose(h.val_loss[-1], bce, rtol=1e-10)
    np.testing.assert_allclose(m.evaluate(X[:30], y[:30])["loss"], bce, rtol=1e-10)
    # the training loss was measured with dropout: it differs from the loss of the whole network
    p_all = _numpy_probabilities(m, X)[:, 0]
    assert not np.isclose(h.loss[-1], -np.mean(y * np.log(p_all) + (1 - y) * np.log(1 - p_all)), rtol=1e-3)


@pytest.mark.parametrize("namespace", ["numpy", "jax"])
def test_resume_with_dropout_is_bit_identical(tmp_path, namespace):
    X, y = _problem()
    where: dict = {"device": "cpu"}
    if namespace == "jax":
        jnp = pytest.importorskip("jax.numpy")
        where = {"xp": jnp, "device": "cpu"}
    fit = dict(lr=0.05, optimizer="adam", batch_size=16, verbose=0)
    straight = gpunn.MLP([5, 12, 8, 1], dropout=0.3, dtype="float64", seed=5, **where)
    straight.fit(X, y, epochs=4, **fit)
    first = gpunn.MLP([5, 12, 8, 1], dropout=0.3, dtype="float64", seed=5, **where)
    first.fit(X, y, epochs=2, **fit)
    first.save(tmp_path / "m.safetensors")
    for resumed in (gpunn.load(tmp_path / "m.safetensors", **where), pickle.loads(pickle.dumps(first))):
        assert resumed.dropout == 0.3
        resumed.fit(X, y, epochs=2, **fit)
        for (w1, b1), (w2, b2) in zip(resumed.numpy_weights(), straight.numpy_weights()):
            np.testing.assert_array_equal(w1, w2)
            np.testing.assert_array_equal(b1, b2)
        assert resumed.history.loss == straight.history.loss
    # the same fit without dropout, on NumPy (the same weights as on JAX: tests/test_conformance.py), where JAX
    # would compile a program of its own for it
    no_dropout = gpunn.MLP([5, 12, 8, 1], dtype="float64", seed=5, device="cpu")
    no_dropout.fit(X, y, epochs=4, **fit)
    assert not np.allclose(no_dropout.numpy_weights()[0][0], straight.numpy_weights()[0][0], atol=1e-3)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])  # None: the preset's default
def test_a_dropout_outside_0_1_is_a_clear_error(bad):
    with pytest.raises(gpunn.ConfigError, match="dropout"):
        gpunn.MLP([3, 4, 1], dropout=bad, device="cpu")
