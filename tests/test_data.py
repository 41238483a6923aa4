"""Built-in datasets, splits and CSV reading on the host."""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpunn
from gpunn import data


def _moons_geometry(X, y):
    """Two interleaving half circles of radius 1 (the classic two-moons definition, as scikit-learn's make_moons):
    class 0 on (cos t, sin t), class 1 on (1 - cos t, 0.5 - sin t), t uniform in [0, pi], Gaussian noise 0.15.
    Each class's mean is its half circle's centroid, centre + (0, +-2/pi), and its points lie at distance 1
    from the circle's centre, spread radially by the noise."""
    for label, centre, side in [(0, (0.0, 0.0), 1.0), (1, (1.0, 0.5), -1.0)]:
        P = X[y == label]
        np.testing.assert_allclose(P.mean(axis=0), [centre[0], centre[1] + side * 2 / np.pi], atol=0.05)
        d = np.linalg.norm(P - centre, axis=1)
        assert abs(np.mean(d) - 1.0) < 0.05 and np.std(d) == pytest.approx(0.15, rel=0.25)
        assert np.mean(side * (P[:, 1] - centre[1]) > -0.15) > 0.9  # the upper (class 0), lower (class 1) half


def _circles_geometry(X, y):
    """A circle of radius 1 (class 0) around one of radius 0.5 (class 1), both centred at 0, noise 0.08: the
    radius 0.75 separates the classes (3 noise standard deviations from each)."""
    r = np.linalg.norm(X, axis=1)
    for label, radius in [(0, 1.0), (1, 0.5)]:
        np.testing.assert_allclose(X[y == label].mean(axis=0), [0.0, 0.0], atol=0.03)
        assert abs(np.mean(r[y == label]) - radius) < 0.03 and np.std(r[y == label]) == pytest.approx(0.08, rel=0.25)
    assert np.mean((r < 0.75) == (y == 1)) > 0.98


def _spirals_geometry(X, y):
    """Arm c of 3: radius r in [0.05, 1] and angle c 2 pi / 3 + 4 r plus Gaussian noise 0.2 (on the angle only)."""
    r = np.linalg.norm(X, axis=1)
    assert r.min() >= 0.05 - 1e-12 and r.max() <= 1.0 + 1e-12
    assert r.min() < 0.06 and r.max() > 0.99
    residual = np.angle(np.exp(1j * (np.arctan2(X[:, 1], X[:, 0]) - y * 2 * np.pi / 3 - 4 * r)))  # in (-pi, pi]
    assert abs(np.mean(residual)) < 0.05 and np.std(residual) == pytest.approx(0.2, rel=0.2)


@pytest.mark.parametrize("name,classes", [("moons", 2), ("circles", 2), ("spirals", 3)])
def test_builtin_datasets_are_seeded_and_balanced(name, classes):
    X, y = data.make_dataset(name, 300, seed=4)
    X2, y2 = data.make_dataset(name, 300, seed=4)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert X.shape == (300, 2) and y.shape == (300,)
    assert np.bincount(y).tolist() == [300 // classes] * classes
    assert not np.array_equal(X, data.make_dataset(name, 300, seed=5)[0])
    geometry = {"moons": _moons_geometry, "circles": _circles_geometry, "spirals": _spirals_geometry}[name]
    for seed in (4, 5):
        geometry(*data.make_dataset(name, 300, seed=seed))


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda: data.make_moons(-1), r"^n_samples must be an integer >= 1; got -1$"),  # was NumPy's ValueError
        (lambda: data.make_moons(1.5), r"^n_samples must be an integer >= 1; got 1.5$"),  # was a TypeError
        (lambda: data.make_circles("100"), r"^n_samples must be an integer >= 1; got '100'$"),
        (lambda: data.make_moons(10, noise=float("nan")), r"^noise must be a finite number >= 0; got nan$"),  # NaN X
        (lambda: data.make_spirals(10, noise=-0.1), r"^noise must be a finite number >= 0; got -0.1$"),
        (lambda: data.make_spirals(10, n_classes=0), r"^n_classes must be an integer >= 2; got 0$"),
        (lambda: data.make_circles(10, factor=1.5), r"^factor must be in \[0, 1\); got 1.5$"),
        (lambda: data.make_moons(10, seed=-1), r"^seed must be an integer >= 0; got -1$"),
    ],
)
def test_builtin_dataset_arguments_are_checked(make, pattern):
    with pytest.raises(gpunn.ConfigError, match=pattern):
        make()


def test_train_test_split_partitions_the_rows():
    X = np.arange(50, dtype=float).reshape(25, 2)
    y = np.arange(25)
    X_tr, X_te, y_tr, y_te = data.train_test_split(X, y, test_size=0.2, seed=1)
    assert len(X_te) == 5 and len(X_tr) == 20
    assert sorted(np.concatenate([y_tr, y_te]).tolist()) == list(range(25))
    np.testing.assert_array_equal(X_tr[:, 0], 2 * y_tr)
    with pytest.raises(gpunn.InputError, match="test_size"):
        data.train_test_split(X, y, test_size=1.5)


def write(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_csv_separates_the_target(tmp_path):
    path = write(tmp_path, "a,b,label\n1,2,0\n3,4.5,1\n\n-1,1e3,1\n")
    X, y, names = data.read_csv(path, target="label")
    np.testing.assert_array_equal(X, [[1, 2], [3, 4.5], [-1, 1000]])
    np.testing.assert_array_equal(y, [0, 1, 1])
    assert names == ["a", "b"]


@pytest.mark.parametrize(
    "text,target,pattern",
    [
        ("a,b,y\n1,2,0\n3,4\n", "y", r"d.csv: line 3 has 2 fields but the header has 3"),
        ("a,b,y\n1,2,0\n3,x,1\n", "y", r"d.csv: line 3, column 'b': non-numeric value 'x'"),
        ("a,b,y\n1,,0\n", "y", r"line 2, column 'b': an empty cell"),
        ("a,b,y\n1,2,0\n3,nan,1\n", "y", r"line 3, column 'b': nan is not a finite number"),
        ("a,b,y\n", "y", r"no data rows"),
        ("", "y", r"file is empty"),
        ("a,b,y\n1,2,0\n", "label", r"target column 'label' is not in the header \(a, b, y\)"),
        ("a,b,y\n1,2,cat\n", "y", r"line 2, column 'y': non-numeric value 'cat'"),
    ],
)
def test_read_csv_errors_name_the_line_and_column(tmp_path, text, target, pattern):
    with pytest.raises(gpunn.InputError, match=pattern):
        data.read_csv(write(tmp_path, text), target=target)


def test_read_csv_missing_file(tmp_path):
    with pytest.raises(gpunn.InputError, match="missing.csv: cannot read"):
        data.read_csv(tmp_path / "missing.csv")


def test_split_in_place_gives_the_same_split_as_views_of_the_shuffled_input():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((101, 3)).astype(np.float32), rng.integers(0, 5, 101)
    expected = data.train_test_split(X, y, test_size=0.3, seed=9)
    X2, y2 = X.copy(), y.copy()
    got = data.train_test_split(X2, y2, test_size=0.3, seed=9, copy=False)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert all(np.shares_memory(part, X2) for part in got[:2]) and all(np.shares_memory(p, y2) for p in got[2:])
    X2.setflags(write=False)
    with pytest.raises(gpunn.InputError, match="writeable NumPy arrays"):
        data.train_test_split(X2, y2, copy=False)
    with pytest.raises(gpunn.InputError, match="X has 101 rows but y has 100"):
        data.train_test_split(X, y[:100])


@pytest.mark.parametrize("n", [0, 1, 2, 7, 64])
def test_permute_rows_in_place_equals_fancy_indexing(n):
    rng = np.random.default_rng(n)
    for _ in range(20):
        a, order = rng.standard_normal((n, 4)), rng.permutation(n)
        expected = a[order]
        data.permute_rows(a, order)
        np.testing.assert_array_equal(a, expected)
        b = rng.integers(0, 100, n)
        expected = b[order]
        data.permute_rows(b, order)
        np.testing.assert_array_equal(b, expected)


def test_read_csv_in_blocks_matches_a_float64_reference(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    values = rng.standard_normal((23, 4)) * 10.0 ** rng.integers(-8, 8, (23, 4))
    lines = ["a,b,label,c"]
    for i, row in enumerate(values):
        cells = [repr(float(v)) for v in row]
        cells[1] = f'"{cells[1]}"' if i % 5 == 0 else f" {cells[1]} "  # quoted, and padded, cells
        lines.append(",".join(cells))
        if i % 4 == 0:
            lines.append("" if i % 8 else " , ,,")  # blank rows are skipped
    path = write(tmp_path, "\n".join(lines))  # and no newline after the last row
    monkeypatch.setattr(data.readers, "BLOCK_ROWS", 3)  # many blocks, and a partial last one
    X, y, names = data.read_csv(path, target="label")
    assert names == ["a", "b", "c"] and X.dtype == np.float64 and X.shape == (23, 3)
    np.testing.assert_array_equal(X, values[:, [0, 1, 3]])
    np.testing.assert_array_equal(y, values[:, 2])
    X32, y32, _ = data.read_csv(path, target="label", dtype="float32")
    assert X32.dtype == np.float32 and X32.flags.c_contiguous
    np.testing.assert_array_equal(X32, values[:, [0, 1, 3]].astype(np.float32))
    np.testing.assert_array_equal(y32, values[:, 2])
    everything, no_target, header = data.read_csv(path)
    assert no_target is None and header == ["a", "b", "label", "c"]
    np.testing.assert_array_equal(everything, values)
    with pytest.raises(gpunn.InputError, match="reads float32 or float64, not int64"):
        data.read_csv(path, dtype="int64")


@pytest.mark.parametrize(
    "bad,pattern",
    [
        ("1,2", r"line 16 has 2 fields but the header has 3"),
        ("1,2,3,", r"line 16 has 4 fields but the header has 3"),
        ("1,--2,3", r"line 16, column 'b': non-numeric value '--2'"),
        ("1,2,inf", r"line 16, column 'y': inf is not a finite number"),
        ("1,1e999,3", r"line 16, column 'b': inf is not a finite number"),
    ],
)
def test_read_csv_names_the_line_of_a_bad_row_in_a_later_block(tmp_path, monkeypatch, bad, pattern):
    rows = ["a,b,y"] + [f"{i},{i + 1},0" for i in range(12)] + ["", ""] + [bad] + ["5,6,1"]
    monkeypatch.setattr(data.readers, "BLOCK_ROWS", 4)
    with pytest.raises(gpunn.InputError, match=f"d.csv: {pattern}"):
        data.read_csv(write(tmp_path, "\n".join(rows) + "\n"), target="y")


def test_read_csv_from_a_pipe_grows_as_it_reads(tmp_path, monkeypatch):
    import threading

    rng = np.random.default_rng(8)
    values = rng.standard_normal((50, 3))
    text = "a,y,b\n" + "".join(",".join(repr(float(v)) for v in row) + "\n" for row in values)
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=(text,))
    writer.start()
    monkeypatch.setattr(data.readers, "BLOCK_ROWS", 4)  # allocated for 4 rows, doubled as the rows arrive
    X, y, names = data.read_csv(fifo, target="y", dtype="float32")
    writer.join()
    assert names == ["a", "b"]
    np.testing.assert_array_equal(X, values[:, [0, 2]].astype(np.float32))
    np.testing.assert_array_equal(y, values[:, 1])


def test_read_csv_reads_gzip_and_rejects_class_names(tmp_path):
    import gzip

    text = "a,y,b\n1.5,0,2\n\n-3,1,4e-3\n"
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(text.encode()))
    X, y, names = data.read_csv(tmp_path / "d.csv.gz", target="y")
    np.testing.assert_array_equal(X, [[1.5, 2], [-3, 4e-3]])
    np.testing.assert_array_equal(y, [0, 1])
    assert names == ["a", "b"]
    (tmp_path / "c.csv").write_text("a,y\n1,yes\n")  # read_csv's target is numeric; data.read takes class names
    with pytest.raises(gpunn.InputError, match=r"c.csv: line 2, column 'y': non-numeric value 'yes'"):
        data.read_csv(tmp_path / "c.csv", target="y")
    assert data.read(tmp_path / "c.csv", target="y").y.tolist() == ["yes"]
