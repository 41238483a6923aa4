"""The ``gpunn`` command: train, predict, export, plot, info.

``main`` dispatches to one module per command: :mod:`.train` (``gpunn train``) and :mod:`.commands` (the
others); :mod:`.parser` holds the arguments. The ``gpunn`` script enters through ``gpunn._entry``, whose guard
against Ctrl-C gpunn/__init__.py puts in place before it imports anything heavy.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ..errors import GpunnError, NonFiniteError
from .parser import build_parser

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command that Ctrl-C ended
INTERRUPTED = "gpunn: interrupted"
INTERRUPTED_TRAIN = "gpunn: interrupted before training started; nothing saved"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args: Any = None
    comm = None
    try:
        args = _parse(argv)
        if getattr(args, "distributed", False):
            comm = args.comm = _communicator()
        from .commands import cmd_export, cmd_info, cmd_plot, cmd_predict
        from .train import cmd_train

        commands = {
            "train": cmd_train, "predict": cmd_predict, "export": cmd_export, "plot": cmd_plot, "info": cmd_info
        }  # fmt: skip
        return commands[args.command](args)
    except KeyboardInterrupt:  # before training (gpunn train answers one during training itself) or after it
        if _lead(args, comm):  # under mpiexec Ctrl-C reaches every rank: one tells
            command = args.command if args is not None else argv[0] if argv else None
            early = command == "train" and not getattr(args, "training", False)
            print(f"\n{INTERRUPTED_TRAIN if early else INTERRUPTED}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (gpunn predict ... | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        every_rank = getattr(exc, "every_rank", False)
        shown = args is not None and not args.debug and isinstance(exc, (GpunnError, OSError))
        if comm is None and not every_rank and not shown:
            raise
        if isinstance(exc, NonFiniteError):  # an error as any other: exit 2
            code, message = EXIT_USAGE, f"gpunn: {exc}"
        elif isinstance(exc, GpunnError):
            code, message = EXIT_USAGE, f"gpunn: error: {exc}"
        elif isinstance(exc, OSError):
            where = f"{exc.filename}: " if exc.filename else ""  # a file named, never an empty name
            code, message = EXIT_USAGE, f"gpunn: error: {where}{exc.strerror or exc}"
        else:
            code, message = 1, f"gpunn: error: {type(exc).__name__}: {exc}"
        if every_rank:  # the same error on every rank (one that could not start, ranks that disagree): rank 0 tells
            if (comm.rank if comm is not None else getattr(exc, "rank", 0)) == 0:
                print(message, file=sys.stderr)
            return code
        if comm is not None:
            # One rank failing stops them all: the others may be waiting in a collective.
            print(f"{message} (rank {comm.rank} of {comm.size}; stopping every rank)", file=sys.stderr, flush=True)
            comm.comm.Abort(code)
        print(message, file=sys.stderr)
        return code


def _lead(args: Any, comm: Any) -> bool:
    """Whether this process speaks for the job: not a rank other than 0 of a distributed run (told by its
    launcher's variables until MPI is joined)."""
    if comm is not None:
        return comm.rank == 0
    if not getattr(args, "distributed", False):
        return True
    from ..distributed import _launch_position

    return _launch_position()[0] in (None, 0)


def leave(status: int) -> NoReturn:
    """End the process with ``status``: how the ``gpunn`` script and ``python -m gpunn`` end. After Ctrl-C (130)
    through ``os._exit``: CPython ends a process with SIGINT itself (status -2, not 130) once a KeyboardInterrupt
    has passed through an ``eval`` or ``exec`` of a string, even one answered since (an import that Ctrl-C cut
    short can pass through one: numpy's f2py evaluates strings as it is imported), and MPI_Finalize could wait
    for ranks that are not stopping. Also through ``os._exit`` once pyarrow has read a file, unless MPI must finalize:
    the command's work is done and written, and Arrow's thread pool can abort the interpreter's teardown
    ("terminate called without an active exception", apache/arrow#34314), turning a finished run into status -6."""
    arrow_teardown = "pyarrow" in sys.modules and "mpi4py.MPI" not in sys.modules
    if status == EXIT_INTERRUPTED or arrow_teardown:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)
    sys.exit(status)


def _parse(argv: list[str]) -> Any:
    """The arguments. A rank of an MPI job (``--distributed`` under mpiexec) that refuses its arguments tells the
    other ranks, which would otherwise wait for it in MPI's initialisation (see distributed.fail_to_start)."""
    from ..distributed import launched_with_mpi

    parser = build_parser()
    if not (launched_with_mpi() and any(a.startswith("--di") and "--distributed".startswith(a) for a in argv)):
        return parser.parse_args(argv)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            return parser.parse_args(argv)
    except SystemExit as exc:
        if not exc.code:  # --help, --version
            raise
        refused = said.getvalue().strip()
        _tell_the_other_ranks(re.sub(r"^gpunn( \w+)?: error: ", "", refused))
        print(refused, file=sys.stderr)  # the others could not be told: this rank says it alone
        raise


def _communicator() -> Any:
    from ..distributed import Communicator, launched_with_mpi

    try:
        return Communicator(abort_on_error=False)
    except GpunnError as exc:
        if getattr(exc, "every_rank", False) or not launched_with_mpi():
            raise
        _tell_the_other_ranks(str(exc))  # a setting this rank refused (GPUNN_MPI_TIMEOUT)
        raise


def _tell_the_other_ranks(why: str) -> None:
    """Join the MPI job only to say that this rank cannot start: raises the error every rank then raises, or
    returns where the job cannot be joined (no mpi4py)."""
    from ..distributed import fail_to_start

    try:
        fail_to_start(why)
    except GpunnError as exc:
        if getattr(exc, "every_rank", False):
            raise


__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "build_parser", "leave", "main"]
