"""Every documented call runs: the fenced code blocks of README.md and docs/*.md, executed as written.

Each page's blocks run in order, in one shared namespace and one temporary working directory of the page's own
(files an example writes land there, and a later block of the page can read them). One test per unit, named
``<page>:<line>`` after the unit's first line in the Markdown file:

- a ```python block is one unit, except that each top-level statement needing a GPU (a ``"cuda"`` /
  ``"cuda:N"`` device or CuPy) is a unit of its own, skipped with the reason when no such GPU is usable
  (CuPy's through ``gpunn._backend.gpu_status()``, PyTorch's through ``torch.cuda``); a block importing a
  package that is not installed (torch, jax, matplotlib, scikit-learn, pyarrow, onnx, ...) is skipped with
  its name. Tracebacks point at the Markdown lines. A block importing ``gpunn.distributed`` is a script for
  MPI ranks: it runs on its own under ``mpiexec -n 2``;
- a ```bash / ```sh / ```shell / ```console block gives one unit per command (``&&`` chains split, ``\\``
  continuations joined, ``$`` prompts of console blocks required): ``gpunn ...`` runs in this process through
  ``gpunn.cli.main`` and must exit with status 0, ``mpiexec -n N gpunn ...`` runs as a subprocess; package
  installs, virtual-environment set-up and ``python -m ...`` (the test suite, benchmarks) are set-up, not
  examples, and are not collected (CI runs the install and the test command itself); any other command fails,
  so that a new kind of example is never left out silently;
- a ```text block is never run, nor a block with ``<!-- not-run: reason -->`` on the line before its fence.
  Keep these few; every other fence must carry one of the languages above.

The data files that examples name as the user's own (``file.csv``, ``new.csv``, ``train.csv``) are written
into the page's folder before its first unit runs. A unit that fails because of a gpunn bug, not a mistake in
the docs, is listed in ``KNOWN_BUGS`` and so marked ``xfail(strict=True)`` until the bug is fixed.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpunn import _backend

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell", "console"}
NOT_RUN_LANGUAGES = {"text"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(?P<reason>.+?)\s*-->\s*$")
GPU_DEVICE = re.compile(r"""["']cuda(?::(?P<index>\d+))?["']|\bcupy\b""")

# gpunn modules that need an optional package, and the package (their import fails, or their first call does).
OPTIONAL = {"gpunn.sklearn": "sklearn", "gpunn.plot": "matplotlib", "gpunn.export": "onnx",
            "gpunn.distributed": "mpi4py"}  # fmt: skip

# Files that examples name as the user's own data, written into the page's folder when the page mentions them.
USER_FILES = ("file.csv", "new.csv", "train.csv")

# (page, a piece of the unit's code) -> why it fails: a gpunn bug, reported, not a mistake in the docs.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


# ------------------------------------------------------------------------------------------------ parsing
@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None  # the reason of a <!-- not-run: ... --> marker


@dataclass
class Unit:
    page: str
    line: int  # first line in the Markdown file
    kind: str  # "python", "mpi-script", "command", "skip", "error"
    code: str = ""  # python source (kind python / mpi-script)
    argv: list[str] = field(default_factory=list)  # (kind command)
    reason: str = ""  # (kind skip / error), or the package a python unit needs
    gpu: str = ""  # the statement of a python unit that names a GPU, checked when the unit runs
    defines: frozenset[str] = frozenset()  # names a python unit binds (to tell a skipped unit's dependents)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(ROOT).as_posix()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, indent, start = match["fence"], len(match["indent"]), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1  # the closing fence
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.match(previous)
        found.append(Block(page, start + 1, match["info"].lower(), "\n".join(body) + "\n",
                           marker["reason"] if marker else None))  # fmt: skip
    return found


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _missing_package(tree: ast.AST) -> str | None:
    for name in sorted(_imports(tree)):
        package = OPTIONAL.get(name, name.split(".")[0])
        if importlib.util.find_spec(package) is None:
            return f"needs {package}, which is not installed"
    return None


def _bound_names(tree: ast.AST) -> frozenset[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
    return frozenset(names)


def _needs_gpu(source: str) -> str | None:
    """Why the GPU this statement names is not usable here, or None (no GPU named, or it is usable)."""
    matches = list(GPU_DEVICE.finditer(source))
    if not matches:
        return None
    needed = max(int(m["index"] or 0) for m in matches) + 1
    if re.search(r"\btorch\b", source):
        if importlib.util.find_spec("torch") is None:
            return "needs a CUDA GPU for PyTorch; torch is not installed"
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return None if count >= needed else f"needs {needed} CUDA GPU(s) for PyTorch; torch sees {count}"
    count, why = _backend.gpu_status()
    return None if count >= needed else f"needs {needed} CUDA GPU(s) for CuPy; {count} usable ({why or 'too few'})"


def python_units(block: Block) -> list[Unit]:
    tree = ast.parse(block.code)
    missing = _missing_package(tree)
    if "gpunn.distributed" in _imports(tree):
        return [Unit(block.page, block.line + 1, "mpi-script", block.code, reason=missing or "")]
    source = block.code.splitlines()
    units: list[Unit] = []
    group: list[ast.stmt] = []

    def flush(statements: list[ast.stmt], gpu: str = "") -> None:
        if not statements:
            return
        first, last = statements[0].lineno, statements[-1].end_lineno or statements[-1].lineno
        # blank lines keep the Markdown line numbers in tracebacks
        code = "\n" * (block.line + first - 1) + "\n".join(source[first - 1 : last]) + "\n"
        units.append(Unit(block.page, block.line + first, "python", code, reason=missing or "", gpu=gpu,
                          defines=_bound_names(ast.Module(body=statements, type_ignores=[]))))  # fmt: skip

    for statement in tree.body:
        segment = "\n".join(source[statement.lineno - 1 : statement.end_lineno])
        if GPU_DEVICE.search(segment):
            flush(group)
            group = []
            flush([statement], segment)
        else:
            group.append(statement)
    flush(group)
    return units


SKIPPED_COMMANDS = [
    (lambda a: a[0] == "pip" or a[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]),
     "installs packages, which a test cannot do"),
    (lambda a: a[0] in (".", "source") or a[1:3] == ["-m", "venv"], "sets up a virtual environment"),
    (lambda a: a[0] in ("python", "python3") and a[1:2] == ["-m"],
     "runs a whole program (the test suite, a benchmark), not an example"),
]  # fmt: skip


def shell_units(block: Block) -> list[Unit]:
    units = []
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for offset, raw in enumerate(block.code.splitlines(), start=block.line + 1):
        text = raw.rstrip()
        if block.language == "console" and not pending:
            if not text.startswith("$ "):
                continue  # output
            text = text[2:]
        if not pending:
            start = offset
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        logical.append((start, pending + text))
        pending = ""
    for line, text in logical:
        words = shlex.split(text, comments=True)
        commands: list[list[str]] = [[]]
        for word in words:
            if word == "&&":
                commands.append([])
            else:
                commands[-1].append(word)
        for argv in filter(None, commands):
            if any(test(argv) for test, _ in SKIPPED_COMMANDS):
                continue  # set-up, not an example: not collected (CI runs the install and the test command)
            if argv[0] == "gpunn" or argv[0] in ("mpiexec", "mpirun"):
                units.append(Unit(block.page, line, "command", argv=argv))
            else:
                why = "tests/test_docs.py does not know how to run this; teach it, or mark the block not-run"
                units.append(Unit(block.page, line, "error", reason=f"`{shlex.join(argv)}`: {why}"))
    return units


def page_units(path: Path) -> list[Unit]:
    units: list[Unit] = []
    for block in blocks(path):
        if block.not_run or block.language in NOT_RUN_LANGUAGES:
            continue
        elif block.language in PYTHON:
            units += python_units(block)
        elif block.language in SHELL:
            units += shell_units(block)
        else:
            units.append(Unit(block.page, block.line, "error", reason=f"fence language {block.language!r} is "
                              f"neither run ({sorted(PYTHON | SHELL)}) nor 'text'"))  # fmt: skip
    return units


UNITS = [unit for path in PAGES for unit in page_units(path)]


def _ids(units: list[Unit]) -> list[str]:
    """``page:line``, with ``#2``, ``#3`` for further commands chained on one line."""
    ids: list[str] = []
    count: dict[str, int] = {}
    for unit in units:
        count[unit.id] = count.get(unit.id, 0) + 1
        ids.append(unit.id if count[unit.id] == 1 else f"{unit.id}#{count[unit.id]}")
    return ids


def _params() -> list[Any]:
    params = []
    for unit, id_ in zip(UNITS, _ids(UNITS)):
        marks = [pytest.mark.xfail(strict=True, reason=why) for (page, piece), why in KNOWN_BUGS.items()
                 if page == unit.page and piece in (unit.code or shlex.join(unit.argv))]  # fmt: skip
        if unit.gpu or (unit.argv and GPU_DEVICE.search(shlex.join(unit.argv))):
            marks.append(pytest.mark.gpu)  # a block that names a GPU: `pytest -m gpu` runs it with the GPU tests
        params.append(pytest.param(unit, id=id_, marks=marks))
    return params


# ------------------------------------------------------------------------------------------------ running
def _mpiexec() -> str | None:
    local = Path(sys.executable).with_name("mpiexec")
    return str(local) if local.exists() else shutil.which("mpiexec")


def _write_user_files(folder: Path, text: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    header = "x1,x2,x3,x4"
    for name in USER_FILES:
        if name in text:
            data, cols = (X[:40], header) if name == "new.csv" else (np.c_[X, y], header + ",label")
            np.savetxt(folder / name, data, delimiter=",", header=cols, comments="", fmt="%.6g")


class Page:
    """One page's shared state: its namespace, its folder, and which of its units ran."""

    def __init__(self, page: str, folder: Path):
        self.page, self.folder = page, folder
        self.units = [u for u in UNITS if u.page == page]
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.done = 0
        self.not_run: list[Unit] = []  # skipped or failed
        _write_user_files(folder, (ROOT / page).read_text(encoding="utf-8"))

    def run_up_to(self, unit: Unit, monkeypatch: pytest.MonkeyPatch) -> None:
        """Run the page's units before ``unit`` that have not run (a -k selection), then ``unit``."""
        index = next(i for i, u in enumerate(self.units) if u is unit)
        while self.done < index:
            earlier = self.units[self.done]
            self.done += 1
            try:
                self._run(earlier, monkeypatch)
            except (Exception, pytest.skip.Exception, pytest.fail.Exception):
                self.not_run.append(earlier)
        self.done = index + 1
        try:
            self._run(unit, monkeypatch)
        except (Exception, pytest.skip.Exception, pytest.fail.Exception):
            self.not_run.append(unit)
            raise

    def _run(self, unit: Unit, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(self.folder)
        monkeypatch.setenv("MPLBACKEND", "Agg")
        if unit.kind == "error":
            pytest.fail(f"{unit.id}: {unit.reason}")
        why = unit.reason or (_needs_gpu(unit.gpu) if unit.gpu else None)
        if why:  # a skipped command or block, or a python unit's missing package or GPU
            pytest.skip(f"{unit.id}: {why}")
        if unit.kind == "python":
            self._exec(unit)
        elif unit.kind == "mpi-script":
            script = self.folder / f"block_{unit.line}.py"
            script.write_text(unit.code, encoding="utf-8")
            self._subprocess(unit, [sys.executable, str(script)], ranks=2)
        elif unit.argv[0] == "gpunn":
            self._gpunn(unit)
        else:
            self._mpi_command(unit)

    def _exec(self, unit: Unit) -> None:
        code = compile(unit.code, str(ROOT / unit.page), "exec")
        try:
            exec(code, self.namespace)
        except NameError as exc:
            culprit = [u.id for u in self.not_run if exc.name in u.defines]
            if culprit:
                pytest.skip(f"{unit.id}: uses {exc.name!r} from {', '.join(culprit)}, which did not run")
            raise

    def _gpunn(self, unit: Unit) -> None:
        from gpunn import cli

        gpu = _needs_gpu(" ".join(repr(a) for a in unit.argv))
        if gpu:
            pytest.skip(f"{unit.id}: {gpu}")
        status: Any
        try:
            status = cli.main(unit.argv[1:])
        except SystemExit as exc:  # argparse: an unknown option, a bad value
            status = exc.code
        assert status == 0, f"`{shlex.join(unit.argv)}` exited with status {status}"

    def _mpi_command(self, unit: Unit) -> None:
        argv = unit.argv
        ranks = int(argv[argv.index("-n") + 1]) if "-n" in argv else 1
        program = argv[argv.index("-n") + 2 :] if "-n" in argv else argv[1:]
        if program[:1] != ["gpunn"]:
            pytest.fail(f"`{shlex.join(argv)}`: only `mpiexec -n N gpunn ...` is run by tests/test_docs.py")
        script = Path(sys.executable).with_name("gpunn")  # the installed command, as in the docs
        command = [str(script)] if script.exists() else [sys.executable, "-m", "gpunn"]
        self._subprocess(unit, [*command, *program[1:]], ranks=ranks)

    def _subprocess(self, unit: Unit, command: list[str], ranks: int) -> None:
        mpiexec = _mpiexec()
        if mpiexec is None or importlib.util.find_spec("mpi4py") is None:
            pytest.skip(f"{unit.id}: needs mpi4py and mpiexec (pip install 'gpunn[mpi]')")
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        result = subprocess.run([mpiexec, "-n", str(ranks), *command], cwd=self.folder, env=env,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        print(result.stdout)
        assert result.returncode == 0, f"{unit.id}: exit status {result.returncode}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory):
    made: dict[str, Page] = {}

    def get(page: str) -> Page:
        if page not in made:
            made[page] = Page(page, tmp_path_factory.mktemp(page.replace("/", "_").replace(".", "_")))
        return made[page]

    yield get
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


# gpunn.sklearn's ConvergenceWarning (a UserWarning) for an example's short max_iter: what it shows, not a failure.
@pytest.mark.filterwarnings("ignore:Stochastic Optimizer:UserWarning")
@pytest.mark.parametrize("unit", _params())
def test_documented_example_runs(unit: Unit, pages, monkeypatch: pytest.MonkeyPatch) -> None:
    pages(unit.page).run_up_to(unit, monkeypatch)


def test_every_page_is_checked() -> None:
    """The examples are found: every page with a fence yields units, and the pages we know of are here."""
    assert {"README.md", "docs/index.md", "docs/devices.md", "docs/integrations.md"} <= {u.page for u in UNITS}
    assert sum(u.kind == "python" for u in UNITS) >= 10
    assert sum(u.kind == "command" for u in UNITS) >= 5
