"""fit(sample_weight=, class_weight=): weighted means per batch, checked against repeated rows, torch autograd
and scikit-learn's class weights."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn import _backend


def _problem(n=48, k=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    if k == 0:
        return X, X[:, :1] - X[:, 1:2], rng
    score = X[:, 0] + 0.5 * X[:, 1]
    y = (score > 0).astype(int) if k == 1 else np.digitize(score, [-0.5, 0.5])
    return X, y, rng


@pytest.mark.parametrize("output,k", [("sigmoid", 1), ("softmax", 3), ("identity", 0)])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_integer_weights_equal_repeated_rows(backend, output, k, optimizer):
    X, y, rng = _problem(k=k)
    w = rng.integers(0, 4, size=len(X))
    sizes = [3, 6, max(k, 1)]
    m = gpunn.MLP(sizes, output=output, dtype="float64", seed=4, **backend.kwargs())
    m.fit(X, y, epochs=5, lr=0.05, optimizer=optimizer, l2=0.1, sample_weight=w, verbose=0)
    ref = gpunn.MLP(sizes, output=output, dtype="float64", seed=4, device="cpu")
    ref.fit(np.repeat(X, w, axis=0), np.repeat(y, w, axis=0), epochs=5, lr=0.05, optimizer=optimizer, l2=0.1,
            verbose=0)  # fmt: skip
    np.testing.assert_allclose(_backend.to_numpy(m.params), ref.params, rtol=0, atol=1e-12)


def test_minibatch_weighted_means_match_torch_autograd():
    torch = pytest.importorskip("torch")
    X, y, rng = _problem(n=40)
    w = rng.uniform(0.0, 2.0, size=40)
    m = gpunn.MLP([3, 6, 1], dtype="float64", seed=4, device="cpu")
    params = [torch.tensor(np.array(a), requires_grad=True) for pair in m.weights for a in pair]
    m.fit(X, y, epochs=2, lr=0.05, batch_size=16, shuffle=False, optimizer="adam", l2=0.01, sample_weight=w,
          verbose=0)  # fmt: skip
    opt = torch.optim.Adam(params, lr=0.05)
    losses, weighted_losses = [], []
    for _ in range(2):
        plain = weighted = 0.0
        for s in range(0, 40, 16):
            xb, yb, wb = (torch.tensor(a[s : s + 16]) for a in (X, y.astype(float), w))
            z = torch.relu(xb @ params[0].T + params[1]) @ params[2].T + params[3]
            per_row = torch.nn.functional.binary_cross_entropy_with_logits(z[:, 0], yb, reduction="none")
            # scikit-learn's weighted L2: alpha / (2 * the batch's weight total) * sum(W**2)
            penalty = 0.01 / 2 * sum((p * p).sum() for p in params[::2])
            loss = (wb * per_row).sum() / wb.sum() + penalty / wb.sum()
            # the epoch's loss as scikit-learn's loss_curve_ weighs it (batch loss times its weight total), and
            # unweighted: the rows' mean, each batch's penalty counted once
            weighted += loss.item() * wb.sum().item()
            plain += per_row.sum().item() + penalty.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
        weighted_losses.append(weighted / w.sum())
        losses.append(plain / 40)
    np.testing.assert_allclose(m.params, np.concatenate([p.detach().numpy().ravel() for p in params]), rtol=1e-10)
    np.testing.assert_allclose(m.history.weighted_loss, weighted_losses, rtol=1e-10)
    np.testing.assert_allclose(m.history.loss, losses, rtol=1e-10)


def test_balanced_class_weights_are_scikit_learns():
    from sklearn.utils.class_weight import compute_sample_weight

    X, y, _ = _problem(n=60, k=3)
    y = np.where(np.arange(60) < 40, 0, y)  # unbalanced
    m = gpunn.MLP([3, 6, 3], output="softmax", dtype="float64", seed=4, device="cpu")
    m.fit(X, y, epochs=3, lr=0.1, class_weight="balanced", verbose=0)
    ref = gpunn.MLP([3, 6, 3], output="softmax", dtype="float64", seed=4, device="cpu")
    ref.fit(X, y, epochs=3, lr=0.1, sample_weight=compute_sample_weight("balanced", y), verbose=0)
    np.testing.assert_array_equal(m.params, ref.params)
    both = gpunn.MLP([3, 6, 3], output="softmax", dtype="float64", seed=4, device="cpu")
    both.fit(X, y, epochs=3, lr=0.1, class_weight={2: 3.0}, sample_weight=np.full(60, 2.0), verbose=0)
    ref = gpunn.MLP([3, 6, 3], output="softmax", dtype="float64", seed=4, device="cpu")
    ref.fit(X, y, epochs=3, lr=0.1, sample_weight=np.where(y == 2, 6.0, 2.0), verbose=0)
    np.testing.assert_allclose(both.params, ref.params, rtol=0, atol=1e-14)


def test_history_stays_unweighted():
    X, y, rng = _problem()
    m = gpunn.MLP([3, 6, 1], dtype="float64", device="cpu")
    m.fitted = True  # evaluate the initial weights
    start = m.evaluate(X, y)
    h = m.fit(X, y, epochs=1, sample_weight=rng.uniform(0, 5, len(X)), verbose=0)
    assert h.loss[0] == pytest.approx(start["loss"], rel=1e-12)
    assert h.accuracy[0] == pytest.approx(start["accuracy"], abs=1e-12)


def test_compiled_weighted_training_equals_numpy():
    jax = pytest.importorskip("jax")
    X, y, rng = _problem()
    w = rng.uniform(0, 2, len(X))
    runs = []
    for where in (dict(device="cpu"), dict(xp=jax.numpy, device="cpu", compile=True)):
        m = gpunn.MLP([3, 6, 1], dtype="float64", seed=4, **where)
        m.fit(X, y, epochs=4, lr=0.05, batch_size=16, optimizer="adam", sample_weight=w, verbose=0)
        runs.append(np.asarray(_backend.to_numpy(m.params)))
    np.testing.assert_allclose(runs[1], runs[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(sample_weight=-np.ones(48)), gpunn.InputError, r"sample_weight holds -1.0 at row 0; weights must be"),
        (dict(sample_weight=np.full(48, np.nan)), gpunn.InputError, r"sample_weight holds nan at row 0"),
        (dict(sample_weight=np.ones(47)), gpunn.InputError, r"sample_weight has shape \(47,\); it needs .*\(48,\)"),
        (dict(sample_weight=np.zeros(48)), gpunn.InputError, r"the sample weights sum to 0"),
        (dict(sample_weight=np.r_[np.zeros(16), np.ones(32)], batch_size=16, shuffle=False), gpunn.InputError,
         r"sample_weight sums to 0 over batch 1 of epoch 1"),
        (dict(class_weight={5: 1.0}), gpunn.ConfigError, r"class_weight key 5 is not a label of this model \(0..1\)"),
        (dict(class_weight="even"), gpunn.ConfigError, r"class_weight must be a dict"),
        (dict(class_weight={1: -2.0}), gpunn.ConfigError, r"class_weight\[1\] must be a finite number >= 0"),
    ],
)  # fmt: skip
def test_bad_weights_are_named_and_change_nothing(kwargs, error, pattern):
    X, y, _ = _problem()
    m = gpunn.MLP([3, 6, 1], device="cpu")
    before = np.array(m.params)
    with pytest.raises(error, match=pattern):
        m.fit(X, y, epochs=2, verbose=0, **kwargs)
    assert m.epoch == 0 and not m.history.loss
    np.testing.assert_array_equal(m.params, before)


def test_class_weight_needs_class_labels():
    X, y, _ = _problem(k=0)
    with pytest.raises(gpunn.ConfigError, match="class_weight needs one class label per row"):
        gpunn.MLP([3, 4, 1], output="identity", device="cpu").fit(X, y, class_weight="balanced", verbose=0)
