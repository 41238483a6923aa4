"""gpunn.Ensemble against its oracle, the lone MLP: member k fitted in the stack equals ``MLP(seed=seeds[k], ...)``
fitted alone in NumPy with member k's settings (weights, optimizer state, generator and every History field, to
1e-9 in float64), the ensemble on every namespace. Plus the stacked layout (a full batch is never copied K
times), inference, files, and bad input (an error naming the problem, the ensemble unchanged)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpunn
from gpunn import _backend, optim, schedules
from gpunn.callbacks import EarlyStopping
from gpunn.ensemble import _loop

TOL = 1e-9
SEEDS = [3, 11, 5]
N = 60


def _data(output: str, n: int = N, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    if output == "sigmoid":
        y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    elif output == "softmax":
        y = np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.5, 0.5])
    else:
        y = np.c_[X[:, 0] * X[:, 1], np.sin(X[:, 2])]
    return X, y


def _sizes(output: str) -> list[int]:
    return [3, 6, 5, {"sigmoid": 1, "softmax": 3, "identity": 2}[output]]


W = np.random.default_rng(7).uniform(0.2, 2.0, size=(3, N))
ROWS = [np.random.default_rng(k).integers(0, N, size=N - 4 * k) for k in range(3)]  # bootstrap rows, 3 lengths

# (id, output, Ensemble keywords, fit keywords, member k's lone fit keywords as a function of k)
SCENARIOS = [
    ("full-sgd-lr-l2", "sigmoid", {}, dict(lr=[0.3, 0.1, 0.5], l2=[0.0, 0.1, 0.3]),
     lambda k: dict(lr=[0.3, 0.1, 0.5][k], l2=[0.0, 0.1, 0.3][k])),
    ("shuffled-adam-dropout", "softmax", dict(dropout=[0.2, 0.0, 0.5]), dict(batch_size=16, optimizer="adam", lr=0.02),
     lambda k: dict(batch_size=16, optimizer="adam", lr=0.02)),
    ("ordered-momentum-weights", "sigmoid", {},
     dict(batch_size=25, shuffle=False, optimizer="momentum", sample_weight=W),
     lambda k: dict(batch_size=25, shuffle=False, optimizer="momentum", sample_weight=W[k])),
    ("nesterov-clip-plateau-val", "identity", {},
     dict(batch_size=20, optimizer="nesterov", lr=schedules.plateau(0.05, patience=1), clip_norm=0.3, val=True),
     lambda k: dict(batch_size=20, optimizer="nesterov", lr=schedules.plateau(0.05, patience=1), clip_norm=0.3,
                    val=True)),
    ("adamw-decay-classweight", "softmax", {}, dict(optimizer="adamw", lr=0.02, weight_decay=[0.0, 0.1, 0.5],
                                                    class_weight="balanced", batch_size=32),
     lambda k: dict(optimizer="adamw", lr=0.02, weight_decay=[0.0, 0.1, 0.5][k], class_weight="balanced",
                    batch_size=32)),
    ("rows-full-weights", "sigmoid", {}, dict(rows=ROWS, sample_weight=W[0], lr=schedules.step(0.3, every=3)),
     lambda k: dict(rows=ROWS[k], sample_weight=W[0][ROWS[k]], lr=schedules.step(0.3, every=3))),
    ("rows-minibatch-dropout", "softmax", dict(dropout=0.3), dict(rows=ROWS, batch_size=16, optimizer="adam", lr=0.02,
                                                                  val=True),
     lambda k: dict(rows=ROWS[k], batch_size=16, optimizer="adam", lr=0.02, val=True)),
    ("rows-weights-per-member", "identity", {}, dict(rows=ROWS, batch_size=20, sample_weight=W, lr=[0.05, 0.02, 0.1]),
     lambda k: dict(rows=ROWS[k], batch_size=20, sample_weight=W[k][ROWS[k]], lr=[0.05, 0.02, 0.1][k])),
]  # fmt: skip


def _kwargs(backend, compiled: bool = False) -> dict:
    """Float64 on the backend, eager, or with ``compiled`` compiled on JAX (elsewhere eager all the same)."""
    return dict(dtype="float64", compile=compiled and backend.name.startswith("jax"), **backend.kwargs())


def _host(a) -> np.ndarray:
    return np.asarray(_backend.to_numpy(a), dtype=np.float64)


def assert_member_is_lone(member: gpunn.MLP, lone: gpunn.MLP, history: gpunn.History, lone_history: gpunn.History):
    np.testing.assert_allclose(_host(member.params), _host(lone.params), rtol=0, atol=TOL)
    assert set(member.optimizer_state) == set(lone.optimizer_state)
    for slot, value in lone.optimizer_state.items():
        if slot == "step":
            assert int(member.optimizer_state["step"]) == int(value)
        else:
            np.testing.assert_allclose(_host(member.optimizer_state[slot]), _host(value), rtol=0, atol=TOL)
    for name in gpunn.History.__dataclass_fields__:
        ours, theirs = getattr(history, name), getattr(lone_history, name)
        assert len(ours) == len(theirs), name
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL, err_msg=name)
    assert member.history == lone.history or member.history.epochs == lone.history.epochs
    assert member.rng.bit_generator.state == lone.rng.bit_generator.state
    assert member.epoch == lone.epoch and member.schedule_state.keys() == lone.schedule_state.keys()


def _fit_pair(backend, output, ens_kw, fit_kw, lone_kw, epochs=6, callbacks=None, lone_callbacks=None,
              compiled=False):  # fmt: skip
    X, y = _data(output)
    Xv, yv = _data(output, 20, seed=1)
    kw = _kwargs(backend, compiled)
    fit_kw = dict(fit_kw)
    val = fit_kw.pop("val", False)
    ens = gpunn.Ensemble(_sizes(output), len(SEEDS), seed=SEEDS, output=output, **ens_kw, **kw)
    common = dict(epochs=epochs, verbose=0, validation_data=(Xv, yv) if val else None)
    histories = ens.fit(X, y, callbacks=callbacks, **common, **fit_kw)
    lones = []
    for k, seed in enumerate(SEEDS):
        mine = dict(lone_kw(k))
        mine.pop("val", None)
        rows = mine.pop("rows", None)
        Xk, yk = (X, y) if rows is None else (X[rows], y[rows])
        dropout = ens_kw.get("dropout", 0.0)
        dropout = dropout[k] if isinstance(dropout, list) else dropout
        # the oracle trains in NumPy, whatever the ensemble's namespace (the lone MLP equals NumPy's on every
        # namespace: tests/test_conformance.py), so JAX compiles the ensemble's programs alone here
        lone = gpunn.MLP(_sizes(output), seed=seed, output=output, dropout=dropout, dtype="float64", device="cpu")
        cbs = None if lone_callbacks is None else lone_callbacks()
        lones.append((lone, lone.fit(Xk, yk, callbacks=cbs, **common, **mine)))
    return ens, histories, lones, (X, y, Xv, yv)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_every_member_equals_a_lone_mlp(backend, scenario):
    _, output, ens_kw, fit_kw, lone_kw = scenario
    # on JAX compiled, as it trains by default (traced arrays are immutable too): every eager operation of JAX
    # compiles once per shape, which costs this matrix a minute; JAX's eager stacked step has the other tests
    ens, histories, lones, _ = _fit_pair(backend, output, ens_kw, fit_kw, lone_kw, compiled=True)
    assert len(histories) == len(SEEDS) and ens.seeds == SEEDS
    for member, history, (lone, lone_history) in zip(ens.members, histories, lones):
        assert_member_is_lone(member, lone, history, lone_history)


@pytest.mark.parametrize("fast", [True, False], ids=["numpy-fast-path", "numpy-generic"])
def test_numpy_fast_path_and_generic_path_both_equal_lone_mlps(monkeypatch, fast):
    """The stacked step's NumPy fast path (sums as products with ones) against the lone MLP, and the generic
    path too (both the ensemble's and the lone MLP's fast paths switched off)."""
    monkeypatch.setattr(_backend, "NUMPY_FAST_PATHS", fast)
    scenario = SCENARIOS[1]
    ens, histories, lones, _ = _fit_pair(_NumPy, scenario[1], scenario[2], scenario[3], scenario[4])
    for member, history, (lone, lone_history) in zip(ens.members, histories, lones):
        assert_member_is_lone(member, lone, history, lone_history)


class _NumPy:
    @staticmethod
    def kwargs() -> dict:
        return {"device": "cpu"}


def test_a_second_fit_continues_each_member(backend):
    """Two fits equal one, member by member (optimizer state and generators carry over). Compiled on JAX, as it
    trains by default; JAX's eager stacked step has test_save_load_and_fit_resume_bit_identically."""
    fit_kw = dict(batch_size=16, optimizer="adam", lr=0.02)
    ens, _, lones, (X, y, _, _) = _fit_pair(backend, "sigmoid", {}, fit_kw, lambda k: fit_kw, epochs=3, compiled=True)
    more = ens.fit(X, y, epochs=2, verbose=0, **fit_kw)
    for member, history, (lone, _) in zip(ens.members, more, lones):
        assert_member_is_lone(member, lone, history, lone.fit(X, y, epochs=2, verbose=0, **fit_kw))


def test_early_stopping_stops_each_member_on_its_own(backend):
    """Each member keeps its best epoch and stops updating when its own EarlyStopping says so; the fit ends when
    all have stopped; a later fit continues every member from there, as a lone MLP's would. Compiled on JAX."""
    fit_kw = dict(batch_size=16, optimizer="adam", lr=0.05, val=True)
    ens, histories, lones, (X, y, Xv, yv) = _fit_pair(
        backend, "sigmoid", {}, fit_kw, lambda k: fit_kw, epochs=40, callbacks=[EarlyStopping(patience=2)],
        lone_callbacks=lambda: [EarlyStopping(patience=2)], compiled=True,
    )  # fmt: skip
    epochs = [h.epochs for h in histories]
    assert len(set(epochs)) > 1 and max(epochs) < 40, epochs  # the members stopped, and at different epochs
    for member, history, (lone, lone_history) in zip(ens.members, histories, lones):
        assert_member_is_lone(member, lone, history, lone_history)
    again = dict(epochs=3, verbose=0, batch_size=16, optimizer="adam", lr=0.05, validation_data=(Xv, yv))
    for member, history, (lone, _) in zip(ens.members, ens.fit(X, y, **again), lones):
        assert_member_is_lone(member, lone, history, lone.fit(X, y, **again))


def test_compiled_step_equals_lone_mlps():
    jnp = pytest.importorskip("jax.numpy")
    import jax

    X, y = _data("softmax")
    kw = dict(dtype="float64", xp=jnp, device=jax.devices("cpu")[0])
    ens = gpunn.Ensemble(_sizes("softmax"), 3, seed=SEEDS, output="softmax", dropout=[0.1, 0.0, 0.3], compile=True,
                         **kw)  # fmt: skip
    fit_kw = dict(epochs=4, verbose=0, batch_size=16, optimizer="adamw", lr=[0.01, 0.02, 0.03])
    histories = ens.fit(X, y, **fit_kw)
    for k, seed in enumerate(SEEDS):  # the oracle: each member alone, eager, on NumPy (JAX's eager ops compile)
        lone = gpunn.MLP(_sizes("softmax"), seed=seed, output="softmax", dropout=[0.1, 0.0, 0.3][k], dtype="float64",
                         device="cpu")  # fmt: skip
        h = lone.fit(X, y, **{**fit_kw, "lr": fit_kw["lr"][k]})
        assert_member_is_lone(ens.members[k], lone, histories[k], h)


def test_full_batch_shares_x_between_members(monkeypatch):
    """Members training on every row of a full batch get X itself, (n, in), never K copies of it."""
    seen = []

    class Recording(_loop.StackedStep):
        def __call__(self, params, state, x, *args, **kwargs):
            seen.append(x)
            return super().__call__(params, state, x, *args, **kwargs)

    monkeypatch.setattr(_loop, "StackedStep", Recording)
    X, y = _data("sigmoid")
    ens = gpunn.Ensemble(_sizes("sigmoid"), 8, device="cpu", dtype="float64", compile=False)
    ens.fit(X, y, epochs=2, verbose=0, sample_weight=np.ones((8, N)))
    assert [x.shape for x in seen] == [(N, 3), (N, 3)]
    assert seen[0] is seen[1]  # placed once per fit
    seen.clear()
    ens.fit(X, y, epochs=1, verbose=0, rows=[np.arange(k, N) for k in range(8)])  # own rows: a mask, X still shared
    assert [x.shape for x in seen] == [(N, 3)]


@pytest.mark.parametrize("output", ["sigmoid", "softmax", "identity"])
def test_predictions_are_the_members_mean(backend, output):
    X, y = _data(output)
    # trained on NumPy and moved (compile="auto": on JAX its predictions compiled, JAX's default): the predictions
    # are under test, and a fit on JAX compiled its training for each output (training: the tests above)
    ens = gpunn.Ensemble(_sizes(output), 4, seed=2, output=output, device="cpu", dtype="float64")
    ens.fit(X, y, epochs=3, verbose=0)
    ens.to(backend.device, backend.xp)
    alone = [m.predict(X) if output == "identity" else m.predict_proba(X) for m in ens.members]
    each = np.stack([_host(a) for a in alone])  # the oracle: every member alone
    stacked = _host(ens.predict_proba(X, members=True))
    assert stacked.shape == (4, N, _sizes(output)[-1])
    np.testing.assert_allclose(stacked, each, rtol=0, atol=1e-12)
    np.testing.assert_allclose(_host(ens.predict_proba(X)), each.mean(axis=0), rtol=0, atol=1e-12)
    labels = _host(ens.predict(X))
    if output == "identity":
        mean, std = ens.predict(X, return_std=True)
        np.testing.assert_allclose(_host(mean), each.mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(_host(std), each.std(axis=0), rtol=0, atol=1e-12)
    elif output == "softmax":
        np.testing.assert_array_equal(labels, each.mean(axis=0).argmax(axis=1))
    else:
        np.testing.assert_array_equal(labels, (each.mean(axis=0)[:, 0] > 0.5).astype(int))
        with pytest.raises(gpunn.ConfigError, match="return_std is for regression"):
            ens.predict(X, return_std=True)


def test_standardize_shares_one_scaling():
    X, y = _data("sigmoid")
    X = X * [1.0, 100.0, 0.01] + 5
    ens = gpunn.Ensemble(_sizes("sigmoid"), 2, seed=SEEDS[:2], standardize=True, device="cpu", dtype="float64")
    histories = ens.fit(X, y, epochs=4, verbose=0, batch_size=16)
    for k, seed in enumerate(SEEDS[:2]):
        lone = gpunn.MLP(_sizes("sigmoid"), seed=seed, standardize=True, device="cpu", dtype="float64")
        assert_member_is_lone(ens.members[k], lone, histories[k], lone.fit(X, y, epochs=4, verbose=0, batch_size=16))
    np.testing.assert_allclose(_host(ens.predict_proba(X, members=True))[1], _host(lone.predict_proba(X)), atol=1e-12)


def test_save_load_and_fit_resume_bit_identically(backend, tmp_path):
    X, y = _data("softmax")
    kw = _kwargs(backend)
    # batches of 20 of the 60 rows: no remainder, one batch shape for JAX's eager operations to compile (its eager
    # stacked step on a remainder batch: tests/test_ensemble_compile.py, a loop the compiler refuses)
    fit_kw = dict(verbose=0, batch_size=20, optimizer="adam", lr=[0.01, 0.05, 0.02], l2=0.01)
    ens = gpunn.Ensemble(_sizes("softmax"), 3, seed=SEEDS, output="softmax", dropout=[0.0, 0.2, 0.1], **kw)
    ens.fit(X, y, epochs=3, **fit_kw)
    path = tmp_path / "ensemble.safetensors"
    ens.save(path)
    assert gpunn.ensemble.is_ensemble_file(path)
    loaded = gpunn.ensemble.load(path, **backend.kwargs(), compile=False)
    assert len(loaded) == 3 and loaded.seeds == SEEDS
    np.testing.assert_array_equal(_host(loaded.predict_proba(X)), _host(ens.predict_proba(X)))
    ens.fit(X, y, epochs=2, **fit_kw)
    loaded.fit(X, y, epochs=2, **fit_kw)
    for a, b in zip(ens.members, loaded.members):
        np.testing.assert_array_equal(_host(a.params), _host(b.params))
        assert a.history == b.history and a.rng.bit_generator.state == b.rng.bit_generator.state


def test_a_lone_model_file_is_not_an_ensemble(tmp_path):
    m = gpunn.MLP([2, 3, 1], device="cpu")
    m.save(tmp_path / "m.safetensors")
    assert not gpunn.ensemble.is_ensemble_file(tmp_path / "m.safetensors")
    with pytest.raises(gpunn.CheckpointError, match="not a gpunn ensemble file"):
        gpunn.ensemble.load(tmp_path / "m.safetensors")
    ens = gpunn.Ensemble([2, 3, 1], 2, device="cpu")
    ens.fit(np.eye(2), [0, 1], epochs=1, verbose=0)
    ens.save(tmp_path / "e.safetensors")
    with pytest.raises(gpunn.CheckpointError, match=r"e.safetensors: holds an ensemble, not one network \(gpunn.load"):
        gpunn.MLP([2, 3, 1], device="cpu").load_weights(tmp_path / "e.safetensors")
    data = bytearray((tmp_path / "e.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(gpunn.CheckpointError, match="checksum"):
        gpunn.ensemble.load(tmp_path / "bad.safetensors")


def _snapshot(ens: gpunn.Ensemble):
    return [(_host(m.params).copy(), m.rng.bit_generator.state, m.history.to_dict(), m.epoch, m.optimizer)
            for m in ens.members]  # fmt: skip


@pytest.mark.parametrize(
    "fit_kw,error,match",
    [
        (dict(lr=[0.1, 0.2]), gpunn.ConfigError, r"lr lists 2 values; the ensemble has 3 members"),
        (dict(lr=[0.1, float("nan"), 0.2]), gpunn.ConfigError, r"lr\[1\] must be a finite number > 0; got nan"),
        (dict(l2=[0.1, 0.1, float("nan")]), gpunn.ConfigError, r"l2\[2\] must be a finite number >= 0; got nan"),
        (dict(l2=[0.1] * 4), gpunn.ConfigError, r"l2 lists 4 values"),
        (dict(optimizer="adamw", weight_decay=[0.1, float("nan"), 0.0]), gpunn.ConfigError, r"weight_decay\[1\]"),
        (dict(optimizer="adamw", weight_decay=[0.1]), gpunn.ConfigError, r"weight_decay lists 1 values"),
        (dict(sample_weight=np.ones((2, N))), gpunn.InputError, r"shape \(2, 60\).*\(60,\).*\(3, 60\)"),
        (dict(sample_weight=np.ones(N - 1)), gpunn.InputError, r"sample_weight has shape \(59,\)"),
        (dict(sample_weight=np.c_[np.ones((3, N - 1)), [[1], [-1], [1]]]), gpunn.InputError, r"member 1: sample_w"),
        (dict(rows=[np.arange(5)] * 2), gpunn.InputError, r"rows must be a list of 3 index arrays"),
        (dict(rows=[np.arange(5), np.arange(5), np.array([0, N])]), gpunn.InputError, r"rows\[2\] holds row 60"),
    ],
)  # fmt: skip
def test_bad_fit_arguments_name_the_problem_and_change_nothing(fit_kw, error, match):
    X, y = _data("sigmoid")
    ens = gpunn.Ensemble(_sizes("sigmoid"), 3, device="cpu", dtype="float64")
    ens.fit(X, y, epochs=1, verbose=0)
    before = _snapshot(ens)
    with pytest.raises(error, match=match):
        ens.fit(X, y, epochs=2, verbose=0, **fit_kw)
    after = _snapshot(ens)
    for (p0, *rest0), (p1, *rest1) in zip(before, after):
        np.testing.assert_array_equal(p0, p1)
        assert rest0 == rest1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(members=0), r"members must be from 1 to 65536; got 0"),
        (dict(members=10**9), r"members must be from 1 to 65536; got 1000000000"),
        (dict(members="yes"), r"members must be an integer from 1 to 65536; got 'yes'"),
        (dict(members=2.0), r"members must be an integer from 1 to 65536; got 2.0"),
        (dict(members=3, seed=[1, 2]), r"seed lists 2 seeds; the ensemble has 3 members"),
        (dict(members=2, dropout=[0.1, float("nan")]), r"dropout\[1\] must be in \[0, 1\)"),
        (dict(members=2, dropout=[0.1, 0.2, 0.3]), r"dropout lists 3 values; the ensemble has 2 members"),
    ],
)
def test_bad_constructor_arguments_name_the_problem(kwargs, match):
    with pytest.raises(gpunn.ConfigError, match=match):
        gpunn.Ensemble([2, 3, 1], device="cpu", **kwargs)


@pytest.mark.parametrize(
    "lr,error",
    [(3.0, gpunn.DivergenceError), (1e8, gpunn.NonFiniteError)],
    ids=["explodes", "overflows"],
)
def test_a_diverging_member_stops_where_a_lone_mlp_stops_and_the_others_train_on(lr, error):
    X, y = _data("identity")
    kw = dict(output="identity", device="cpu", dtype="float64")
    rates = [0.01, lr, 0.02]
    ens = gpunn.Ensemble(_sizes("identity"), 3, seed=SEEDS, **kw)
    with pytest.warns(RuntimeWarning, match=r"ensemble member 1: training diverged in epoch \d+"):
        ens.fit(X, y, epochs=30, verbose=0, lr=rates)
    assert ens.diverged[0] is None and ens.diverged[2] is None and ens.diverged[1].startswith("member 1: ")
    for k in range(3):  # the oracle: each member alone, the diverging one stopped by its own error
        lone = gpunn.MLP(_sizes("identity"), seed=SEEDS[k], **kw)
        if k == 1:
            with pytest.raises(error):
                lone.fit(X, y, epochs=30, verbose=0, lr=rates[k])
        else:
            lone.fit(X, y, epochs=30, verbose=0, lr=rates[k])
        assert_member_is_lone(ens.members[k], lone, ens.members[k].history, lone.history)
    assert np.isfinite(_host(ens.members[1].params)).all()
    alone = [gpunn.MLP(_sizes("identity"), seed=SEEDS[k], **kw) for k in (0, 2)]
    for m, k in zip(alone, (0, 2)):
        m.fit(X, y, epochs=30, verbose=0, lr=rates[k])
    mean = (_host(alone[0].predict(X)) + _host(alone[1].predict(X))) / 2  # the diverged member is left out
    np.testing.assert_allclose(_host(ens.predict(X)), mean, rtol=0, atol=TOL)
    ens.fit(X, y, epochs=2, verbose=0, lr=rates)  # a diverged member sits out later fits
    assert ens.members[1].epoch == ens.members[1].history.epochs and ens.members[0].epoch == 32


@pytest.mark.parametrize("namespace", ["numpy", "jax"])
def test_a_member_whose_last_update_overflows_is_set_aside_where_a_lone_mlp_stops(namespace):
    """No loss measures a fit's last update: member 1's only epoch at lr=1e308 (targets of 1e3) leaves weights that
    are not finite; it is set aside at its initial weights, as the lone MLP's fit raises NonFiniteError and keeps
    them, and the others end where they would alone."""
    place = {"numpy": lambda: dict(device="cpu"), "jax": lambda: dict(xp=pytest.importorskip("jax.numpy"))}
    kw = dict(output="identity", dtype="float64", **place[namespace]())
    X, y = _data("identity")
    y = 1e3 * y
    rates = [0.01, 1e308, 0.02]
    ens = gpunn.Ensemble(_sizes("identity"), 3, seed=SEEDS, **kw)
    with pytest.warns(RuntimeWarning, match="ensemble member 1: training diverged in epoch 1: its last weight upd"):
        ens.fit(X, y, epochs=1, verbose=0, lr=rates)
    assert ens.diverged[0] is None and ens.diverged[2] is None and ens.diverged[1] is not None
    for k in range(3):
        lone = gpunn.MLP(_sizes("identity"), seed=SEEDS[k], **kw)
        if k == 1:
            with pytest.raises(gpunn.NonFiniteError, match="its last weight update"):
                lone.fit(X, y, epochs=1, verbose=0, lr=rates[k])
            assert lone.epoch == 0
        else:
            lone.fit(X, y, epochs=1, verbose=0, lr=rates[k])
        assert_member_is_lone(ens.members[k], lone, ens.members[k].history, lone.history)


def test_the_example_of_a_member_poisoning_the_mean_now_warns_and_keeps_the_mean_finite():
    X, y = _data("identity", n=200)
    ens = gpunn.Ensemble([3, 16, 16, 2], members=2, seed=[1, 1], output="identity", device="cpu")
    with pytest.warns(RuntimeWarning, match="member 1"):
        ens.fit(X, y, epochs=60, lr=[0.1, 3.0], verbose=0)
    lone = gpunn.MLP([3, 16, 16, 2], seed=1, output="identity", device="cpu")
    lone.fit(X, y, epochs=60, lr=0.1, verbose=0)
    np.testing.assert_allclose(_host(ens.predict(X)), _host(lone.predict(X)), rtol=1e-5, atol=1e-5)


def test_when_every_member_diverges_fit_raises_divergence_error():
    X, y = _data("identity")
    ens = gpunn.Ensemble(_sizes("identity"), 2, seed=SEEDS[:2], output="identity", device="cpu", dtype="float64")
    with pytest.warns(RuntimeWarning), pytest.raises(gpunn.DivergenceError, match="every member of the ensemble"):
        ens.fit(X, y, epochs=30, verbose=0, lr=3.0)
    lone = gpunn.MLP(_sizes("identity"), seed=SEEDS[0], output="identity", device="cpu", dtype="float64")
    with pytest.raises(gpunn.DivergenceError):
        lone.fit(X, y, epochs=30, verbose=0, lr=3.0)
    assert_member_is_lone(ens.members[0], lone, ens.members[0].history, lone.history)


def test_parallel_is_a_checked_fit_argument_and_without_comm_one_process_trains_every_member():
    X, y = _data("sigmoid")
    ens = gpunn.Ensemble(_sizes("sigmoid"), 2, seed=SEEDS[:2], device="cpu", dtype="float64")
    before = _host(ens.params)
    for bad in ("bogus", None, 1):
        with pytest.raises(gpunn.ConfigError, match=rf"^parallel={bad!r}: give 'rows' .* or 'members' "):
            ens.fit(X, y, epochs=1, verbose=0, parallel=bad)
    assert np.array_equal(_host(ens.params), before) and all(m.epoch == 0 for m in ens.members)
    ens.fit(X, y, epochs=3, verbose=0, parallel="members")  # no comm: no ranks to split the members over
    lone = gpunn.MLP(_sizes("sigmoid"), seed=SEEDS[1], device="cpu", dtype="float64")
    lone.fit(X, y, epochs=3, verbose=0)
    np.testing.assert_allclose(_host(ens.members[1].params), _host(lone.params), rtol=0, atol=TOL)


def test_diverge_factor_is_a_checked_fit_argument():
    X, y = _data("identity")
    ens = gpunn.Ensemble(_sizes("identity"), 2, output="identity", device="cpu")
    with pytest.raises(gpunn.ConfigError, match=r"diverge_factor must be above 1"):
        ens.fit(X, y, epochs=1, verbose=0, diverge_factor=0.5)
    ens.fit(X, y, epochs=30, verbose=0, lr=[0.01, 3.0], diverge_factor=None)  # the check off: both train on
    assert ens.diverged == [None, None] and [m.epoch for m in ens.members] == [30, 30]


def test_saving_an_ensemble_whose_widths_are_not_inferred_yet_names_the_ensemble(tmp_path):
    ens = gpunn.Ensemble(hidden=[4], members=2, device="cpu")
    with pytest.raises(gpunn.NotFittedError, match=r"^this Ensemble has not been trained yet"):  # not "this MLP"
        ens.save(tmp_path / "e.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("output", ["sigmoid", "softmax", "identity"])
def test_hidden_infers_widths_member_for_member_as_sizes_does(output):
    X, y = _data(output)
    sizes = _sizes(output)
    ens = gpunn.Ensemble(hidden=sizes[1:-1], members=3, seed=SEEDS, output=output, device="cpu", dtype="float64")
    with pytest.raises(gpunn.NotFittedError):
        ens.predict(X)
    ens.fit(X, y, epochs=3, verbose=0, lr=0.1)
    ref = gpunn.Ensemble(sizes, members=3, seed=SEEDS, output=output, device="cpu", dtype="float64")
    ref.fit(X, y, epochs=3, verbose=0, lr=0.1)
    assert ens.sizes == sizes
    np.testing.assert_array_equal(_host(ens.params), _host(ref.params))


@pytest.mark.parametrize("output", ["sigmoid", "softmax", "identity"])
def test_evaluate_scores_the_mean_prediction(output):
    X, y = _data(output)
    kw = dict(output=output, device="cpu", dtype="float64", standardize=output == "identity")
    ens = gpunn.Ensemble(_sizes(output), 3, seed=SEEDS, **kw)
    ens.fit(X, y, epochs=20, verbose=0, lr=0.1)
    got = ens.evaluate(X, y)
    p = np.mean([_host(m.predict_proba(X) if output != "identity" else m.predict(X)) for m in ens.members], axis=0)
    if output == "identity":  # the squared error of the mean value, in the target's units
        want = {"loss": np.mean((p - y) ** 2)}
    elif output == "softmax":
        want = {"loss": -np.mean(np.log(p[np.arange(len(y)), y])), "accuracy": np.mean(p.argmax(1) == y)}
    else:
        q = p[:, 0]
        want = {"loss": -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)), "accuracy": np.mean((q > 0.5) == y)}
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12)
    assert ens.evaluate(X, y, members=True) == [m.evaluate(X, y) for m in ens.members]
    one = gpunn.Ensemble.from_members([ens.members[0]])  # one member: the score its own evaluate gives
    for key, value in ens.members[0].evaluate(X, y).items():
        assert one.evaluate(X, y)[key] == pytest.approx(value, rel=1e-7)


def test_members_are_mlps_usable_alone(tmp_path):
    X, y = _data("sigmoid")
    ens = gpunn.Ensemble(_sizes("sigmoid"), 2, device="cpu")
    ens.fit(X, y, epochs=2, verbose=0, optimizer=optim.adam(), lr=0.01)
    member = ens.members[1]
    assert isinstance(member, gpunn.MLP) and member.seed == 1
    member.save(os.fspath(tmp_path / "one.safetensors"))
    np.testing.assert_array_equal(gpunn.load(tmp_path / "one.safetensors").predict_proba(X), member.predict_proba(X))
    member.fit(X, y, epochs=1, verbose=0, optimizer=optim.adam(), lr=0.01)  # alone, then back in the ensemble
    assert member.epoch == 3 and ens.members[0].epoch == 2
    ens.fit(X, y, epochs=1, verbose=0, optimizer=optim.adam(), lr=0.01)
    assert [m.epoch for m in ens.members] == [3, 4]


def test_gpunn_load_gives_back_what_the_file_holds(tmp_path):
    X, y = _data("sigmoid")
    ens = gpunn.Ensemble(_sizes("sigmoid"), 2, seed=[3, 4], device="cpu", dtype="float64")
    ens.fit(X, y, epochs=2, verbose=0)
    ens.save(tmp_path / "e.safetensors")
    ens.members[1].save(tmp_path / "m.safetensors")
    loaded = gpunn.load(tmp_path / "e.safetensors", device="cpu")
    assert isinstance(loaded, gpunn.Ensemble) and len(loaded) == 2
    np.testing.assert_array_equal(loaded.predict_proba(X), ens.predict_proba(X))
    lone = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    assert isinstance(lone, gpunn.MLP)
    np.testing.assert_array_equal(lone.predict_proba(X), ens.members[1].predict_proba(X))
    os.mkfifo(tmp_path / "fifo")  # neither: refused at once, as a lone checkpoint's reader refuses it
    with pytest.raises(gpunn.CheckpointError, match="not a regular file"):
        gpunn.load(tmp_path / "fifo")


def test_an_ensemble_file_written_before_the_shared_codec_loads_and_resumes_as_it_did():
    """tests/data/gpunn-ensemble-v1.safetensors was written by Ensemble.save as it was before checkpoint.write
    packed ensemble files (safetensors.numpy.save's layout): two float64 members [3, 4, 1] with string labels,
    standardization, Adam, dropout 0.1 on member 1 and an early-stopping state each, after 2 epochs of
    ``fit(X, labels, batch_size=16, optimizer="adam", lr=[0.01, 0.02])``. It loads with what the reference reader
    finds in it, and 2 more epochs give the weights that code gave (saved beside it by that code)."""
    import safetensors.numpy
    from safetensors import safe_open

    data = os.path.join(os.path.dirname(__file__), "data")
    path = os.path.join(data, "gpunn-ensemble-v1.safetensors")
    stored = safetensors.numpy.load_file(path)
    with safe_open(path, "np") as f:
        assert f.metadata()["format"] == "gpunn.ensemble" and f.metadata()["format_version"] == "1"
    assert gpunn.ensemble.is_ensemble_file(path)
    ens = gpunn.load(path, device="cpu")
    assert isinstance(ens, gpunn.Ensemble) and [m.epoch for m in ens.members] == [2, 2]
    for k, m in enumerate(ens.members):
        np.testing.assert_array_equal(m.params, stored[f"members.{k}.params"])
        for slot in ("m", "v"):
            np.testing.assert_array_equal(m.optimizer_state[slot], stored[f"members.{k}.optimizer.{slot}"])
        held = m.metadata["callbacks"]["early_stopping"]
        np.testing.assert_array_equal(held["best_params"], stored[f"members.{k}.callbacks.early_stopping.params"])
        assert m.classes.tolist() == ["no", "yes"] and m.optimizer_state["step"] == 8 and m.scaling is not None
    assert [m.dropout for m in ens.members] == [0.0, 0.1] and [m.seed for m in ens.members] == [1, 2]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    labels = np.array(["no", "yes"])[(X[:, 0] * X[:, 1] > 0).astype(int)]
    ens.fit(X, labels, epochs=2, batch_size=16, optimizer="adam", lr=[0.01, 0.02], verbose=0)
    expected = np.load(os.path.join(data, "gpunn-ensemble-v1-next.npy"))
    for k, m in enumerate(ens.members):
        np.testing.assert_allclose(m.params, expected[k], rtol=0, atol=1e-14)


def test_on_epoch_sees_every_member_at_the_end_of_each_epoch():
    X, y = _data("sigmoid")
    seen = []

    def on_epoch(ens, records):
        seen.append(([m.epoch for m in ens.members], ens.params.copy(), [r.get("loss") for r in records]))

    ens = gpunn.Ensemble(_sizes("sigmoid"), members=3, seed=SEEDS, device="cpu", dtype="float64")
    ens.fit(X, y, epochs=3, batch_size=16, lr=0.2, verbose=0, on_epoch=on_epoch)
    assert [s[0] for s in seen] == [[1, 1, 1], [2, 2, 2], [3, 3, 3]]
    for epochs in (1, 2):  # the oracle: lone MLPs fitted for that many epochs
        for k, seed in enumerate(SEEDS):
            lone = gpunn.MLP(_sizes("sigmoid"), seed=seed, device="cpu", dtype="float64")
            lone.fit(X, y, epochs=epochs, batch_size=16, lr=0.2, verbose=0)
            np.testing.assert_allclose(seen[epochs - 1][1][k], lone.params, rtol=0, atol=TOL)
            assert seen[epochs - 1][2][k] == pytest.approx(lone.history.loss[-1], abs=TOL)
    with pytest.raises(gpunn.errors.ConfigError, match="on_epoch must be a callable"):
        ens.fit(X, y, epochs=1, verbose=0, on_epoch="save")


def test_each_members_early_stopping_state_is_saved_with_it(tmp_path):
    X, y = _data("sigmoid")
    Xv, yv = _data("sigmoid", 30, seed=1)
    stoppings = [EarlyStopping(patience=2) for _ in SEEDS]
    ens = gpunn.Ensemble(_sizes("sigmoid"), members=3, seed=SEEDS, device="cpu", dtype="float64")
    ens.fit(X, y, epochs=8, lr=[0.5, 2.0, 0.05], optimizer="adam", validation_data=(Xv, yv), verbose=0,
            callbacks=[[s, s.store_state] for s in stoppings])  # fmt: skip
    ens.save(tmp_path / "e.safetensors")
    again = gpunn.load(tmp_path / "e.safetensors", device="cpu")
    for m, s in zip(again.members, stoppings):
        held, expected = m.metadata["callbacks"]["early_stopping"], s.state_dict()
        assert {k: v for k, v in held.items() if not k.startswith("best_")} == {
            k: v for k, v in expected.items() if not k.startswith("best_")
        }
        assert held["best"] == expected["best"]
        np.testing.assert_array_equal(held["best_params"], expected["best_params"])
        for slot in ("m", "v"):
            np.testing.assert_array_equal(held["best_optimizer"][slot], expected["best_optimizer"][slot])
    assert "callbacks" not in again.members[0].metadata or again.members[0].metadata["callbacks"] is not \
        again.members[1].metadata.get("callbacks")  # fmt: skip


# ------------------------------------------------------------------------------------------------ MPI
ENSEMBLE_MPI = """
import json, sys
import numpy as np
import gpunn
from gpunn.distributed import Communicator

comm = Communicator()
rng = np.random.default_rng(0)
X = rng.normal(size=(103, 4))
y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
for i, cfg in enumerate(json.loads(sys.argv[1])):  # one job, its ranks started once
    weight = None
    if cfg["weighted"] == "shared":
        weight = 0.5 + np.arange(103) % 3
    elif cfg["weighted"] == "per-member":
        weight = np.random.default_rng(1).uniform(0.2, 2.0, size=(3, 103))
    ens = gpunn.Ensemble([4, 8, 8, 1], members=3, seed=[3, 9, 4], dtype="float64", device="cpu")
    ens.fit(X, y, epochs=4, lr=[0.1, 0.05, 0.2], l2=cfg["l2"], batch_size=cfg["batch_size"],
            optimizer=cfg["optimizer"], validation_data=(X[:20], y[:20]), sample_weight=weight, verbose=0,
            comm=comm)
    if comm.rank == 0:
        np.save(f"{sys.argv[2]}.{i}.npy", np.asarray(ens.params))
        with open(f"{sys.argv[2]}.{i}.json", "w") as f:
            json.dump([h.to_dict() for h in ens.histories], f)
"""


def _mpiexec():
    import shutil
    import sys

    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec")


MPI_CASES = {  # (optimizer, batch_size, weighted, l2)
    "full-batch-sgd": ("sgd", None, "none", 0.0),
    "shuffled-adam-weighted-l2": ("adam", 16, "shared", 0.01),
    "shuffled-momentum-member-weights-l2": ("momentum", 25, "per-member", [0.0, 0.1, 0.0]),
}


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("mpi4py") is None or _mpiexec() is None,
    reason="mpi4py and mpiexec are needed (pip install 'gpunn[mpi]')",
)
def test_two_mpi_ranks_train_the_ensemble_one_process_trains(tmp_path):
    """Each rank computes its shard's gradients of every member and one allreduce a step sums them: 2 ranks give
    the weights and histories of one process (the oracle: the same Ensemble fitted here, without MPI). The cases
    run in one job (its ranks started once)."""
    import json
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(ENSEMBLE_MPI)
    keys = ("optimizer", "batch_size", "weighted", "l2")
    cfgs = [dict(zip(keys, case)) for case in MPI_CASES.values()]
    r = subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(script), json.dumps(cfgs), str(tmp_path / "w")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    rng = np.random.default_rng(0)
    X = rng.normal(size=(103, 4))
    y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
    for i, (name, (optimizer, batch_size, weighted, l2)) in enumerate(MPI_CASES.items()):
        weight = {"none": None, "shared": 0.5 + np.arange(103) % 3,
                  "per-member": np.random.default_rng(1).uniform(0.2, 2.0, size=(3, 103))}[weighted]  # fmt: skip
        ref = gpunn.Ensemble([4, 8, 8, 1], members=3, seed=[3, 9, 4], dtype="float64", device="cpu")
        ref.fit(X, y, epochs=4, lr=[0.1, 0.05, 0.2], l2=l2, batch_size=batch_size, optimizer=optimizer,
                validation_data=(X[:20], y[:20]), sample_weight=weight, verbose=0)  # fmt: skip
        got = np.load(tmp_path / f"w.{i}.npy")
        np.testing.assert_allclose(got, np.asarray(ref.params), rtol=0, atol=1e-12, err_msg=name)
        histories = json.loads((tmp_path / f"w.{i}.json").read_text())
        for got, expected in zip(histories, ref.histories):
            for key in ("loss", "accuracy", "val_loss", "val_accuracy", "weighted_loss"):
                np.testing.assert_allclose(got[key], getattr(expected, key), rtol=1e-12, err_msg=f"{name}: {key}")


@pytest.mark.parametrize("output", ["identity", "softmax"])
def test_members_learn_labels_and_a_standardized_target_as_a_lone_mlp_does(output, tmp_path):
    """A standardizing regression's target scaling and a classifier's text labels, learned on the first fit."""
    X, y = _data(output)
    if output == "softmax":
        y = np.array(["ant", "bee", "cat"])[y]
    ens = gpunn.Ensemble(_sizes(output), 2, seed=[5, 6], output=output, standardize=True, device="cpu", dtype="float64")
    histories = ens.fit(X, y, epochs=3, verbose=0, batch_size=16)
    for k, seed in enumerate([5, 6]):
        lone = gpunn.MLP(_sizes(output), seed=seed, output=output, standardize=True, device="cpu", dtype="float64")
        assert_member_is_lone(ens.members[k], lone, histories[k], lone.fit(X, y, epochs=3, verbose=0, batch_size=16))
        ours, theirs = ens.members[k].predict(X), lone.predict(X)  # values in y's units, or the labels
        if output == "identity":
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL)
        else:
            np.testing.assert_array_equal(ours, theirs)
    if output == "identity":
        assert ens.members[0].target_scaling is not None
        np.testing.assert_allclose(ens.members[0].target_scaling[0], y.mean(axis=0), rtol=1e-12)
    else:
        assert list(ens.classes) == list(ens.members[0].classes) == ["ant", "bee", "cat"] and set(ens.predict(X)) <= {
            "ant",
            "bee",
            "cat",
        }
    ens.save(tmp_path / "e.safetensors")  # what the members learned travels with them
    np.testing.assert_array_equal(gpunn.load(tmp_path / "e.safetensors", device="cpu").predict(X), ens.predict(X))


def test_a_diverged_member_stays_set_aside_through_save_and_load(tmp_path):
    X, y = _data("identity")
    ens = gpunn.Ensemble(_sizes("identity"), 3, seed=SEEDS, output="identity", device="cpu", dtype="float64")
    with pytest.warns(RuntimeWarning):
        ens.fit(X, y, epochs=10, verbose=0, lr=[0.01, 3.0, 0.01])
    ens.save(tmp_path / "e.safetensors")
    back = gpunn.load(tmp_path / "e.safetensors", device="cpu")
    assert back.diverged == ens.diverged and back.diverged[1] is not None
    np.testing.assert_array_equal(_host(back.predict(X)), _host(ens.predict(X)))


def test_an_interrupt_while_an_epoch_is_committed_leaves_every_member_before_it(monkeypatch):
    """Ctrl-C that lands after member 0 committed epoch 3 and before member 1 did: every member is left as epoch 2
    left it (weights, optimizer state, generator, epoch, History), each equal to a lone MLP fitted 2 epochs."""
    X, y = _data("sigmoid")
    kw = dict(device="cpu", dtype="float64")
    fit_kw = dict(batch_size=16, optimizer="adam", lr=0.02, verbose=0)
    ens = gpunn.Ensemble(_sizes("sigmoid"), 3, seed=SEEDS, **kw)
    calls = {"n": 0}
    update = schedules.Schedule.update

    def interrupted(self, state, record):
        calls["n"] += 1
        if calls["n"] == 2 * 3 + 2:  # epoch 3, member 1
            raise KeyboardInterrupt
        return update(self, state, record)

    monkeypatch.setattr(schedules.Schedule, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ens.fit(X, y, epochs=5, **fit_kw)
    monkeypatch.setattr(schedules.Schedule, "update", update)
    assert [m.epoch for m in ens.members] == [2, 2, 2]
    for k, member in enumerate(ens.members):
        lone = gpunn.MLP(_sizes("sigmoid"), seed=SEEDS[k], **kw)
        lone.fit(X, y, epochs=2, **fit_kw)
        assert_member_is_lone(member, lone, member.history, lone.history)
    ens.fit(X, y, epochs=3, **fit_kw)  # and resumes as an unbroken run
    for k, member in enumerate(ens.members):
        lone = gpunn.MLP(_sizes("sigmoid"), seed=SEEDS[k], **kw)
        lone.fit(X, y, epochs=5, **fit_kw)
        np.testing.assert_allclose(_host(member.params), _host(lone.params), rtol=0, atol=TOL)
