"""optimizer="lbfgs": the two-loop direction against a dense inverse-BFGS matrix, the accepted steps against the
strong Wolfe conditions and the stopping rules against an objective written here in NumPy, the minimizer against
SciPy's L-BFGS-B (and a closed form), member k of an ensemble against a lone MLP, a resumed fit against an
uninterrupted one, every namespace against NumPy, and scikit-learn's face against scikit-learn's MLP."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

import gpunn
from gpunn import lbfgs, optim
from gpunn.errors import ConfigError

scipy_optimize = pytest.importorskip("scipy.optimize")


# ----------------------------------------------------------------------------------- the test's objective
def unpack(theta, sizes):
    """The test's own layout: each layer's W (out, in) row-major, then its b."""
    out, i = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = theta[i : i + fan_in * fan_out].reshape(fan_out, fan_in)
        i += fan_in * fan_out
        out.append((w, theta[i : i + fan_out]))
        i += fan_out
    return out


def pack(weights):
    return np.concatenate([np.concatenate([np.asarray(w).ravel(), np.asarray(b).ravel()]) for w, b in weights])


def objective(theta, X, Y, sizes, output, l2, weight=None):
    """gpunn's training loss (tanh hidden layers) and its gradient, by hand: the mean loss over the rows (and the
    outputs, but for softmax), sample-weighted if asked, plus l2 / (2 m) * sum(W**2)."""
    layers = unpack(theta, sizes)
    n = X.shape[0]
    w_rows = np.ones(n) if weight is None else np.asarray(weight, dtype=float)
    m = w_rows.sum()
    acts, a = [X], X
    for i, (w, b) in enumerate(layers):
        z = a @ w.T + b
        if i < len(layers) - 1:
            a = np.tanh(z)
            acts.append(a)
    per_out = 1 if output == "softmax" else Y.shape[1]
    if output == "sigmoid":
        rows = (np.logaddexp(0, z) - Y * z).sum(axis=1)
        dz = 1 / (1 + np.exp(-z)) - Y
    elif output == "softmax":
        shifted = z - z.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        rows = -(Y * logp).sum(axis=1)
        dz = np.exp(logp) - Y
    else:
        rows = ((z - Y) ** 2).sum(axis=1)
        dz = 2 * (z - Y)
    loss = (w_rows * rows).sum() / (m * per_out)
    dz = dz * w_rows[:, None] / (m * per_out)
    loss += l2 / (2 * m) * sum((w**2).sum() for w, _ in layers)
    grads = []
    for i in reversed(range(len(layers))):
        w, _ = layers[i]
        grads.append((dz.T @ acts[i] + l2 / m * w, dz.sum(axis=0)))
        if i:
            dz = (dz @ w) * (1 - acts[i] ** 2)
    return loss, pack(grads[::-1])


def data(n=120, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    labels = np.argmax(X @ rng.normal(size=(d, k)) + rng.normal(scale=1.5, size=(n, k)), axis=1)
    return X, labels


def one_hot(labels, k):
    return np.eye(k)[labels]


# ------------------------------------------------------------------------------------------ the direction
def dense_direction(g, pairs):
    """-H g with H built densely by the BFGS update from H0 = (s.y / y.y) I of the newest pair."""
    p = g.shape[0]
    if not pairs:
        return -g / np.linalg.norm(g)
    s, y = pairs[-1]
    h = (s @ y) / (y @ y) * np.eye(p)
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        v = np.eye(p) - rho * np.outer(y, s)
        h = v.T @ h @ v + rho * np.outer(s, s)
    return -h @ g


def test_two_loop_direction_equals_the_dense_inverse_bfgs_matrix():
    rng = np.random.default_rng(3)
    p, m = 7, 4
    a = rng.normal(size=(p, p))
    spd = a @ a.T + p * np.eye(p)  # y = A s with A SPD: every pair has curvature s.y > 0
    counts = [4, 2, 0]  # members with a full history, a short one (empty slots first) and none
    g = rng.normal(size=(len(counts), p))
    s_slots = np.zeros((m, len(counts), p))
    y_slots = np.zeros((m, len(counts), p))
    expected = []
    for k, c in enumerate(counts):
        pairs = [(s, spd @ s) for s in rng.normal(size=(c, p))]
        for j, (s, y) in enumerate(pairs):
            s_slots[m - c + j, k], y_slots[m - c + j, k] = s, y
        expected.append(dense_direction(g[k], pairs))
    d, extra = lbfgs._direction(np, g, tuple(s_slots), tuple(y_slots))
    np.testing.assert_allclose(d, np.array(expected), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(extra[:, 0], np.sum(g * np.array(expected), axis=1), rtol=1e-10)
    np.testing.assert_allclose(extra[:, 1], np.abs(expected).max(axis=1), rtol=1e-10)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_networks_numpy_direction_equals_the_generic_form_to_the_bit(monkeypatch, dtype):
    from gpunn import _backend

    rng = np.random.default_rng(5)
    p, m = 9, 4
    a = rng.normal(size=(p, p))
    spd = a @ a.T + p * np.eye(p)
    for count in (0, 2, 4):  # no pair, empty slots first, a full history
        s_slots, y_slots = np.zeros((m, 1, p), dtype=dtype), np.zeros((m, 1, p), dtype=dtype)
        pairs = [(s, spd @ s) for s in rng.normal(size=(count, p))]
        for j, (s, y) in enumerate(pairs):
            s_slots[m - count + j, 0], y_slots[m - count + j, 0] = s, y
        g = rng.normal(size=(1, p)).astype(dtype)
        fast = lbfgs._direction(np, g, tuple(s_slots), tuple(y_slots))
        monkeypatch.setattr(_backend, "NUMPY_FAST_PATHS", False)
        generic = lbfgs._direction(np, g, tuple(s_slots), tuple(y_slots))
        monkeypatch.setattr(_backend, "NUMPY_FAST_PATHS", True)
        for ours, theirs in zip(fast, generic):
            assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_allclose(fast[0][0], dense_direction(g[0].astype(np.float64), pairs),
                                   rtol=1e-10 if dtype == "float64" else 1e-4, atol=1e-12)  # fmt: skip


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["classifier", "weighted", "regression"])
def test_one_networks_numpy_evaluation_equals_the_generic_form_to_the_bit(monkeypatch, dtype, kind):
    from gpunn import _backend

    rng = np.random.default_rng(6)
    p = 11
    x0, g0, d = (rng.normal(size=(1, p)).astype(dtype) for _ in range(3))
    t, extra = np.full((1, 1), 0.37, dtype=dtype), rng.normal(size=(1, 2)).astype(dtype)
    consts = np.array([[1e-3, 0.02, 0.05, 0.03]], dtype=dtype)
    wmask = (np.arange(p) % 3 != 0).astype(dtype)

    def gradients(point, x, target, weight, mask):  # any function of the point: the glue around it is under test
        loss = np.sum(point * point, axis=1)
        loss_sum = np.stack([loss, 2 * loss], axis=-1) if kind == "weighted" else loss
        return np.sin(point) * 3, loss_sum, None if kind == "regression" else np.array([4])

    results = []
    for fast in (True, False):
        monkeypatch.setattr(_backend, "NUMPY_FAST_PATHS", fast)
        results.append(lbfgs._evaluate(np, gradients, wmask, x0, g0, d, t, None, None, None, None, consts, extra))
    for ours, theirs in zip(*results):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_pairs_curvatures_a_fit_keeps_are_the_products_to_the_bit(monkeypatch, dtype, weighted):
    """One network's direction on NumPy takes each pair's s.y as the read-back row of its accepted step held it,
    rather than computing it again: every iteration's values are the products of its pairs, to the bit, in a fit
    past a full history and in one resumed from a checkpoint's pairs."""
    X, labels = data()
    weight = np.linspace(0.5, 2.0, len(labels)) if weighted else None
    direction, handed = lbfgs._direction_numpy, []

    def checked(g, s, y, sy=None):
        assert sy is not None
        again = [np.dot(a[0], b[0]) for a, b in zip(s, y)]
        assert [(type(v), v.tobytes()) for v in sy] == [(type(v), v.tobytes()) for v in again]
        handed.append(sum(v > 0 for v in again))
        return direction(g, s, y, sy)

    monkeypatch.setattr(lbfgs, "_direction_numpy", checked)
    m = gpunn.MLP([4, 8, 3], activation="tanh", output="softmax", dtype=dtype, device="cpu", seed=3)
    opt = optim.lbfgs(history=4, tol=0.0, ftol=0.0)
    for _ in range(2):  # the second fit starts from the first's pairs
        m.fit(X, labels, epochs=12, optimizer=opt, l2=1e-3, verbose=0, sample_weight=weight)
    assert m.epoch == len(handed) == 24 and max(handed) == 4  # every iteration, past a full history


def test_a_pair_joins_the_history_only_where_marked_and_pairs_have_curvature():
    s0 = tuple(np.full((2, 3), float(i)) for i in range(3))
    x0, g0 = np.zeros((2, 3)), np.zeros((2, 3))
    p, g = np.ones((2, 3)), np.full((2, 3), 2.0)
    s, y = lbfgs._remember(np, x0, p, g0, g, s0, s0, np.array([[True], [False]]))
    np.testing.assert_array_equal(np.stack(s)[:, 0], [np.full(3, 1.0), np.full(3, 2.0), np.ones(3)])
    np.testing.assert_array_equal(np.stack(y)[:, 0, 0], [1.0, 2.0, 2.0])
    np.testing.assert_array_equal(np.stack(s)[:, 1], np.stack(s0)[:, 1])  # the member not marked keeps its own
    X, labels = data()
    m = gpunn.MLP([4, 8, 3], activation="tanh", output="softmax", dtype="float64", device="cpu", seed=0)
    m.fit(X, labels, epochs=15, optimizer=optim.lbfgs(history=5, tol=0.0), verbose=0)
    state = m.optimizer_state
    curvature = [float(np.dot(state[f"s{i}"], state[f"y{i}"])) for i in range(5)]
    scale = [float(np.dot(state[f"y{i}"], state[f"y{i}"])) for i in range(5)]
    assert all(c > np.finfo(np.float64).eps * v > 0 for c, v in zip(curvature, scale))


# ------------------------------------------------------------------------------- minimizers against SciPy
def test_convex_logistic_regression_reaches_scipys_minimizer():
    X, labels = data(d=5, k=2)
    y = labels.reshape(-1, 1).astype(float)
    sizes, l2 = [5, 1], 0.3
    m = gpunn.MLP(sizes, dtype="float64", device="cpu", seed=1)
    x0 = pack(m.weights)
    m.fit(X, labels, epochs=500, optimizer=optim.lbfgs(tol=1e-12, ftol=0.0), l2=l2, verbose=0)
    ref = scipy_optimize.minimize(objective, x0, args=(X, y, sizes, "sigmoid", l2), jac=True, method="L-BFGS-B",
                                  options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 1000})  # fmt: skip
    np.testing.assert_allclose(pack(m.weights), ref.x, atol=1e-6)
    assert m.history.loss[-1] == pytest.approx(ref.fun, rel=1e-10)


def test_label_smoothing_reaches_scipys_minimizer_of_the_smoothed_loss():
    # the line search needs the loss and gradient of the smoothed targets, as the step computes them
    X, labels = data(d=5, k=2)
    smoothed = 0.9 * labels.reshape(-1, 1).astype(float) + 0.05
    sizes, l2 = [5, 1], 0.3
    m = gpunn.MLP(sizes, dtype="float64", device="cpu", seed=1, label_smoothing=0.1)
    x0 = pack(m.weights)
    m.fit(X, labels, epochs=500, optimizer=optim.lbfgs(tol=1e-12, ftol=0.0), l2=l2, verbose=0)
    ref = scipy_optimize.minimize(objective, x0, args=(X, smoothed, sizes, "sigmoid", l2), jac=True,
                                  method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 1000})  # fmt: skip
    np.testing.assert_allclose(pack(m.weights), ref.x, atol=1e-6)


def test_ridge_regression_reaches_the_closed_form():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(80, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.3 + rng.normal(scale=0.1, size=80)
    l2 = 2.0
    m = gpunn.MLP([4, 1], output="identity", dtype="float64", device="cpu", seed=0)
    m.fit(X, y, epochs=300, optimizer=optim.lbfgs(tol=1e-12, ftol=0.0), l2=l2, verbose=0)
    # mean((Xw + b - y)^2) + l2 / (2 n) |w|^2 is minimal where (A^T A + diag(l2/2, ..., 0)) [w; b] = A^T y
    a = np.hstack([X, np.ones((80, 1))])
    exact = np.linalg.solve(a.T @ a + np.diag([l2 / 2] * 4 + [0.0]), a.T @ y)
    np.testing.assert_allclose(pack(m.weights), exact, atol=1e-6)


def test_hidden_layer_loss_is_no_worse_than_scipys():
    X, labels = data()
    Y = one_hot(labels, 3)
    sizes, l2 = [4, 8, 3], 1e-3
    m = gpunn.MLP(sizes, activation="tanh", output="softmax", dtype="float64", device="cpu", seed=2)
    x0 = pack(m.weights)
    m.fit(X, labels, epochs=100, optimizer="lbfgs", l2=l2, verbose=0)
    ref = scipy_optimize.minimize(objective, x0, args=(X, Y, sizes, "softmax", l2), jac=True, method="L-BFGS-B",
                                  options={"maxiter": 100})  # fmt: skip
    mine = objective(pack(m.weights), X, Y, sizes, "softmax", l2)[0]
    assert m.history.loss[-1] == pytest.approx(mine, rel=1e-10)  # History's loss is the objective's value
    assert mine <= ref.fun * 1.05 + 1e-4


def test_accepted_steps_satisfy_the_strong_wolfe_conditions():
    X, labels = data(seed=1)
    Y = one_hot(labels, 3)
    sizes, l2 = [4, 6, 3], 1e-2
    m = gpunn.MLP(sizes, activation="tanh", output="softmax", dtype="float64", device="cpu", seed=0)
    points = [pack(m.weights)]
    m.fit(X, labels, epochs=30, optimizer=optim.lbfgs(tol=0.0, ftol=0.0), l2=l2, verbose=0,
          callbacks=[lambda model, record: points.append(pack(model.weights))])  # fmt: skip
    assert len(points) == 31
    for before, after in zip(points[:-1], points[1:]):
        f0, g0 = objective(before, X, Y, sizes, "softmax", l2)
        f1, g1 = objective(after, X, Y, sizes, "softmax", l2)
        step = after - before
        assert g0 @ step < 0
        assert f1 <= f0 + lbfgs.C1 * (g0 @ step) + 1e-15
        assert abs(g1 @ step) <= lbfgs.C2 * abs(g0 @ step) + 1e-15


# ------------------------------------------------------------------------------------------------ stopping
def counting(monkeypatch):
    """Every evaluation of the loss, counted where the solver asks for it."""
    calls = [0]
    real = lbfgs.Solver._evaluate

    def counted(self, *args):
        calls[0] += 1
        return real(self, *args)

    monkeypatch.setattr(lbfgs.Solver, "_evaluate", counted)
    return calls


def test_a_fit_evaluates_its_starting_point_once(monkeypatch):
    steps = []
    real = lbfgs.Solver._evaluate

    def evaluate(self, x0, g0, d, t, extra):
        steps.append(float(np.asarray(t)[0, 0]))
        return real(self, x0, g0, d, t, extra)

    monkeypatch.setattr(lbfgs.Solver, "_evaluate", evaluate)
    X, labels = data()
    m = gpunn.MLP([4, 8, 3], activation="tanh", output="softmax", dtype="float64", device="cpu", seed=0)
    m.fit(X, labels, epochs=5, optimizer=optim.lbfgs(tol=0.0), verbose=0)
    assert m.epoch == 5 and steps.count(0.0) == 1 and steps[0] == 0.0  # each iteration starts where the last ended


def test_max_fun_stops_after_the_iteration_that_exceeds_it(monkeypatch):
    calls = counting(monkeypatch)
    X, labels = data()
    m = gpunn.MLP([4, 8, 3], activation="tanh", output="softmax", dtype="float64", device="cpu", seed=0)
    at_epoch = []
    m.fit(X, labels, epochs=100, optimizer=optim.lbfgs(max_fun=10, tol=0.0, ftol=0.0), verbose=0,
          callbacks=[lambda model, record: at_epoch.append(calls[0])])  # fmt: skip
    assert m.stopped_by == "max_fun"
    assert at_epoch[-2] <= 10 < at_epoch[-1] == calls[0]  # as SciPy: stopped once an iteration took it past


def test_max_fun_is_checked_before_convergence_as_scipy_checks_its_limits():
    X, labels = data()
    for max_fun, reason in [(1, "max_fun"), (100, "ftol")]:  # ftol=1: the first iteration converges
        m = gpunn.MLP([4, 8, 3], activation="tanh", output="softmax", dtype="float64", device="cpu", seed=0)
        m.fit(X, labels, epochs=10, optimizer=optim.lbfgs(max_fun=max_fun, ftol=1.0), verbose=0)
        assert (m.epoch, m.stopped_by) == (1, reason)


def test_gtol_and_ftol_stop_where_the_objective_says(monkeypatch):
    X, labels = data()
    Y = one_hot(labels, 3)
    sizes = [4, 8, 3]
    points = []
    m = gpunn.MLP(sizes, activation="tanh", output="softmax", dtype="float64", device="cpu", seed=0)
    m.fit(X, labels, epochs=1000, optimizer=optim.lbfgs(tol=1e-3, ftol=0.0), verbose=0,
          callbacks=[lambda model, record: points.append(pack(model.weights))])  # fmt: skip
    assert m.stopped_by == "gtol" and len(points) < 1000
    gmax = [np.abs(objective(p, X, Y, sizes, "softmax", 0.0)[1]).max() for p in points]
    assert gmax[-1] <= 1e-3 < min(gmax[:-1])

    m = gpunn.MLP(sizes, activation="tanh", output="softmax", dtype="float64", device="cpu", seed=0)
    m.fit(X, labels, epochs=1000, optimizer=optim.lbfgs(tol=0.0, ftol=1e-3), verbose=0)
    loss = [objective(pack(m.weights), X, Y, sizes, "softmax", 0.0)[0]]
    f = np.array(m.history.loss)
    assert m.stopped_by == "ftol" and f[-1] == pytest.approx(loss[0], rel=1e-12)
    reduction = (f[:-1] - f[1:]) / np.maximum(np.maximum(np.abs(f[:-1]), np.abs(f[1:])), 1.0)
    assert reduction[-1] <= 1e-3 < reduction[:-1].min()


def test_a_converged_fit_stops_at_once_and_a_fit_of_zero_epochs_does_nothing():
    X, labels = data()
    m = gpunn.MLP([4, 8, 3], activation="tanh", output="softmax", dtype="float64", device="cpu", seed=0)
    m.fit(X, labels, epochs=500, optimizer=optim.lbfgs(tol=1e-4), l2=0.1, verbose=0)
    done, weights = m.epoch, np.array(m.params)
    assert m.stopped_by == "gtol" and done < 500
    m.fit(X, labels, epochs=5, optimizer=optim.lbfgs(tol=1e-4), l2=0.1, verbose=0)
    assert m.epoch == done and m.stopped_by == "gtol" and np.array_equal(m.params, weights)
    m.fit(X, labels, epochs=0, optimizer="lbfgs", verbose=0)
    assert m.epoch == done and m.stopped_by is None


# ------------------------------------------------------------------------------- ensembles, resuming, state
def test_ensemble_member_equals_a_lone_mlp():
    X, labels = data(n=90)
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.5, 2.0, size=(3, 90))
    rows = [rng.choice(90, 90), np.arange(60), np.arange(30, 90)]
    l2 = [0.0, 1e-2, 1e-1]
    kw = dict(activation="tanh", output="softmax", dtype="float64", device="cpu")
    ens = gpunn.Ensemble([4, 8, 3], members=3, seed=[0, 1, 2], **kw)
    ens.fit(X, labels, epochs=25, optimizer="lbfgs", l2=l2, sample_weight=weights, verbose=0)
    ens_rows = gpunn.Ensemble([4, 8, 3], members=3, seed=[0, 1, 2], **kw)
    ens_rows.fit(X, labels, epochs=25, optimizer="lbfgs", l2=l2, rows=rows, verbose=0)
    for k in range(3):
        one = gpunn.MLP([4, 8, 3], seed=k, **kw)
        one.fit(X, labels, epochs=25, optimizer="lbfgs", l2=l2[k], sample_weight=weights[k], verbose=0)
        np.testing.assert_allclose(ens.members[k].params, one.params, rtol=0, atol=1e-9)
        np.testing.assert_allclose(ens.members[k].history.weighted_loss, one.history.weighted_loss, atol=1e-9)
        assert ens.members[k].epoch == one.epoch and ens.members[k].stopped_by == one.stopped_by
        one = gpunn.MLP([4, 8, 3], seed=k, **kw)
        one.fit(X[rows[k]], labels[rows[k]], epochs=25, optimizer="lbfgs", l2=l2[k], verbose=0)
        np.testing.assert_allclose(ens_rows.members[k].params, one.params, rtol=0, atol=1e-9)
        np.testing.assert_allclose(ens_rows.members[k].history.loss, one.history.loss, atol=1e-9)


def test_members_stop_on_their_own_and_the_others_train_on():
    X, labels = data()
    ens = gpunn.Ensemble([4, 8, 3], members=2, output="softmax", dtype="float64", device="cpu", seed=[0, 1])
    ens.fit(X, labels, epochs=200, optimizer=optim.lbfgs(max_fun=15), verbose=0)
    assert [m.stopped_by for m in ens.members] == ["max_fun", "max_fun"]
    ens = gpunn.Ensemble([4, 8, 3], members=2, output="softmax", dtype="float64", device="cpu", seed=[0, 1])
    ens.fit(X, labels, epochs=40, optimizer=optim.lbfgs(tol=1e-2), l2=[1.0, 0.0], verbose=0)
    stopped, going = ens.members  # the heavily penalized member converges to tol long before the other
    assert stopped.stopped_by == "gtol" and stopped.epoch < going.epoch == 40


@pytest.mark.parametrize("how", ["checkpoint", "pickle"])
def test_a_resumed_fit_continues_bit_identically(tmp_path, how):
    X, labels = data()
    kw = dict(activation="tanh", output="softmax", dtype="float64", device="cpu", seed=3)
    whole = gpunn.MLP([4, 8, 3], **kw)
    whole.fit(X, labels, epochs=20, optimizer=optim.lbfgs(history=4, tol=0.0), l2=1e-3, verbose=0)
    half = gpunn.MLP([4, 8, 3], **kw)
    half.fit(X, labels, epochs=10, optimizer=optim.lbfgs(history=4, tol=0.0), l2=1e-3, verbose=0)
    if how == "checkpoint":
        half.save(tmp_path / "m.safetensors")
        half = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    else:
        half = pickle.loads(pickle.dumps(half))
    assert set(half.optimizer_state) == {"step"} | {f"{a}{i}" for a in "sy" for i in range(4)}
    half.fit(X, labels, epochs=10, optimizer=optim.lbfgs(history=4, tol=0.0), l2=1e-3, verbose=0)
    assert np.array_equal(half.params, whole.params)
    assert half.history.loss == whole.history.loss and half.optimizer_state["step"] == 20


def test_an_ensemble_resumed_from_its_file_continues_bit_identically(tmp_path):
    X, labels = data()
    kw = dict(output="softmax", dtype="float64", device="cpu", seed=[0, 1])
    whole = gpunn.Ensemble([4, 8, 3], members=2, **kw)
    whole.fit(X, labels, epochs=20, optimizer=optim.lbfgs(tol=0.0), l2=[0.0, 1e-2], verbose=0)
    half = gpunn.Ensemble([4, 8, 3], members=2, **kw)
    half.fit(X, labels, epochs=10, optimizer=optim.lbfgs(tol=0.0), l2=[0.0, 1e-2], verbose=0)
    half.save(tmp_path / "e.safetensors")
    half = gpunn.load(tmp_path / "e.safetensors", device="cpu")
    half.fit(X, labels, epochs=10, optimizer=optim.lbfgs(tol=0.0), l2=[0.0, 1e-2], verbose=0)
    assert np.array_equal(half.params, whole.params)


def test_every_namespace_trains_as_numpy(backend):
    X, labels = data()
    ref = gpunn.MLP([4, 8, 3], activation="tanh", output="softmax", dtype="float64", device="cpu", seed=0)
    ref.fit(X, labels, epochs=12, optimizer="lbfgs", l2=1e-3, verbose=0)
    m = gpunn.MLP([4, 8, 3], activation="tanh", output="softmax", dtype="float64", xp=backend.xp,
                  device=backend.device, seed=0)  # fmt: skip
    m.fit(X, labels, epochs=12, optimizer="lbfgs", l2=1e-3, verbose=0, convert=True)
    np.testing.assert_allclose(gpunn._backend.to_numpy(m.params), ref.params, rtol=0, atol=1e-9)
    ens = gpunn.Ensemble([4, 8, 3], members=2, activation="tanh", output="softmax", dtype="float64",
                         xp=backend.xp, device=backend.device, seed=[0, 1])  # fmt: skip
    ens.fit(X, labels, epochs=12, optimizer="lbfgs", l2=1e-3, verbose=0, convert=True)
    np.testing.assert_allclose(gpunn._backend.to_numpy(ens.members[0].params), ref.params, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "setting, words",
    [
        ({"batch_size": 16}, "batch_size"),
        ({"clip_norm": 1.0}, "clip_norm"),
        ({"lr": gpunn.schedules.cosine(0.1, 10)}, "schedule"),
        ({"weight_decay": 0.1}, "weight_decay"),
    ],
)
def test_settings_lbfgs_does_not_take_are_refused_and_change_nothing(setting, words):
    X, labels = data()
    m = gpunn.MLP([4, 8, 3], output="softmax", dtype="float64", device="cpu", seed=0)
    before = np.array(m.params)
    with pytest.raises(ConfigError, match=words):
        m.fit(X, labels, epochs=3, optimizer="lbfgs", verbose=0, **setting)
    assert np.array_equal(m.params, before) and m.epoch == 0 and m.optimizer is None
    with pytest.raises(ConfigError, match=words):
        gpunn.Ensemble([4, 8, 3], members=2, output="softmax", device="cpu").fit(
            X, labels, epochs=3, optimizer="lbfgs", verbose=0, **setting
        )


def test_dropout_is_refused():
    X, labels = data()
    m = gpunn.MLP([4, 8, 3], output="softmax", device="cpu", dropout=0.2)
    with pytest.raises(ConfigError, match="dropout"):
        m.fit(X, labels, optimizer="lbfgs", verbose=0)
    with pytest.raises(ConfigError, match="max_fun"):
        optim.lbfgs(max_fun=0)


# ------------------------------------------------------------------------------------------ scikit-learn
def test_sklearn_face_matches_scikit_learns_lbfgs_on_a_convex_problem():
    sk = pytest.importorskip("sklearn.neural_network")
    from gpunn.sklearn import MLPRegressor

    rng = np.random.default_rng(2)
    X = rng.normal(size=(100, 3))
    y = X @ np.array([0.5, -1.0, 2.0]) + rng.normal(scale=0.2, size=100)
    kw = dict(hidden_layer_sizes=(), solver="lbfgs", alpha=0.5, tol=1e-10, max_iter=500, random_state=0)
    ours = MLPRegressor(device="cpu", **kw).fit(X, y)
    theirs = sk.MLPRegressor(**kw).fit(X, y)
    # scikit-learn's loss: mean((Xw + b - y)^2) / 2 + alpha / (2 n) |w|^2, minimal at the ridge solution
    a = np.hstack([X, np.ones((100, 1))])
    exact = np.linalg.solve(a.T @ a + np.diag([0.5] * 3 + [0.0]), a.T @ y)
    np.testing.assert_allclose(np.append(ours.coefs_[0].ravel(), ours.intercepts_[0]), exact, atol=1e-8)
    np.testing.assert_allclose(ours.coefs_[0], theirs.coefs_[0], atol=1e-5)  # SciPy stops sooner, on ftol
    assert ours.loss_ <= theirs.loss_ and ours.loss_ == pytest.approx(theirs.loss_, rel=1e-8)
    assert ours.n_iter_ <= 10 and theirs.n_iter_ <= 10
    assert not hasattr(ours, "loss_curve_") and not hasattr(theirs, "loss_curve_")


def test_sklearn_face_warns_as_scikit_learn_when_it_stops_short():
    pytest.importorskip("sklearn")
    from sklearn.exceptions import ConvergenceWarning

    from gpunn.sklearn import MLPClassifier

    X, labels = data()
    clf = MLPClassifier(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=4, random_state=0, device="cpu")
    with pytest.warns(ConvergenceWarning, match=r"lbfgs failed to converge after 4 iteration\(s\) \(status=1\)"):
        clf.fit(X, labels)
    assert clf.n_iter_ == 4 and clf.loss_ > 0
    clf.set_params(max_iter=500, max_fun=12)
    with pytest.warns(ConvergenceWarning, match="F,G EVALUATIONS EXCEEDS LIMIT"):
        clf.fit(X, labels)
    assert clf.n_iter_ < 12
    clf.set_params(max_iter=2000, max_fun=15000, tol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X, labels)  # converges: no warning


def test_search_grids_over_solver_as_grid_search_cv():
    pytest.importorskip("sklearn")
    from sklearn.model_selection import GridSearchCV

    from gpunn.sklearn import MLPClassifier, MLPSearchCV

    X, labels = data()
    grid = {"solver": ["lbfgs", "adam"], "alpha": [1e-4, 1e-1]}
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both stop at max_iter: ConvergenceWarnings
        ours = MLPSearchCV(est, grid, cv=3).fit(X, labels)
        theirs = GridSearchCV(est, grid, cv=3).fit(X, labels)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"], atol=1e-12)
    assert ours.best_params_ == theirs.best_params_


def test_cli_trains_with_lbfgs(tmp_path):
    from gpunn import cli

    code = cli.main(["train", "--device", "cpu", "--dtype", "float64", "--optimizer", "lbfgs", "--epochs", "30",
                     "--save", str(tmp_path / "m.safetensors")])  # fmt: skip
    assert code == 0
    m = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    assert m.optimizer.name == "lbfgs" and 0 < m.epoch <= 30 and m.history.loss[-1] < m.history.loss[0]
    assert cli.main(["train", "--device", "cpu", "--optimizer", "lbfgs", "--batch-size", "8"]) == 2


def test_on_jax_a_new_setting_compiles_nothing(monkeypatch):
    jnp = pytest.importorskip("jax.numpy")
    seen = set()
    real = lbfgs.Solver.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen.add(self.fns)

    monkeypatch.setattr(lbfgs.Solver, "__init__", init)
    X, labels = data(n=60)
    for l2, tol in [(0.1, 1e-5), (0.2, 1e-3), (0.0, 0.0)]:
        m = gpunn.MLP([4, 5, 3], output="softmax", xp=jnp, device=None, dtype="float64", seed=0, compile=True)
        m.fit(X, labels, epochs=4, optimizer=optim.lbfgs(tol=tol), l2=l2, verbose=0, convert=True)
    (fns,) = seen  # one set of compiled functions, each compiled once: l2 and tol are runtime values
    assert fns.compiled
    assert [f._cache_size() for f in (fns.evaluate, fns.direction)] == [1, 1]
    assert fns.remember._cache_size() <= 1  # called only where some members take their pair and others not


def test_an_iteration_reads_back_once_per_evaluation(monkeypatch):
    from gpunn import _backend

    inside, reads, evals = [False], [0], [0]
    real_read, real_iterate, real_evaluate = _backend.to_numpy, lbfgs.Solver.iterate, lbfgs.Solver._evaluate

    def read(a):
        reads[0] += inside[0]
        return real_read(a)

    def iterate(self, *args):
        inside[0] = True
        try:
            return real_iterate(self, *args)
        finally:
            inside[0] = False

    def evaluate(self, *args):
        evals[0] += inside[0]
        return real_evaluate(self, *args)

    monkeypatch.setattr(_backend, "to_numpy", read)
    monkeypatch.setattr(lbfgs.Solver, "iterate", iterate)
    monkeypatch.setattr(lbfgs.Solver, "_evaluate", evaluate)
    X, labels = data()
    ens = gpunn.Ensemble([4, 8, 3], members=3, output="softmax", dtype="float64", device="cpu", seed=[0, 1, 2])
    ens.fit(X, labels, epochs=10, optimizer="lbfgs", l2=[0.0, 1e-2, 1e-1], verbose=0)
    assert evals[0] >= 10 and reads[0] == evals[0]
