"""The house's shape: ``python -m benchmarks.structure [--package DIR]``.

Prints, for the package (gpunn/ by default): its modules per floor, the imports back up a floor, the circles of
imports, the largest file, the longest class and the longest function, and the sizes the refactor of the shell
aims at (``class MLP``, gpunn/model.py, the longest ``fit``). tests/test_structure.py holds the floors and the
targets with the same functions.

Measures: a file or a class in lines, as the editor counts them (a class from its ``class`` line to its last);
a function in lines of code of its body: the lines after the signature that hold code, so neither its
docstring (nor those of functions nested in it) nor blank and comment-only lines count.
"""

from __future__ import annotations

import argparse
import ast
import io
import tokenize
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gpunn"
# Floors, from the bottom: the pure core (0, every module not named), host data, the feed, the epoch loop, the
# shell and codecs, the faces; the package root, which re-exports every floor, stands above them all.
FLOORS = {"data": 1, "feed": 2, "train": 3, "lbfgs": 3, "model": 4, "network": 4, "fitloop": 4, "checkpoint": 4,
          "export": 4, "_load": 4, "ensemble": 4, "distributed": 4, "cli": 5, "_entry": 5, "sklearn": 5, "plot": 5,
          "__main__": 5}  # fmt: skip
TOP = max(FLOORS.values()) + 1


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, a package named by its ``__init__.py``."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = [package.name, *path.relative_to(package).with_suffix("").parts]
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at the top or inside functions, relative or absolute."""
    mods = modules(package)
    root = package.name
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        here = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = here.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # a name that is no module of its own is one the package's __init__ defines
                named = [f"{base}.{a.name}" for a in node.names]
                targets = [m if m in mods else base for m in named if m in mods or base in mods]
            elif isinstance(node, ast.Import):  # `import gpunn.x.y` runs gpunn.x.y and every package above it
                targets = [a.name for a in node.names if a.name in mods]
            else:
                continue
            for target in targets:
                # a package's own __init__ re-exports its modules: that is the package, not another floor; the
                # root is the exception, as it re-exports every floor
                if target != name and (target == root or not name.startswith(target + ".")):
                    graph[name].add(target)
    return graph


def floor(module: str) -> int:
    parts = module.split(".")
    return TOP if len(parts) == 1 else FLOORS.get(parts[1], 0)


def imports_up(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in graph.items() for b in targets if floor(b) > floor(a))


def circles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Every circle of imports, once, starting at its first module in sorted order."""
    found = set()
    for start in graph:  # depth-first from every module, looking for a way back to it
        stack, seen = [(start, (start,))], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    i = path.index(min(path))
                    found.add(path[i:] + path[:i])
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*path, nxt)))
    return sorted(found)


@dataclass(frozen=True)
class Block:
    """A class or function: where it is and how long."""

    kind: str  # "class" or "function"
    name: str  # qualified within its module: MLP.fit
    path: Path
    lines: int  # from its `def` / `class` line to its last
    code: int  # lines of code of its body (docstrings, blank and comment-only lines left out)


def _code_lines(source: str, tree: ast.AST) -> set[int]:
    """The lines that hold code: a token other than a comment, and not part of a docstring."""
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and _docstring(node):
            first = node.body[0]
            lines.difference_update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def _docstring(node: ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    first = node.body[0] if node.body else None
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


def blocks(package: Path = PACKAGE) -> list[Block]:
    """Every class and function of the package, methods and nested ones included."""
    out: list[Block] = []
    for path in modules(package).values():
        source = path.read_text()
        tree = ast.parse(source)
        _visit(tree, "", path, _code_lines(source, tree), out)
    return out


def _visit(node: ast.AST, prefix: str, path: Path, code: set[int], out: list[Block]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body_start, end = child.body[0].lineno, child.end_lineno or child.lineno
            kind = "class" if isinstance(child, ast.ClassDef) else "function"
            body = sum(1 for n in range(body_start, end + 1) if n in code)
            out.append(Block(kind, prefix + child.name, path, end - child.lineno + 1, body))
            _visit(child, f"{prefix}{child.name}.", path, code, out)
        else:
            _visit(child, prefix, path, code, out)


def file_lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def report(package: Path = PACKAGE) -> str:
    mods = modules(package)
    graph = imports(package)
    per_floor = Counter(floor(m) for m in mods)
    found = blocks(package)
    classes = [b for b in found if b.kind == "class"]
    functions = [b for b in found if b.kind == "function"]
    fits = [b for b in functions if b.name.rsplit(".", 1)[-1] == "fit"]

    def where(b: Block) -> str:
        return f"{b.path.relative_to(package.parent)}::{b.name}"

    largest = max(mods.values(), key=file_lines)
    longest_class = max(classes, key=lambda b: b.lines)
    longest_function = max(functions, key=lambda b: b.code)
    longest_fit = max(fits, key=lambda b: b.code)
    mlp = [b for b in classes if b.name == "MLP" and b.path.name == "model.py"]
    up, rings = imports_up(graph), circles(graph)
    floors = ", ".join(f"{n}{' (root)' if n == TOP else ''}: {per_floor[n]}" for n in sorted(per_floor))
    rows = [
        f"structure of {package}",
        f"modules per floor: {floors} ({len(mods)} in all)",
        f"imports back up: {len(up)}" + "".join(f"\n  {a} -> {b}" for a, b in up),
        f"circles: {len(rings)}" + "".join(f"\n  {' -> '.join((*c, c[0]))}" for c in rings),
        f"largest file: {largest.relative_to(package.parent)}, {file_lines(largest)} lines",
        f"longest class: {where(longest_class)}, {longest_class.lines} lines",
        f"longest function: {where(longest_function)}, {longest_function.code} lines of code in its body",
        f"class MLP: {mlp[0].lines if mlp else '-'} lines",
        f"{package.name}/model.py: {file_lines(package / 'model.py')} lines",
        f"longest fit body: {where(longest_fit)}, {longest_fit.code} lines of code",
        "(a file or class in lines; a function's body in lines of code: no docstring, blank or comment-only line)",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.structure", description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=PACKAGE, help="the package folder (default: gpunn/)")
    print(report(parser.parse_args(argv).package.resolve()))


if __name__ == "__main__":
    main()
