"""Sample weights streamed from a file (Dataset(..., weight=)), against in-memory fit(X, y, sample_weight=w) on the
same rows: the oracle is the in-memory path, or the weights computed here from each row's features."""

from __future__ import annotations

import numpy as np
import pytest
from gpunn.stream import Dataset

import gpunn
from gpunn import _backend, stream

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

N, D = 600, 5
FIELDS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "weighted_loss")


def _label(X):
    return ((X[:, 0] - (X[:, 1] - 5) / 3 + 0.3 * X[:, 4]) > 0.5).astype(np.int64)


def _weight(X):
    """Each row's weight, a function of its features: 0 for about a quarter of the rows, up to about 5."""
    return np.floor(3 * np.abs(X[:, 0])) / 2


def _rows(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)) * [1.0, 3.0, 0.5, 10.0, 1.0] + [0.0, 5.0, -1.0, 50.0, 2.0]
    return X, _label(X), _weight(X)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    X, y, w = _rows()
    folder = tmp_path_factory.mktemp("weights")
    columns = {f"f{j}": X[:, j] for j in range(D)}
    # the weight column between the features, the target last: it must be left out of the default features
    table = pa.table({"f0": columns["f0"], "f1": columns["f1"], "w": w, **{f"f{j}": X[:, j] for j in (2, 3, 4)},
                      "label": y})  # fmt: skip
    pq.write_table(table, folder / "d.parquet", row_group_size=64)  # 10 row groups, the last one short
    np.save(folder / "d.npy", np.c_[X[:, :2], w, X[:, 2:], y])  # weight column 2, target 6
    np.save(folder / "x.npy", X)
    np.save(folder / "y.npy", y)
    np.save(folder / "w.npy", w)
    return folder, X, y, w


def _datasets(folder, **kw):
    return {
        "parquet": Dataset(folder / "d.parquet", "label", weight="w", **kw),
        "npy-column": Dataset(folder / "d.npy", target=6, weight=2, block_rows=70, **kw),
        "npy-file": Dataset(
            folder / "x.npy", target=str(folder / "y.npy"), weight=str(folder / "w.npy"), block_rows=100, **kw
        ),  # fmt: skip
    }


KINDS = ["parquet", "npy-column", "npy-file"]


def _assert_same_training(m, h, ref, h_ref):
    np.testing.assert_allclose(_backend.to_numpy(m.params), ref.params, rtol=0, atol=1e-12)
    for key in FIELDS:
        assert len(getattr(h, key)) == len(getattr(h_ref, key)), key
        np.testing.assert_allclose(getattr(h, key), getattr(h_ref, key), rtol=1e-12, atol=0, err_msg=key)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("batch_size,shuffle", [(32, True), (32, False), (None, True)])
def test_weighted_streaming_with_the_file_in_the_buffer_equals_in_memory_sample_weight(
    files, kind, standardize, batch_size, shuffle
):
    folder, X, y, w = files
    ds = _datasets(folder, shuffle_buffer=N)[kind]
    assert ds.has_weight and (ds.n_rows, ds.n_features) == (N, D)
    fit = dict(epochs=3, batch_size=batch_size, lr=0.05, optimizer="adam", l2=0.01, shuffle=shuffle, verbose=0)
    kw = dict(dtype="float64", device="cpu", standardize=standardize, dropout=0.1, seed=2)
    m = gpunn.MLP([D, 8, 1], **kw)
    h = m.fit(ds, validation_data=ds, **fit)  # a weighted validation Dataset is evaluated unweighted
    ref = gpunn.MLP([D, 8, 1], **kw)
    h_ref = ref.fit(X, y, sample_weight=w, validation_data=(X, y), **fit)
    assert h.weighted_loss and h.weighted_loss != h.loss
    _assert_same_training(m, h, ref, h_ref)
    assert m.feature_names == ([f"f{j}" for j in range(D)] if kind == "parquet" else None)
    result, want = m.evaluate(ds), ref.evaluate(X, y)
    assert result["accuracy"] == want["accuracy"] and result["loss"] == pytest.approx(want["loss"], rel=1e-12)


def test_weighted_streaming_on_every_namespace_equals_in_memory_numpy(files, backend, monkeypatch):
    """The oracle is NumPy's in-memory weighted training; on the numpy parameter the streamed side runs NumPy's
    generic Array API path."""
    folder, X, y, w = files
    fit = dict(epochs=2, batch_size=50, lr=0.05, optimizer="adam", verbose=0)
    ref = gpunn.MLP([D, 8, 1], dtype="float64", device="cpu", standardize=True)
    h_ref = ref.fit(X, y, sample_weight=w, validation_data=(X, y), **fit)
    if backend.name == "numpy":
        monkeypatch.setattr(gpunn._backend, "NUMPY_FAST_PATHS", False)
        assert not gpunn._backend.numpy_fast_path(gpunn._backend.resolve("cpu")[0])
    ds = _datasets(folder, shuffle_buffer=N)["parquet"]
    m = gpunn.MLP([D, 8, 1], dtype="float64", standardize=True, **backend.kwargs())
    h = m.fit(ds, validation_data=ds, **fit)
    _assert_same_training(m, h, ref, h_ref)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("buffer", [50, 130])
def test_with_a_small_buffer_every_row_keeps_its_own_weight(files, kind, buffer):
    folder, X, y, w = files
    ds = _datasets(folder, shuffle_buffer=buffer)[kind]
    rng = np.random.default_rng(0)
    for view in (ds, *ds.split(0.3, seed=1)):
        seen = []
        for xb, yb, wb in view.batches(40, rng, np.float64, weights=True):
            assert wb.dtype == np.float64 and wb.shape == (len(xb),)
            np.testing.assert_array_equal(wb, _weight(xb))
            np.testing.assert_array_equal(yb, _label(xb))
            seen.append(xb)
        rows = np.concatenate(seen)
        assert len(rows) == view.n_rows and len(np.unique(rows[:, 0])) == view.n_rows  # each row once
        assert view.weight_total() == pytest.approx(_weight(rows).sum(), rel=1e-14)
    train, test = ds.split(0.3, seed=1)
    assert train.weight_total() + test.weight_total() == pytest.approx(w.sum(), rel=1e-14)
    # without weights=True the batches stay (x, y)
    assert all(len(batch) == 2 for batch in ds.batches(40, rng, np.float64))


@pytest.mark.parametrize("kind", KINDS)
def test_with_a_small_buffer_the_weighted_loss_is_the_weighted_mean_of_the_rows_losses(files, kind):
    """With a learning rate too small to change the network's outputs, the epochs' losses are those of the
    initial network on every row: the weighted one is sum(w l) / sum(w), each row with its own weight."""
    folder, X, y, w = files
    m = gpunn.MLP([D, 8, 1], dtype="float64", device="cpu", seed=5)
    start = np.array(m.params)
    m.fitted = True
    z = np.asarray(m.decision_function(X))[:, 0]
    per_row = np.logaddexp(0.0, np.where(y == 1, -z, z))  # binary cross-entropy of each row, from its logit
    h = m.fit(_datasets(folder, shuffle_buffer=90)[kind], epochs=2, batch_size=25, lr=1e-300, verbose=0)
    np.testing.assert_allclose(m.params, start, rtol=0, atol=1e-250)
    np.testing.assert_allclose(h.weighted_loss, [np.sum(w * per_row) / np.sum(w)] * 2, rtol=1e-12)
    np.testing.assert_allclose(h.loss, [np.mean(per_row)] * 2, rtol=1e-12)


def test_prefetching_changes_nothing_in_weighted_training(files, monkeypatch):
    folder, _, _, _ = files
    runs = []
    for depth in (0, 1, 3):
        monkeypatch.setattr(stream, "PREFETCH", depth)
        m = gpunn.MLP([D, 8, 1], dtype="float64", device="cpu", standardize=True)
        h = m.fit(_datasets(folder, shuffle_buffer=100)["parquet"], epochs=2, batch_size=30, optimizer="adam",
                  verbose=0)  # fmt: skip
        runs.append((np.array(m.params), h))
    for params, h in runs[1:]:
        np.testing.assert_array_equal(params, runs[0][0])
        assert h == runs[0][1]
    assert runs[0][1].weighted_loss and runs[0][1].weighted_loss != runs[0][1].loss


def test_resumed_weighted_streaming_equals_an_uninterrupted_run(files, tmp_path):
    folder, _, _, _ = files
    fit = dict(batch_size=25, lr=0.05, optimizer="adam", verbose=0)
    kw = dict(dtype="float64", device="cpu", standardize=True, seed=9)
    straight = gpunn.MLP([D, 8, 1], **kw)
    straight.fit(_datasets(folder, shuffle_buffer=90)["npy-column"], epochs=4, **fit)
    first = gpunn.MLP([D, 8, 1], **kw)
    first.fit(_datasets(folder, shuffle_buffer=90)["npy-column"], epochs=2, **fit)
    first.save(tmp_path / "m.safetensors")
    resumed = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    resumed.fit(_datasets(folder, shuffle_buffer=90)["npy-column"], epochs=2, **fit)
    np.testing.assert_array_equal(resumed.params, straight.params)
    assert resumed.history.weighted_loss == straight.history.weighted_loss


def _fails(match, make, error=gpunn.InputError):
    with pytest.raises(error, match=match):
        make()


def test_bad_weights_are_named_with_the_file_and_column(files, tmp_path):
    folder, X, y, w = files

    def parquet(name, weights, **kw):
        table = pa.table({**{f"f{j}": X[:, j] for j in range(D)}, "w": weights, "label": y})
        pq.write_table(table, tmp_path / name, row_group_size=64)
        return Dataset(tmp_path / name, "label", weight="w", **kw)

    def fit(ds, **kw):
        m = gpunn.MLP([D, 4, 1], device="cpu", standardize=True)
        before = np.array(m.params)
        try:
            m.fit(ds, epochs=2, verbose=0, **kw)
        finally:  # a rejected fit changes no weights and records no epoch
            assert m.epoch == 0 and not m.history.loss
            np.testing.assert_array_equal(m.params, before)

    negative = w.copy()
    negative[130] = -1.0
    _fails(r"bad.parquet: row 130 \(row group 2\), weight column 'w': -1.0 is negative; weights are finite",
           lambda: fit(parquet("bad.parquet", negative)))  # fmt: skip
    nan = w.copy()
    nan[75] = np.nan
    _fails(r"nan.parquet: row 75 \(row group 1\), weight column 'w': nan is not a finite number",
           lambda: fit(parquet("nan.parquet", nan)))  # fmt: skip
    _fails(r"null.parquet, row group 0: weight column 'w' has 1 null\(s\)",
           lambda: fit(parquet("null.parquet", pa.array([None, *w[1:]], type=pa.float64()))))  # fmt: skip
    _fails(r"text.parquet: weight column 'w' \(string\) is not numeric; weights are numbers",
           lambda: parquet("text.parquet", [str(v) for v in w]))  # fmt: skip
    _fails(r"zero.parquet: the weights \('w'\) sum to 0 over the rows trained on",
           lambda: fit(parquet("zero.parquet", np.zeros(N))))  # fmt: skip
    first_zero = np.where(np.arange(N) < 64, 0.0, 1.0)
    _fails(r"z1.parquet: the weights \('w'\) sum to 0 over batch 1 of epoch 1: every batch needs some weight",
           lambda: fit(parquet("z1.parquet", first_zero), batch_size=32, shuffle=False))  # fmt: skip
    _fails(r"d.parquet: weight column 'nope' is not in the file's columns \(f0, f1, w",
           lambda: Dataset(folder / "d.parquet", "label", weight="nope"))  # fmt: skip
    _fails(r"d.parquet: the weight column 'w' is also listed among the features",
           lambda: Dataset(folder / "d.parquet", "label", ["f0", "w"], weight="w"))  # fmt: skip
    _fails(r"d.parquet: 'label' is both the target and the weight column",
           lambda: Dataset(folder / "d.parquet", "label", weight="label"))  # fmt: skip

    rows = np.load(folder / "d.npy")
    rows[200, 2] = np.nan
    np.save(tmp_path / "nan.npy", rows)
    _fails(r"nan.npy: row 200 \(block 2\), weight column '2': nan is not a finite number",
           lambda: fit(Dataset(tmp_path / "nan.npy", 6, weight=2, block_rows=70)))  # fmt: skip
    np.save(tmp_path / "wneg.npy", negative)
    _fails(
        r"d.npy: row 130 \(block 1\), weight column 'wneg.npy': -1.0 is negative",
        lambda: fit(Dataset(folder / "d.npy", 6, [0, 1, 3, 4, 5], weight=tmp_path / "wneg.npy", block_rows=100)),
    )
    np.save(tmp_path / "wtext.npy", np.array(["a"] * N))
    _fails(r"wtext.npy holds <U1 values; weights are numbers",
           lambda: Dataset(folder / "x.npy", str(folder / "y.npy"), weight=tmp_path / "wtext.npy"))  # fmt: skip
    np.save(tmp_path / "wshort.npy", w[:-1])
    _fails(r"wshort.npy holds weights of shape \(599,\); .*x.npy needs one weight per row, shape \(600,\)",
           lambda: Dataset(folder / "x.npy", str(folder / "y.npy"), weight=tmp_path / "wshort.npy"))  # fmt: skip
    _fails(r"weight 9 is not a column of .*d.npy \(0..6\)", lambda: Dataset(folder / "d.npy", 6, weight=9))
    _fails(r"d.npy: the weight column 2 is also listed among the features",
           lambda: Dataset(folder / "d.npy", 6, [0, 2], weight=2))  # fmt: skip
    _fails(r"d.npy: column 6 is both the target and the weight column", lambda: Dataset(folder / "d.npy", 6, weight=6))
    _fails(r"y.npy is both the target and the weight file of .*x.npy",
           lambda: Dataset(folder / "x.npy", str(folder / "y.npy"), weight=str(folder / "y.npy")))  # fmt: skip

    ds = _datasets(folder)["parquet"]
    for kw in ({"sample_weight": w}, {"class_weight": "balanced"}):
        _fails(r"not arguments of fit on a Dataset.*Dataset\(path, target, weight=COLUMN\)",
               lambda kw=kw: fit(ds, **kw), gpunn.ConfigError)  # fmt: skip
    _fails("has no weight column", lambda: list(Dataset(folder / "d.parquet", "label").batches(10, None, float, True)))
