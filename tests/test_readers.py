"""gpunn.data.read on every format it takes, against pandas, pyarrow and NumPy reading the same files.

Each file is written with pandas, pyarrow or NumPy directly (never with gpunn), and the oracle is pandas'
(or NumPy's) own read of that file (CSV with pandas' Python engine, Python's correctly rounded ``float``): X
must equal it exactly in float64 and equal its float32 rounding."""

from __future__ import annotations

import gzip
import io
import os
import sys
import threading

import numpy as np
import pandas as pd
import pytest

import gpunn
from gpunn import data

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SPECIES = np.array(["setosa", "versicolor", "virginica"])


def frame(n: int = 97, seed: int = 0) -> pd.DataFrame:
    """Features of many magnitudes (float and int), a class-name target and a numeric one."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "f0": rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n),
            "f1": rng.integers(-1000, 1000, n),
            "species": SPECIES[rng.integers(0, 3, n)],
            "f2": rng.uniform(-1, 1, n).astype(np.float32),
            "score": rng.standard_normal(n),
        }
    )


def without_pyarrow(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError


def check(result, X_expected, y_expected, names, target_name):
    """``result`` (float64) against the oracle: exact values, dtypes, names; the arrays usable in place."""
    X, y, feature_names, target = result
    assert X.dtype == np.float64 and X.flags.c_contiguous and X.flags.writeable
    np.testing.assert_array_equal(X, np.asarray(X_expected, dtype=np.float64))
    assert feature_names == names and target == target_name
    if y_expected is None:
        assert y is None
    elif np.asarray(y_expected).dtype.kind in "OUST":
        assert y.dtype == object and y.flags.writeable and all(type(v) is str for v in y)
        assert y.tolist() == [str(v) for v in y_expected]
    else:
        assert y.dtype == np.float64 and y.flags.writeable
        np.testing.assert_array_equal(y, np.asarray(y_expected, dtype=np.float64))


# --------------------------------------------------------------------------------- every format, one table
def write(df: pd.DataFrame, path, fmt: str) -> None:
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "csv.gz":
        df.to_csv(path, index=False, compression="gzip")
    elif fmt == "parquet":
        df.to_parquet(path, index=False, row_group_size=20, write_page_checksum=True)  # several row groups
    elif fmt == "feather":
        df.to_feather(path)  # Arrow IPC file, lz4-compressed
    elif fmt == "arrow":  # uncompressed IPC file of several record batches, written with pyarrow
        table = pa.Table.from_pandas(df, preserve_index=False)
        with pa.ipc.new_file(str(path), table.schema) as writer:
            for batch in table.to_batches(max_chunksize=30):
                writer.write_batch(batch)


def oracle(path, fmt: str) -> pd.DataFrame:
    if fmt.startswith("csv"):
        return pd.read_csv(path, engine="python")
    if fmt == "parquet":
        return pd.read_parquet(path)
    return pd.read_feather(path)


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet", "feather", "arrow"])
@pytest.mark.parametrize("target", ["species", "score"])
def test_read_equals_the_oracle_in_every_format(tmp_path, fmt, target):
    path = tmp_path / f"table.{fmt}"
    write(frame(), path, fmt)
    expected = oracle(path, fmt)
    names = [c for c in expected.columns if c != target]
    if target == "score":  # species is then a feature: not numeric
        with pytest.raises(gpunn.InputError, match=f"{path.name}: .*'species'.*(not numeric|non-numeric value)"):
            data.read(path, target=target)
        names.remove("species")
    got = data.read(path, target=target, features=names, dtype="float64")
    X_expected = expected[names].to_numpy(dtype=np.float64)
    check(got, X_expected, expected[target].to_numpy(), names, target)
    X32, y32, _, _ = data.read(path, target=target, features=names)  # float32 is the default
    assert X32.dtype == np.float32 and X32.flags.c_contiguous
    np.testing.assert_array_equal(X32, X_expected.astype(np.float32))
    assert y32.tolist() == got.y.tolist()


@pytest.mark.parametrize("fmt", ["csv", "csv without pyarrow", "parquet", "feather"])
def test_features_pick_and_order_columns_and_other_columns_are_not_read(tmp_path, monkeypatch, fmt):
    df = frame(40, seed=1)
    df["id"] = [f"row-{i}" for i in range(len(df))]  # not numeric, not asked for
    fmt, _, slow = fmt.partition(" ")
    path = tmp_path / f"t.{fmt}"
    write(df, path, fmt)
    expected = oracle(path, fmt)
    if slow:
        without_pyarrow(monkeypatch)
    check(
        data.read(path, features=["f2", "f0"], dtype="float64"),
        expected[["f2", "f0"]].to_numpy(np.float64), None, ["f2", "f0"], None,
    )  # fmt: skip
    check(
        data.read(path, target="species", features=["f1"], dtype="float64"),
        expected[["f1"]].to_numpy(np.float64), expected["species"].to_numpy(), ["f1"], "species",
    )  # fmt: skip


def test_npy_names_columns_by_index(tmp_path):
    rng = np.random.default_rng(2)
    values = rng.standard_normal((33, 5)) * 10.0 ** rng.integers(-5, 5, (33, 5))
    np.save(tmp_path / "d.npy", values)
    expected = np.load(tmp_path / "d.npy")
    for target in (-1, "4", 4):
        check(data.read(tmp_path / "d.npy", target=target, dtype="float64"),
              expected[:, :4], expected[:, 4], ["0", "1", "2", "3"], "4")  # fmt: skip
    check(data.read(tmp_path / "d.npy", target="0", features=["3", 1], dtype="float64"),
          expected[:, [3, 1]], expected[:, 0], ["3", "1"], "0")  # fmt: skip
    check(data.read(tmp_path / "d.npy", dtype="float64"), expected, None, ["0", "1", "2", "3", "4"], None)
    X32 = data.read(tmp_path / "d.npy", target=-1).X
    np.testing.assert_array_equal(X32, expected[:, :4].astype(np.float32))
    np.save(tmp_path / "i.npy", np.arange(12, dtype=np.int16).reshape(4, 3))  # integers are numbers too
    check(data.read(tmp_path / "i.npy", target=0, dtype="float64"),
          np.arange(12).reshape(4, 3)[:, 1:], [0, 3, 6, 9], ["1", "2"], "0")  # fmt: skip


def test_npz_holds_X_its_names_and_a_target_array(tmp_path):
    df = frame(50, seed=3)
    X = df[["f0", "f1", "f2"]].to_numpy(np.float64)
    np.savez(tmp_path / "d.npz", X=X, y=df["species"].to_numpy(dtype=str), score=df["score"].to_numpy(),
             feature_names=np.array(["f0", "f1", "f2"]))  # fmt: skip
    stored = np.load(tmp_path / "d.npz")
    check(data.read(tmp_path / "d.npz", target="y", dtype="float64"),
          stored["X"], stored["y"], ["f0", "f1", "f2"], "y")  # fmt: skip
    check(data.read(tmp_path / "d.npz", target="score", features=["f2"], dtype="float64"),
          stored["X"][:, [2]], stored["score"], ["f2"], "score")  # fmt: skip
    np.savez_compressed(tmp_path / "plain.npz", X=X)  # no names: columns by index; no target: prediction data
    check(data.read(tmp_path / "plain.npz", dtype="float64"), X, None, ["0", "1", "2"], None)


# ---------------------------------------------------------------------------- CSV, with and without pyarrow
@pytest.mark.parametrize("target", ["species", "score", None])
@pytest.mark.parametrize("fmt", ["csv", "csv.gz"])
def test_csv_without_pyarrow_gives_the_same_result(tmp_path, monkeypatch, target, fmt):
    path = tmp_path / f"t.{fmt}"
    write(frame(150, seed=4).drop(columns=[] if target else ["species"]), path, fmt)
    features = None if target == "species" else ["f0", "f1", "f2"] if target else None
    fast = data.read(path, target=target, features=features, dtype="float64")
    monkeypatch.setattr(data.readers, "BLOCK_ROWS", 16)  # many blocks
    without_pyarrow(monkeypatch)
    slow = data.read(path, target=target, features=features, dtype="float64")
    check(slow, fast.X, fast.y, fast.feature_names, fast.target_name)
    for other in ("x.parquet", "x.feather"):
        (tmp_path / other).write_bytes(b"PAR1")
        with pytest.raises(
            gpunn.ConfigError, match=f"{other}: reading .* needs pyarrow .*pip install 'gpunn\\[data\\]'"
        ):
            data.read(tmp_path / other, target="y")


def test_class_names_after_numeric_rows_and_cells_pyarrow_refuses(tmp_path, monkeypatch):
    """Targets that look numeric in the first blocks, then a class name: every cell is kept as text. A line of
    spaces and commas (skipped), ``1_000`` and CR line ends, which pyarrow refuses or splits otherwise."""
    lines = ["a,b,y"] + [f"{i},{i / 3!r},{i % 3}" for i in range(40)] + ["7,1_000, cat "] + [" , ,,", "8,2,3"]
    path = tmp_path / "d.csv"
    path.write_text("\r".join(lines) + "\r")
    same = "\n".join(line.replace("1_000", "1000") for line in lines if line != " , ,,")  # what gpunn reads
    expected = pd.read_csv(io.StringIO(same), dtype={"y": str}, engine="python")
    X = expected[["a", "b"]].astype(np.float64).to_numpy()
    y = expected["y"].str.strip().to_numpy()
    check(data.read(path, target="y", dtype="float64"), X, y, ["a", "b"], "y")
    monkeypatch.setattr(data.readers, "SEGMENT_BYTES", 64)  # CR line ends: one line longer than a segment
    check(data.read(path, target="y", dtype="float64"), X, y, ["a", "b"], "y")
    monkeypatch.setattr(data.readers, "BLOCK_ROWS", 8)
    without_pyarrow(monkeypatch)
    check(data.read(path, target="y", dtype="float64"), X, y, ["a", "b"], "y")


@pytest.mark.parametrize("fmt", ["csv", "csv.gz"])
def test_pyarrow_reads_a_large_csv_in_segments(tmp_path, monkeypatch, fmt):
    rng = np.random.default_rng(5)
    df = pd.DataFrame(rng.standard_normal((300, 6)), columns=list("abcdef"))
    df["label"] = rng.choice(["cat", "dog", "emu"], 300)
    path = tmp_path / f"d.{fmt}"
    df.to_csv(path, index=False, lineterminator="\r\n", encoding="utf-8-sig")  # and a byte-order mark
    expected = pd.read_csv(path, engine="python", encoding="utf-8-sig")
    monkeypatch.setattr(data.readers, "SEGMENT_BYTES", 1000)  # about 10 rows a segment, lines cut across segments
    monkeypatch.setattr(data.readers, "BLOCK_ROWS", 16)  # a .gz file's X grows from 16 rows
    monkeypatch.setattr(data.readers, "_read_csv_numpy", None)  # and pyarrow reads all of it
    check(data.read(path, target="label", dtype="float64"),
          expected[list("abcdef")].to_numpy(), expected["label"].to_numpy(), list("abcdef"), "label")  # fmt: skip


def test_a_pipe_is_read_as_csv_with_class_names(tmp_path, monkeypatch):
    df = frame(60, seed=6)[["f0", "f2", "species"]]
    text = df.to_csv(index=False)
    fifo = tmp_path / "rows"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=(text,))
    writer.start()
    monkeypatch.setattr(data.readers, "BLOCK_ROWS", 8)
    got = data.read(fifo, target="species", dtype="float64")
    writer.join()
    (tmp_path / "same.csv").write_text(text)
    expected = pd.read_csv(tmp_path / "same.csv", engine="python")
    check(got, expected[["f0", "f2"]].to_numpy(), expected["species"].to_numpy(), ["f0", "f2"], "species")


# ------------------------------------------------------------------------------------------- bad input
CSV_ERRORS = [
    ("a,b,y\n1,2,0\n3,x,1\n", {"target": "y"}, r"line 3, column 'b': non-numeric value 'x'"),
    ("a,b,y\n1,,0\n", {"target": "y"}, r"line 2, column 'b': an empty cell"),
    ("a,b,y\n1,2,yes\n\n3,4, \n", {"target": "y"}, r"line 4, column 'y': an empty cell"),
    ("a,b,y\n1,2,0\n3,nan,1\n", {"target": "y"}, r"line 3, column 'b': nan is not a finite number"),
    ("a,b,y\n1,2,0\n3,4,inf\n", {"target": "y"}, r"line 3, column 'y': inf is not a finite number"),
    ("a,b,y\n1,2,0\n3,4\n", {"target": "y"}, r"line 3 has 2 fields but the header has 3"),
    ("a,b,y\n1,2,0\n3,4,5,\n", {"target": "y"}, r"line 3 has 4 fields but the header has 3"),
    ("a,b,y\n", {"target": "y"}, r"no data rows"),
    ("a,b,y\n1,2,0\n", {"target": "label"}, r"target column 'label' is not in the header \(a, b, y\)"),
    ("a,b,y\n1,2,0\n", {"features": ["a", "zz"]}, r"feature column 'zz' is not in the header \(a, b, y\)"),
    ("a,b,y\n1,2,yes\n3,no,no\n", {"target": "y"}, r"line 3, column 'b': non-numeric value 'no'"),
    ("a,a,y\n1,2,0\n", {"target": "y"}, r"column 'a' appears more than once in the header"),
]


@pytest.mark.parametrize("arrow", [True, False], ids=["pyarrow", "numpy"])
@pytest.mark.parametrize("text,kwargs,pattern", CSV_ERRORS)
def test_csv_errors_name_the_file_line_and_column(tmp_path, monkeypatch, arrow, text, kwargs, pattern):
    path = tmp_path / "d.csv"
    path.write_text(text)
    if not arrow:
        without_pyarrow(monkeypatch)
    with pytest.raises(gpunn.InputError, match=f"d.csv: ({pattern})"):
        data.read(path, **kwargs)


@pytest.mark.parametrize("name", ["d.csv", "d.csv.gz", "d.parquet", "d.feather", "d.arrow", "d.npy", "d.npz"])
def test_empty_missing_and_unknown_files(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(gpunn.InputError, match=f"{name}: file is empty"):
        data.read(tmp_path / name, target="y")
    with pytest.raises(gpunn.InputError, match=f"missing-{name}: cannot read"):
        data.read(tmp_path / f"missing-{name}", target="y")
    (tmp_path / "d.xlsx").write_bytes(b"PK")
    with pytest.raises(gpunn.InputError, match=r"d.xlsx: unknown type of data file; gpunn reads .csv.gz, .csv"):
        data.read(tmp_path / "d.xlsx")


def test_corrupt_csv_gz(tmp_path):
    (tmp_path / "d.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(gpunn.InputError, match=r"d.csv.gz: cannot read \(Not a gzipped file"):
        data.read(tmp_path / "d.csv.gz", target="y")
    whole = gzip.compress(b"a,y\n" + b"1,0\n" * 5000)
    (tmp_path / "t.csv.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(gpunn.InputError, match=r"t.csv.gz: not a readable CSV text file \(Compressed file ended"):
        data.read(tmp_path / "t.csv.gz", target="y")


def test_bad_parquet_files(tmp_path):
    df = frame(80, seed=7)
    df.to_parquet(tmp_path / "d.parquet", index=False, row_group_size=20, write_page_checksum=True)
    raw = (tmp_path / "d.parquet").read_bytes()
    (tmp_path / "half.parquet").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(gpunn.InputError, match=r"half.parquet: not a readable Parquet file \(Parquet magic bytes"):
        data.read(tmp_path / "half.parquet", target="species")
    (tmp_path / "csv.parquet").write_text("a,b\n1,2\n")
    with pytest.raises(gpunn.InputError, match=r"csv.parquet: not a readable Parquet file"):
        data.read(tmp_path / "csv.parquet", target="species")
    # overwrite the page header of row group 2's first column: the footer is intact, the data is not
    start = pq.ParquetFile(tmp_path / "d.parquet").metadata.row_group(2).column(0).data_page_offset
    corrupt = bytearray(raw)
    corrupt[start : start + 64] = b"\xff" * 64
    (tmp_path / "corrupt.parquet").write_bytes(bytes(corrupt))
    with pytest.raises(gpunn.InputError, match=r"corrupt.parquet: row group 2 of 4 cannot be read \(.+\); the file"):
        data.read(tmp_path / "corrupt.parquet", target="species")
    with pytest.raises(gpunn.InputError, match=r"d.parquet: feature column 'species' \((large_)?string\) is not "):
        data.read(tmp_path / "d.parquet", target="score")
    with pytest.raises(gpunn.InputError, match=r"d.parquet: target column 'label' is not in the file's columns \(f0,"):
        data.read(tmp_path / "d.parquet", target="label")
    with pytest.raises(gpunn.InputError, match=r"d.parquet: feature columns 'g', 'h' are not in the file's columns"):
        data.read(tmp_path / "d.parquet", target="species", features=["f0", "g", "h"])
    holes = df.astype({"f1": "float64"})
    holes.loc[45, "f1"], holes.loc[70, "f2"] = None, np.inf
    holes.to_parquet(tmp_path / "holes.parquet", index=False, row_group_size=20)
    with pytest.raises(gpunn.InputError, match=r"holes.parquet: row 45 \(row group 2\), column 'f1': a missing value"):
        data.read(tmp_path / "holes.parquet", target="species")
    with pytest.raises(gpunn.InputError, match=r"holes.parquet: row 70 \(row group 3\), column 'f2': inf is not a "):
        data.read(tmp_path / "holes.parquet", target="species", features=["f0", "f2"])
    df.iloc[:0].to_parquet(tmp_path / "none.parquet", index=False)
    with pytest.raises(gpunn.InputError, match=r"none.parquet: no data rows"):
        data.read(tmp_path / "none.parquet", target="species")
    numeric_target = df.assign(score=df["score"].where(df.index != 33))  # a null target
    numeric_target.to_parquet(tmp_path / "nt.parquet", index=False, row_group_size=20)
    with pytest.raises(gpunn.InputError, match=r"nt.parquet: row 33 \(row group 1\), column 'score': a missing"):
        data.read(tmp_path / "nt.parquet", target="score", features=["f0"])


def test_parquet_types_a_target_may_have(tmp_path):
    df = frame(30, seed=8)
    df["kind"] = pd.Categorical(df["species"])  # dictionary-encoded strings
    df["flag"] = df["f1"] > 0  # booleans: numbers
    df.to_parquet(tmp_path / "d.parquet", index=False)
    expected = pd.read_parquet(tmp_path / "d.parquet")
    for target in ("kind", "flag"):
        check(data.read(tmp_path / "d.parquet", target=target, features=["f0", "flag" if target == "kind" else "f2"],
                        dtype="float64"),
              expected[["f0", "flag" if target == "kind" else "f2"]].to_numpy(np.float64),
              expected[target].to_numpy(dtype=object if target == "kind" else np.float64),
              ["f0", "flag" if target == "kind" else "f2"], target)  # fmt: skip
    pd.DataFrame({"a": [1.0, 2.0], "when": pd.to_datetime(["2024-01-01", "2024-01-02"])}).to_parquet(tmp_path / "t.pq")
    os.rename(tmp_path / "t.pq", tmp_path / "t.parquet")
    with pytest.raises(gpunn.InputError, match=r"t.parquet: target column 'when' has type timestamp"):
        data.read(tmp_path / "t.parquet", target="when")


def test_bad_feather_files(tmp_path):
    df = frame(50, seed=9)
    df.to_feather(tmp_path / "d.feather")
    raw = (tmp_path / "d.feather").read_bytes()
    (tmp_path / "half.feather").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(gpunn.InputError, match=r"half.feather: not a readable Feather or Arrow IPC file \(Not an"):
        data.read(tmp_path / "half.feather", target="species")
    table = pa.Table.from_pandas(df, preserve_index=False)
    with pa.ipc.new_stream(str(tmp_path / "s.arrow"), table.schema) as writer:  # the stream format reads too
        for batch in table.to_batches(max_chunksize=16):
            writer.write_batch(batch)
    check(data.read(tmp_path / "s.arrow", target="species", dtype="float64"),
          df[["f0", "f1", "f2", "score"]].to_numpy(np.float64), df["species"].to_numpy(),
          ["f0", "f1", "f2", "score"], "species")  # fmt: skip
    raw = (tmp_path / "s.arrow").read_bytes()
    (tmp_path / "cut.arrow").write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(gpunn.InputError, match=r"cut.arrow: record batch \d cannot be read \(.+\); the file is"):
        data.read(tmp_path / "cut.arrow", target="species")
    with pytest.raises(gpunn.InputError, match=r"d.feather: target column 'label' is not in the file's columns"):
        data.read(tmp_path / "d.feather", target="label")


def test_bad_npy_and_npz_files(tmp_path):
    values = np.arange(30, dtype=np.float64).reshape(10, 3)
    np.save(tmp_path / "d.npy", values)
    raw = (tmp_path / "d.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-20])
    with pytest.raises(gpunn.InputError, match=r"cut.npy: truncated: its header promises a 10 x 3 float64 array "
                                               r"\(240 bytes of data\) but the file holds 220 bytes"):  # fmt: skip
        data.read(tmp_path / "cut.npy", target=-1)
    (tmp_path / "junk.npy").write_bytes(b"junk" * 20)
    with pytest.raises(gpunn.InputError, match=r"junk.npy: not a readable .npy file \(.*magic"):
        data.read(tmp_path / "junk.npy", target=-1)
    np.save(tmp_path / "obj.npy", np.array([[{}, 1]], dtype=object), allow_pickle=True)
    with pytest.raises(gpunn.InputError, match=r"obj.npy: holds Python objects"):
        data.read(tmp_path / "obj.npy", target=-1)
    np.save(tmp_path / "flat.npy", np.arange(5.0))
    with pytest.raises(gpunn.InputError, match=r"flat.npy: holds an array of shape \(5,\); .* 2-D"):
        data.read(tmp_path / "flat.npy", target=0)
    np.save(tmp_path / "text.npy", np.array([["a", "b"]]))
    with pytest.raises(gpunn.InputError, match=r"text.npy: holds <U1 values, not numbers"):
        data.read(tmp_path / "text.npy", target=0)
    with pytest.raises(gpunn.InputError, match=r"d.npy: a .npy file's columns are named by index .* not 'label'"):
        data.read(tmp_path / "d.npy", target="label")
    with pytest.raises(gpunn.InputError, match=r"d.npy: column 3 is out of range for an array of 3 columns"):
        data.read(tmp_path / "d.npy", target=3)
    values[7, 1] = np.nan
    np.save(tmp_path / "nan.npy", values)
    with pytest.raises(gpunn.InputError, match=r"nan.npy: row 7, column '1': nan is not a finite number"):
        data.read(tmp_path / "nan.npy", target=-1)

    np.savez(tmp_path / "d.npz", X=np.ones((4, 2)), y=np.arange(4.0))
    with pytest.raises(gpunn.InputError, match=r"d.npz: no array 'label' \(the target\) in the archive; it holds X, y"):
        data.read(tmp_path / "d.npz", target="label")
    raw = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) - 60])
    with pytest.raises(gpunn.InputError, match=r"cut.npz: not a readable .npz archive \(File is not a zip file\)"):
        data.read(tmp_path / "cut.npz", target="y")
    np.savez(tmp_path / "short.npz", X=np.ones((4, 2)), y=np.arange(3.0))
    with pytest.raises(gpunn.InputError, match=r"short.npz: the target array 'y' must hold one value per row of X"):
        data.read(tmp_path / "short.npz", target="y")
    np.savez(tmp_path / "noX.npz", features=np.ones((4, 2)), y=np.arange(4.0))
    with pytest.raises(gpunn.InputError, match=r"noX.npz: no array 'X' \(the features\) in the archive"):
        data.read(tmp_path / "noX.npz", target="y")
    np.save(tmp_path / "single.npz", np.ones((2, 2)))
    os.rename(tmp_path / "single.npz.npy", tmp_path / "single.npz")
    with pytest.raises(gpunn.InputError, match=r"single.npz: holds a single array, not an .npz archive"):
        data.read(tmp_path / "single.npz", target="y")


def test_options_are_checked(tmp_path):
    frame(10).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(gpunn.ConfigError, match=r"read reads float32 or float64, not int64"):
        data.read(tmp_path / "d.csv", target="species", dtype="int64")
    with pytest.raises(gpunn.ConfigError, match=r"features takes a non-empty list of column names"):
        data.read(tmp_path / "d.csv", target="species", features="f0")
    with pytest.raises(gpunn.ConfigError, match=r"the target 'f0' is also listed among the features"):
        data.read(tmp_path / "d.csv", target="f0", features=["f0", "f1"])
