"""What ``gpunn train`` writes, written so that a trained model is never lost: output paths checked before
training, a standard output whose reader went away (``| head -1``), and a ``--save`` that fails at the end."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError, GpunnError, InputError


def check_outputs(args: argparse.Namespace) -> None:
    """Every file ``gpunn train`` will write goes into a folder that exists and can be written, and --plot has
    matplotlib: checked before training, not found out after it."""
    import importlib.util

    for option, path in (("--save", args.save), ("--checkpoint", args.checkpoint), ("--history", args.history),
                         ("--plot", args.plot)):  # fmt: skip
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise InputError(f"{option} {path}: is a folder; give a file path")
        if not os.path.isdir(folder):
            raise InputError(f"{option} {path}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise InputError(f"{option} {path}: the folder {folder} cannot be written")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("--plot needs matplotlib: pip install 'gpunn[plot]'")
    if args.plot:
        from .. import plot

        plot.check_path(args.plot)


class _Outliving:
    """``sys.stdout`` that outlives its reader: once the pipe is closed (``gpunn train ... | head -1``), what is
    left to print goes to the null device, and training goes on to save the model."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return int(self.real.write(text))
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.real.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.gone = True
        # what the real stream still buffers goes to the null device too, when Python flushes it at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.real.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@contextlib.contextmanager
def outliving_stdout() -> Iterator[None]:
    """Within: a closed standard output no longer stops the command (see :class:`_Outliving`)."""
    real = sys.stdout
    try:
        real.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test's capture): nothing to guard
        yield
        return
    sys.stdout = _Outliving(real)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout = real


class CheckpointFailed(Exception):
    """``--checkpoint`` could not be written after an epoch: training stops, and the model is rescued."""


def checkpointer(path: str) -> Any:
    """The callback of ``--checkpoint``: the model saved after every epoch, or :class:`CheckpointFailed`."""

    def save(model: Any, record: dict[str, float]) -> None:
        try:
            model.save(path)
        except (OSError, GpunnError) as exc:
            raise CheckpointFailed(f"--checkpoint {path}: cannot write ({_why(exc)})") from exc

    return save


def _why(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or type(exc).__name__


def save_or_rescue(model: Any, path: str, option: str = "--save", failed: str | None = None) -> tuple[str, str | None]:
    """Save ``model`` to ``path``; if that fails (a full disk, the folder removed while training), save it to a
    rescue file instead: beside ``path``, else in the working folder, else in the temporary folder.

    Returns ``(where it was saved, None)``, or ``(rescue path, a one-line error naming both files)``; raises only
    when no place at all could be written, naming every file tried. With ``failed`` (why ``path`` already
    failed), goes straight to the rescue."""
    if failed is None:
        try:
            model.save(path)
            return path, None
        except (OSError, GpunnError) as exc:
            failed = f"{option} {path}: cannot write ({_why(exc)})"
    name = f"gpunn-rescue-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.safetensors"
    tried: list[str] = []
    folders = [os.path.dirname(os.path.abspath(path))]
    with contextlib.suppress(OSError):  # the working folder may be gone too
        folders.append(os.getcwd())
    for folder in (*folders, tempfile.gettempdir()):
        rescue = os.path.join(folder, name)
        if rescue in tried:
            continue
        tried.append(rescue)
        try:
            model.save(rescue)
        except (OSError, GpunnError) as exc:
            failed += f"; {rescue}: cannot write ({_why(exc)})"
            continue
        return rescue, f"{failed}; the model is saved to {rescue} instead"
    raise InputError(f"{failed}; the model could not be saved anywhere")
