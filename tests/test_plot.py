"""Pictures: real PNGs rendered, checked for size, content, and labels read back from the figures."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import gpunn_in_process  # noqa: E402
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


def test_decision_boundary_renders_a_filled_field(trained, tmp_path):
    """The figure's labels, and a PNG filled with many colours; which colour goes where is checked below."""
    m, X, y = trained
    fig = plot.decision_boundary(m, X, y)
    ax = fig.get_axes()[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x1", "x2")
    plot.save(fig, tmp_path / "b.png")
    shape, ink, colours = _png_stats(tmp_path / "b.png")
    assert shape[0] > 400 and ink > 0.5 and colours > 20  # a filled field of probabilities, not a blank canvas


def _field_colours(fig, model, X):
    """The rendered colour (RGB, 0-255) at grid points away from the data points, with the model's
    probabilities there: the pixel of each point found through the axes' own data-to-pixel transform."""
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float)
    ax = fig.get_axes()[0]
    gx, gy = np.meshgrid(np.linspace(*ax.get_xlim(), 30)[2:-2], np.linspace(*ax.get_ylim(), 30)[2:-2])
    points = np.column_stack([gx.ravel(), gy.ravel()])
    span = np.ptp(X, axis=0)
    near = np.min(np.linalg.norm((points[:, None, :] - X[None]) / span, axis=-1), axis=1)
    points = points[near > 0.04]  # no scatter marker on top
    pixels = ax.transData.transform(points)
    rows = np.round(img.shape[0] - pixels[:, 1]).astype(int)  # display y grows upwards, image rows downwards
    colours = img[rows, np.round(pixels[:, 0]).astype(int)]
    return colours, np.asarray(model.predict_proba(points))


def test_decision_boundary_colours_the_plane_by_the_predicted_class(trained):
    """Red where the model gives class 1 (RdBu_r), blue where it gives class 0: a plot with inverted colours, or
    a field not aligned with the axes, fails."""
    m, X, _ = trained
    colours, proba = _field_colours(plot.decision_boundary(m, X, X[:, 0] > 0), m, X)
    red, blue = colours[:, 0] - colours[:, 2], colours[:, 2] - colours[:, 0]
    one, zero = proba[:, 0] > 0.95, proba[:, 0] < 0.05
    assert one.sum() > 20 and zero.sum() > 20
    assert np.all(red[one] > 40) and np.all(blue[zero] > 40)


def test_decision_boundary_of_several_classes_uses_each_class_colour():
    import matplotlib

    X, y = data.make_spirals(300, seed=0)
    m = gpunn.MLP([2, 32, 32, 3], output="softmax", device="cpu", standardize=True)
    m.fit(X, y, epochs=300, lr=0.02, optimizer="adam", verbose=0)
    colours, proba = _field_colours(plot.decision_boundary(m, X, y), m, X)
    tab10 = np.array([matplotlib.colormaps["tab10"](c)[:3] for c in range(3)]) * 255
    expected = 0.35 * tab10 + 0.65 * 255  # each class's colour at alpha 0.35 over white
    nearest = np.argmin(np.linalg.norm(colours[:, None, :] - expected[None], axis=-1), axis=1)
    sure = proba.max(axis=1) > 0.9
    assert len(set(proba.argmax(axis=1)[sure])) == 3
    np.testing.assert_array_equal(nearest[sure], proba.argmax(axis=1)[sure])


@pytest.mark.parametrize("names, unknown", [(["ant", "bee", "cat"], "dog"), ([0, 5, 1000], 7)])
def test_decision_boundary_colours_labelled_points_by_their_class(names, unknown, tmp_path):
    """A model fitted on labels (text, or sparse numbers) colours each point as its class's index: tab10 colour
    0, 1, 2 for the sorted labels, as the field is coloured."""
    X, index = data.make_spirals(150, seed=0)
    labels = np.asarray(names, dtype=object)[index]
    m = gpunn.MLP([2, 8, 3], output="softmax", device="cpu")
    m.fit(X, labels.tolist(), epochs=3, verbose=0)
    fig = plot.decision_boundary(m, X, labels.tolist())
    points = [c for c in fig.axes[0].collections if c.get_offsets().shape == (150, 2)]
    assert len(points) == 1
    np.testing.assert_array_equal(np.asarray(points[0].get_array()), index)
    plot.save(fig, tmp_path / "labels.png")
    column = plot.decision_boundary(m, X, labels.reshape(-1, 1).tolist())  # the labels as a column, as fit takes
    points = [c for c in column.axes[0].collections if c.get_offsets().shape == (150, 2)]
    np.testing.assert_array_equal(np.asarray(points[0].get_array()), index)
    plot.save(column, tmp_path / "column.png")
    with pytest.raises(gpunn.InputError, match=rf"y holds label {unknown!r} at row 1, which is not one of the model"):
        plot.decision_boundary(m, X[:3], [names[0], unknown, names[1]])


def test_decision_boundary_needs_two_features():
    m = gpunn.MLP([3, 4, 1], device="cpu")
    with pytest.raises(gpunn.InputError, match=r"2-D points \(n, 2\)"):
        plot.decision_boundary(m, np.zeros((5, 3)), np.zeros(5))


def test_cli_plot_and_train_plot(tmp_path):
    # through gpunn.cli.main in this process: three interpreters importing matplotlib cost most of this test
    r = gpunn_in_process.run("train", "--epochs", "100", "--device", "cpu", "-q", "--history", "h.json", "--plot",
                             "boundary.png", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = gpunn_in_process.run("plot", "h.json", "-o", "curves.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("boundary.png", "curves.png"):
        _, ink, colours = _png_stats(tmp_path / name)
        assert ink > 0.03 and colours > 10
    r = gpunn_in_process.run("plot", "missing.json", cwd=tmp_path)
    assert r.returncode == 2 and "missing.json: cannot read history" in r.stderr


def test_an_image_name_matplotlib_cannot_write_is_refused_before_drawing_or_training(trained, tmp_path):
    # was matplotlib's ValueError as a traceback (exit 1), after the training run for gpunn train --plot
    message = r"x.txt: matplotlib cannot write .txt images; name the file with one of .*png.*svg"
    with pytest.raises(gpunn.ConfigError, match=message):
        plot.save(plot.history(trained[0].history), tmp_path / "x.txt")
    r = gpunn_in_process.run("train", "--epochs", "5", "--device", "cpu", "-q", "--save", "m.safetensors", "--plot",
                             "x.txt", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "matplotlib cannot write .txt images" in r.stderr
    assert not (tmp_path / "m.safetensors").exists()  # refused before training
    trained[0].history.save(tmp_path / "h.json")
    r = gpunn_in_process.run("plot", "h.json", "-o", "x.TXT", cwd=tmp_path)
    assert r.returncode == 2 and "matplotlib cannot write .txt images" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.json"]


def test_a_name_without_an_extension_is_written_as_png_and_reported_so(trained, tmp_path):
    # matplotlib adds ".png" to such a name; the CLI said it drew to "curves", a file that does not exist
    trained[0].history.save(tmp_path / "h.json")
    r = gpunn_in_process.run("plot", "h.json", "-o", "curves", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "curves drawn to curves.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "h.json"]
    assert matplotlib.image.imread(tmp_path / "curves.png").shape[0] > 300
    assert plot.save(plot.history(trained[0].history), tmp_path / "again") == str(tmp_path / "again.png")
