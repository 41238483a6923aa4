"""Cross-namespace and cross-device checks: every backend reproduces the NumPy run."""

from __future__ import annotations

import array_api_compat as aac
import numpy as np
import pytest

import gpunn
from gpunn import _backend

# float32 runs on a GPU sum in a different order (cuBLAS) than on the CPU; after 5 Adam epochs of the
# network below the weights stay within this absolute tolerance of NumPy's (documented in docs/devices.md).
GPU_FLOAT32_ATOL = 1e-4


def _problem(n=96, n_features=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    y = (X[:, 0] - X[:, 1] * X[:, 2] > 0).astype(np.int64)
    return X, y


def _weights(m):
    return [_backend.to_numpy(a) for pair in m.weights for a in pair]


def test_same_seed_gives_identical_initial_weights(backend):
    for dtype in ("float32", "float64"):
        ref = gpunn.MLP([5, 10, 10, 10, 1], seed=7, device="cpu", dtype=dtype)
        m = gpunn.MLP([5, 10, 10, 10, 1], seed=7, dtype=dtype, **backend.kwargs())
        for a, b in zip(_weights(ref), _weights(m)):
            assert a.dtype == b.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(a, b)


# The initialization's definition (docs/devices.md, gpunn.init): a layer's weights W (out, in) are He-normal,
# N(0, 2 / fan_in), when the activation applied to its output is rectifier-like, else Glorot-uniform,
# U(-sqrt(6 / (fan_in + fan_out)), +sqrt(...)); the output layer follows the last hidden layer; biases are zero.
RECTIFIER_LIKE = {"relu", "leaky_relu", "elu", "gelu", "silu"}


@pytest.mark.parametrize("activation", [["relu", "tanh"], ["tanh", "gelu"], ["sigmoid", "leaky_relu"]], ids=str)
def test_initial_weights_follow_their_definition(activation):
    """Wide layers (2e4 to 1.2e5 weights each): each layer's sample statistics against the distribution its
    rule defines. The standard error of a sample std is about std / sqrt(2 n) (0.3% at n = 6e4): 2% is 7 or more
    standard errors."""
    sizes = [400, 300, 200, 100]
    m = gpunn.MLP(sizes, activation=activation, output="identity", seed=0, dtype="float64", device="cpu")
    rules = [*activation, activation[-1]]
    pairs = m.numpy_weights()
    assert len(pairs) == 3
    for (w, b), fan_in, fan_out, rule in zip(pairs, sizes[:-1], sizes[1:], rules):
        assert w.shape == (fan_out, fan_in) and b.shape == (fan_out,) and w.dtype == np.float64
        np.testing.assert_array_equal(b, np.zeros(fan_out))
        n = w.size
        if rule in RECTIFIER_LIKE:
            std = np.sqrt(2.0 / fan_in)
            # normal, not uniform: 68.27% of the draws within one std, and some beyond 3.5 std
            assert abs(np.mean(np.abs(w) < std) - 0.6827) < 0.01
            assert np.max(np.abs(w)) > 3.5 * std
        else:
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            std = limit / np.sqrt(3.0)
            # uniform on [-limit, limit]: the bound holds, its ends are reached, half the draws lie within limit / 2
            assert np.max(np.abs(w)) <= limit and np.max(w) > 0.995 * limit and np.min(w) < -0.995 * limit
            assert abs(np.mean(np.abs(w) < limit / 2) - 0.5) < 0.01
        assert np.std(w) == pytest.approx(std, rel=0.02), f"{rule} layer {fan_in}->{fan_out}"
        assert abs(np.mean(w)) < 5 * std / np.sqrt(n)
    # float32 models start from the same draws, rounded
    m32 = gpunn.MLP(sizes, activation=activation, output="identity", seed=0, dtype="float32", device="cpu")
    for (w32, _), (w, _) in zip(m32.numpy_weights(), pairs):
        assert w32.dtype == np.float32
        np.testing.assert_array_equal(w32, w.astype(np.float32))


def test_different_seeds_give_different_weights():
    a = gpunn.MLP([5, 10, 1], seed=1, device="cpu").weights[0][0]
    b = gpunn.MLP([5, 10, 1], seed=2, device="cpu").weights[0][0]
    assert not np.array_equal(a, b)


def _generic_path_on_numpy(backend, monkeypatch):
    """On the numpy parameter, the side under test runs NumPy through the generic Array API path, against the
    reference run on the fast path (itself checked against torch autograd in test_step): NumPy against
    itself would check nothing."""
    if backend.name == "numpy":
        monkeypatch.setattr(_backend, "NUMPY_FAST_PATHS", False)
        assert not _backend.numpy_fast_path(_backend.resolve("cpu")[0])


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_minibatch_adam_run_matches_numpy(backend, output, monkeypatch):
    X, y = _problem()
    k = 1 if output == "sigmoid" else 3
    if output == "softmax":
        y = (np.digitize(X[:, 0], [-0.5, 0.5])).astype(np.int64)
    dtype = "float32" if backend.gpu else "float64"
    kwargs = dict(activation="relu", output=output, seed=11, dtype=dtype)
    fit = dict(epochs=5, lr=0.01, batch_size=20, optimizer="adam", verbose=0, validation_data=(X[:30], y[:30]))
    ref = gpunn.MLP([5, 8, 8, k], device="cpu", **kwargs)
    h_ref = ref.fit(X, y, **fit)
    _generic_path_on_numpy(backend, monkeypatch)
    m = gpunn.MLP([5, 8, 8, k], **kwargs, **backend.kwargs())
    h = m.fit(X, y, **fit)
    atol = GPU_FLOAT32_ATOL if backend.gpu else 1e-9
    for a, b in zip(_weights(ref), _weights(m)):
        np.testing.assert_allclose(b, a, rtol=0, atol=atol)
    np.testing.assert_allclose(h.loss, h_ref.loss, rtol=0, atol=atol)
    np.testing.assert_allclose(h.val_loss, h_ref.val_loss, rtol=0, atol=atol)
    if not backend.gpu:
        assert h.accuracy == h_ref.accuracy


def test_outputs_live_in_the_model_namespace_and_device(backend):
    X, y = _problem()
    m = gpunn.MLP([5, 6, 1], **backend.kwargs())
    m.fit(X, y, epochs=2, verbose=0)
    xp = m.xp
    for out in (m.predict_proba(X), m.predict(X), m.weights[0][0]):
        assert aac.array_namespace(out) is xp
        assert _backend.same_device(aac.device(out), m.device)
    assert m.predict_proba(X).dtype == xp.float32
    assert m.predict(X).shape == (len(X),)
    assert xp.isdtype(m.predict(X).dtype, "integral")


def test_device_arrays_are_used_as_they_are(backend, monkeypatch):
    """Data already in the model's namespace and on its device trains the same as host data (on NumPy, where
    the two are the same arrays, the device run takes the generic path: equal up to the order of sums)."""
    X, y = _problem()
    host = gpunn.MLP([5, 6, 1], dtype="float64", **backend.kwargs())
    host.fit(X, y, epochs=3, batch_size=32, verbose=0)
    _generic_path_on_numpy(backend, monkeypatch)
    dev = gpunn.MLP([5, 6, 1], dtype="float64", **backend.kwargs())
    Xd = _backend.from_numpy(X, dev.xp, dev.device)
    yd = _backend.from_numpy(y, dev.xp, dev.device)
    dev.fit(Xd, yd, epochs=3, batch_size=32, verbose=0)
    assert not np.allclose(_weights(dev)[0], _weights(gpunn.MLP([5, 6, 1], dtype="float64", device="cpu"))[0])
    for a, b in zip(_weights(host), _weights(dev)):
        if backend.name == "numpy":
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-13)
        else:
            np.testing.assert_array_equal(a, b)


def test_parameters_keep_the_model_dtype(backend):
    X, y = _problem()
    m = gpunn.MLP([5, 6, 1], dtype="float32", **backend.kwargs())
    m.fit(X.astype(np.float64), y, epochs=2, optimizer="adam", verbose=0)
    assert all(a.dtype == m.xp.float32 for pair in m.weights for a in pair)
    assert all(a.dtype == m.xp.float32 for a in m.optimizer_state["m"])


def test_data_on_another_device_is_rejected():
    pytest.importorskip("array_api_strict")
    import array_api_strict as xs

    m = gpunn.MLP([3, 4, 1], xp=xs, device="device1")
    X = xs.asarray(np.ones((4, 3)), device=xs.Device("CPU_DEVICE"))
    with pytest.raises(gpunn.DeviceError, match="device1"):
        m.fit(X, np.array([0, 1, 0, 1]), epochs=1, verbose=0)


def test_data_from_another_namespace_is_rejected():
    pytest.importorskip("array_api_strict")
    import array_api_strict as xs

    m = gpunn.MLP([3, 4, 1], device="cpu")
    with pytest.raises(gpunn.InputTypeError, match="array_api_strict array but the model runs on numpy"):
        m.fit(xs.ones((4, 3)), np.array([0, 1, 0, 1]), epochs=1, verbose=0)


def test_a_cuda_device_that_is_not_there_is_a_clear_error(gpu_count):
    count = gpu_count  # probed by the tests (conftest.probe_gpus), not by gpunn
    if count == 0:
        with pytest.raises(gpunn.DeviceError, match="cuda:0.*(CuPy|CUDA)"):
            gpunn.MLP([2, 1], device="cuda")
    with pytest.raises(gpunn.DeviceError, match=f"cuda:{count}"):
        gpunn.MLP([2, 1], device=f"cuda:{count}")  # one past the last GPU (cuda:0 on a machine without one)


def test_auto_device_is_cupy_with_a_gpu_and_numpy_without(gpu_count):
    m = gpunn.MLP([2, 1])
    expected = "cupy" if gpu_count else "numpy"
    assert _backend.namespace_name(m.xp) == expected
    assert _backend.gpu_usable() == (gpu_count > 0) and _backend.gpu_status()[0] == gpu_count


@pytest.mark.parametrize("module", ["torch", "jax.numpy", "array_api_strict"])
def test_xp_with_device_auto_takes_the_namespace_accelerator_or_its_default(module, tmp_path):
    """``MLP(sizes, xp=torch)`` as docs/devices.md writes it, ``load(path, xp=...)`` and a pickle of the
    model: the accelerator when the namespace has a usable one, else its default device."""
    import pickle

    xp = pytest.importorskip(module)
    if module == "torch":
        expected = "cuda" if xp.cuda.is_available() else "cpu"
    else:
        expected = str(aac.device(xp.zeros(0)))
    m = gpunn.MLP([3, 4, 1], xp=xp)
    assert str(m.device).startswith(expected)
    assert str(aac.device(m.weights[0][0])).startswith(expected)
    m.save(tmp_path / "m.safetensors")
    loaded = gpunn.load(tmp_path / "m.safetensors", xp=xp)
    assert str(loaded.device) == str(m.device)
    assert str(pickle.loads(pickle.dumps(m)).device) == str(m.device)


def test_a_pickle_returns_to_the_non_default_device_it_was_on():
    xs = pytest.importorskip("array_api_strict")
    import pickle

    m = gpunn.MLP([3, 4, 1], xp=xs, device="device1")
    back = pickle.loads(pickle.dumps(m))
    assert back.device == m.device != xs.__array_namespace_info__().default_device()


def _fake_cupy(monkeypatch, count):
    """A stand-in for CuPy with ``count`` GPUs, for the code that picks a device (no kernel runs)."""
    import sys
    import types

    class Device:
        def __init__(self, index=0):
            self.id = index

        def __repr__(self):
            return f"<CUDA Device {self.id}>"

    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(Device=Device, runtime=types.SimpleNamespace(getDevice=lambda: count - 1))
    namespace = types.ModuleType("array_api_compat.cupy")
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(_backend, "gpu_status", lambda: (count, "" if count else "no CUDA device (stand-in)"))
    monkeypatch.setattr(_backend, "_compat", lambda name: namespace if name == "cupy" else pytest.fail(name))
    return namespace


def test_a_model_returns_to_its_device_through_pickle_save_load_and_to(backend, tmp_path, gpu_count):
    """On every backend, and on a GPU the last one (cuda:N, not cuda:0, on a machine with several): the model
    comes back on the device it was on and resumes as an uninterrupted run."""
    import pickle

    kwargs = backend.kwargs()
    if backend.name == "cupy":
        kwargs["device"] = f"cuda:{gpu_count - 1}"
    elif backend.name == "torch-cuda":
        kwargs["device"] = f"cuda:{backend.xp.cuda.device_count() - 1}"
    elif backend.name == "jax-gpu":
        import jax

        kwargs["device"] = jax.devices("gpu")[-1]
    X, y = _problem()
    fit = dict(epochs=2, lr=0.01, batch_size=32, optimizer="adam", verbose=0)
    m = gpunn.MLP([5, 6, 1], dtype="float64", seed=1, **kwargs)
    m.fit(X, y, **fit)
    straight = gpunn.MLP([5, 6, 1], dtype="float64", seed=1, **kwargs)
    straight.fit(X, y, epochs=4, **{k: v for k, v in fit.items() if k != "epochs"})
    m.save(tmp_path / "m.safetensors")
    copies = [
        pickle.loads(pickle.dumps(m)),
        gpunn.load(tmp_path / "m.safetensors", **kwargs),
        pickle.loads(pickle.dumps(m)).to("cpu").to(**({"xp": backend.xp} if backend.name != "numpy" else {}),
                                                   device=kwargs.get("device", "cpu")),
    ]  # fmt: skip
    for copy in copies:
        assert _backend.device_name(copy.xp, copy.device) == _backend.device_name(m.xp, m.device)
        assert _backend.same_device(aac.device(copy.weights[0][0]), m.device)
        copy.fit(X, y, **fit)
        np.testing.assert_allclose(_backend.to_numpy(copy.params), _backend.to_numpy(straight.params), rtol=0,
                                   atol=1e-12)  # fmt: skip


def test_jax_cpu_resolves_by_name_where_jax_defaults_to_a_gpu(monkeypatch):
    """JAX's namespace info lists its default backend's devices only: on a GPU machine, the GPUs. A JAX model
    on the CPU must still come back there from its pickle or checkpoint (stand-in: an info listing no CPU)."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    class GpuOnlyInfo:
        def devices(self):
            return [None]

    monkeypatch.setattr(jnp, "__array_namespace_info__", lambda: GpuOnlyInfo())
    cpu = jax.devices("cpu")[0]
    for name in ("cpu:0", "cpu", str(cpu)):
        xp, device = _backend.resolve_by_name("jax", name)
        assert device == cpu, name


def test_a_device_that_is_gone_is_a_clear_error_when_unpickling():
    pytest.importorskip("torch")
    with pytest.raises(gpunn.DeviceError, match="cuda:9"):
        _backend.resolve_by_name("torch", "cuda:9")
    with pytest.raises(gpunn.DeviceError, match="device9"):
        _backend.resolve_by_name("array_api_strict", "device9")


@pytest.mark.parametrize("saved", ["cuda:1", "<CUDA Device 1>"])
def test_a_model_on_cuda_1_is_restored_to_cuda_1(monkeypatch, saved):
    """resolve_by_name on a stand-in CuPy with two GPUs: "cuda:1" (and the "<CUDA Device 1>" that older gpunn
    pickled) comes back on GPU 1, not GPU 0; with one GPU it is a clear error."""
    namespace = _fake_cupy(monkeypatch, 2)
    xp, device = _backend.resolve_by_name("cupy", saved)
    assert xp is namespace and device.id == 1
    assert _backend.device_name(xp, device) == "cuda:1"
    _fake_cupy(monkeypatch, 1)
    with pytest.raises(gpunn.DeviceError, match="cuda:1.*only 1 CUDA device"):
        _backend.resolve_by_name("cupy", saved)


def test_a_cupy_device_given_with_xp_is_the_one_used(monkeypatch):
    """With xp=cupy, every form of device names the GPU it says (CuPy's own zeros(device=) checks nothing):
    None is the current GPU, "cuda" GPU 0 as without xp; "cpu", another library's device or a GPU that is not
    there is a clear error."""
    _fake_cupy(monkeypatch, 2)
    import cupy

    given_and_index = [(None, 1), ("cuda", 0), ("cuda:0", 0), ("cuda:1", 1), (0, 0), (np.int64(1), 1),
                       (cupy.cuda.Device(1), 1)]  # fmt: skip
    for given, index in given_and_index:
        assert _backend._cupy_named(given).id == index, given
    other_device = type("Device", (), {"id": 1})()  # another library's device with an id (JAX's, say)
    for given, match in [("cpu", "not a CuPy device"), ("cuda:2", "only 2 CUDA device"), (True, "not a CuPy"),
                         (other_device, "not a CuPy device")]:  # fmt: skip
        with pytest.raises(gpunn.DeviceError, match=match):
            _backend._cupy_named(given)


@pytest.mark.parametrize("device", ["tpu", "cuda:x", 3])
def test_unknown_device_is_a_clear_error(device):
    with pytest.raises(gpunn.DeviceError, match="device"):
        gpunn.MLP([2, 1], device=device)


def test_unknown_xp_is_a_clear_error():
    import math

    with pytest.raises(gpunn.DeviceError, match="not an array namespace"):
        gpunn.MLP([2, 1], xp=math)


def test_to_moves_a_model_between_namespaces_and_back():
    pytest.importorskip("array_api_strict")
    import array_api_strict as xs

    X, y = _problem()
    m = gpunn.MLP([5, 6, 1], device="cpu", dtype="float64")
    m.fit(X, y, epochs=2, optimizer="adam", batch_size=32, verbose=0)
    ref = gpunn.MLP([5, 6, 1], device="cpu", dtype="float64")
    ref.fit(X, y, epochs=4, optimizer="adam", batch_size=32, verbose=0)
    m.to(xp=xs, device="device1")
    assert aac.array_namespace(m.weights[0][0]) is xs
    m.fit(X, y, epochs=2, optimizer="adam", batch_size=32, verbose=0)  # continues on the new device
    m.to("cpu")
    for a, b in zip(_weights(m), _weights(ref)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_convert_takes_arrays_of_other_namespaces_through_dlpack():
    torch = pytest.importorskip("torch")
    X, y = _problem()
    m = gpunn.MLP([5, 6, 1], device="cpu", dtype="float64")
    with pytest.raises(gpunn.InputTypeError, match="torch array but the model runs on numpy"):
        m.fit(torch.from_numpy(X), y, epochs=1, verbose=0)
    m.fit(torch.from_numpy(X), torch.from_numpy(y), epochs=2, verbose=0, convert=True)
    ref = gpunn.MLP([5, 6, 1], device="cpu", dtype="float64")
    ref.fit(X, y, epochs=2, verbose=0)
    np.testing.assert_array_equal(m.predict_proba(torch.from_numpy(X), convert=True), ref.predict_proba(X))


def test_weights_convert_to_numpy_and_a_torch_state_dict():
    torch = pytest.importorskip("torch")
    X, y = _problem()
    m = gpunn.MLP([5, 7, 6, 1], device="cpu", dtype="float64")
    m.fit(X, y, epochs=2, verbose=0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 6), torch.nn.ReLU(),
                              torch.nn.Linear(6, 1)).double()  # fmt: skip
    net.load_state_dict(m.torch_state_dict())
    logits = net(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(logits, m.decision_function(X), rtol=1e-12)
    assert all(isinstance(w, np.ndarray) for pair in m.numpy_weights() for w in pair)


def test_prediction_in_blocks_equals_one_pass(backend, monkeypatch):
    """Host and device X are scaled and pushed through the network a block of rows at a time; the blocks,
    the last one partial, give what one pass over all rows gives."""

    X, y = _problem(n=103)
    X = X * [1.0, 5.0, 0.2, 3.0, 1.0] + 2.0
    dtype = "float32" if backend.gpu else "float64"
    # trained on NumPy and moved: the predictions are under test (a fit on JAX compiled its training too)
    m = gpunn.MLP([5, 7, 3], output="softmax", standardize=True, seed=3, dtype=dtype, device="cpu")
    m.fit(X, (X[:, 0] > 2).astype(int) + (X[:, 1] > 2), epochs=3, verbose=0)
    m.to(backend.device, backend.xp)
    Xd = _backend.from_numpy(X, m.xp, m.device)
    y = (X[:, 2] > 2).astype(int)
    whole = [_backend.to_numpy(f(v)) for f in (m.predict_proba, m.predict) for v in (X, Xd)]
    whole_metrics = m.evaluate(X, y)
    monkeypatch.setattr(gpunn.feed.evaluate, "EVAL_ROWS", 10)  # 11 blocks
    blocked = [_backend.to_numpy(f(v)) for f in (m.predict_proba, m.predict) for v in (X, Xd)]
    tol = 1e-6 if dtype == "float32" else 1e-12
    blocked_metrics = m.evaluate(X, y)
    assert blocked_metrics["loss"] == pytest.approx(whole_metrics["loss"], rel=tol)
    assert blocked_metrics["accuracy"] == pytest.approx(whole_metrics["accuracy"], abs=1e-12)
    for a, b in zip(whole[:2], blocked[:2]):
        assert b.shape == (103, 3)
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)
    for a, b in zip(whole[2:], blocked[2:]):
        np.testing.assert_array_equal(b, a)


def test_probabilities_keep_their_tails_in_float32(backend):
    """predict_proba against 1 / (1 + exp(-z)) in float64: relative 1e-5 for logits in [-80, 80] (the tanh form
    gave 0.0 at -20), softmax likewise while its entries are normal float32 numbers; no warning, no overflow."""
    import warnings

    z = np.concatenate([np.linspace(-80.0, 80.0, 161), [-1e30, -1e4, 1e4, 1e30]]).reshape(-1, 1)
    m = gpunn.MLP([1, 1], dtype="float32", **backend.kwargs())
    m.set_weights([(np.ones((1, 1)), np.zeros(1))])  # the logit is the input itself
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = _backend.to_numpy(m.predict_proba(z.astype(np.float32)))
    exact = 1.0 / (1.0 + np.exp(-z[:161].astype(np.float64)))
    np.testing.assert_allclose(p[:161], exact, rtol=1e-5, atol=0)
    np.testing.assert_array_equal(p[161:, 0], [0.0, 0.0, 1.0, 1.0])

    logits = np.stack([np.linspace(-40.0, 40.0, 81), np.zeros(81), np.linspace(40.0, -40.0, 81)], axis=1)
    s = gpunn.MLP([3, 3], output="softmax", dtype="float32", **backend.kwargs())
    s.set_weights([(np.eye(3), np.zeros(3))])
    q = _backend.to_numpy(s.predict_proba(logits.astype(np.float32)))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(q, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=0)
