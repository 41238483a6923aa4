"""``gpunn ...`` run by gpunn.cli.main inside the test process, for tests whose oracle is what the command did
(its exit status, output and files), not how a process starts or ends: each call spares the start of an
interpreter that imports gpunn, NumPy and pandas. What only a process shows (the entry point, a closed pipe,
Ctrl-C, the exit after pyarrow) is tested in subprocesses, in tests/test_cli.py."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import warnings


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    """``gpunn *args`` in the folder ``cwd``: its exit status, stdout and stderr, as the command gives them."""
    from gpunn import cli

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd or here)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as PYTHONWARNINGS=ignore did for the command
            try:
                status = cli.main([str(a) for a in args])
            except SystemExit as exc:  # argparse's usage errors
                status = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())
