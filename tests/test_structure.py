"""The package's layering: data flows down, so no module imports one on a floor above it, and none import each
other in a circle (lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import gpunn

ROOT = Path(gpunn.__file__).parent
# Floors, from the bottom: the pure core, host data, the feed, the epoch loop, the shell and codecs, the faces.
FLOORS = {"data": 1, "feed": 2, "train": 3, "model": 4, "network": 4, "fitloop": 4, "checkpoint": 4, "export": 4,
          "_load": 4, "ensemble": 4, "distributed": 4, "cli": 5, "_entry": 5, "sklearn": 5, "plot": 5,
          "__main__": 5}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ["gpunn", *path.relative_to(ROOT).with_suffix("").parts]
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                for target in targets or ([base] if base in mods else []):
                    # a package's own __init__ re-exports its modules: that is the package, not another floor
                    if target != name and not name.startswith(target + ".") and target != "gpunn":
                        graph[name].add(target)
    return graph


def _floor(module: str) -> int:
    if module == "gpunn":
        return 5
    return FLOORS.get(module.split(".")[1], 0)


def test_no_module_imports_one_on_a_floor_above_it():
    up = [(a, b) for a, targets in _imports().items() for b in targets if _floor(b) > _floor(a)]
    assert up == []


def test_no_modules_import_each_other_in_a_circle():
    graph = _imports()
    circles = []
    for start in graph:  # depth-first from every module, looking for a way back to it
        stack, seen = [(start, (start,))], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    circles.append(path)
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*path, nxt)))
    assert circles == []
