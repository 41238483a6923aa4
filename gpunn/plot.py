"""Pictures of training: loss and accuracy curves, and a 2-D decision boundary (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _backend, feed, losses
from .errors import ConfigError, InputError
from .history import History

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .model import MLP


def _pyplot() -> Any:
    try:
        import matplotlib

        if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'gpunn[plot]'") from None
    return plt


def _as_history(h: History | dict[str, Any] | str | os.PathLike[str]) -> History:
    if isinstance(h, History):
        return h
    if isinstance(h, dict):
        return History.from_dict(h)
    try:
        with open(h, encoding="utf-8") as f:
            return History.from_dict(json.load(f))
    except OSError as exc:
        raise InputError(f"{os.fspath(h)}: cannot read history ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise InputError(f"{os.fspath(h)}: not a gpunn history JSON file ({exc})") from None


def history(h: History | dict[str, Any] | str | os.PathLike[str], *, title: str | None = None) -> Figure:
    """Loss (and accuracy, for classifiers) per epoch, training and validation. Returns the figure.

    ``h`` is a :class:`History`, its ``to_dict()``, or the path of a JSON file written by
    ``gpunn train --history``.
    """
    h = _as_history(h)
    if not h.loss:
        raise InputError("the history is empty: nothing to plot")
    plt = _pyplot()
    panels = 2 if h.accuracy else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    epochs = np.arange(1, len(h.loss) + 1)
    for ax, (name, train, val) in zip(
        axes[0], [("loss", h.loss, h.val_loss), ("accuracy", h.accuracy, h.val_accuracy)]
    ):
        ax.plot(epochs, train, label=f"training {name}")
        if val:
            ax.plot(epochs[: len(val)], val, label=f"validation {name}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0][0].set_yscale("log" if min(h.loss + h.val_loss) > 0 else "linear")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def decision_boundary(model: MLP, X: Any, y: Any, *, resolution: int = 200, title: str | None = None) -> Figure:
    """The model's predicted class over the plane of two features, with the points ``(X, y)`` on top."""
    Xh = _backend.to_numpy(X) if not _backend.is_host_data(X) else np.asarray(X, dtype=float)
    yh = _backend.to_numpy(y) if not _backend.is_host_data(y) else np.asarray(y)
    if Xh.ndim != 2 or Xh.shape[1] != 2:
        raise InputError(f"a decision boundary needs 2-D points (n, 2); X has shape {Xh.shape}")
    if model.output in losses.REGRESSION:
        raise InputError("a decision boundary needs a classifier (sigmoid or softmax output)")
    plt = _pyplot()
    pad = 0.1 * (Xh.max(axis=0) - Xh.min(axis=0)) + 1e-9
    lo, hi = Xh.min(axis=0) - pad, Xh.max(axis=0) + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    proba = _backend.to_numpy(model.predict_proba(grid))
    fig, ax = plt.subplots(figsize=(6, 5))
    if model.output == "sigmoid" and model.n_outputs == 1:
        field = proba[:, 0].reshape(gx.shape)
        mesh = ax.contourf(gx, gy, field, levels=np.linspace(0, 1, 21), cmap="RdBu_r", alpha=0.75)
        ax.contour(gx, gy, field, levels=[0.5], colors="k", linewidths=1.5)
        fig.colorbar(mesh, ax=ax, label="P(class 1)")
    else:
        classes = proba.argmax(axis=1).reshape(gx.shape)
        k = proba.shape[1]
        ax.contourf(gx, gy, classes, levels=np.arange(k + 1) - 0.5, cmap="tab10", alpha=0.35, vmin=0, vmax=9)
    labels = yh.reshape(len(yh), -1)[:, 0] if yh.ndim > 1 else yh
    classes = getattr(model, "classes", None)
    if not feed.checks.are_indices(classes):  # labels such as 'no'/'yes' or {0, 5, 1000}: coloured by their index
        labels = feed.checks.class_indices(classes, labels, "y")
    ax.scatter(Xh[:, 0], Xh[:, 1], c=labels, cmap="RdBu_r" if model.output == "sigmoid" else "tab10",
               edgecolors="k", linewidths=0.4, s=14, vmin=None if model.output == "sigmoid" else 0,
               vmax=None if model.output == "sigmoid" else 9)  # fmt: skip
    names = model.feature_names or ["x1", "x2"]
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(title or f"decision boundary, MLP {model.sizes}")
    fig.tight_layout()
    return fig


def save(fig: Figure, path: str | os.PathLike[str]) -> str:
    """Write a figure to ``path`` (the format follows the extension; none is PNG, and ``.png`` is added to the
    name, as matplotlib adds it) and release it. Returns the file's name."""
    try:
        check_path(path)
        name = os.fspath(path)
        name = name if os.path.splitext(name)[1] else name + ".png"
        fig.savefig(name, dpi=110)
        return name
    finally:
        _pyplot().close(fig)


def check_path(path: str | os.PathLike[str]) -> None:
    """A ConfigError unless matplotlib writes ``path``'s extension (none: its default, PNG): checked before a
    drawing or a training run, where matplotlib's own ValueError came after it."""
    extension = os.path.splitext(os.fspath(path))[1][1:].lower()
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if extension and extension not in formats:
        raise ConfigError(f"{os.fspath(path)}: matplotlib cannot write .{extension} images; name the file with one "
                          f"of {', '.join(sorted(formats))}")  # fmt: skip
