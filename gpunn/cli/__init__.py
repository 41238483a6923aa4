"""The ``gpunn`` command: train, predict, export, plot, info.

``main`` dispatches to one module per command: :mod:`.train` (``gpunn train``) and :mod:`.commands` (the
others); :mod:`.parser` holds the arguments.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..errors import GpunnError, NonFiniteError
from .parser import build_parser

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    comm = None
    try:
        if getattr(args, "distributed", False):
            from ..distributed import Communicator

            comm = args.comm = Communicator(abort_on_error=False)
        from .commands import cmd_export, cmd_info, cmd_plot, cmd_predict
        from .train import cmd_train

        commands = {
            "train": cmd_train, "predict": cmd_predict, "export": cmd_export, "plot": cmd_plot, "info": cmd_info
        }  # fmt: skip
        return commands[args.command](args)
    except BrokenPipeError:  # the reader went away (gpunn predict ... | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        if comm is None and (args.debug or not isinstance(exc, (GpunnError, OSError))):
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
        if comm is not None:
            # One rank failing stops them all: the others may be waiting in a collective.
            print(f"{message} (rank {comm.rank} of {comm.size}; stopping every rank)", file=sys.stderr, flush=True)
            comm.comm.Abort(code)
        print(message, file=sys.stderr)
        return code


__all__ = ["EXIT_USAGE", "build_parser", "main"]
