"""The tabular recipe: label smoothing against a NumPy reference and float64 finite differences, the settings of
``MLP(preset="tabular")``, and what a saved model keeps of them."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn import _backend, presets, schedules
from gpunn.errors import CheckpointError, ConfigError

SMOOTHED = [("sigmoid", "binary_crossentropy", 1), ("sigmoid", "binary_crossentropy", 3),
            ("softmax", "categorical_crossentropy", 4), ("sigmoid", "mse", 1)]  # fmt: skip


def smoothed_loss(params, X, y, output, loss, e):
    """The mean loss of a relu network on targets smoothed by ``e``, from the definitions, in float64."""
    a = X
    for i in range(0, len(params) - 2, 2):
        a = np.maximum(a @ params[i].T + params[i + 1], 0.0)
    z = a @ params[-2].T + params[-1]
    if output == "softmax":
        k = z.shape[1]
        t = (1 - e) * np.eye(k)[y] + e / k
        log_p = z - z.max(axis=1, keepdims=True)
        log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
        return float(-np.mean(np.sum(t * log_p, axis=1)))
    t = (1 - e) * y.reshape(z.shape) + e / 2
    p = 1.0 / (1.0 + np.exp(-z))
    if loss == "mse":
        return float(np.mean((p - t) ** 2))
    return float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))


def numeric_gradient(params, X, y, output, loss, e, h=1e-6):
    grads = []
    for p in params:
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up = smoothed_loss(params, X, y, output, loss, e)
            p[idx] = old - h
            down = smoothed_loss(params, X, y, output, loss, e)
            p[idx] = old
            g[idx] = (up - down) / (2 * h)
        grads.append(g)
    return grads


def relative_error(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


def _problem(rng, k, output):
    X = rng.normal(size=(9, 3))
    if output == "softmax":
        y = np.arange(9) % k
    else:
        y = (rng.random(size=(9, k)) > 0.5).astype(float)
        y[0], y[1] = 0.0, 1.0  # both classes in every column
        y = y[:, 0] if k == 1 else y
    return X, y


@pytest.mark.parametrize("output,loss,k", SMOOTHED)
def test_label_smoothing_trains_the_smoothed_loss_and_its_gradient(rng, output, loss, k):
    """One full-batch SGD epoch of lr 1: its loss is the smoothed loss at the initial weights, its update is
    minus the smoothed loss's gradient (float64 finite differences), and val_loss is the plain loss after it."""
    e = 0.2
    m = gpunn.MLP([3, 5, 4, k], output=output, loss=loss, dtype="float64", seed=2, device="cpu", label_smoothing=e)
    m.set_weights([(w, rng.normal(scale=0.5, size=w.shape[0])) for w, _ in m.numpy_weights()])
    X, y = _problem(rng, k, output)
    before = [a.copy() for pair in m.numpy_weights() for a in pair]
    history = m.fit(X, y, epochs=1, lr=1.0, verbose=0, validation_data=(X, y))
    after = [a for pair in m.numpy_weights() for a in pair]
    assert history.loss[0] == pytest.approx(smoothed_loss(before, X, y, output, loss, e), rel=1e-12)
    for b, a, n in zip(before, after, numeric_gradient(before, X, y, output, loss, e)):
        assert relative_error(b - a, n) <= 1e-6
    assert history.val_loss[0] == pytest.approx(smoothed_loss(after, X, y, output, loss, 0.0), rel=1e-12)
    assert m.evaluate(X, y)["loss"] == pytest.approx(history.val_loss[0], rel=1e-12)


def test_label_smoothing_of_the_losses_head_against_numpy(rng):
    """losses.head with smoothed sigmoid targets: the general form softplus(z) - t z, and delta 2 (p - t)."""
    from gpunn import losses

    z = rng.normal(scale=4.0, size=(6, 2))
    y = (rng.random(size=(6, 2)) > 0.5).astype(float)
    t = 0.9 * y + 0.05
    s = losses.smooth_targets("sigmoid", "binary_crossentropy", losses.encode_targets("sigmoid",
                              "binary_crossentropy", y), 0.1)  # fmt: skip
    zero = np.zeros(())
    total, delta, correct = losses.head("sigmoid", "binary_crossentropy", z, s, zero, np, smoothed=True)
    p = 1.0 / (1.0 + np.exp(-z))
    assert float(total) == pytest.approx(np.sum(-(t * np.log(p) + (1 - t) * np.log(1 - p))), rel=1e-12)
    np.testing.assert_allclose(delta, 2.0 * (p - t), rtol=1e-12, atol=1e-15)
    assert int(correct) == int(np.sum((z > 0) == (y > 0.5)))


def test_label_smoothing_is_a_fraction_for_classifiers_only(rng, tmp_path):
    for bad in (-0.1, 1.0, float("nan"), "0.1", True):
        with pytest.raises(ConfigError, match="label_smoothing"):
            gpunn.MLP([2, 1], label_smoothing=bad)
    # a regression ignored it; now it is refused, and the tabular preset's 0.1 is its classifiers' only
    for output in ("identity", "exp"):
        with pytest.raises(ConfigError, match=f"^label_smoothing is for classifiers .*output '{output}' predicts"):
            gpunn.MLP([2, 3, 1], output=output, label_smoothing=0.3)
        assert gpunn.MLP([2, 3, 1], output=output, preset="tabular").label_smoothing == 0.0
    # a file that holds a regression's (saved before the refusal) loads, and trains as it did: without it
    X, y = rng.normal(size=(20, 2)), rng.normal(size=20)
    old = gpunn.MLP([2, 3, 1], output="identity", seed=1, device="cpu", dtype="float64")
    old.label_smoothing = 0.3
    old.save(tmp_path / "old.safetensors")
    loaded = gpunn.load(tmp_path / "old.safetensors", device="cpu")
    plain = gpunn.MLP([2, 3, 1], output="identity", seed=1, device="cpu", dtype="float64")
    ha, hb = loaded.fit(X, y, epochs=3, verbose=0), plain.fit(X, y, epochs=3, verbose=0)
    assert loaded.label_smoothing == 0.0 and ha.loss == hb.loss


def test_the_tabular_preset_sets_its_recipe_and_mlp_keeps_its_defaults():
    plain = gpunn.MLP(hidden=[4])
    assert (plain.standardize, plain.label_smoothing, plain.preset) == (False, 0.0, None)
    m = gpunn.MLP(preset="tabular", output="softmax")
    assert (m.hidden, m.standardize, m.label_smoothing, m.dropout, m.preset) == ([128, 128], True, 0.1, 0.1, "tabular")
    given = gpunn.MLP(hidden=[8], preset="tabular", standardize=False, label_smoothing=0.0, dropout=0.0)
    assert (given.hidden, given.standardize, given.label_smoothing, given.dropout) == ([8], False, 0.0, 0.0)
    with pytest.raises(ConfigError, match="preset 'fast' is not known"):
        gpunn.MLP(preset="fast")
    # minibatches: about a tenth of the rows, a power of two from 16 to 256
    sizes = {n: presets.TABULAR.batch_size(n) for n in (10, 100, 320, 1000, 2600, 10**6)}
    assert sizes == {10: 10, 100: 16, 320: 32, 1000: 64, 2600: 256, 10**6: 256}


def test_a_tabular_fit_holds_out_rows_and_restores_its_best_epoch(rng):
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] * X[:, 1] + 0.3 * rng.normal(size=200) > 0).astype(int)
    m = gpunn.MLP(preset="tabular", hidden=[16], seed=5, device="cpu", dtype="float64")
    history = m.fit(X, y, epochs=60, verbose=0)
    assert m.optimizer == gpunn.optim.get("adamw", 0.01)
    assert m.schedule == schedules.cosine(1e-3, 60)
    # the validation rows: 10% drawn by the model's seed, as the recipe says
    order = np.random.default_rng(5).permutation(200)
    val = np.sort(order[:20])
    best = int(np.argmin(history.val_loss))
    assert m.evaluate(X[val], y[val])["loss"] == pytest.approx(history.val_loss[best], rel=1e-9)
    assert len(history.loss) == 60 or len(history.loss) == best + 1 + presets.TABULAR.patience
    # 180 training rows: batches of 16, twelve steps an epoch (the last one of 4 rows)
    assert m.optimizer_state["step"] == 12 * len(history.loss)


def test_save_and_load_keep_label_smoothing_and_the_preset(tmp_path, rng):
    X, y = rng.normal(size=(30, 3)), np.arange(30) % 3
    m = gpunn.MLP(hidden=[5], output="softmax", label_smoothing=0.15, preset="tabular", device="cpu")
    m.fit(X, y, epochs=2, verbose=0)
    m.save(tmp_path / "m.st")
    back = gpunn.load(tmp_path / "m.st", device="cpu")
    assert (back.label_smoothing, back.preset) == (0.15, "tabular")
    a, b = m.fit(X, y, epochs=2, verbose=0), back.fit(X, y, epochs=2, verbose=0)
    assert a.loss == b.loss  # the loaded model trains the same smoothed loss with the same recipe
    assert np.array_equal(_backend.to_numpy(m.params), _backend.to_numpy(back.params))


def test_a_checkpoint_without_the_new_fields_loads_and_an_edited_one_is_refused(tmp_path, rng):
    from gpunn import checkpoint

    m = gpunn.MLP([3, 4, 1], device="cpu")
    m.fit(rng.normal(size=(10, 3)), np.arange(10) % 2, epochs=1, verbose=0)
    config, tensors = m._state_map()
    for key in ("label_smoothing", "preset"):
        config.pop(key)
    checkpoint.write(tmp_path / "old.st", config, tensors)
    old = gpunn.load(tmp_path / "old.st", device="cpu")
    assert (old.label_smoothing, old.preset) == (0.0, None)
    for key, value in (("label_smoothing", 1.5), ("preset", "quick")):
        checkpoint.write(tmp_path / "bad.st", {**config, key: value}, tensors)
        with pytest.raises(CheckpointError, match=key):
            gpunn.load(tmp_path / "bad.st", device="cpu")


def _cli(*args, cwd):
    import gpunn_in_process  # the command's output and files, without an interpreter's start per call

    return gpunn_in_process.run(*args, cwd=cwd)


def _csv(tmp_path, rng, n=250):
    X = rng.normal(loc=2.0, scale=[1.0, 30.0, 0.1], size=(n, 3))
    y = (X[:, 0] - 2.0 + (X[:, 1] - 2.0) / 30.0 > 0).astype(int)
    rows = "\n".join(",".join(repr(float(v)) for v in (*x, t)) for x, t in zip(X, y))
    (tmp_path / "d.csv").write_text("a,b,c,label\n" + rows + "\n")


def test_train_on_a_file_uses_the_tabular_recipe_and_says_so(tmp_path, rng):
    _csv(tmp_path, rng)
    r = _cli("train", "--data", "d.csv", "--target", "label", "--epochs", "3", "--device", "cpu", "--save", "m.st",
             cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert (
        "training [3, 128, 128, 1] (relu, sigmoid output, chosen from the target (two classes: 0, 1), dropout 0.1)"
        in first
    )
    assert "180 train / 20 validation / 50 test rows" in first
    assert first.endswith("float32; tabular preset: adamw lr 0.001 (cosine), weight decay 0.01, batch 16, 3 epochs, "
                          "early stopping 40 (best epoch kept), label smoothing 0.1 (--preset tutorial for the "
                          "tutorial's settings)")  # fmt: skip
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    assert (m.label_smoothing, m.dropout, m.standardize, m.epoch) == (0.1, 0.1, True, 3)
    assert m.optimizer == gpunn.optim.get("adamw", 0.01) and m.schedule == schedules.cosine(1e-3, 3)
    assert m.optimizer_state["step"] == 3 * 12  # 180 rows in batches of 16
    s = m.metadata["train"]
    assert (s["preset"], s["batch_size"], s["early_stopping"], s["validation_split"]) == ("tabular", 16, 40, 0.1)
    # every choice stays a flag: given ones win over the preset's
    r = _cli("train", "--data", "d.csv", "--target", "label", "--epochs", "2", "--device", "cpu", "--layers", "8",
             "--optimizer", "adam", "--batch-size", "40", "--label-smoothing", "0", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert "[3, 8, 1] (relu, sigmoid output, chosen from the target (two classes: 0, 1), dropout 0.1)" in first
    assert "tabular preset: adam lr 0.001 (cosine), batch 40, 2 epochs" in first
    assert "label smoothing" not in first


def test_preset_tutorial_is_the_tutorial_run_bit_for_bit(tmp_path, rng):
    """--preset tutorial on a file: the 10-10-10 network, SGD at 0.1, full batch, 1000 epochs, no validation,
    as the API trains it on the command's split; the opening line names no preset."""
    _csv(tmp_path, rng)
    r = _cli("train", "--data", "d.csv", "--target", "label", "--preset", "tutorial", "--device", "cpu", "--save",
             "m.st", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "preset" not in r.stdout.splitlines()[0] and "200 train / 50 test rows" in r.stdout.splitlines()[0]
    m = gpunn.load(tmp_path / "m.st", device="cpu")
    Xf, yf, _ = gpunn.data.read_csv(tmp_path / "d.csv", target="label", dtype="float32")
    X_train, _, y_train, _ = gpunn.data.train_test_split(Xf, yf, test_size=0.2, seed=0)
    ref = gpunn.MLP([3, 10, 10, 10, 1], seed=0, device="cpu", standardize=True)
    ref.fit(X_train, y_train, epochs=1000, lr=0.1, optimizer="sgd", batch_size=None, verbose=0)
    assert m.epoch == 1000 and m.label_smoothing == 0.0
    for (w, b), (w2, b2) in zip(m.numpy_weights(), ref.numpy_weights()):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)


def test_a_streamed_dataset_trains_the_smoothed_loss_as_in_memory(tmp_path, rng):
    """A Dataset's training batches are smoothed as in-memory targets are (whose loss and gradient the tests above
    check against the definitions); its validation and evaluate see the labels as given."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    X = rng.normal(size=(300, 3))
    y = np.arange(300) % 3
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": y}), tmp_path / "d.parquet",
                   row_group_size=64)  # fmt: skip
    ds = gpunn.data.Dataset(tmp_path / "d.parquet", "label", shuffle_buffer=300)
    fit = dict(epochs=3, batch_size=32, lr=0.01, optimizer="adam", verbose=0)
    kw = dict(output="softmax", dtype="float64", device="cpu", standardize=True, seed=4, label_smoothing=0.2)
    m, ref = gpunn.MLP([3, 6, 3], **kw), gpunn.MLP([3, 6, 3], **kw)
    h, h_ref = m.fit(ds, validation_data=ds, **fit), ref.fit(X, y, validation_data=(X, y), **fit)
    np.testing.assert_allclose(m.params, ref.params, rtol=0, atol=1e-12)
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(getattr(h, key), getattr(h_ref, key), rtol=1e-12)
    assert m.evaluate(ds)["loss"] == pytest.approx(ref.evaluate(X, y)["loss"], rel=1e-12)
