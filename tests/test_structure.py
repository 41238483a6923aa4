"""The package's layering: data flows down, so no module imports one on a floor above it (the package root, which
re-exports every floor, is the top one), and none import each other in a circle (lazy imports inside functions
included). The import graph and the measures are ``benchmarks.structure``'s (``python -m benchmarks.structure``
prints them). Plus the sizes the shell's refactor aims at, held as limits."""

from __future__ import annotations

import re
from pathlib import Path

import gpunn
from benchmarks import structure

ROOT = Path(gpunn.__file__).parent


def test_no_module_imports_one_on_a_floor_above_it():
    assert structure.imports_up(structure.imports(ROOT)) == []


def test_no_modules_import_each_other_in_a_circle():
    assert structure.circles(structure.imports(ROOT)) == []


def test_an_import_of_the_root_or_of_a_name_it_defines_is_an_import_up(tmp_path):
    """The graph's own check, on a made-up package: the root is above every floor, so the faces importing it
    count too; a name that is no module (``__version__``) is the root's, even beside modules in one import."""
    package = tmp_path / "gpunn"
    (package / "cli").mkdir(parents=True)
    (package / "__init__.py").write_text("from . import export\n__version__ = '1'\n")
    (package / "_backend.py").write_text("")
    (package / "export.py").write_text("def f():\n    from . import __version__\n")
    (package / "cli" / "__init__.py").write_text("from .. import _backend, __version__\n")
    (package / "data.py").write_text("import gpunn\n")
    graph = structure.imports(package)
    up = [("gpunn.cli", "gpunn"), ("gpunn.data", "gpunn"), ("gpunn.export", "gpunn")]
    assert structure.imports_up(graph) == up
    assert structure.circles(graph) == [("gpunn", "gpunn.export")]


def test_a_body_counts_its_lines_of_code_and_a_class_its_lines(tmp_path):
    package = tmp_path / "gpunn"
    package.mkdir()
    (package / "__init__.py").write_text(
        "class A:\n"
        '    """One line."""\n'
        "\n"
        "    def fit(\n"
        "        self, x,\n"
        "    ):\n"
        '        """Two\n'
        '        lines."""\n'
        "        # a comment\n"
        "        y = x  # code\n"
        "\n"
        "        def inner():\n"
        '            """Left out too."""\n'
        '            return """a string\n'
        '            of two lines"""\n'
        "        return y\n"
    )
    found = {b.name: (b.kind, b.lines, b.code) for b in structure.blocks(package)}
    assert found == {"A": ("class", 16, 8), "A.fit": ("function", 13, 5), "A.fit.inner": ("function", 4, 2)}


def test_the_version_is_pyprojects():
    pyproject = (ROOT.parent / "pyproject.toml").read_text()
    project = re.search(r"^\[project\]$(.*?)^\[", pyproject, re.M | re.S)
    assert project is not None
    assert re.findall(r'^version = "([^"]+)"$', project.group(1), re.M) == [gpunn.__version__]


def test_no_class_is_over_450_lines():
    assert [(b.name, b.lines) for b in structure.blocks(ROOT) if b.kind == "class" and b.lines > 450] == []


def test_model_py_is_at_most_700_lines():
    assert structure.file_lines(ROOT / "model.py") <= 700


def test_every_fit_body_is_under_40_lines_of_code():
    fits = [b for b in structure.blocks(ROOT) if b.kind == "function" and b.name.rsplit(".", 1)[-1] == "fit"]
    assert fits
    assert [(b.name, b.code) for b in fits if b.code >= 40] == []
