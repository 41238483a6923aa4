"""Data frames in: pandas and polars DataFrames and Series, pyarrow Tables, taken by column name."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn

pd = pytest.importorskip("pandas")

NAMES = ["age", "height", "weight", "score"]


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)) * [10.0, 0.2, 15.0, 1.0] + [40.0, 1.7, 70.0, 0.0]
    y = (X[:, 0] / 10 - X[:, 2] / 15 + X[:, 3] > -0.3).astype(np.int64)
    return X, y


def _frames(X, y):
    """The same data as each library's frame and series."""
    out = {"pandas": (pd.DataFrame(X, columns=NAMES), pd.Series(y, name="label"))}
    try:
        import polars as pl

        out["polars"] = (pl.DataFrame({c: X[:, j] for j, c in enumerate(NAMES)}), pl.Series("label", y))
    except ImportError:
        pass
    try:
        import pyarrow as pa

        out["pyarrow"] = (pa.table({c: X[:, j] for j, c in enumerate(NAMES)}), pa.array(y))
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("library", ["pandas", "polars", "pyarrow"])
@pytest.mark.parametrize("standardize", [False, True])
def test_a_frame_trains_as_its_array_does_and_records_its_columns(library, standardize):
    X, y = _data()
    frames = _frames(X, y)
    if library not in frames:
        pytest.skip(f"{library} is not installed")
    Xf, yf = frames[library]
    kw = dict(dtype="float64", device="cpu", seed=3, standardize=standardize)
    m = gpunn.MLP([4, 6, 1], **kw)
    m.fit(Xf, yf, epochs=3, lr=0.05, batch_size=16, sample_weight=yf if library == "pandas" else None, verbose=0)
    ref = gpunn.MLP([4, 6, 1], **kw)
    ref.fit(X, y, epochs=3, lr=0.05, batch_size=16, sample_weight=y if library == "pandas" else None, verbose=0)
    assert m.feature_names == NAMES and ref.feature_names is None
    np.testing.assert_array_equal(m.params, ref.params)
    np.testing.assert_array_equal(m.predict_proba(Xf), ref.predict_proba(X))
    assert m.evaluate(Xf, yf) == ref.evaluate(X, y)


def test_a_frame_in_another_column_order_is_put_back_in_order(tmp_path):
    X, y = _data()
    frame = pd.DataFrame(X, columns=NAMES)
    m = gpunn.MLP([4, 6, 1], dtype="float64", device="cpu", standardize=True)
    m.fit(frame, y, epochs=5, lr=0.1, verbose=0)
    shuffled = frame[["score", "age", "weight", "height"]]
    want = m.predict_proba(X)  # an array is taken by position, in the training order
    np.testing.assert_array_equal(m.predict_proba(shuffled), want)
    # by position, the shuffled columns give other (wrong) predictions: the order matters and was restored
    assert not np.allclose(m.predict_proba(shuffled.to_numpy()), want)
    m.save(tmp_path / "m.safetensors")
    loaded = gpunn.load(tmp_path / "m.safetensors", device="cpu")
    assert loaded.feature_names == NAMES
    np.testing.assert_array_equal(loaded.predict_proba(shuffled), want)


def test_missing_extra_duplicate_and_text_columns_are_named():
    X, y = _data()
    frame = pd.DataFrame(X, columns=NAMES)
    m = gpunn.MLP([4, 6, 1], device="cpu")
    m.fit(frame, y, epochs=1, verbose=0)
    with pytest.raises(gpunn.InputError, match="lacks the column.*'height'"):
        m.predict(frame.drop(columns=["height"]))
    with pytest.raises(gpunn.InputError, match="not trained on: 'bmi'"):
        m.predict(frame.assign(bmi=1.0))
    with pytest.raises(gpunn.InputError, match="lacks.*'score'.*not trained on: 'Score'"):
        m.predict(frame.rename(columns={"score": "Score"}))
    text = frame.assign(score=np.array(["a", "b", "c"])[np.arange(len(frame)) % 3])
    with pytest.raises(gpunn.InputError, match="non-numeric column.*'score'.*trained on numbers only"):
        m.predict(text)  # a model first fitted on numbers has no encoding for text
    fresh = gpunn.MLP([4, 6, 1], device="cpu")
    before = fresh.params.copy()
    with pytest.raises(gpunn.InputError, match="encode to 6 inputs.*score=a.*takes 4.*hidden="):
        fresh.fit(text, y, epochs=1, verbose=0)
    assert fresh.feature_names is None and fresh.encoding is None and np.array_equal(fresh.params, before)
    twice = pd.DataFrame(X, columns=["a", "b", "a", "c"])
    with pytest.raises(gpunn.InputError, match="more than one column named 'a'"):
        gpunn.MLP([4, 6, 1], device="cpu").fit(twice, y, epochs=1, verbose=0)
    with pytest.raises(gpunn.InputError, match="2 columns"):
        gpunn.MLP([4, 6, 1], device="cpu").fit(frame, frame[["age", "score"]], epochs=1, verbose=0)
