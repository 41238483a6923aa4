"""The ``gpunn`` command's entry point (``[project.scripts]`` in pyproject.toml), and its guard against Ctrl-C
while the command starts.

Importing anything inside gpunn first runs gpunn/__init__.py, which imports NumPy and the rest of the library,
most of a second in which a Ctrl-C would end in a KeyboardInterrupt traceback. So gpunn/__init__.py imports this
module first, before anything heavy (it imports only what Python's own start has loaded: os, sys, _signal), and
when the process is the ``gpunn`` command (its script, or ``python -m gpunn``) puts the guard in place. Once the
command runs, ``gpunn.cli.main`` answers Ctrl-C itself, with the same line.
"""

from __future__ import annotations

import os
import sys

try:
    import _signal as signals  # what the signal module wraps, loaded at Python's start: signal itself takes 13 ms
except ImportError:  # an interpreter without it
    import signal as signals  # type: ignore[no-redef]

TYPE_CHECKING = False  # not typing's: importing typing takes longer than the rest of this module
if TYPE_CHECKING:
    from typing import NoReturn

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command that Ctrl-C ended
_interrupts: list[int] = []  # the Ctrl-Cs received


def main() -> NoReturn:
    """The ``gpunn`` command: ends the process (with 130 after Ctrl-C through ``os._exit``, see gpunn.cli.leave)."""
    _note_interrupts()
    try:
        from .cli import leave
        from .cli import main as command
    except (Exception, KeyboardInterrupt):
        if _interrupts:
            _leave_interrupted(started=False)
        raise
    try:
        status = command()
    except Exception:  # gpunn.cli.main answers a KeyboardInterrupt itself; another error may be Ctrl-C's doing
        if _interrupts:
            _leave_interrupted(started=True)
        raise
    leave(status)


def launched_as_command() -> bool:
    """Whether this process is the ``gpunn`` command: its script (``sys.argv[0]`` names it) or ``python -m gpunn``
    (``sys.argv[0]`` is "-m" while Python imports the package, before gpunn/__main__.py)."""
    argv = getattr(sys, "argv", [])
    if argv[:1] == ["-m"]:
        return bool({"gpunn", "-mgpunn"} & set(getattr(sys, "orig_argv", ())))
    script = os.path.basename(argv[0]) if argv else ""
    return script in ("gpunn", "gpunn.exe", "gpunn-script.py")


def guard_module_run() -> None:
    """For the command: Python imports the gpunn package (NumPy and the rest) before the command runs, so
    gpunn/__init__.py calls this first. An error that reaches the top after a Ctrl-C then ends with the
    command's line and status instead of a traceback."""
    _note_interrupts()
    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt) or (_interrupts and issubclass(kind, Exception)):
            # gpunn/__main__.py imports gpunn.cli, then runs its main (which answers KeyboardInterrupt itself)
            _leave_interrupted(started="gpunn.cli" in sys.modules)
        previous(kind, value, tb)

    sys.excepthook = hook


def _note_interrupts() -> None:
    """Answer Ctrl-C as Python does (KeyboardInterrupt), and note it: an import that Ctrl-C cuts short can fail
    with another error instead (NumPy turns it into an ImportError when it lands in the set-up of its C
    extensions), which is then known to be the Ctrl-C's. Not where SIGINT is ignored (nohup) or already taken."""
    if signals.getsignal(signals.SIGINT) is not signals.default_int_handler:
        return

    def note(signum, frame):
        _interrupts.append(signum)
        raise KeyboardInterrupt

    signals.signal(signals.SIGINT, note)


def interrupted(argv: list[str], started: bool = False) -> int:
    """Ctrl-C: one line (rank 0's alone in an MPI job, where every rank receives it) and exit status 130;
    gpunn.cli.main says the same. ``started``: the command had begun, and may have trained."""
    rank = next((os.environ[v] for v in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK") if v in os.environ), "0")
    if "--distributed" in argv and rank != "0":
        return EXIT_INTERRUPTED
    early = argv[:1] == ["train"] and not started
    print(f"\ngpunn: interrupted{' before training started; nothing saved' if early else ''}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _leave_interrupted(started: bool) -> NoReturn:
    code = interrupted(sys.argv[1:], started)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: nothing more to say on it
            pass
    os._exit(code)  # not sys.exit: Python could still end with SIGINT itself (-2), see gpunn.cli.leave
