"""scikit-learn's own MLP tests on gpunn.sklearn: the installed ``sklearn/neural_network/tests/test_mlp.py``, copied
with only its import line changed to gpunn's estimators, run in a subprocess; the tests that fail must be exactly
those listed here, each for the reason given (docs/integrations.md lists them too). About 15-30 s."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"
VERSION = "1.9"  # the scikit-learn whose test file the list below was made for

EXPECTED_FAILURES = {
    "test_gradient": "it calls scikit-learn's private _loss_grad_lbfgs and _forward_pass, which gpunn's estimators "
    "do not have (gpunn's gradients are checked against finite differences in its own tests)",
}
N_TESTS = 59


def _upstream_file() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-learn is not installed")
    path = Path(spec.origin).parent / "neural_network" / "tests" / "test_mlp.py"
    if not path.is_file():
        pytest.skip(f"scikit-learn's test file is not installed ({path})")
    return path


def test_scikit_learns_own_mlp_tests_fail_only_where_listed(tmp_path):
    import sklearn

    source = _upstream_file().read_text(encoding="utf-8")
    if not sklearn.__version__.startswith(VERSION + "."):
        pytest.skip(f"the list of failing tests is scikit-learn {VERSION}'s; this is {sklearn.__version__}")
    assert source.count(IMPORT) == 1, f"scikit-learn's test file no longer imports its estimators as {IMPORT!r}"
    (tmp_path / "test_mlp.py").write_text(
        source.replace(IMPORT, "from gpunn.sklearn import MLPClassifier, MLPRegressor"), encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if k != "SKLEARN_TESTS_GLOBAL_RANDOM_SEED"}  # its default, 42
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    report = tmp_path / "report.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "test_mlp.py", "-p", "sklearn.conftest", "-q", "-p", "no:cacheprovider",
         f"--junitxml={report}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert report.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    cases = ET.parse(report).getroot().iter("testcase")
    outcomes = {}
    for case in cases:
        bad = case.find("failure") is not None or case.find("error") is not None
        outcomes[case.get("name")] = "failed" if bad else ("skipped" if case.find("skipped") is not None else "passed")
    failed = {name for name, outcome in outcomes.items() if outcome == "failed"}
    assert len(outcomes) == N_TESTS, sorted(outcomes)
    assert failed - set(EXPECTED_FAILURES) == set(), "newly failing:\n" + run.stdout[-6000:]
    assert set(EXPECTED_FAILURES) - failed == set(), "now passing: remove them from EXPECTED_FAILURES"
