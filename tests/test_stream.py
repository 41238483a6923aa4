"""Training from files streamed a block at a time (gpunn.data.Dataset) against in-memory training on the same rows."""

from __future__ import annotations

import os

import numpy as np
import pytest
from gpunn.stream import Dataset

import gpunn
from gpunn import stream

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

N, D = 600, 5


def _rows(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)) * [1.0, 3.0, 0.5, 10.0, 1.0] + [0.0, 5.0, -1.0, 50.0, 2.0]
    y = ((X[:, 0] - (X[:, 1] - 5) / 3 + 0.3 * X[:, 4]) > 0.5).astype(np.int64)
    return X, y


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    X, y = _rows()
    folder = tmp_path_factory.mktemp("stream")
    table = pa.table({**{f"f{j}": X[:, j] for j in range(D)}, "label": y})
    pq.write_table(table, folder / "d.parquet", row_group_size=64, write_page_checksum=True)  # 10 groups, 1 short
    np.save(folder / "d.npy", np.c_[X, y])
    np.save(folder / "x.npy", X)
    np.save(folder / "y.npy", y)
    return folder, X, y


def _datasets(folder, **kw):
    return {
        "parquet": Dataset(folder / "d.parquet", "label", **kw),
        "npy": Dataset(folder / "d.npy", target=D, block_rows=70, **kw),
        "npy-pair": Dataset(folder / "x.npy", target=str(folder / "y.npy"), block_rows=100, **kw),
    }


@pytest.mark.parametrize("kind", ["parquet", "npy", "npy-pair"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_a_stream_whose_buffer_holds_the_file_trains_as_in_memory(files, kind, shuffle):
    folder, X, y = files
    ds = _datasets(folder, shuffle_buffer=N)[kind]
    assert (ds.n_rows, ds.n_features) == (N, D)
    fit = dict(epochs=3, batch_size=32, lr=0.1, optimizer="adam", shuffle=shuffle, verbose=0)
    m = gpunn.MLP([D, 8, 1], dtype="float64", device="cpu", standardize=True, dropout=0.1, seed=2)
    h = m.fit(ds, validation_data=ds, **fit)
    ref = gpunn.MLP([D, 8, 1], dtype="float64", device="cpu", standardize=True, dropout=0.1, seed=2)
    h_ref = ref.fit(X, y, validation_data=(X, y), **fit)
    np.testing.assert_allclose(m.scaling[0], X.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(m.scaling[1], X.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.params, ref.params, rtol=0, atol=1e-12)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(getattr(h, key), getattr(h_ref, key), rtol=1e-12)
    assert m.feature_names == ([f"f{j}" for j in range(D)] if kind == "parquet" else None)
    result = m.evaluate(ds)
    want = ref.evaluate(X, y)
    assert result["accuracy"] == want["accuracy"] and result["loss"] == pytest.approx(want["loss"], rel=1e-12)


@pytest.mark.parametrize("buffer", [50, 130])
def test_a_small_buffer_visits_every_row_once_an_epoch_in_full_batches(files, buffer):
    folder, X, y = files
    ds = _datasets(folder, shuffle_buffer=buffer)["parquet"]
    rng = np.random.default_rng(0)
    orders = []
    for _ in range(2):
        batches = list(ds.batches(40, rng, np.float64))
        assert all(len(xb) == 40 for xb, _ in batches[:-1]) and 0 < len(batches[-1][0]) <= 40
        rows = np.concatenate([xb for xb, _ in batches])
        labels = np.concatenate([yb for _, yb in batches])
        # a permutation of the file's rows, each with its own label
        index = {tuple(r): i for i, r in enumerate(X)}
        order = np.array([index[tuple(r)] for r in rows])
        assert sorted(order) == list(range(N))
        np.testing.assert_array_equal(labels, y[order])
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1]), "two epochs drew the same order"
    assert not np.array_equal(orders[0], np.arange(N))


def test_a_small_buffer_trains_about_as_well_as_in_memory(files):
    folder, X, y = files
    ds = _datasets(folder, shuffle_buffer=100)["parquet"]
    fit = dict(epochs=8, batch_size=20, lr=0.01, optimizer="adam", verbose=0)
    m = gpunn.MLP([D, 16, 1], dtype="float64", device="cpu", standardize=True)
    h = m.fit(ds, **fit)
    ref = gpunn.MLP([D, 16, 1], dtype="float64", device="cpu", standardize=True)
    h_ref = ref.fit(X, y, **fit)
    assert h.loss[-1] == pytest.approx(h_ref.loss[-1], rel=0.1)
    assert m.evaluate(X, y)["accuracy"] > 0.9


def test_resumed_streaming_equals_an_uninterrupted_run_bit_for_bit(files, tmp_path):
    folder, _, _ = files
    fit = dict(batch_size=25, lr=0.05, optimizer="adam", verbose=0)
    kw = dict(dtype="float64", device="cpu", standardize=True, seed=9)
    straight = gpunn.MLP([D, 8, 1], **kw)
    straight.fit(_datasets(folder, shuffle_buffer=90)["npy"], epochs=4, **fit)
    first = gpunn.MLP([D, 8, 1], **kw)
    first.fit(_datasets(folder, shuffle_buffer=90)["npy"], epochs=2, **fit)
    first.save(tmp_path / "m.safetensors")
    resumed = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    resumed.fit(_datasets(folder, shuffle_buffer=90)["npy"], epochs=2, **fit)
    np.testing.assert_array_equal(resumed.params, straight.params)
    assert resumed.history.loss == straight.history.loss


def test_prefetching_changes_nothing_but_the_timing(files, monkeypatch):
    folder, _, _ = files
    runs = []
    for depth in (0, 1, 3):
        monkeypatch.setattr(stream, "PREFETCH", depth)
        m = gpunn.MLP([D, 8, 1], dtype="float64", device="cpu", standardize=True)
        m.fit(_datasets(folder, shuffle_buffer=100)["parquet"], epochs=2, batch_size=30, verbose=0)
        runs.append(m.params)
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


class _Streams:
    """A NumPy-backed stand-in for CuPy's streams and pinned memory: it lets the CuPy branch of the stream feed
    (a copy stream per step stream, ordered after the step's work) run on the CPU, and logs what it was asked."""

    PER_THREAD = 2

    def __init__(self, per_thread=False):
        self.log, self.made = [], []
        current = _Stream(self, "step", self.PER_THREAD if per_thread else 1)
        streams = self

        class cuda:
            class runtime:
                streamPerThread = self.PER_THREAD

            @staticmethod
            def get_current_stream():
                return current

            @staticmethod
            def Stream(non_blocking=False):
                assert non_blocking
                made = _Stream(streams, f"copy{len(streams.made)}", 100 + len(streams.made))
                streams.made.append(made)
                return made

        self.cuda = cuda

    def empty(self, shape, dtype):
        return np.empty(shape, dtype).view(_Device)

    def pinned(self, shape, dtype):
        self.log.append("pin")
        return np.empty(shape, dtype)


class _Stream:
    def __init__(self, streams, name, ptr):
        self.streams, self.name, self.ptr = streams, name, ptr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def record(self):
        return self.name

    def wait_event(self, event):
        self.streams.log.append(f"{self.name} waits for {event}")

    def synchronize(self):
        self.streams.log.append(f"{self.name} synchronized")


class _Device(np.ndarray):
    def set(self, host, stream):
        stream.streams.log.append(f"copy on {stream.name}")
        self[...] = host


@pytest.mark.parametrize("depth", [0, 2])
def test_the_gpu_copy_stream_branch_trains_as_the_plain_path(files, monkeypatch, depth):
    """The CuPy branch (batches copied through pinned memory on a copy stream that waits for the step's stream)
    run on the CPU with a stand-in for CuPy's streams: bit for bit the plain path's weights and records, every
    batch copied after the step's work and synchronized before it is handed over, one copy stream for the run."""
    folder, _, _ = files
    fit = dict(epochs=2, batch_size=50, lr=0.05, optimizer="adam", verbose=0)
    kw = dict(dtype="float64", device="cpu", standardize=True, seed=3)
    monkeypatch.setattr(stream, "PREFETCH", depth)
    monkeypatch.setattr(stream, "_copy_streams", {})
    plain = gpunn.MLP([D, 8, 1], **kw)
    plain.fit(_datasets(folder, shuffle_buffer=100)["parquet"], **fit)
    fake = _Streams()
    monkeypatch.setattr(stream, "_gpu_streams", lambda xp: (fake, fake.pinned))
    copied = gpunn.MLP([D, 8, 1], **kw)
    copied.fit(_datasets(folder, shuffle_buffer=100)["parquet"], **fit)
    np.testing.assert_array_equal(copied.params, plain.params)
    assert copied.history.loss == plain.history.loss
    assert len(fake.made) == 1  # one copy stream for the step's stream, made once
    per_copy = ["pin", "copy0 waits for step", "copy on copy0", "copy0 synchronized"]
    assert fake.log == per_copy * (2 * -(-N // 50))  # every batch's X, 2 epochs


def test_a_per_thread_default_stream_turns_prefetching_off(files, monkeypatch):
    """On a per-thread default stream, a prefetch thread would copy on another stream with no order against
    the step: the feed prepares its batches in the training thread instead."""
    folder, _, _ = files
    monkeypatch.setattr(stream, "PREFETCH", 2)
    monkeypatch.setattr(stream, "_copy_streams", {})
    for per_thread, kind in ((True, "generator"), (False, "Prefetcher")):
        fake = _Streams(per_thread)
        monkeypatch.setattr(stream, "_gpu_streams", lambda xp, fake=fake: (fake, fake.pinned))
        m = gpunn.MLP([D, 8, 1], dtype="float64", device="cpu")
        m.fit(_datasets(folder)["parquet"], epochs=1, verbose=0)
        feed = stream.Streamed(m.spec_for(m.sizes), _datasets(folder)["parquet"], None, "training")
        batches = feed.batches(50, None)
        assert type(batches).__name__ == kind
        first = next(iter(batches))
        batches.close()
        np.testing.assert_array_equal(np.asarray(first.x), np.load(folder / "x.npy")[:50])


def test_streaming_on_other_namespaces_equals_numpy(files, backend, monkeypatch):
    """Every namespace against NumPy's fast path; on the numpy parameter the side under test runs NumPy's
    generic Array API path (NumPy against itself would check nothing)."""
    folder, _, _ = files
    fit = dict(epochs=2, batch_size=50, lr=0.05, optimizer="adam", verbose=0)
    ref = gpunn.MLP([D, 8, 1], dtype="float64", device="cpu", standardize=True)
    ref.fit(_datasets(folder, shuffle_buffer=100)["parquet"], **fit)
    if backend.name == "numpy":
        monkeypatch.setattr(gpunn._backend, "NUMPY_FAST_PATHS", False)
        assert not gpunn._backend.numpy_fast_path(gpunn._backend.resolve("cpu")[0])
    m = gpunn.MLP([D, 8, 1], dtype="float64", standardize=True, **backend.kwargs())
    m.fit(_datasets(folder, shuffle_buffer=100)["parquet"], **fit)
    np.testing.assert_allclose(gpunn._backend.to_numpy(m.params), ref.params, rtol=0, atol=1e-12)
    assert not np.allclose(ref.params, gpunn.MLP([D, 8, 1], dtype="float64", device="cpu").params, atol=1e-3)


def test_split_takes_whole_blocks_at_random(files):
    folder, _, _ = files
    ds = _datasets(folder)["parquet"]
    train, test = ds.split(0.25, seed=1)
    assert sorted(train.blocks + test.blocks) == ds.blocks and not set(train.blocks) & set(test.blocks)
    assert train.n_rows + test.n_rows == N and 0.1 < test.n_rows / N < 0.4
    assert ds.split(0.25, seed=1)[1].blocks == test.blocks and ds.split(0.25, seed=2)[1].blocks != test.blocks


def test_a_file_that_changes_while_streaming_stops_training_at_the_last_whole_epoch(files, tmp_path):
    X, y = files[1], files[2]
    path = tmp_path / "d.npy"
    np.save(path, np.c_[X, y])
    ds = Dataset(path, target=D, block_rows=50, shuffle_buffer=100)
    m = gpunn.MLP([D, 4, 1], dtype="float64", device="cpu")

    def touch(model, record):
        if model.epoch == 2:
            os.utime(path, ns=(0, 12345))  # a writer touched the file: a new modification time

    with pytest.raises(gpunn.InputError, match="d.npy changed while gpunn was streaming it"):
        m.fit(ds, epochs=5, batch_size=20, verbose=0, callbacks=[touch])
    assert m.epoch == 2 and m.history.epochs == 2
    # the model is as epoch 2 left it: a fresh run of 2 epochs gives the same weights
    ref = gpunn.MLP([D, 4, 1], dtype="float64", device="cpu")
    ref.fit(Dataset(path, target=D, block_rows=50, shuffle_buffer=100), epochs=2, batch_size=20, verbose=0)
    np.testing.assert_array_equal(m.params, ref.params)
    assert m.rng.bit_generator.state == ref.rng.bit_generator.state


def test_bad_files_and_calls_are_named(files, tmp_path):
    folder, X, y = files
    with pytest.raises(gpunn.InputError, match="streams .parquet or .npy"):
        Dataset(tmp_path / "d.csv", "label")
    with pytest.raises(gpunn.InputError, match="target column 'target' is not in the file's columns.*f0"):
        Dataset(folder / "d.parquet", "target")
    with pytest.raises(gpunn.InputError, match="feature column 'g' is not in the file's columns"):
        Dataset(folder / "d.parquet", "label", features=["f0", "g"])
    pq.write_table(pa.table({"name": ["a", "b"], "v": [1.0, 2.0], "label": [0, 1]}), tmp_path / "t.parquet")
    with pytest.raises(gpunn.InputError, match="feature column 'name' \\(string\\) is not numeric"):
        Dataset(tmp_path / "t.parquet", "label")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(gpunn.InputError, match="a streamed target column holds numbers.*'name' holds text"):
        Dataset(tmp_path / "t.parquet", "name", features=["v"])
    with pytest.raises(gpunn.InputError, match="bad.parquet is not a readable Parquet file"):
        Dataset(tmp_path / "bad.parquet", "label")
    data = (folder / "d.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:100])
    with pytest.raises(gpunn.InputError, match="cut.npy is not a readable .npy file"):
        Dataset(tmp_path / "cut.npy", target=D)
    rows = np.c_[X, y]
    rows[130, 1] = np.nan
    np.save(tmp_path / "nan.npy", rows)
    with pytest.raises(gpunn.InputError, match=r"nan.npy: row 130 \(block 2\), column '1': nan is not a finite"):
        gpunn.MLP([D, 4, 1], device="cpu", standardize=True).fit(Dataset(tmp_path / "nan.npy", D, block_rows=50))
    with pytest.raises(gpunn.InputError, match="target 9 is not a column"):
        Dataset(folder / "d.npy", target=9)
    ds = Dataset(folder / "d.parquet", "label")
    m = gpunn.MLP([D, 4, 1], device="cpu")
    with pytest.raises(gpunn.InputError, match="y=None"):
        m.fit(ds, y, verbose=0)
    with pytest.raises(gpunn.ConfigError, match="sample_weight"):
        m.fit(ds, sample_weight=np.ones(N), verbose=0)
    with pytest.raises(gpunn.InputError, match="has 5 features; the model takes 3"):
        gpunn.MLP([3, 4, 1], device="cpu").fit(ds, verbose=0)
    with pytest.raises(gpunn.InputError, match="no target column"):
        m.fit(Dataset(folder / "x.npy"), verbose=0)
    assert not m.fitted and m.epoch == 0
    m.fit(X[:, :D], y, epochs=1, verbose=0)
    with pytest.raises(gpunn.InputError, match="Dataset.*to predict, read its rows"):
        m.predict(ds)
