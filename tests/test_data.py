"""Built-in datasets, splits and CSV reading on the host."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn import data


@pytest.mark.parametrize("name,classes", [("moons", 2), ("circles", 2), ("spirals", 3)])
def test_builtin_datasets_are_seeded_and_balanced(name, classes):
    X, y = data.make_dataset(name, 300, seed=4)
    X2, y2 = data.make_dataset(name, 300, seed=4)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert X.shape == (300, 2) and y.shape == (300,)
    assert np.bincount(y).tolist() == [300 // classes] * classes
    assert not np.array_equal(X, data.make_dataset(name, 300, seed=5)[0])


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
