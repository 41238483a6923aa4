"""gpunn's version, on the ground floor so that any module can name it without importing the package root.

Kept equal to ``[project] version`` in pyproject.toml (tests/test_structure.py checks): a constant works in a
source checkout that was never installed, where ``importlib.metadata`` finds no distribution or another one.
"""

__version__ = "0.1.0"
