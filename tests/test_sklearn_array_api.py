"""scikit-learn's own Array API checks on gpunn.sklearn's estimators.

``check_estimator`` (tests/test_sklearn.py) runs the Array API checks only on NumPy, and skips even those unless
``SCIPY_ARRAY_API=1`` is set. Here the estimators go through the checks scikit-learn runs on an estimator that
supports the Array API (``sklearn.utils.estimator_checks._yield_array_api_checks``), over every namespace,
device and dtype scikit-learn tests (``yield_namespace_device_dtype_combinations``): numpy, array_api_strict on
its CPU device (float64) and its simulated ``device1`` (float32), cupy, and torch on cpu / cuda / xpu / mps in
float64 and float32 (dpnp too). Those not installed or not usable here skip with the reason.

- ``check_array_api_input``: fitted with NumPy and with the namespace's arrays (under ``array_api_dispatch``),
  predictions, probabilities and scores come back in X's namespace, on X's device, with NumPy's shapes and
  dtypes; and, run again with ``check_values=True, check_sample_weight=True``, with NumPy's values (to
  scikit-learn's tolerance for the dtype), unit sample weights passed in the namespace too.
- ``check_array_api_mixed_inputs``: X in one namespace, y and sample_weight in another.
- ``check_array_api_same_namespace``: predicting with an array of another namespace than fit's raises.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import unittest
import warnings

import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.utils import estimator_checks  # noqa: E402

from gpunn import _backend  # noqa: E402
from gpunn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# What this module takes from scikit-learn's private modules, as of scikit-learn 1.9 (the version it was written
# and checked against): sklearn.utils._array_api.yield_namespace_device_dtype_combinations and
# yield_mixed_namespace_input_permutations, and the keyword arguments of the (public) check functions. Private
# helpers move between releases, so scikit-learn older than 1.9, or a release in which these are gone or the
# checks' signatures changed, skips this module with a reason naming the version rather than failing on
# scikit-learn's internals. Update the pin after checking the helpers in a new release.
TESTED_WITH = (1, 9)
CHECK_ARGUMENTS = {
    "check_array_api_input": {"array_namespace", "device_name", "dtype_name", "check_values", "check_sample_weight"},
    "check_array_api_mixed_inputs": {"X_ns_and_device", "other_ns_and_device"},
    "check_array_api_same_namespace": {"array_namespace", "device_name"},
}


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _pinned_helpers_missing() -> str | None:
    version = sklearn.__version__
    if _version(version) < TESTED_WITH:
        return (f"scikit-learn {version} is older than {'.'.join(map(str, TESTED_WITH))}, whose private Array API "
                "test helpers this module uses")  # fmt: skip
    try:
        from sklearn.utils._array_api import (  # noqa: F401
            yield_mixed_namespace_input_permutations,
            yield_namespace_device_dtype_combinations,
        )
    except ImportError as exc:
        return f"scikit-learn {version} moved its private Array API test helpers ({exc})"
    for name, arguments in CHECK_ARGUMENTS.items():
        check = getattr(estimator_checks, name, None)
        if check is None:
            return f"scikit-learn {version} has no sklearn.utils.estimator_checks.{name}"
        missing = arguments - set(inspect.signature(check).parameters)
        if missing:
            return f"scikit-learn {version} changed {name}'s arguments (no {sorted(missing)})"
    return None


_WHY_NOT = _pinned_helpers_missing()
if _WHY_NOT:
    pytest.skip(_WHY_NOT, allow_module_level=True)

from sklearn.utils._array_api import (  # noqa: E402
    yield_mixed_namespace_input_permutations,
    yield_namespace_device_dtype_combinations,
)

# The estimators as scikit-learn's own common tests configure its MLPs (max_iter=100), to keep the checks quick.
ESTIMATORS = {"MLPClassifier": MLPClassifier(max_iter=100), "MLPRegressor": MLPRegressor(max_iter=100)}

# (check, estimator, the combination's id) -> (the error it raises, why), for a failure that is known and
# reported; strict, so that a fix shows up as a failure asking to remove the entry. (Empty: the two found when
# this file was written, a regressor's y of another namespace than X's and predict's namespace check under
# array_api_dispatch, are fixed.)
KNOWN_FAILURES: dict[tuple[str, str, str], tuple[type[BaseException], str]] = {}


def _unusable(namespace: str, device: str | None) -> str | None:
    """Why this namespace's device cannot run here, where scikit-learn's own skip would not say so: its helper
    skips torch on CUDA only for a torch built without CUDA, and a CuPy without a GPU fails instead of skipping."""
    if namespace == "cupy" and importlib.util.find_spec("cupy") is not None:
        count, why = _backend.gpu_status()
        return None if count else f"no GPU for cupy: {why}"
    if namespace == "torch" and device == "cuda" and importlib.util.find_spec("torch") is not None:
        import torch

        return None if torch.cuda.is_available() else "no GPU for torch: torch sees no usable CUDA device"
    return None


def _marks(check: str, estimator: str, combination: str, *unusable: str | None):
    known = KNOWN_FAILURES.get((check, estimator, combination))
    skip = next((u for u in unusable if u), None)
    marks = [pytest.mark.xfail(strict=True, raises=known[0], reason=known[1])] if known else []
    marks += [pytest.mark.skip(reason=skip)] if skip else []
    if "cupy" in combination or "cuda" in combination:
        marks.append(pytest.mark.gpu)
    return marks


def _targeted(namespace: str, device: str | None) -> bool:
    """The namespaces and devices gpunn runs on (docs/devices.md): not dpnp, nor torch's Apple (mps) and Intel
    (xpu) GPU backends, which scikit-learn's generator also yields and which would only ever skip."""
    return namespace != "dpnp" and device not in ("mps", "xpu")


def _input_params():
    params = []
    for namespace, device, dtype in yield_namespace_device_dtype_combinations():
        if not _targeted(namespace, device):
            continue
        combination = "-".join(str(p) for p in (namespace, device, dtype) if p is not None)
        for estimator in ESTIMATORS:
            for variant in ("types", "values"):
                marks = _marks("input", estimator, combination, _unusable(namespace, device))
                params.append(pytest.param(estimator, namespace, device, dtype, variant, marks=marks,
                                           id=f"{estimator}-{combination}-{variant}"))  # fmt: skip
    return params


def _mixed_params():
    params = []
    for other, X, _ in yield_mixed_namespace_input_permutations():
        if not (_targeted(*other) and _targeted(*X)):
            continue
        combination = f"{other.xp}-{other.device}-to-{X.xp}-{X.device}".replace("-None", "")
        for estimator in ESTIMATORS:
            marks = _marks("mixed", estimator, combination, _unusable(*other), _unusable(*X))
            params.append(pytest.param(estimator, X, other, marks=marks, id=f"{estimator}-{combination}"))
    return params


@pytest.fixture(autouse=True)
def _array_api_dispatch(monkeypatch: pytest.MonkeyPatch):
    """scikit-learn's Array API dispatch (``config_context(array_api_dispatch=True)``, which the checks enter
    themselves) refuses to run without ``SCIPY_ARRAY_API=1``, and its test helper skips every check silently
    without it. SciPy reads the variable when it is first imported, which in a whole test run happened earlier;
    that is harmless here, since gpunn.sklearn hands SciPy no array but NumPy's."""
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    with warnings.catch_warnings():
        # the checks train 100 epochs on 30 rows; convergence is not what they test
        warnings.filterwarnings("ignore", message="Stochastic Optimizer")
        yield


@contextlib.contextmanager
def _no_skip_for(namespaces: set[str]):
    """A skip from scikit-learn's helper is a failure for numpy and array_api_strict, which the test extra
    installs: without it, a missing SCIPY_ARRAY_API would skip every check and the module would pass empty."""
    try:
        yield
    except unittest.SkipTest as exc:
        if namespaces & {"numpy", "array_api_strict"} == namespaces:
            pytest.fail(f"scikit-learn skipped a check that must run here: {exc}")
        pytest.skip(f"{'/'.join(sorted(namespaces))}: scikit-learn's helper skips it: {exc}")


@pytest.mark.parametrize("estimator, namespace, device, dtype, variant", _input_params())
def test_check_array_api_input(estimator, namespace, device, dtype, variant):
    extra = {"check_values": True, "check_sample_weight": True} if variant == "values" else {}
    with _no_skip_for({namespace}):
        estimator_checks.check_array_api_input(
            estimator, ESTIMATORS[estimator], array_namespace=namespace, device_name=device, dtype_name=dtype,
            **extra,
        )  # fmt: skip


@pytest.mark.parametrize("estimator, X_ns_and_device, other_ns_and_device", _mixed_params())
def test_check_array_api_mixed_inputs(estimator, X_ns_and_device, other_ns_and_device):
    with _no_skip_for({X_ns_and_device.xp, other_ns_and_device.xp}):
        estimator_checks.check_array_api_mixed_inputs(
            estimator, ESTIMATORS[estimator], X_ns_and_device=X_ns_and_device,
            other_ns_and_device=other_ns_and_device,
        )  # fmt: skip


@pytest.mark.parametrize(
    "estimator",
    [pytest.param(e, marks=_marks("same-namespace", e, "array_api_strict"), id=e) for e in ESTIMATORS],
)
def test_check_array_api_same_namespace(estimator):
    with _no_skip_for({"array_api_strict"}):
        estimator_checks.check_array_api_same_namespace(estimator, ESTIMATORS[estimator], "array_api_strict")
