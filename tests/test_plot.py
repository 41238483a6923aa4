"""Pictures: real PNGs rendered, checked for size, content, and labels read back from the figures."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import matplotlib.image  # noqa: E402

import gpunn  # noqa: E402
from gpunn import data, plot  # noqa: E402


def _png_stats(path):
    img = matplotlib.image.imread(path)
    rgb = img[..., :3]
    not_white = np.mean(np.any(rgb < 0.95, axis=-1))
    return img.shape, not_white, len(np.unique(rgb.reshape(-1, 3).round(2), axis=0))


@pytest.fixture(scope="module")
def trained():
    X, y = data.make_moons(300, seed=1)
    m = gpunn.MLP([2, 16, 16, 1], device="cpu", standardize=True)
    m.fit(X, y, epochs=200, lr=0.05, optimizer="adam", validation_data=(X[:50], y[:50]), verbose=0)
    return m, X, y


def test_history_figure_has_both_panels_and_labels(trained, tmp_path):
    m, _, _ = trained
    fig = plot.history(m.history)
    axes = fig.get_axes()
    assert [a.get_ylabel() for a in axes] == ["loss", "accuracy"]
    assert all(a.get_xlabel() == "epoch" for a in axes)
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["training loss", "validation loss"]
    np.testing.assert_allclose(axes[0].get_lines()[0].get_ydata(), m.history.loss)
    plot.save(fig, tmp_path / "h.png")
    shape, ink, colours = _png_stats(tmp_path / "h.png")
    assert shape[0] > 300 and shape[1] > 800 and ink > 0.03 and colours > 10


def test_decision_boundary_separates_the_classes(trained, tmp_path):
    m, X, y = trained
    fig = plot.decision_boundary(m, X, y)
    ax = fig.get_axes()[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x1", "x2")
    plot.save(fig, tmp_path / "b.png")
    shape, ink, colours = _png_stats(tmp_path / "b.png")
    assert shape[0] > 400 and ink > 0.5 and colours > 20  # a filled field of probabilities, not a blank canvas


def test_decision_boundary_needs_two_features():
    m = gpunn.MLP([3, 4, 1], device="cpu")
    with pytest.raises(gpunn.InputError, match=r"2-D points \(n, 2\)"):
        plot.decision_boundary(m, np.zeros((5, 3)), np.zeros(5))


def test_cli_plot_and_train_plot(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gpunn", "train", "--epochs", "100", "--device", "cpu", "-q",
                        "--history", "h.json", "--plot", "boundary.png"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "gpunn", "plot", "h.json", "-o", "curves.png"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    for name in ("boundary.png", "curves.png"):
        _, ink, colours = _png_stats(tmp_path / name)
        assert ink > 0.03 and colours > 10
    r = subprocess.run([sys.executable, "-m", "gpunn", "plot", "missing.json"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2 and "missing.json: cannot read history" in r.stderr
