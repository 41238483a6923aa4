"""The ensemble on JAX compiles once per structure and shapes, never per value (issue 28.5): rates, penalties,
decays, clip norms, dropout rates and seeds enter the compiled stacked step as arrays; an epoch's minibatches
run as one compiled loop. Counted with JAX's own backend-compile events; the results held to the eager NumPy
ensemble (float64, 1e-12) and to lone MLPs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpunn
from gpunn.ensemble import _loop

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

N = 70  # 4 batches of 16 and a remainder of 6
TOL = 1e-12


@pytest.fixture(scope="module")
def compiles():
    """XLA compilations, counted by JAX's monitoring events (tests/jax_compiles.py): ``compiles.during(fn)``."""
    import jax_compiles

    return jax_compiles


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, 3))
    y = (X[:, 0] - X[:, 1] * X[:, 2] > 0).astype(np.int64)
    return X, y


def _jax():
    return dict(xp=jnp, device=jax.devices("cpu")[0], dtype="float64")


def _fit(k=4, seed=0, dropout=0.0, **fit):
    X, y = _data()
    ens = gpunn.Ensemble([3, 6, 5, 1], k, seed=seed, dropout=dropout, compile=True, **_jax())
    ens.fit(X, y, epochs=2, verbose=0, **fit)
    return ens


# Each case: a first fit that sets the structure, then fits with new values only, which compile nothing.
CASES = {
    "full batch, sgd": (dict(lr=0.1), [dict(lr=0.05), dict(lr=[0.1, 0.2, 0.3, 0.4]), dict(lr=0.3, seed=7)]),
    "l2 and clipping": (
        dict(lr=0.1, l2=0.01, clip_norm=1.0),
        [dict(lr=0.2, l2=0.03, clip_norm=0.5), dict(lr=0.1, l2=[0.01, 0.02, 0.0, 0.5], clip_norm=3.0)],
    ),
    "shuffled minibatches, adamw": (
        dict(lr=0.01, batch_size=16, optimizer="adamw", weight_decay=0.1),
        [dict(lr=0.02, batch_size=16, optimizer="adamw", weight_decay=[0.0, 0.2, 0.3, 0.4])],
    ),
    "minibatches in order, momentum, weights": (
        dict(lr=0.05, batch_size=16, optimizer="momentum", shuffle=False, sample_weight=np.linspace(0.5, 2, N)),
        [
            dict(
                lr=[0.01, 0.02, 0.03, 0.04],
                batch_size=16,
                optimizer="momentum",
                shuffle=False,
                sample_weight=np.linspace(2, 0.5, N),
            )
        ],
    ),  # fmt: skip
    "adam's betas and eps, momentum's beta": (
        dict(lr=0.01, optimizer=gpunn.optim.adam()),
        [dict(lr=0.01, optimizer=gpunn.optim.adam(beta1=0.8, beta2=0.99, eps=1e-6))],
    ),
    "momentum's beta": (
        dict(lr=0.01, optimizer=gpunn.optim.momentum(0.9)),
        [dict(lr=0.01, optimizer=gpunn.optim.momentum(0.5))],
    ),
    "validation data, momentum, l2, dropout": (
        dict(
            lr=0.1,
            optimizer=gpunn.optim.momentum(0.9),
            l2=0.01,
            dropout=0.2,
            validation_data=(_data(1)[0][:20], _data(1)[1][:20]),
        ),
        [
            dict(
                lr=0.05,
                optimizer=gpunn.optim.momentum(0.5),
                l2=[0.02, 0.0, 0.1, 0.03],
                dropout=[0.1, 0.3, 0.0, 0.5],
                validation_data=(_data(2)[0][:20], _data(2)[1][:20]),
            )
        ],
    ),  # fmt: skip
    "dropout, members on their own rows": (
        dict(lr=0.1, batch_size=16, dropout=0.2, rows=[np.arange(k, N) for k in range(4)]),
        [
            dict(
                lr=0.2,
                batch_size=16,
                dropout=[0.1, 0.3, 0.0, 0.5],
                seed=11,
                rows=[np.arange(0, N - 2 * k) for k in range(4)],
            )
        ],
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", list(CASES))
def test_new_values_compile_nothing(compiles, case):
    first, others = CASES[case]
    assert compiles.during(lambda: _fit(**first)) >= 0  # the structure and shapes of this case, compiled once
    for fit in others:
        assert compiles.during(lambda fit=fit: _fit(**fit)) == 0, fit


def test_a_search_over_new_values_compiles_nothing(compiles):
    """MLPSearchCV trains each shape group as one ensemble: a second grid of as many candidates, all values new,
    compiles nothing (refit=False: the refit is a lone MLP's fit)."""
    from gpunn.sklearn import MLPClassifier, MLPSearchCV

    X, y = _data()
    est = MLPClassifier((6,), max_iter=4, solver="sgd", random_state=0)

    def search(grid):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return MLPSearchCV(est, grid, cv=2, refit=False).fit(jnp.asarray(X), y)

    search({"learning_rate_init": [0.1, 0.2], "alpha": [1e-4, 1e-3]})
    grid = {"learning_rate_init": [0.05, 0.3], "alpha": [1e-2, 1e-1]}
    assert compiles.during(lambda: search(grid)) == 0


def test_a_minibatch_epoch_is_one_compiled_loop(monkeypatch):
    """The epoch's minibatches, the short last one masked, go to the compiler as one loop (one call an epoch):
    4 batches of 16 and one of 6 make 1 call an epoch, not 5."""
    calls = []
    real_run, real_call = _loop._Runner.run, _loop._Runner.__call__
    monkeypatch.setattr(_loop._Runner, "run", lambda self, *a: calls.append("loop") or real_run(self, *a))
    monkeypatch.setattr(_loop._Runner, "__call__", lambda self, *a: calls.append("step") or real_call(self, *a))
    for fit in (dict(batch_size=16), dict(batch_size=16, shuffle=False), dict(batch_size=16, rows=[np.arange(N)] * 4)):
        calls.clear()
        _fit(**fit)
        assert calls == ["loop"] * 2, fit


def _pair(ens_kw, fit):
    """The compiled JAX ensemble and the eager NumPy one (the oracle: each of its members is a lone MLP's fit,
    tests/test_ensemble.py) after the same fit, with their histories."""
    X, y = _data()
    fit = dict(epochs=3, verbose=0, validation_data=(X[::4], y[::4]), **fit)
    out = []
    for kw in (dict(compile=True, **_jax()), dict(compile=False, device="cpu", dtype="float64")):
        ens = gpunn.Ensemble([3, 6, 5, 1], 4, seed=[1, 2, 3, 4], **ens_kw, **kw)
        out.append((ens, ens.fit(X, y, **fit)))
    return out


SAME = {
    "full batch": ({}, dict(lr=[0.1, 0.2, 0.3, 0.05], l2=[0.0, 0.01, 0.1, 0.02], clip_norm=0.5)),
    "shuffled": ({}, dict(lr=0.05, batch_size=16, optimizer="adamw", weight_decay=[0.0, 0.1, 0.2, 0.3])),
    "in order, weighted": ({}, dict(lr=[0.1, 0.2, 0.3, 0.4], batch_size=16, shuffle=False, optimizer="momentum",
                                    sample_weight=np.random.default_rng(1).uniform(0.2, 2, size=(4, N)))),
    "adam's own betas": ({}, dict(lr=0.05, optimizer=gpunn.optim.adam(beta1=0.7, beta2=0.95, eps=1e-4))),
    "full batch, dropout, weights": (dict(dropout=[0.0, 0.2, 0.3, 0.1]),
                                     dict(lr=0.1, l2=0.01, sample_weight=np.linspace(0.5, 2, N))),
    "own rows, dropout": (dict(dropout=[0.0, 0.2, 0.3, 0.1]),
                          dict(lr=0.1, batch_size=16, l2=0.01, rows=[np.arange(k, N - k) for k in range(4)])),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SAME))
def test_the_compiled_ensemble_equals_the_eager_numpy_ensemble(case):
    ens_kw, fit = SAME[case]
    (compiled, h_compiled), (eager, h_eager) = _pair(ens_kw, fit)
    for a, b, ha, hb in zip(compiled.members, eager.members, h_compiled, h_eager):
        np.testing.assert_allclose(np.asarray(a.params), b.params, rtol=0, atol=TOL)
        for slot, value in b.optimizer_state.items():
            if slot == "step":
                assert int(a.optimizer_state["step"]) == value
            else:
                np.testing.assert_allclose(np.asarray(a.optimizer_state[slot]), value, rtol=0, atol=TOL)
        for name in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            np.testing.assert_allclose(getattr(ha, name), getattr(hb, name), rtol=0, atol=TOL, err_msg=name)
        assert ha.epochs == 3 and a.rng.bit_generator.state == b.rng.bit_generator.state


def test_the_compiled_ensemble_equals_lone_mlps():
    """Members with their own rates, penalties and dropout, shuffled minibatches, against lone MLPs fit one by
    one (eager NumPy, float64)."""
    X, y = _data()
    lrs, l2s, drops = [0.1, 0.05, 0.2], [0.0, 0.01, 0.05], [0.0, 0.2, 0.1]
    ens = gpunn.Ensemble([3, 6, 1], 3, seed=[5, 6, 7], dropout=drops, compile=True, **_jax())
    histories = ens.fit(X, y, epochs=3, lr=lrs, l2=l2s, batch_size=16, clip_norm=1.0, verbose=0)
    for k, member in enumerate(ens.members):
        lone = gpunn.MLP([3, 6, 1], seed=[5, 6, 7][k], dropout=drops[k], device="cpu", dtype="float64")
        h = lone.fit(X, y, epochs=3, lr=lrs[k], l2=l2s[k], batch_size=16, clip_norm=1.0, verbose=0)
        np.testing.assert_allclose(np.asarray(member.params), lone.params, rtol=0, atol=TOL)
        np.testing.assert_allclose(histories[k].loss, h.loss, rtol=0, atol=TOL)
        np.testing.assert_allclose(histories[k].accuracy, h.accuracy, rtol=0, atol=TOL)


def test_a_loop_the_compiler_refuses_runs_eagerly_to_the_same_result(monkeypatch):
    """Under compile="auto", a compiled loop that fails warns once and the epoch's steps run eagerly, one by one:
    the same weights and records as the eager NumPy ensemble."""
    real = _loop._compiled.__wrapped__

    def refusing(*args):
        step, forms = real(*args)

        def loop(*a):
            raise RuntimeError("no loop today")

        return step, (*forms[:3], loop)

    monkeypatch.setattr(_loop, "_compiled", refusing)
    X, y = _data()
    fit = dict(epochs=2, lr=[0.1, 0.2], batch_size=16, l2=[0.0, 0.01], verbose=0)
    auto = gpunn.Ensemble([3, 6, 1], 2, seed=[1, 2], compile="auto", **_jax())
    with pytest.warns(RuntimeWarning, match="compiling the ensemble's step on jax failed .*no loop today"):
        h_auto = auto.fit(X, y, **fit)
    eager = gpunn.Ensemble([3, 6, 1], 2, seed=[1, 2], compile=False, device="cpu", dtype="float64")
    h_eager = eager.fit(X, y, **fit)
    for a, b, ha, hb in zip(auto.members, eager.members, h_auto, h_eager):
        np.testing.assert_allclose(np.asarray(a.params), b.params, rtol=0, atol=TOL)
        np.testing.assert_allclose(ha.loss, hb.loss, rtol=0, atol=TOL)
    with pytest.raises(RuntimeError, match="no loop today"):
        gpunn.Ensemble([3, 6, 1], 2, seed=[1, 2], compile=True, **_jax()).fit(X, y, **fit)


# ----------------------------------------------------------------------------- how many programs a fit compiles
@pytest.fixture
def fresh_caches():
    """No compiled step or validation pass kept from an earlier test: each is compiled anew."""
    for cache in (_loop._compiled, _loop._compiled_val_block, _loop._blocked):
        cache.cache_clear()
    yield
    for cache in (_loop._compiled, _loop._compiled_val_block, _loop._blocked):
        cache.cache_clear()


FIRST_FITS = {  # (widths and members of a shape no other test compiles, the fit)
    "full batch, adam, l2, clipping": (
        ([3, 9, 4, 1], 5),
        dict(lr=0.01, optimizer="adam", l2=0.01, clip_norm=1.0),
    ),
    "shuffled minibatches, dropout, weights per member": (
        ([3, 8, 4, 1], 5),
        dict(lr=0.1, batch_size=16, dropout=0.2, sample_weight=np.random.default_rng(2).uniform(0.5, 2, (5, N))),
    ),
    "minibatches in order, momentum": (([3, 7, 4, 1], 5), dict(lr=0.1, batch_size=16, shuffle=False,
                                                               optimizer="momentum")),
    "members on their own rows, minibatches": (([3, 6, 4, 1], 5), dict(lr=0.1, batch_size=16,
                                                                       rows=[np.arange(k, N) for k in range(5)])),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FIRST_FITS))
def test_a_first_fit_with_validation_compiles_at_most_four_programs(compiles, fresh_caches, case):
    """Issue 28.2 for the ensemble: the epoch (every batch, the short last one masked), the validation pass and
    the metrics are the only programs (no eager stacking, slicing, conversion or read-back compiles one of its
    own); the members' History.compiles say how many, and the same fit again compiles none."""
    (sizes, k), fit = FIRST_FITS[case]
    X, y = _data()
    fit = dict(epochs=2, verbose=0, validation_data=(X[::3], y[::3]), **fit)
    dropout = fit.pop("dropout", 0.0)
    histories = []

    def first():
        ens = gpunn.Ensemble(sizes, k, seed=0, dropout=dropout, compile=True, **_jax())
        histories.extend(ens.fit(X, y, **fit))

    programs = compiles.during(first)
    assert 1 <= programs <= 4
    assert [h.compiles for h in histories] == [programs] * k
    assert all(h.compile_seconds > 0 for h in histories)
    histories.clear()
    assert compiles.during(first) == 0
    assert [h.compiles for h in histories] == [0] * k


def test_verbose_2_prints_what_the_fit_compiled(compiles, fresh_caches, capsys):
    X, y = _data()
    ens = gpunn.Ensemble([3, 5, 4, 1], 2, seed=0, compile=True, **_jax())
    programs = compiles.during(lambda: ens.fit(X, y, epochs=1, lr=0.1, verbose=2))
    assert f"compiled {programs} program(s) in " in capsys.readouterr().out
    ens.fit(X, y, epochs=1, lr=0.2, verbose=2)
    assert "compiled" not in capsys.readouterr().out


ROW_COUNTS = {"full": {}, "shuffled": dict(batch_size=16), "in order": dict(batch_size=16, shuffle=False),
              "own rows": dict(batch_size=16, rows="own")}  # fmt: skip


@pytest.mark.parametrize("fit", list(ROW_COUNTS.values()), ids=list(ROW_COUNTS))
def test_a_new_row_count_in_the_same_bucket_compiles_nothing_and_pads_to_the_unpadded_result(compiles, fit):
    """Issue 28.3: the data are padded to the next power of two (70 and 100 rows to 128) with rows that count for
    nothing, so a new row count compiles nothing until it crosses one; the padded fit equals the eager NumPy
    ensemble's, which pads nothing (float64, 1e-12), weights, records and step counts."""
    rng = np.random.default_rng(5)

    def data(n):
        X = rng.normal(size=(n, 3))
        return X, (X[:, 0] - X[:, 1] * X[:, 2] > 0).astype(np.int64), rng.uniform(0.5, 2, n)

    def run(n, where, seed):
        X, y, w = data(n)
        own = fit.get("rows") == "own"
        kw = {**fit, "rows": [np.arange(j, n - j) for j in range(3)]} if own else dict(fit)
        ens = gpunn.Ensemble([3, 6, 1], 3, seed=[seed, seed + 1, seed + 2], **where)
        h = ens.fit(X, y, epochs=2, lr=[0.1, 0.2, 0.3], l2=0.01, sample_weight=w, verbose=0,
                    validation_data=(X[:25], y[:25]), **kw)  # fmt: skip
        return ens, h

    run(70, dict(compile=True, **_jax()), 0)
    fits = []
    assert compiles.during(lambda: fits.append(run(100, dict(compile=True, **_jax()), 3))) == 0
    rng = np.random.default_rng(5)
    run(70, dict(compile=False, device="cpu", dtype="float64"), 0)  # the same draws as above
    compiled, h_compiled = fits[0]
    eager, h_eager = run(100, dict(compile=False, device="cpu", dtype="float64"), 3)
    for a, b, ha, hb in zip(compiled.members, eager.members, h_compiled, h_eager):
        np.testing.assert_allclose(np.asarray(a.params), b.params, rtol=0, atol=TOL)
        assert int(a.optimizer_state["step"]) == b.optimizer_state["step"]
        for name in ("loss", "weighted_loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(getattr(ha, name), getattr(hb, name), rtol=0, atol=TOL, err_msg=name)


@pytest.mark.parametrize("fit", [{}, dict(batch_size=16)], ids=["full", "minibatches"])
def test_a_new_validation_size_in_the_same_bucket_compiles_nothing(compiles, fit):
    """The validation rows are padded to the next power of two as a lone network's are (33 and 50 rows to 64,
    5000 to 8192 in two blocks of 4096), the padding counted for nothing: a new validation size compiles nothing
    until it crosses one, and the records equal the eager NumPy ensemble's (float64, 1e-12)."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(5000, 3))
    y = (X[:, 0] - X[:, 1] * X[:, 2] > 0).astype(np.int64)
    X_fit, y_fit = _data()

    def run(n_val, where):
        ens = gpunn.Ensemble([3, 6, 1], 3, seed=[4, 5, 6], **where)
        return ens.fit(X_fit, y_fit, epochs=2, lr=[0.1, 0.2, 0.3], verbose=0, validation_data=(X[:n_val], y[:n_val]),
                       **fit)  # fmt: skip

    run(33, dict(compile=True, **_jax()))
    for n_val in (50, 5000):
        run(n_val - 1, dict(compile=True, **_jax()))  # the bucket's (and for 5000, the two blocks') programs
        histories = []
        assert compiles.during(lambda n=n_val, h=histories: h.append(run(n, dict(compile=True, **_jax())))) == 0
        eager = run(n_val, dict(compile=False, device="cpu", dtype="float64"))
        for ha, hb in zip(histories[0], eager):
            for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
                np.testing.assert_allclose(getattr(ha, name), getattr(hb, name), rtol=0, atol=TOL, err_msg=name)


def test_the_members_logits_are_one_compiled_program(compiles):
    """decision_function (and so predict_proba and predict) stacks the members' parameters inside the compiled
    forward pass, as a lone network's logits are one program: a new X shape compiles one program (an eager stack
    compiled one of its own for every member count and width), and the logits equal the eager NumPy ensemble's."""
    X, y = _data()
    fitted = []
    for where in (dict(compile=True, **_jax()), dict(compile=False, device="cpu", dtype="float64")):
        ens = gpunn.Ensemble([3, 11, 1], 3, seed=[7, 8, 9], **where)
        ens.fit(X, y, epochs=3, lr=[0.1, 0.2, 0.3], verbose=0)
        fitted.append(ens)
    logits = []
    assert compiles.during(lambda: logits.append(fitted[0].decision_function(X[:13]))) == 1
    assert logits[0].shape == (3, 13, 1)
    np.testing.assert_allclose(np.asarray(logits[0]), fitted[1].decision_function(X[:13]), rtol=0, atol=TOL)
    np.testing.assert_array_equal(np.asarray(fitted[0].predict(X)), fitted[1].predict(X))


def test_a_search_compiles_once_per_shape_group_however_many_rates(compiles):
    """Issue 28.5: MLPSearchCV trains a shape group's candidates (every rate, every split) as one ensemble, whose
    epoch is one program: after a first search has compiled the search's own set-up, a grid of one rate or of
    six compiles one program (the group's K differs: a new shape), and a grid of two new widths compiles two
    for each group: its training and its candidates' predictions (folds of one size: 69 rows, 3 splits)."""
    from gpunn.sklearn import MLPClassifier, MLPSearchCV

    X, y = _data()
    X, y = X[:69], y[:69]
    est = MLPClassifier((5,), max_iter=3, solver="sgd", batch_size=16, random_state=0)

    def search(grid):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return MLPSearchCV(est, grid, cv=3, refit=False).fit(jnp.asarray(X), y)

    search({"learning_rate_init": [0.1, 0.2]})
    assert compiles.during(lambda: search({"learning_rate_init": [0.3]})) == 1
    assert compiles.during(lambda: search({"learning_rate_init": [0.01, 0.02, 0.05, 0.1, 0.4, 0.5]})) == 1
    groups = {"learning_rate_init": [0.1, 0.2, 0.3], "hidden_layer_sizes": [(4,), (3,)]}
    assert compiles.during(lambda: search(groups)) == 4


def _eager_pair(ens_kw, fit, sizes=(3, 6, 5, 1), k=4, seeds=(1, 2, 3, 4), X=None, y=None):
    """The compiled JAX ensemble and the eager NumPy one (float64) after the same fit, with their histories (or,
    where the fit raises, the error)."""
    if X is None:
        X, y = _data()
    out = []
    for kw in (dict(compile=True, **_jax()), dict(compile=False, device="cpu", dtype="float64")):
        ens = gpunn.Ensemble(list(sizes), k, seed=list(seeds), **ens_kw, **kw)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result: object = ens.fit(X, y, verbose=0, **fit)
            except gpunn.GpunnError as exc:
                result = exc
        out.append((ens, result, [str(w.message) for w in caught]))
    return out


def _same_members(compiled, eager):
    for a, b in zip(compiled.members, eager.members):
        np.testing.assert_allclose(np.asarray(a.params), b.params, rtol=0, atol=TOL)
        assert int(a.optimizer_state["step"]) == b.optimizer_state["step"] and a.epoch == b.epoch
        for name in ("loss", "accuracy", "weighted_loss", "lr"):
            assert len(getattr(a.history, name)) == len(getattr(b.history, name)), name
            np.testing.assert_allclose(getattr(a.history, name), getattr(b.history, name), rtol=0, atol=TOL)


LONG = _loop.BLOCK + 5  # epochs: one, a full block and 4
BLOCKS = {
    "rates, penalties, clipping, a step schedule": (
        {}, dict(epochs=LONG, lr=gpunn.schedules.step(0.2, every=10, gamma=0.5), l2=[0.0, 0.01, 0.1, 0.02],
                 clip_norm=0.5)),
    "adamw, weighted": ({}, dict(epochs=LONG, lr=0.05, optimizer="adamw", weight_decay=[0.0, 0.1, 0.2, 0.3],
                                 sample_weight=np.random.default_rng(1).uniform(0.2, 2, size=N))),
    "own rows": ({}, dict(epochs=LONG, lr=0.1, rows=[np.arange(k, N - k) for k in range(4)])),
    "dropout": (dict(dropout=[0.0, 0.2, 0.3, 0.1]), dict(epochs=LONG, lr=0.1, optimizer="momentum")),
}  # fmt: skip


def _counting_blocks(monkeypatch) -> list:
    """The epochs each compiled block ran (its live epochs), and "step" for each compiled single step."""
    calls: list = []
    real_epochs, real_call = _loop._Runner.epochs, _loop._Runner.__call__

    def epochs(self, params, state, batch, lrs, live):
        calls.append(int(np.asarray(live).sum()))
        return real_epochs(self, params, state, batch, lrs, live)

    monkeypatch.setattr(_loop._Runner, "epochs", epochs)
    monkeypatch.setattr(_loop._Runner, "__call__",
                        lambda self, *a: (self.compiled and calls.append("step")) or real_call(self, *a))  # fmt: skip
    return calls


@pytest.mark.parametrize("case", list(BLOCKS))
def test_full_batch_epochs_run_in_blocks_of_one_compiled_call_each(monkeypatch, case):
    """Without a callback or validation data, a compiled full-batch fit runs its epochs in blocks of one compiled
    call each: with no bound on a block's time, one epoch, then _loop.BLOCK, then the 4 left (in the same program),
    with the same weights, step counts and per-epoch records as the eager NumPy ensemble (one epoch at a time)."""
    calls = _counting_blocks(monkeypatch)
    monkeypatch.setattr(_loop, "BLOCK_SECONDS", float("inf"))
    ens_kw, fit = BLOCKS[case]
    (compiled, h_compiled, _), (eager, h_eager, _) = _eager_pair(ens_kw, fit)
    assert calls == [1, _loop.BLOCK, 4]
    _same_members(compiled, eager)
    assert all(h.epochs == fit["epochs"] for h in h_compiled)


def test_the_next_block_runs_while_the_last_one_is_committed(monkeypatch):
    """The block after one is given to the device as soon as that one is read back, before its epochs are
    committed (their records are host work the device need not wait for), and it is the block the fit then
    takes: no block runs twice. The members end where the eager NumPy ensemble ends."""
    from gpunn.history import History

    events: list = []
    real_epochs, real_append = _loop._Runner.epochs, History.append

    def epochs(self, params, state, batch, lrs, live):
        events.append(("block", int(np.asarray(live).sum())))
        return real_epochs(self, params, state, batch, lrs, live)

    monkeypatch.setattr(_loop._Runner, "epochs", epochs)
    monkeypatch.setattr(History, "append", lambda self, record: events.append("commit") or real_append(self, record))
    monkeypatch.setattr(_loop, "BLOCK_SECONDS", float("inf"))
    (compiled, _, _), (eager, _, _) = _eager_pair({}, dict(epochs=LONG, lr=[0.1, 0.2, 0.05, 0.3]))
    eager_commits = 4 * LONG  # (the eager ensemble's members append their records too)
    blocks = [e for e in events if e != "commit"]
    assert blocks == [("block", 1), ("block", _loop.BLOCK), ("block", 4)]
    first, second, third = (events.index(b) for b in blocks)
    assert events[first + 1 : second] == [] and events[second + 1 : second + 5] == ["commit"] * 4
    assert events[second + 5] == ("block", 4) and events.count("commit") == 2 * eager_commits
    _same_members(compiled, eager)


@pytest.mark.parametrize(
    "seconds, blocks",
    [(0.0625, [1, 16, 40]), (0.125, [1, 8, 72]), (0.125, [1, 8, 64, 20]), (3.0, [1] * 6)],
    ids=["fast", "rest in one", "rest apart", "slow"],
)
def test_a_block_runs_the_epochs_that_fit_in_block_seconds(monkeypatch, seconds, blocks):
    """The first block runs one epoch; each later one as many as the last block's time an epoch says fit in
    _loop.BLOCK_SECONDS (1 s), so that Ctrl-C waits about that long on large data, or all that are left where that
    leaves fewer than a quarter as many. A clock on which every block takes ``seconds``: 1/16 s gives 1, 16
    (1/16 s an epoch), then the 40 left (256 would fit); 1/8 s gives 1, 8, then the 72 left where 64 fit (8 would
    be left), but of 84 left 64, then 20; 3 s one epoch a call. The compile time is left out of a block's time,
    here none."""
    calls = _counting_blocks(monkeypatch)
    clock = iter(np.arange(0, 1000, seconds))  # read at a block's start and end
    monkeypatch.setattr(_loop, "perf_counter", lambda: float(next(clock)))
    monkeypatch.setattr(_loop._backend, "compiles", lambda: (0, 0.0))
    X, y = _data()
    ens = gpunn.Ensemble([3, 6, 5, 1], 4, seed=[1, 2, 3, 4], compile=True, **_jax())
    ens.fit(X, y, epochs=sum(blocks), lr=0.1, verbose=0)
    assert calls == blocks and [m.epoch for m in ens.members] == [sum(blocks)] * 4


@pytest.fixture
def whole_blocks(monkeypatch):
    """Blocks as long as _loop.BLOCK allows from the first, whatever they take: the tests of what happens inside
    a block."""
    monkeypatch.setattr(_loop._Runner, "live", lambda self, epochs: epochs)


@pytest.mark.usefixtures("whole_blocks")
@pytest.mark.parametrize("lr", [3.0, 1e8], ids=["explodes", "overflows"])
def test_a_member_diverging_inside_a_block_stops_where_the_eager_ensemble_stops_it(lr):
    """A member that diverges in the middle of a block is set aside from the state before that epoch, as one epoch
    at a time sets it aside; the block's later epochs run again without it, and the others end where they would."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=N)
    fit = dict(epochs=30, lr=[0.01, lr, 0.02])
    (compiled, _, warned), (eager, _, warned_eager) = _eager_pair(dict(output="identity"), fit, k=3, seeds=(1, 2, 3),
                                                                  X=X, y=y)  # fmt: skip
    assert compiled.diverged == eager.diverged and compiled.diverged[1] is not None
    assert compiled.diverged[0] is None and compiled.diverged[2] is None
    assert warned == warned_eager and len(warned) == 1
    assert compiled.members[1].epoch < 30 and compiled.members[0].epoch == 30
    assert lr > 10 or compiled.members[1].epoch > 0  # the exploding member: in the middle of the first block
    _same_members(compiled, eager)


@pytest.mark.usefixtures("whole_blocks")
def test_an_interrupt_while_an_epoch_inside_a_block_is_committed_leaves_every_member_before_it(monkeypatch):
    """Ctrl-C that lands while the block's third epoch is committed (after member 0, before member 1): every member
    is left as the block's second epoch left it (its state computed again from the block's start), equal to the
    eager NumPy ensemble fitted 2 epochs, and the fit resumes to the eager ensemble's 10 epochs."""
    from gpunn import schedules

    calls, update = {"n": 0}, schedules.Schedule.update

    def interrupted(self, state, record):
        calls["n"] += 1
        if calls["n"] == 2 * 4 + 2:  # epoch 3, member 1
            raise KeyboardInterrupt
        return update(self, state, record)

    X, y = _data()
    fit = dict(lr=[0.1, 0.2, 0.3, 0.05], l2=[0.0, 0.01, 0.0, 0.1], verbose=0)
    compiled = gpunn.Ensemble([3, 6, 5, 1], 4, seed=[1, 2, 3, 4], compile=True, **_jax())
    monkeypatch.setattr(schedules.Schedule, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compiled.fit(X, y, epochs=10, **fit)
    monkeypatch.setattr(schedules.Schedule, "update", update)
    eager = gpunn.Ensemble([3, 6, 5, 1], 4, seed=[1, 2, 3, 4], compile=False, device="cpu", dtype="float64")
    eager.fit(X, y, epochs=2, **fit)
    assert [m.epoch for m in compiled.members] == [2] * 4
    _same_members(compiled, eager)
    compiled.fit(X, y, epochs=8, **fit)
    eager.fit(X, y, epochs=8, **fit)
    _same_members(compiled, eager)


@pytest.mark.usefixtures("whole_blocks")
def test_a_rate_that_is_not_valid_inside_a_block_raises_after_the_epochs_before_it():
    """A schedule whose rate turns infinite at epoch 4 stops the fit there with the eager ensemble's error, the
    first three epochs committed."""
    schedule = gpunn.schedules.Schedule("step", {"lr": 0.1, "gamma": float("inf"), "every": 3})
    (compiled, error, _), (eager, error_eager, _) = _eager_pair({}, dict(epochs=10, lr=schedule))
    assert isinstance(error, gpunn.ConfigError) and str(error) == str(error_eager)
    assert "gave inf for epoch 4" in str(error)
    assert all(m.epoch == 3 for m in compiled.members)
    _same_members(compiled, eager)


@pytest.mark.usefixtures("whole_blocks")
def test_a_block_the_compiler_refuses_runs_eagerly_to_the_same_result(monkeypatch):
    """Under compile="auto", a block the compiler refuses warns once and the fit goes on one eager epoch at a
    time: the same weights and records as the eager NumPy ensemble."""

    def refusing(step, epochs):
        def form(*a):
            raise RuntimeError("no block today")

        return form

    monkeypatch.setattr(_loop, "_blocked", refusing)
    X, y = _data()
    fit = dict(epochs=5, lr=[0.1, 0.2], l2=[0.0, 0.01], verbose=0)
    auto = gpunn.Ensemble([3, 6, 1], 2, seed=[1, 2], compile="auto", **_jax())
    with pytest.warns(RuntimeWarning, match="compiling the ensemble's step on jax failed .*no block today"):
        auto.fit(X, y, **fit)
    eager = gpunn.Ensemble([3, 6, 1], 2, seed=[1, 2], compile=False, device="cpu", dtype="float64")
    eager.fit(X, y, **fit)
    _same_members(auto, eager)
    with pytest.raises(RuntimeError, match="no block today"):
        gpunn.Ensemble([3, 6, 1], 2, seed=[1, 2], compile=True, **_jax()).fit(X, y, **fit)
