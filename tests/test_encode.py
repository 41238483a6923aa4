"""Text categories and empty cells inside the model (gpunn.feed.encode): the encoding against scikit-learn's
OneHotEncoder + SimpleImputer and a pandas reference written here, training on it, the model file, ONNX."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpunn
from gpunn.feed import encode

pd = pytest.importorskip("pandas")


def _frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.normal(50.0, 10.0, n)
    income[rng.random(n) < 0.2] = np.nan
    return pd.DataFrame({
        "age": rng.integers(18, 80, n).astype(np.float64),
        "island": rng.choice(["Biscoe", "Dream", "Torgersen"], n),
        "income": income,
        "member": rng.random(n) < 0.5,
        "size": pd.Categorical(rng.choice(["S", "M", "L"], n)),
    })  # fmt: skip


def _labels(df: pd.DataFrame) -> np.ndarray:
    return np.where((df["island"] == "Dream") | (df["age"] > 50), "yes", "no")


def _sklearn_encoding(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """scikit-learn's encoding of ``test`` learned on ``train``: median imputation with an indicator for numbers
    that had empty cells, one-hot ignoring unknown categories for text, column by column in order."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    parts = []
    for c in train.columns:
        if train[c].dtype.kind in "biuf":
            imputer = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=False)
            imputer.fit(train[[c]].astype(np.float64))
            parts.append(imputer.transform(test[[c]].astype(np.float64)))
        else:
            onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
            onehot.fit(train[[c]].astype(str))
            parts.append(onehot.transform(test[[c]].astype(str)))
    return np.hstack(parts)


def _unseen_rows(df: pd.DataFrame) -> pd.DataFrame:
    new = df.iloc[:6].copy()
    new["island"] = new["island"].astype(object)
    new.loc[new.index[0], "island"] = "Atlantis"  # never seen: a row of zeros
    new.loc[new.index[1], "income"] = np.nan  # an empty cell: the median, flagged
    new.loc[new.index[2], "age"] = np.nan  # empty where training had none: the median, no flag column
    new["size"] = pd.Categorical(["S", "XL", "M", "L", "S", "M"])
    return new


def test_encoding_equals_scikit_learn_bit_for_bit():
    train = _frame()
    enc = encode.learn(train)
    assert enc.names == ("age", "island", "income", "member", "size")
    test = _unseen_rows(train)
    want = _sklearn_encoding(train, test.assign(age=test["age"].fillna(train["age"].median())))
    # SimpleImputer has no flag for a column that had no empty cells in training: neither has the encoding
    np.testing.assert_array_equal(enc.apply(test), want)
    np.testing.assert_array_equal(enc.apply(train), _sklearn_encoding(train, train))
    assert enc.output_names()[:6] == ["age", "island=Biscoe", "island=Dream", "island=Torgersen", "income",
                                      "income=<empty>"]  # fmt: skip
    assert enc.apply(test)[0, 1:4].tolist() == [0.0, 0.0, 0.0]  # Atlantis


def test_rare_categories_share_the_other_column_and_unseen_ones_are_zeros():
    city = ["a"] * 5 + ["b"] * 3 + ["c", "d"] + [""] * 2  # c and d once: rare; "" (empty cells) twice: a category
    train = pd.DataFrame({"city": city, "x": np.arange(12.0)})
    enc = encode.learn(train)
    test = pd.DataFrame({"city": ["a", "b", "c", "d", "", "zz", None], "x": [0.0] * 7})
    got = enc.apply(test)[:, :4]
    # the reference: categories seen at least twice, sorted, one column each; the rest seen in training share
    # the last column; anything else is zeros
    counts = pd.Series(city).value_counts()
    kept = sorted(counts[counts >= encode.MIN_FREQUENCY].index)
    rare = set(counts[counts < encode.MIN_FREQUENCY].index)
    want = np.zeros((7, len(kept) + 1))
    for i, v in enumerate(test["city"].fillna("")):
        if v in kept:
            want[i, kept.index(v)] = 1
        elif v in rare:
            want[i, -1] = 1
    assert kept == ["", "a", "b"]
    np.testing.assert_array_equal(got, want)


def test_polars_and_arrow_tables_encode_and_train_as_pandas_does():
    pl = pytest.importorskip("polars")
    pa = pytest.importorskip("pyarrow")
    df, y = _frame(), _labels(_frame())
    enc = encode.learn(df)
    plain = df.assign(size=df["size"].astype(str))
    history = gpunn.MLP(hidden=[4], dtype="float64", device="cpu").fit(df, y, epochs=3, verbose=0)
    for table in (pl.from_pandas(plain), pa.Table.from_pandas(df, preserve_index=False)):
        assert encode.learn(table) == enc
        np.testing.assert_array_equal(enc.apply(table), enc.apply(df))
        other = gpunn.MLP(hidden=[4], dtype="float64", device="cpu")
        assert other.fit(table, y, epochs=3, verbose=0).loss == history.loss


def test_a_model_trains_on_the_encoded_columns_as_on_the_encoded_array():
    df, y = _frame(), _labels(_frame())
    val = _unseen_rows(df)
    val_y = _labels(df)[:6]
    m = gpunn.MLP(hidden=[8], output="sigmoid", dtype="float64", device="cpu", seed=3)
    m.fit(df, y, epochs=20, lr=0.1, verbose=0, validation_data=(val, val_y))
    X = _sklearn_encoding(df, df)
    X_val = _sklearn_encoding(df, val.assign(age=val["age"].fillna(df["age"].median())))
    lone = gpunn.MLP([X.shape[1], 8, 1], output="sigmoid", dtype="float64", device="cpu", seed=3)
    lone.fit(X, y, epochs=20, lr=0.1, verbose=0, validation_data=(X_val, val_y))
    assert m.history.val_loss == lone.history.val_loss
    assert m.sizes == [X.shape[1], 8, 1] and m.feature_names == list(df.columns)
    np.testing.assert_array_equal(m.params, lone.params)
    test = _unseen_rows(df)
    filled = test.assign(age=test["age"].fillna(df["age"].median()))
    np.testing.assert_array_equal(m.predict_proba(test), lone.predict_proba(_sklearn_encoding(df, filled)))
    assert m.evaluate(df, y) == lone.evaluate(X, y)


def test_standardize_scales_numbers_and_keeps_zero_one_columns():
    df, y = _frame(), _labels(_frame())
    m = gpunn.MLP(hidden=[4], dtype="float64", device="cpu", standardize=True)
    m.fit(df, y, epochs=1, verbose=0)
    X = _sklearn_encoding(df, df)
    binary = m.encoding.binary()
    assert binary.tolist() == [False, True, True, True, False, True, False, True, True, True]
    np.testing.assert_allclose(m.scaling[0][~binary], X[:, ~binary].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.scaling[1][~binary], X[:, ~binary].std(axis=0), rtol=1e-12)
    assert (m.scaling[0][binary] == 0).all() and (m.scaling[1][binary] == 1).all()


@pytest.mark.parametrize("members", [None, 2])
def test_the_model_file_keeps_the_encoding(tmp_path, members):
    df, y = _frame(), _labels(_frame())
    kw = dict(hidden=[6], dtype="float64", device="cpu", standardize=True)
    m = gpunn.MLP(**kw) if members is None else gpunn.Ensemble(members=members, **kw)
    m.fit(df, y, epochs=3, verbose=0)
    test = _unseen_rows(df)
    m.save(tmp_path / "m.safetensors")
    loaded = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    held = loaded.members if members else [loaded]
    assert all(h.encoding == (m.members[0] if members else m).encoding for h in held)
    np.testing.assert_array_equal(loaded.predict_proba(test), m.predict_proba(test))
    np.testing.assert_array_equal(loaded.predict(test), m.predict(test))
    loaded.fit(df, y, epochs=1, verbose=0)  # a resumed fit keeps the file's encoding


def test_an_edited_encoding_is_refused_on_load(tmp_path):
    import json

    df, y = _frame(), _labels(_frame())
    m = gpunn.MLP(hidden=[4], dtype="float64", device="cpu")
    m.fit(df, y, epochs=1, verbose=0)
    path = tmp_path / "m.safetensors"
    m.save(path)
    config, tensors = m._state_map()
    for edit, message in (
        (lambda c: c["encoding"]["columns"].pop(), "encodes 7 columns but the network takes 10"),
        (lambda c: c["encoding"]["columns"][1].update(categories=["a", "a"]), "distinct text categories"),
        (lambda c: c["encoding"]["columns"][0].update(fill=None), "finite fill"),
        (lambda c: c.update(feature_names=["x"] * 5), "feature_names is"),
    ):
        c = json.loads(json.dumps(config))
        edit(c)
        gpunn.checkpoint.write(tmp_path / "edited.safetensors", c, tensors)
        with pytest.raises(gpunn.CheckpointError, match=f"encoding.*{message}"):
            gpunn.load(tmp_path / "edited.safetensors", device="cpu")
    assert gpunn.checkpoint.read(path).config["encoding"] == m.encoding.to_dict()


@pytest.mark.parametrize("members", [None, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_onnx_graph_takes_the_columns_and_encodes_them(tmp_path, members, dtype):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    df, y = _frame(), _labels(_frame())
    df.loc[7, "island"] = "Rare"  # seen once: the "other" column
    kw = dict(hidden=[6], dtype=dtype, device="cpu", standardize=True)
    m = gpunn.MLP(**kw) if members is None else gpunn.Ensemble(members=members, **kw)
    m.fit(df, y, epochs=5, verbose=0)
    test = _unseen_rows(df)
    test.loc[test.index[3], "island"] = "Rare"
    assert m.encoding.features[1].rare == ("Rare",) and m.encoding.apply(test)[3, 1:5].tolist() == [0, 0, 0, 1]
    path = m.to_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(path)
    inputs = {i.name: i.type for i in session.get_inputs()}
    assert inputs == {"age": f"tensor({'float' if dtype == 'float32' else 'double'})", "island": "tensor(string)",
                      "income": inputs["age"], "member": inputs["age"], "size": "tensor(string)"}  # fmt: skip
    feeds = {}
    for c in df.columns:
        if c in ("island", "size"):
            feeds[c] = test[[c]].astype(object).fillna("").astype(str).to_numpy(dtype=object)
        else:
            feeds[c] = test[[c]].to_numpy(dtype=dtype)
    probabilities, label = session.run(["probabilities", "label"], feeds)[:2]
    tol = 1e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(probabilities, m.predict_proba(test), rtol=tol, atol=tol)
    np.testing.assert_array_equal(label, m.predict(test))


def test_a_model_without_an_encoding_exports_x_as_before(tmp_path):
    onnx = pytest.importorskip("onnx")
    df = _frame()[["age", "income"]].fillna(0.0)
    m = gpunn.MLP(hidden=[4], dtype="float64", device="cpu")
    m.fit(df, _labels(_frame()), epochs=1, verbose=0)
    assert m.encoding is None
    proto = onnx.load(m.to_onnx(tmp_path / "m.onnx"))
    assert [i.name for i in proto.graph.input] == ["X"] and len(proto.opset_import) == 1


def test_bad_tables_are_refused_naming_the_column_and_change_nothing():
    df, y = _frame(), _labels(_frame())
    for table, message in (
        (df.assign(note=np.nan), "column 'note' is empty in all 120 rows.*leave it out"),
        (df.assign(note=None), "column 'note' is empty in all 120 rows"),
        (df.assign(city=[f"c{i % 40}" for i in range(120)]),
         "column 'city' holds 40 categories seen at least 2 times \\(40 distinct values\\), more than the 32.*"
         "--max-categories 40"),
    ):  # fmt: skip
        m = gpunn.MLP(hidden=[4], device="cpu")
        with pytest.raises(gpunn.InputError, match=message):
            m.fit(table, y, epochs=1, verbose=0)
        assert m.sizes is None and m.encoding is None and not m.fitted
    m = gpunn.MLP(hidden=[4], device="cpu")
    with pytest.raises(gpunn.InputError, match="column 'id' holds 120 distinct values, none seen 2 times"):
        m.fit(df.assign(id=[f"p{i}" for i in range(120)]), y, epochs=1, verbose=0)
    assert len(encode.learn(df.assign(city=[f"c{i % 40}" for i in range(120)]), max_categories=40).features) == 6
    m = gpunn.MLP(hidden=[4], device="cpu")
    m.fit(df, y, epochs=1, verbose=0)
    with pytest.raises(gpunn.InputError, match="column 'island' holds numbers, but the model was trained on it as "
                                               "text categories"):  # fmt: skip
        m.predict(df.assign(island=1.0))
    with pytest.raises(gpunn.InputError, match="column 'age' holds text \\('old' at row 0\\), but the model was "
                                               "trained on it as numbers"):  # fmt: skip
        m.predict(df.assign(age="old"))
    with pytest.raises(gpunn.InputError, match="this model encodes the columns of a table"):
        m.predict(np.zeros((2, m.n_features)))
    with pytest.raises(gpunn.InputError, match="lacks the column.*'island'"):
        m.predict(df.drop(columns=["island"]))
    with pytest.raises(gpunn.InputError, match="not trained on: 'extra'"):
        m.predict(df.assign(extra=1.0))
    everything_empty = df.iloc[:2].assign(island=None, income=np.nan)  # passes as either kind
    assert m.predict_proba(everything_empty).shape == (2, 1)


# ------------------------------------------------------------------------------------------------ the CLI
def _penguins_csv(path, n: int = 120, seed: int = 0) -> pd.DataFrame:
    """A file as published: a text column, empty cells (numbers and text), a text target."""
    rng = np.random.default_rng(seed)
    island = rng.choice(["Biscoe", "Dream", "Torgersen"], n).astype(object)
    species = np.where((island == "Dream") ^ (rng.random(n) < 0.1), "Adelie", "Gentoo")
    bill = np.round(rng.normal(0, 1, n) + np.where(species == "Adelie", 40.0, 46.0), 1)
    mass = np.round(rng.normal(4000, 300, n))
    mass[rng.random(n) < 0.15] = np.nan
    island[rng.random(n) < 0.05] = None
    df = pd.DataFrame({"bill": bill, "island": island, "mass": mass, "species": species})
    df.to_csv(path, index=False)
    return df


def _cli(capsys, *args):
    from gpunn.cli import main

    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_trains_and_predicts_a_csv_with_text_and_empty_cells(tmp_path, monkeypatch, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    df = _penguins_csv(tmp_path / "train.csv")
    status, out, err = _cli(capsys, "train", "--preset", "tutorial", "--data", "train.csv", "--target", "species",
                            "--layers", "8",
                            "--epochs", "40", "--device", "cpu", "--dtype", "float64", "--seed", "1",
                            "--test-size", "0.25", "--save", "m.safetensors")  # fmt: skip
    assert status == 0, err
    assert "columns encoded: 1 text column(s) one-hot (island: 4); 1 with empty cells" in out
    m = gpunn.load("m.safetensors", device="cpu")
    # learned from the training rows only: the rows train_test_split keeps with this seed
    n_test = round(len(df) * 0.25)
    train = df.iloc[np.random.default_rng(1).permutation(len(df))[n_test:]]
    island = train["island"].fillna("").value_counts()
    assert m.encoding.features[1].categories == tuple(sorted(island[island >= 2].index))
    assert m.encoding.features[2].fill == train["mass"].median()
    assert m.sizes == [m.encoding.width, 8, 1] == [1 + 4 + 2, 8, 1]

    new = pd.DataFrame({"mass": [np.nan, 4100.0, 3900.0], "bill": [41.0, 47.0, np.nan],
                        "island": ["Atlantis", None, "Dream"]})  # fmt: skip
    new.to_csv(tmp_path / "new.csv", index=False)
    status, out, err = _cli(capsys, "predict", "--model", "m.safetensors", "--data", "new.csv", "--device", "cpu")
    assert status == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "prediction,probability" and len(lines) == 4
    proba = m.predict_proba(pd.read_csv(tmp_path / "new.csv"))[:, 0]
    np.testing.assert_allclose([float(line.split(",")[1]) for line in lines[1:]], proba, rtol=1e-12)
    assert [line.split(",")[0] for line in lines[1:]] == m.predict(pd.read_csv(tmp_path / "new.csv")).tolist()

    status, out, err = _cli(capsys, "export", "--model", "m.safetensors", "--onnx", "m.onnx")
    assert status == 0 and "3 named after them" in out, err
    feeds = {"bill": new[["bill"]].to_numpy(), "mass": new[["mass"]].to_numpy(),
             "island": new[["island"]].fillna("").to_numpy(dtype=object)}  # fmt: skip
    probabilities, label = ort.InferenceSession("m.onnx").run(["probabilities", "label"], feeds)
    np.testing.assert_allclose(probabilities[:, 0], proba, rtol=1e-12)
    assert label.tolist() == [line.split(",")[0] for line in lines[1:]]

    status, out, err = _cli(capsys, "train", "--resume", "m.safetensors", "--data", "train.csv", "--epochs", "45",
                            "--device", "cpu", "--save", "more.safetensors")  # fmt: skip
    assert status == 0 and "resuming at epoch 40" in out, err
    assert gpunn.load("more.safetensors", device="cpu").encoding == m.encoding  # the file's, not a new one

    pd.DataFrame({"bill": [40.0], "island": [3.0], "mass": [4000.0]}).to_csv(tmp_path / "num.csv", index=False)
    status, _, err = _cli(capsys, "predict", "--model", "m.safetensors", "--data", "num.csv", "--device", "cpu")
    assert status == 2 and "column 'island' holds numbers, but the model was trained on it as text" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_refuses_bad_tables_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    df = _penguins_csv(tmp_path / "train.csv")
    cases = {
        "empty.csv": (df.assign(note=np.nan), "empty.csv: column 'note' is empty in all 96 rows"),
        "many.csv": (df.assign(city=[f"c{i % 40}" for i in range(len(df))]),
                     "many.csv: column 'city' holds 3[0-9] categories seen at least 2 times.*--max-categories"),
        "target.csv": (df.assign(species=df["species"].where(df.index % 50 != 7)),
                       "target.csv: the target 'species' is empty on lines 9, 59, 109 \\(3 rows\\)"),
    }  # fmt: skip
    for name, (frame, message) in cases.items():
        frame.to_csv(tmp_path / name, index=False)
        status, _, err = _cli(capsys, "train", "--preset", "tutorial", "--data", name, "--target", "species",
                              "--epochs", "2", "--device", "cpu", "--save", "m.safetensors",
                              "--checkpoint", "c.safetensors")  # fmt: skip
        assert status == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("gpunn: error: ") and re.search(message, err), err
        assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "c.safetensors").exists()
    status, _, err = _cli(capsys, "train", "--preset", "tutorial", "--data", "many.csv", "--target", "species",
                          "--epochs", "2",
                          "--device", "cpu", "--max-categories", "40", "--save", "m.safetensors")  # fmt: skip
    assert status == 0, err
    assert gpunn.load("m.safetensors", device="cpu").encoding.features[-1].name == "city"


# ---------------------------------------------------------------------------------------- gpunn.sklearn
def test_sklearn_estimators_take_a_table_with_text_and_empty_cells(tmp_path):
    pytest.importorskip("sklearn")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from gpunn.sklearn import MLPClassifier, MLPRegressor

    df = _frame()
    y = _labels(df)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0, device="cpu").fit(df, y)
    X = _sklearn_encoding(df, df)
    same = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0, device="cpu").fit(X, y)
    test = _unseen_rows(df)
    filled = _sklearn_encoding(df, test.assign(age=test["age"].fillna(df["age"].median())))
    np.testing.assert_array_equal(clf.predict_proba(test), same.predict_proba(filled))
    assert list(clf.feature_names_in_) == list(df.columns) and clf.n_features_in_ == 5
    path = clf.to_onnx(tmp_path / "c.onnx")
    feeds = {c: (test[[c]].astype(object).fillna("").astype(str).to_numpy(dtype=object) if c in ("island", "size")
                 else test[[c]].to_numpy(dtype="float64")) for c in df.columns}  # fmt: skip
    label, probabilities = ort.InferenceSession(path).run(["label", "probabilities"], feeds)
    np.testing.assert_allclose(probabilities, clf.predict_proba(test), rtol=1e-12, atol=1e-12)
    assert label.tolist() == clf.predict(test).tolist()
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0, device="cpu")
    target = df["age"].to_numpy()
    rest = df.drop(columns=["age"])
    reg.fit(rest, target)
    ref = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0, device="cpu")
    ref.fit(_sklearn_encoding(rest, rest), target)
    np.testing.assert_array_equal(reg.predict(rest), ref.predict(_sklearn_encoding(rest, rest)))
    clf.partial_fit(df, y)  # a later fit takes the table by the same encoding
    with pytest.raises(gpunn.InputError, match="column 'island' holds numbers"):
        clf.predict(df.assign(island=1.0))


# ------------------------------------------------------------------------------------------------ files
@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".feather"])
def test_read_table_gives_the_columns_pandas_reads(tmp_path, suffix):
    if suffix != ".csv":
        pytest.importorskip("pyarrow")
    df = _penguins_csv(tmp_path / "p.csv")
    path = tmp_path / f"p{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path)
    elif suffix == ".feather":
        df.to_feather(path)
    (X, y, names, target), w = gpunn.data.read_table(path, target="species")
    assert isinstance(X, gpunn.data.Columns) and names == ["bill", "island", "mass"] and target == "species"
    assert w is None
    want = pd.read_csv(tmp_path / "p.csv")  # an independent reader: pandas' CSV parser
    np.testing.assert_array_equal(X.arrays[0], want["bill"].to_numpy())
    np.testing.assert_array_equal(X.arrays[2], want["mass"].to_numpy())  # NaN where empty
    assert X.arrays[1].tolist() == want["island"].fillna("").tolist()
    assert y.tolist() == want["species"].tolist()
    assert encode.learn(X) == encode.learn(want.drop(columns=["species"]))
    # read refuses the file, naming the first cell; read_weighted(table=True) reads it as read_table does
    with pytest.raises(gpunn.InputError):
        gpunn.data.read(path, target="species")
    (X2, *_), _ = gpunn.data.readers.read_weighted(path, "species", None, "float32", None, table=True)
    assert encode.learn(X2) == encode.learn(X)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_read_table_names_the_rows_of_an_empty_target(tmp_path, suffix):
    df = _penguins_csv(tmp_path / "p.csv")
    df.loc[[3, 40], "species"] = None
    path = tmp_path / f"t{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path)
    where = "lines 5, 42" if suffix == ".csv" else "rows 3, 40"
    with pytest.raises(gpunn.InputError, match=f"the target 'species' is empty on {where} \\(2 rows\\)"):
        gpunn.data.read_table(path, target="species")


def test_needs_encoding_agrees_across_libraries():
    pl = pytest.importorskip("polars")
    pa = pytest.importorskip("pyarrow")
    numbers = pd.DataFrame({"a": [1.0, 2.0], "b": [1, 2], "c": [True, False]})
    cases = [(numbers, False), (numbers.assign(a=[1.0, np.nan]), True), (numbers.assign(b=["x", "y"]), True),
             (numbers.assign(b=pd.array([1, None])), True)]  # fmt: skip
    for frame, needed in cases:
        for table in (frame, pl.from_pandas(frame), pa.Table.from_pandas(frame)):
            assert encode.needs_encoding(table) is needed, (type(table), frame)
