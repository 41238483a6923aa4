"""The pure training step (:class:`gpunn.step.Step`) against torch autograd and torch.optim, on every namespace.

The oracle is a network written here in torch from the same initial weights: its mean loss (plus the L2 penalty
as scikit-learn's alpha defines it) goes through ``backward``, global-norm clipping and a ``torch.optim``
optimizer, three times on three batches (the last one a shorter remainder batch).
"""

from __future__ import annotations

import array_api_compat as aac
import numpy as np
import pytest

from gpunn import _backend, losses, optim
from gpunn.step import Hyper, Step

OPTIMIZERS = {
    "sgd": (optim.sgd(), 0.3),
    "momentum": (optim.momentum(0.9), 0.1),
    "nesterov": (optim.momentum(0.9, nesterov=True), 0.1),
    "adam": (optim.adam(), 0.05),
    "adamw": (optim.adamw(weight_decay=0.1), 0.05),
}
ACTIVE_CLIP = 0.05  # below every gradient norm of these problems: the clipping branch runs
IDLE_CLIP = 1e3  # above every gradient norm: the clip is set but leaves the gradient alone
BATCH_ROWS = (8, 8, 5)  # two full batches and a remainder batch

# Every optimizer meets every (output, loss) pair once; the hidden activations form a Latin square over both, and so
# do the four (l2, clip) combinations, so each value of each option appears four times and meets every value of
# the other options at least once across the table (two configurations use an idle clip instead of an active one).
# (optimizer, output, loss, k, activation, l2, clip_norm)
CONFIGS = [
    ("sgd", "sigmoid", "binary_crossentropy", 1, "relu", 0.0, None),
    ("sgd", "softmax", "categorical_crossentropy", 3, "tanh", 0.1, ACTIVE_CLIP),
    ("sgd", "identity", "mse", 2, "sigmoid", 0.0, ACTIVE_CLIP),
    ("sgd", "sigmoid", "mse", 2, "identity", 0.1, None),
    ("momentum", "sigmoid", "binary_crossentropy", 3, "tanh", 0.1, None),
    ("momentum", "softmax", "categorical_crossentropy", 4, "sigmoid", 0.0, None),
    ("momentum", "identity", "mse", 1, "identity", 0.1, ACTIVE_CLIP),
    ("momentum", "sigmoid", "mse", 1, "relu", 0.0, IDLE_CLIP),
    ("nesterov", "sigmoid", "binary_crossentropy", 2, "sigmoid", 0.0, ACTIVE_CLIP),
    ("nesterov", "softmax", "categorical_crossentropy", 3, "identity", 0.1, None),
    ("nesterov", "identity", "mse", 2, "relu", 0.0, None),
    ("nesterov", "sigmoid", "mse", 2, "tanh", 0.1, ACTIVE_CLIP),
    ("adam", "sigmoid", "binary_crossentropy", 1, "identity", 0.1, ACTIVE_CLIP),
    ("adam", "softmax", "categorical_crossentropy", 3, "relu", 0.0, ACTIVE_CLIP),
    ("adam", "identity", "mse", 3, "tanh", 0.1, IDLE_CLIP),
    ("adam", "sigmoid", "mse", 1, "sigmoid", 0.0, None),
    # AdamW, and the activations beyond the seed's
    ("adamw", "sigmoid", "binary_crossentropy", 2, "gelu", 0.1, ACTIVE_CLIP),
    ("adamw", "softmax", "categorical_crossentropy", 3, "elu", 0.0, None),
    ("adamw", "identity", "mse", 2, "silu", 0.0, ACTIVE_CLIP),
    ("adamw", "sigmoid", "mse", 1, "leaky_relu", 0.1, None),
    ("sgd", "softmax", "categorical_crossentropy", 3, "softplus", 0.1, IDLE_CLIP),
]


def _config_id(cfg) -> str:
    opt, output, loss, k, activation, l2, clip = cfg
    clip_id = {None: "noclip", ACTIVE_CLIP: "clip", IDLE_CLIP: "idleclip"}[clip]
    return f"{opt}-{output}-{loss}-k{k}-{activation}-{'l2' if l2 else 'nol2'}-{clip_id}"


def make_problem(seed: int, sizes: list[int], output: str, rows=BATCH_ROWS):
    """Initial parameters (non-zero biases) as the flat buffer gpunn's step takes (per layer W (out, in)
    row-major, then b) and as the list ``[W1, b1, W2, b2, ...]`` the torch oracle takes, and batches ``(x, t)``
    with ``t`` the (n, k) float targets."""
    rng = np.random.default_rng(seed)
    k = sizes[-1]
    pairs = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        pairs += [rng.normal(scale=0.7, size=(fan_out, fan_in)), rng.normal(scale=0.3, size=fan_out)]
    flat = np.concatenate([p.reshape(-1) for p in pairs])
    batches = []
    for n in rows:
        x = rng.normal(size=(n, sizes[0]))
        if output == "softmax":
            t = np.eye(k)[rng.integers(0, k, size=n)]
        elif output == "identity":
            t = rng.normal(size=(n, k))
        else:
            t = rng.integers(0, 2, size=(n, k)).astype(np.float64)
        batches.append((x, t))
    return flat, pairs, batches


def run_gpunn(hyper: Hyper, flat: np.ndarray, batches, xp, device, dtype: str = "float64"):
    """Three steps of gpunn on ``xp``: final parameters, then per step the mean loss and the correct count."""
    step = Step(hyper, xp, device, dtype)
    k = hyper.sizes[-1]
    params = _backend.from_numpy(flat.astype(dtype), xp, device)
    state = hyper.optimizer.init(params, xp)
    mean_losses, corrects = [], []
    for x, t in batches:
        target = losses.encode_targets(hyper.output, hyper.loss, t.astype(dtype))
        xd, td = _backend.from_numpy(x.astype(dtype), xp, device), _backend.from_numpy(target, xp, device)
        params, state, loss_sum, correct = step(params, state, xd, td)
        _assert_on(xp, device, params, state, loss_sum, correct)
        loss_scale = losses.scales(hyper.output, hyper.loss, x.shape[0], k)[0]
        mean_losses.append(float(_backend.to_numpy(loss_sum)) * loss_scale)
        corrects.append(None if correct is None else int(_backend.to_numpy(correct)))
    assert state["step"] == len(batches)
    return _backend.to_numpy(params), mean_losses, corrects


def _assert_on(xp, device, params, state, loss_sum, correct) -> None:
    """A step's arrays are of its namespace, on its device: the parameters and every optimizer slot as the flat
    buffer; the loss sum and the correct count 0-d arrays (NumPy's reductions give NumPy scalars, which the caller
    reads the same way)."""
    for a in (params, *(v for slot, v in state.items() if slot != "step")):
        assert aac.array_namespace(a) is xp
        assert _backend.same_device(aac.device(a), device)
        assert a.shape == params.shape
    if _backend.namespace_name(xp) != "numpy":
        for a in (loss_sum, *([] if correct is None else [correct])):
            assert aac.array_namespace(a) is xp
            assert a.shape == ()


def run_torch(opt_name: str, lr: float, activation, output, loss, l2, clip, pairs, batches):
    """The same three steps by torch autograd and torch.optim, in float64, from ``pairs`` ``[W1, b1, ...]``.

    Also returns, per step, whether clipping scaled the gradient down.
    """
    import torch
    import torch.nn.functional as F

    params = [torch.tensor(p.copy(), requires_grad=True) for p in pairs]
    weights = params[0::2]
    opt = {
        "sgd": lambda: torch.optim.SGD(params, lr=lr),
        "momentum": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9),
        "nesterov": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
        "adam": lambda: torch.optim.Adam(params, lr=lr),
        "adamw": lambda: torch.optim.AdamW(params, lr=lr, weight_decay=0.1),
    }[opt_name]()
    act = {
        "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda z: z,
        "leaky_relu": F.leaky_relu, "elu": F.elu, "gelu": lambda z: F.gelu(z, approximate="tanh"), "silu": F.silu,
        "softplus": F.softplus,
    }[activation]  # fmt: skip
    mean_losses, corrects, clipped = [], [], []
    for x, t in batches:
        opt.zero_grad()
        a, tt = torch.tensor(x), torch.tensor(t)
        for i in range(0, len(params) - 2, 2):
            a = act(a @ params[i].T + params[i + 1])
        z = a @ params[-2].T + params[-1]
        if output == "softmax":
            value = F.cross_entropy(z, tt)  # probability targets: the mean over rows of -sum(t log softmax(z))
        elif output == "identity":
            value = F.mse_loss(z, tt)
        elif loss == "mse":
            value = F.mse_loss(torch.sigmoid(z), tt)
        else:
            value = F.binary_cross_entropy_with_logits(z, tt)
        if l2:
            value = value + l2 / (2 * x.shape[0]) * sum((w * w).sum() for w in weights)
        value.backward()
        if clip is not None:
            # torch's own global norm (max_norm=inf leaves the gradients as they are), then the factor
            # min(1, clip / (norm + 1e-12)): clip_grad_norm_ itself divides by norm + 1e-6, which would move
            # the clipped gradient by about 1e-6 relatively.
            norm = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
            factor = min(1.0, clip / (norm + 1e-12))
            for p in params:
                p.grad.mul_(factor)
            clipped.append(factor < 1.0)
        mean_losses.append(value.item())
        zn = z.detach().numpy()
        if output == "softmax":
            corrects.append(int(np.sum(np.argmax(zn, axis=1) == np.argmax(t, axis=1))))
        elif output == "identity":
            corrects.append(None)
        else:
            corrects.append(int(np.sum((zn > 0) == (t > 0.5))))
        opt.step()
    final = np.concatenate([p.detach().numpy().reshape(-1) for p in params])
    return final, mean_losses, corrects, clipped


def numpy_ns():
    return _backend.resolve("cpu")


# ------------------------------------------------------------------------------------------ against torch
@pytest.mark.parametrize("cfg", CONFIGS, ids=_config_id)
def test_step_matches_torch_autograd_and_optim(cfg):
    pytest.importorskip("torch")
    opt_name, output, loss, k, activation, l2, clip = cfg
    optimizer, lr = OPTIMIZERS[opt_name]
    sizes = (4, 6, 5, k)
    flat, pairs, batches = make_problem(CONFIGS.index(cfg), list(sizes), output)
    hyper = Hyper(sizes, activation, output, loss, optimizer, lr, l2=l2, clip_norm=clip)

    xp, device = numpy_ns()
    got_params, got_losses, got_correct = run_gpunn(hyper, flat, batches, xp, device)
    want_params, want_losses, want_correct, clipped = run_torch(
        opt_name, lr, activation, output, loss, l2, clip, pairs, batches
    )

    if clip == ACTIVE_CLIP:
        assert all(clipped), "the configuration meant to clip does not"
    if clip == IDLE_CLIP:
        assert not any(clipped), "the configuration meant not to clip does"
    assert not np.allclose(want_params, flat, rtol=1e-3), "the steps left the parameters (nearly) where they were"
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-10)
    assert got_correct == want_correct
    np.testing.assert_allclose(got_params, want_params, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------ every namespace
NAMESPACE_CONFIGS = [
    ("adam", "softmax", "categorical_crossentropy", 3, "relu", 0.1, ACTIVE_CLIP),
    ("nesterov", "sigmoid", "binary_crossentropy", 2, "tanh", 0.1, ACTIVE_CLIP),
    ("sgd", "identity", "mse", 2, "sigmoid", 0.0, None),
]


@pytest.mark.parametrize("cfg", NAMESPACE_CONFIGS, ids=_config_id)
def test_step_on_every_namespace_matches_numpy(backend, cfg, monkeypatch):
    """Every namespace against NumPy's fast path (which the test above checks against torch); on the numpy
    parameter the side under test is NumPy's generic Array API path, not the fast path again."""
    opt_name, output, loss, k, activation, l2, clip = cfg
    optimizer, lr = OPTIMIZERS[opt_name]
    sizes = (4, 6, 5, k)
    flat, _, batches = make_problem(7, list(sizes), output)
    hyper = Hyper(sizes, activation, output, loss, optimizer, lr, l2=l2, clip_norm=clip)

    want = run_gpunn(hyper, flat, batches, *numpy_ns())
    if backend.name == "numpy":
        monkeypatch.setattr(_backend, "NUMPY_FAST_PATHS", False)  # read when the Step is made and called
        assert not _backend.numpy_fast_path(numpy_ns()[0])
    xp, device = _backend.resolve(backend.device, backend.xp)
    got = run_gpunn(hyper, flat, batches, xp, device)

    np.testing.assert_allclose(got[0], want[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-9)
    assert got[2] == want[2]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("transposed", [True, False])  # logits as the fast path's narrow layers leave them, or not
def test_numpy_softmax_head_works_in_place_and_equals_the_general_form_to_the_bit(dtype, weighted, smoothing,
                                                                                  transposed):  # fmt: skip
    rng = np.random.default_rng(2)
    zero = np.zeros((), dtype=dtype)
    for n, k in [(7, 12), (133, 3), (300, 10)]:
        zt = (3 * rng.normal(size=(k, n))).astype(dtype)
        z = zt.T if transposed else np.ascontiguousarray(zt.T)
        t = losses.smooth_targets("softmax", "categorical_crossentropy", np.eye(k, dtype=dtype)[rng.integers(0, k, n)],
                                  smoothing)  # fmt: skip
        t[0] = t[1]  # a tie: the count takes argmax's first class as the prediction
        z[0, :] = z[0, 0]
        w = rng.uniform(0.5, 2.0, size=(n, 1)).astype(dtype) if weighted else None
        xp = aac.array_namespace(z)
        general = losses.head("softmax", "categorical_crossentropy", z.copy(order="K"), t, zero, xp, w)
        fast = losses.head("softmax", "categorical_crossentropy", z, t, zero, xp, w, fast=True)
        for a, b in zip(general, fast):
            a, b = np.asarray(a), np.asarray(b)
            assert a.shape == b.shape and a.dtype == b.dtype and a.flags.c_contiguous == b.flags.c_contiguous
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------- purity
@pytest.mark.parametrize("clip", [None, ACTIVE_CLIP], ids=["noclip", "clip"])
@pytest.mark.parametrize("l2", [0.0, 0.1], ids=["nol2", "l2"])
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("width", [6, 70])  # the NumPy fast path runs narrow layers transposed, wide ones not
@pytest.mark.parametrize("output,loss,activation", [
    ("sigmoid", "binary_crossentropy", "relu"),
    ("softmax", "categorical_crossentropy", "identity"),
    ("identity", "mse", "sigmoid"),
    ("sigmoid", "mse", "tanh"),
])  # fmt: skip
def test_step_writes_into_none_of_its_inputs(monkeypatch, opt_name, l2, clip, width, output, loss, activation):
    monkeypatch.setattr(_backend, "NUMPY_FAST_PATHS", True)
    xp, device = numpy_ns()
    assert _backend.numpy_fast_path(xp)
    optimizer, lr = OPTIMIZERS[opt_name]
    sizes = (4, width, 5, 2)
    flat, _, batches = make_problem(11, list(sizes), output)
    hyper = Hyper(sizes, activation, output, loss, optimizer, lr, l2=l2, clip_norm=clip)
    step = Step(hyper, xp, device, "float64")
    params, state = flat.copy(), optimizer.init(flat, xp)
    for x, t in batches:  # later calls see a non-zero optimizer state
        target = losses.encode_targets(output, loss, t)
        before = [a.copy() for a in (params, x, target)]
        slots = {key: (v.copy() if isinstance(v, np.ndarray) else v) for key, v in state.items()}
        new_params, new_state, _, _ = step(params, state, x, target)
        for a, b in zip((params, x, target), before):
            np.testing.assert_array_equal(a, b)
        assert state.keys() == slots.keys()
        for key, v in slots.items():
            np.testing.assert_array_equal(state[key], v, err_msg=f"state[{key!r}] was written into")
        for a in (params, x, target, *(v for v in state.values() if isinstance(v, np.ndarray))):
            for b in (new_params, *(v for v in new_state.values() if isinstance(v, np.ndarray))):
                assert not np.shares_memory(a, b), "the step returned a view of an input"
        assert not np.array_equal(new_params, params)
        params, state = new_params, new_state


# ------------------------------------------------------------------------------------------------ no reads
@pytest.mark.parametrize("output,loss", losses.PAIRS)
def test_loss_and_correct_are_0d_torch_tensors(output, loss):
    torch = pytest.importorskip("torch")
    xp, device = _backend.resolve("cpu", torch)
    k = 1 if output == "sigmoid" else 3
    sizes = (4, 6, k)
    flat, _, batches = make_problem(5, list(sizes), output, rows=(6,))
    x, t = batches[0]
    hyper = Hyper(sizes, "tanh", output, loss, optim.momentum(0.9), 0.1, l2=0.1, clip_norm=ACTIVE_CLIP)
    params = torch.tensor(flat)
    target = torch.tensor(losses.encode_targets(output, loss, t))
    new, state, loss_sum, correct = Step(hyper, xp, device, "float64")(
        params, hyper.optimizer.init(params, xp), torch.tensor(x), target
    )
    assert isinstance(new, torch.Tensor) and isinstance(state["velocity"], torch.Tensor)
    assert isinstance(loss_sum, torch.Tensor) and loss_sum.shape == ()
    assert loss_sum.dtype == torch.float64
    if output in losses.REGRESSION:
        assert correct is None
    else:
        assert isinstance(correct, torch.Tensor) and correct.shape == ()
        assert not correct.dtype.is_floating_point
