"""Streamed blocks checked as gpunn.data.read checks a file (issue 22.3), one owner for finite and weight checks
(issue 19.2), scaling of finite features near the float64 limits (issue 22.5), and files changed under a stream
(issue 22, "Also": Parquet page checksums, .npy content)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import gpunn
from gpunn import _validation as check
from gpunn.cli.targets import streamed_target
from gpunn.data import Dataset
from gpunn.data.readers import read_weighted

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

N, D = 300, 3


def _rows(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D))
    y = (X[:, 0] - X[:, 1] > 0).astype(np.int64)
    return X, y


def _parquet(path, X, y, **columns):
    table = pa.table({**{f"f{j}": X[:, j] for j in range(D)}, "label": y, **columns})
    pq.write_table(table, path, row_group_size=64, write_page_checksum=True)
    return path


def _error(make) -> str:
    with pytest.raises(gpunn.InputError) as info:
        make()
    return str(info.value)


def _fit_fails(ds, **kw) -> str:
    """The error of a streamed fit, which leaves the model as it was."""
    m = gpunn.MLP([D, 4, 1], device="cpu", dtype="float64", **kw)
    before = np.array(m.params)
    message = _error(lambda: m.fit(ds, epochs=2, batch_size=16, verbose=0))
    assert m.epoch == 0 and not m.history.loss
    np.testing.assert_array_equal(m.params, before)
    return message


def _null_int_target(y):
    return pa.array([*y[:130].tolist(), None, *y[131:].tolist()], type=pa.int64())


def _with(y, row, value):
    y = y.astype(np.float64)
    y[row] = value
    return y


# A streamed Parquet file is rejected with the words gpunn.data.read uses for the same file: the file, the file
# row (not a shuffled batch's), its row group and the column.
PARQUET_CASES = [
    ("null int64 target", lambda X, y: (X, _null_int_target(y)), r"row 130 \(row group 2\), column 'label': a missing"),
    ("inf target", lambda X, y: (X, _with(y, 130, np.inf)), r"row 130 \(row group 2\), column 'label': inf is not a"),
    ("nan target", lambda X, y: (X, _with(y, 200, np.nan)), r"row 200 \(row group 3\), column 'label': nan is not a"),
    ("nan feature", lambda X, y: (_with(X, (70, 1), np.nan), y), r"row 70 \(row group 1\), column 'f1': nan is not"),
    ("-inf feature", lambda X, y: (_with(X, (299, 2), -np.inf), y), r"row 299 \(row group 4\), column 'f2': -inf"),
]


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("case, make, pattern", PARQUET_CASES, ids=[c[0] for c in PARQUET_CASES])
def test_a_streamed_parquet_file_is_rejected_as_read_rejects_it(tmp_path, case, make, pattern, standardize):
    X, y = _rows()
    path = _parquet(tmp_path / "bad.parquet", *make(X, y))
    read = _error(lambda: gpunn.data.read(path, target="label"))
    streamed = _fit_fails(Dataset(path, "label", shuffle_buffer=100), standardize=standardize)
    assert streamed == read
    assert re.search(f"bad.parquet: {pattern}", streamed)


def test_a_null_feature_is_named_by_its_file_row_as_read_names_it(tmp_path):
    X, y = _rows()
    f1 = pa.array([*X[:77, 1].tolist(), None, *X[78:, 1].tolist()], type=pa.float64())
    pq.write_table(pa.table({"f0": X[:, 0], "f1": f1, "f2": X[:, 2], "label": y}), tmp_path / "n.parquet",
                   row_group_size=64)  # fmt: skip
    read = _error(lambda: gpunn.data.read(tmp_path / "n.parquet", target="label"))
    assert read.endswith("n.parquet: row 77 (row group 1), column 'f1': a missing value (null)")
    assert _fit_fails(Dataset(tmp_path / "n.parquet", "label")) == read


NPY_CASES = [
    ("nan target", lambda X, y: (X, _with(y, 130, np.nan)), 3, "130", "3"),
    ("inf target", lambda X, y: (X, _with(y, 5, np.inf)), 3, "5", "3"),
    ("nan feature", lambda X, y: (_with(X, (250, 2), np.nan), y), 3, "250", "2"),
]


@pytest.mark.parametrize("case, make, target, row, column", NPY_CASES, ids=[c[0] for c in NPY_CASES])
def test_a_streamed_npy_file_is_rejected_as_read_rejects_it(tmp_path, case, make, target, row, column):
    X, y = make(*_rows())
    np.save(tmp_path / "bad.npy", np.c_[X, y])
    read = _error(lambda: gpunn.data.read(tmp_path / "bad.npy", target=target))
    block = int(row) // 50
    streamed = _fit_fails(Dataset(tmp_path / "bad.npy", target=int(target), block_rows=50))
    assert streamed == read.replace(f"row {row},", f"row {row} (block {block}),")
    assert re.search(rf"bad.npy: row {row} \(block {block}\), column '{column}': (nan|inf) is not a finite", streamed)


def test_a_separate_npy_target_file_is_named(tmp_path):
    X, y = _rows()
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", _with(y, 42, np.nan))
    message = _fit_fails(Dataset(tmp_path / "x.npy", target=str(tmp_path / "y.npy"), block_rows=40))
    assert re.search(r"y.npy: row 42 \(block 1\), column '0': nan is not a finite number$", message)


def test_the_cli_target_pass_rejects_a_null_or_inf_target_rather_than_guessing_a_regression(tmp_path):
    X, y = _rows()
    null = _parquet(tmp_path / "null.parquet", X, _null_int_target(y))
    message = _error(lambda: streamed_target(Dataset(null, "label"), "auto", "null.parquet"))
    assert message.endswith("null.parquet: row 130 (row group 2), column 'label': a missing value (null)")
    inf = _parquet(tmp_path / "inf.parquet", X, _with(y, 7, np.inf))  # was an OverflowError
    message = _error(lambda: streamed_target(Dataset(inf, "label"), "auto", "inf.parquet"))
    assert message.endswith("inf.parquet: row 7 (row group 0), column 'label': inf is not a finite number")


def test_a_label_outside_the_classes_is_named_by_its_file_row_not_its_shuffled_position(tmp_path):
    X, y = _rows()
    labels = y.copy()
    labels[201] = 2
    path = _parquet(tmp_path / "three.parquet", X, labels)
    message = _fit_fails(Dataset(path, "label", shuffle_buffer=100))
    assert re.search(r"three.parquet \(row group 3\), target column 'label', holds label 2 at row 201, outside "
                     r"\{0, 1\}", message)  # fmt: skip


def test_a_value_too_large_for_the_models_dtype_is_named(tmp_path):
    X, y = _rows()
    X[99, 0] = 1e39  # finite in float64, not in float32
    path = _parquet(tmp_path / "big.parquet", X, y)
    m = gpunn.MLP([D, 4, 1], device="cpu", dtype="float32")
    message = _error(lambda: m.fit(Dataset(path, "label"), epochs=1, verbose=0))
    assert message.endswith("big.parquet: row 99 (row group 1), column 'f0': 1e+39 is too large for float32")
    regression = gpunn.MLP([D, 4, 1], device="cpu", dtype="float32", output="identity")
    values = _parquet(tmp_path / "bigy.parquet", X[:, [1, 1, 2]], _with(y, 250, -1e39))
    message = _error(lambda: regression.fit(Dataset(values, "label"), epochs=1, verbose=0))
    assert message.endswith("bigy.parquet: row 250 (row group 3), column 'label': -1e+39 is too large for float32")


def test_validation_data_is_checked_as_training_data(tmp_path):
    X, y = _rows()
    good = _parquet(tmp_path / "good.parquet", X, y)
    bad = _parquet(tmp_path / "bad.parquet", X, _with(y, 3, np.nan))
    m = gpunn.MLP([D, 4, 1], device="cpu")
    message = _error(lambda: m.fit(Dataset(good, "label"), validation_data=Dataset(bad, "label"), verbose=0))
    assert message.endswith("bad.parquet: row 3 (row group 0), column 'label': nan is not a finite number")
    m.fit(Dataset(good, "label"), epochs=1, verbose=0)
    message = _error(lambda: m.evaluate(Dataset(bad, "label")))
    assert message.endswith("bad.parquet: row 3 (row group 0), column 'label': nan is not a finite number")


# ----------------------------------------------------------------------------------- one validation owner
def test_one_finite_check_words_a_files_rows_and_a_users_array():
    a = np.ones((4, 3))
    a[2, 1] = np.nan
    with pytest.raises(gpunn.InputError, match=r"^f.csv: row 12 \(block 1\), column 'b': nan is not a finite number$"):
        check.finite(a, "f.csv", ["a", "b", "c"], 10, "block 1")
    with pytest.raises(gpunn.InputError, match=r"^X holds nan at row 2, column 1; gpunn needs finite values$"):
        check.finite(a, "X")
    big = np.array([[1.0, 1e39]])
    with np.errstate(over="ignore"):
        narrow = big.astype(np.float32)
    with pytest.raises(gpunn.InputError, match=r"^X holds 1e\+39 at row 0, column 1, too large for float32$"):
        check.finite(big, "X", cast=narrow)
    check.finite(np.array([[np.iinfo(np.int64).min]]), "X")  # integers are finite


def test_one_weight_check_words_a_files_rows_and_a_users_array():
    w = np.array([1.0, 2.0, -0.5, np.nan])
    with pytest.raises(gpunn.InputError, match=r"^sample_weight holds -0.5 at row 2; weights must be finite and >= 0$"):
        check.weights(w, "sample_weight")
    with pytest.raises(gpunn.InputError, match=r"^d.parquet: row 66 \(row group 1\), weight column 'w': -0.5 is "
                       r"negative; weights are finite numbers >= 0$"):  # fmt: skip
        check.weights(w, "d.parquet", "w", 64, "row group 1")
    with pytest.raises(gpunn.InputError, match=r"^d.npy: row 3, weight column '4': nan is not a finite number"):
        check.weights(w[3:], "d.npy", "4", 3)
    with pytest.raises(gpunn.InputError, match="^batch 2 is empty$"):
        check.batch_weights([1.0, 0.0, 0.0], lambda b: f"batch {b + 1} is empty")


def test_read_and_dataset_word_a_negative_weight_alike(tmp_path):
    X, y = _rows()
    w = np.ones(N)
    w[140] = -2.0
    path = _parquet(tmp_path / "w.parquet", X, y, w=w)
    read = _error(lambda: read_weighted(path, "label", None, "float64", "w"))  # as gpunn train --sample-weight reads it
    streamed = _fit_fails(Dataset(path, "label", weight="w"))
    assert read == f"{path}: row 140, weight column 'w': -2.0 is negative; weights are finite numbers >= 0"
    assert streamed == read.replace("row 140,", "row 140 (row group 2),")


# ------------------------------------------------------------------- scaling near the float64 limits (22.5)
def _moons_rows():
    X, y = gpunn.data.make_moons(400, noise=0.2, seed=1)
    return np.c_[X, X[:, 0] * X[:, 1]] * [1.0, 3.0, 0.5] + [0.0, 5.0, -1.0], y


FIT = dict(epochs=3, batch_size=32, lr=0.05, optimizer="adam", verbose=0)
MODEL = dict(device="cpu", dtype="float64", standardize=True, seed=4)


@pytest.mark.parametrize("c", [1e300, 1e-310])
def test_features_near_the_float64_limits_train_as_the_same_features_at_unit_size(tmp_path, c):
    """Issue 22.5: X x 1e300 overflowed the scale to inf and X x 1e-310 underflowed the variance, and every
    feature became 0. Their scaling is now c times X's, and training (in memory and streamed) gives X's
    predictions."""
    X, y = _moons_rows()
    ref = gpunn.MLP([D, 8, 1], **MODEL)
    ref.fit(X, y, **FIT)
    expected = ref.predict_proba(X)
    m = gpunn.MLP([D, 8, 1], **MODEL)
    m.fit(X * c, y, **FIT)
    pq.write_table(pa.table({**{f"f{j}": X[:, j] * c for j in range(D)}, "label": y}), tmp_path / "c.parquet",
                   row_group_size=50, write_page_checksum=True)  # fmt: skip
    streamed = gpunn.MLP([D, 8, 1], **MODEL)
    streamed.fit(Dataset(tmp_path / "c.parquet", "label"), **FIT)  # the buffer holds the file: in-memory batches
    for model in (m, streamed):
        np.testing.assert_allclose(model.scaling[0], c * ref.scaling[0], rtol=1e-12)
        np.testing.assert_allclose(model.scaling[1], c * ref.scaling[1], rtol=1e-12)
        assert np.all(np.isfinite(model.scaling[1])) and np.all(model.scaling[1] > 0)
        np.testing.assert_allclose(model.predict_proba(X * c), expected, rtol=1e-9, atol=1e-12)


def _exact_moments(column):
    """Mean and population standard deviation with exact rational arithmetic (the oracle)."""
    import statistics
    from fractions import Fraction

    mean = statistics.mean(Fraction(v) for v in column.tolist())
    return float(mean), statistics.pstdev(column.tolist())


@pytest.mark.parametrize(
    "column",
    [
        np.r_[1e300, np.linspace(-3.0, 4.0, 99)],  # one huge value among small ones
        np.r_[1e-300, 5e-324, np.linspace(-3.0, 4.0, 98) * 1e-310],  # subnormals and a tiny normal value
        np.r_[1.7e308, -1.7e308, -1.7e308, 1.0, -1.5e308, 2.0],  # x - mean overflows float64
    ],
    ids=["1e300 among small", "subnormal", "opposite signs at the limit"],
)
def test_a_column_mixing_magnitudes_is_standardized_as_exact_arithmetic_does(tmp_path, column):
    mean, std = _exact_moments(column)
    rest = np.linspace(0.0, 1.0, len(column))
    X = np.c_[column, rest, rest**2]
    y = (np.arange(len(column)) % 2).astype(np.int64)
    m = gpunn.MLP([D, 4, 1], **MODEL)
    m.fit(X, y, epochs=1, verbose=0)
    np.testing.assert_allclose(m.scaling[0][0], mean, rtol=1e-12, atol=0)
    np.testing.assert_allclose(m.scaling[1][0], std, rtol=1e-12)
    from fractions import Fraction

    from gpunn.data.moments import scale_rows

    z = scale_rows(X, m.scaling, np.empty_like(X))[:, 0]
    exact = [float((Fraction(v) - Fraction(m.scaling[0][0])) / Fraction(m.scaling[1][0])) for v in column.tolist()]
    np.testing.assert_allclose(z, exact, rtol=1e-12, atol=1e-15)
    assert np.all(np.isfinite(m.predict_proba(X)))
    np.save(tmp_path / "mixed.npy", np.c_[X, y])
    streamed = Dataset(tmp_path / "mixed.npy", target=D, block_rows=2).scaling()
    np.testing.assert_allclose(streamed[0][0], mean, rtol=1e-12, atol=0)
    np.testing.assert_allclose(streamed[1][0], std, rtol=1e-12)


# ------------------------------------------------------------------------ files changed under a stream
def _flip_a_byte_in_a_data_page(path, out, group=2, column=1):
    """A copy of a Parquet file with one byte flipped among the values of a data page."""
    chunk = pq.ParquetFile(path).metadata.row_group(group).column(column)
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset + chunk.total_compressed_size - 20] ^= 0x40  # inside the last values of the page
    out.write_bytes(bytes(data))
    return out


def test_a_flipped_byte_in_a_checksummed_page_is_an_error_naming_the_file(tmp_path):
    X, y = _rows()
    table = pa.table({**{f"f{j}": X[:, j] for j in range(D)}, "label": y})
    pq.write_table(table, tmp_path / "good.parquet", row_group_size=64, write_page_checksum=True,
                   compression="none", use_dictionary=False)  # fmt: skip
    bad = _flip_a_byte_in_a_data_page(tmp_path / "good.parquet", tmp_path / "flip.parquet")
    unverified = pq.read_table(bad).column("f1").to_numpy()  # read without checking: a value silently changed
    assert np.sum(unverified != X[:, 1]) == 1
    read = _error(lambda: gpunn.data.read(bad, target="label"))
    assert re.search(r"flip.parquet: row group 2 of 5 cannot be read \(.*CRC checksum verification failed", read)
    streamed = _fit_fails(Dataset(bad, "label"))
    assert re.search(r"flip.parquet, row group 2: cannot be read: .*CRC checksum verification failed", streamed)
    gpunn.data.read(tmp_path / "good.parquet", target="label")  # the intact file reads


def test_an_npy_file_rewritten_in_place_with_its_time_put_back_is_caught(tmp_path):
    X, y = _rows()
    path = tmp_path / "d.npy"
    np.save(path, np.c_[X, y])
    ds = Dataset(path, target=D, block_rows=50)
    m = gpunn.MLP([D, 4, 1], device="cpu", dtype="float64")
    offset = os.path.getsize(path) - np.c_[X, y].nbytes  # where the values start, after the header
    stamp = os.stat(path)

    def rewrite(model, record):
        if model.epoch == 2:  # same size, new values, and the modification time restored
            with open(path, "r+b") as f:
                f.seek(offset)
                f.write(np.c_[X[::-1], y[::-1]].tobytes())
            os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))

    with pytest.raises(gpunn.InputError, match=r"d.npy changed while gpunn was streaming it \(its content differs"):
        m.fit(ds, epochs=5, batch_size=20, verbose=0, callbacks=[rewrite])
    assert m.epoch == 2 and os.stat(path).st_mtime_ns == stamp.st_mtime_ns
    # the separate target file of a pair is checked too
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    pair = Dataset(tmp_path / "x.npy", target=str(tmp_path / "y.npy"), block_rows=50)
    before = os.stat(tmp_path / "y.npy")
    np.save(tmp_path / "y.npy", 1 - y)
    os.utime(tmp_path / "y.npy", ns=(before.st_atime_ns, before.st_mtime_ns))
    message = _error(lambda: gpunn.MLP([D, 4, 1], device="cpu").fit(pair, verbose=0))
    assert re.search(r"y.npy changed while gpunn was streaming it \(its content differs", message)


def test_the_content_check_reads_a_few_pieces_whatever_the_files_size(tmp_path, monkeypatch):
    from gpunn.data import dataset

    monkeypatch.setattr(dataset, "DIGEST_BYTES", 64)
    path = tmp_path / "big.npy"
    rows = np.arange(50_000, dtype=np.float64).reshape(-1, 5)
    np.save(path, rows)
    first = dataset.content_digest(str(path))
    read: list[int] = []
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def fileno(self):
            return self.f.fileno()

        def seek(self, at):
            self.f.seek(at)

        def read(self, k=-1):
            data = self.f.read(k)
            read.append(len(data))
            return data

    monkeypatch.setattr(dataset, "open", lambda p, mode: Counting(real_open(p, mode)), raising=False)
    assert dataset.content_digest(str(path)) == first
    assert sum(read) == (dataset.DIGEST_SAMPLES + 2) * 64  # of a 400 KB file
    rows[-1, -1] = -1.0  # the last value, in the last piece, changes the fingerprint
    np.save(path, rows)
    assert dataset.content_digest(str(path)) != first
