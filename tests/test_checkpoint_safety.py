"""Crafted checkpoints: special files and bogus sizes refused before anything large is read, bounded memory for a
genuine one, and every field of the model description validated (forged with a correct checksum)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import safetensors.numpy
from safetensors import safe_open

import gpunn
from gpunn import checkpoint


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained softmax classifier saved by the CLI's path: scaling, feature names, classes, Adam, a plateau."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)) * 4 + 1
    y = (X[:, 0] > 1).astype(int) + (X[:, 1] > 1).astype(int)
    m = gpunn.MLP([3, 6, 3], output="softmax", device="cpu", standardize=True, seed=2)
    m.feature_names, m.target_name, m.metadata["classes"] = ["a", "b", "c"], "label", ["lo", "mid", "hi"]
    m.fit(X, y, epochs=2, optimizer="adam", lr=gpunn.schedules.plateau(0.01), batch_size=20, verbose=0)
    path = tmp_path_factory.mktemp("safety") / "m.safetensors"
    m.save(path)
    return path


def _forge(src, dst, edit, edit_tensors=None):
    """``src`` with its JSON model description changed by ``edit(config)`` (and its tensors by
    ``edit_tensors(tensors)``) and a checksum that matches."""
    tensors = safetensors.numpy.load_file(src)
    with safe_open(src, "np") as f:
        meta = f.metadata()
    config = json.loads(meta["gpunn"])
    edit(config)
    if edit_tensors is not None:
        edit_tensors(tensors)
    meta["gpunn"] = json.dumps(config, sort_keys=True)
    meta["sha256"] = checkpoint._digest(meta["gpunn"], tensors)
    safetensors.numpy.save_file(tensors, dst, metadata=meta)
    return dst


# ------------------------------------------------------------------------------------------ special files (22.8)
def _load_in_subprocess(path, timeout=30):
    """gpunn.load(path) in a child with a time limit, so that a reader that blocks fails the test, not hangs it."""
    code = textwrap.dedent(
        f"""
        import gpunn
        try:
            gpunn.load({str(path)!r}, device="cpu")
        except gpunn.CheckpointError as exc:
            print(exc)
        """
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    return out.stdout.strip() + out.stderr.strip(), time.perf_counter() - start


def test_a_symlink_to_dev_zero_is_refused_without_reading(tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    link = tmp_path / "zero.safetensors"
    link.symlink_to("/dev/zero")
    with pytest.raises(gpunn.CheckpointError, match=r"zero.safetensors: not a regular file but a character device"):
        gpunn.load(link, device="cpu")


def test_a_fifo_and_dev_urandom_are_refused_at_once(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)  # no writer: open() alone would block, reading would never end
    message, seconds = _load_in_subprocess(fifo)
    assert message.endswith("pipe.safetensors: not a regular file but a FIFO (named pipe); a checkpoint is a file "
                            "written by MLP.save, Ensemble.save or 'gpunn train --save'"), message  # fmt: skip
    if os.path.exists("/dev/urandom"):
        message, _ = _load_in_subprocess("/dev/urandom")
        assert message == "/dev/urandom: not a regular file but a character device; a checkpoint is a file written " \
                          "by MLP.save, Ensemble.save or 'gpunn train --save'", message  # fmt: skip


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(gpunn.CheckpointError, match=r"not a regular file but a folder"):
        gpunn.load(tmp_path, device="cpu")


@pytest.mark.parametrize("path", [None, 3])
def test_a_path_that_is_not_a_path_is_a_type_error_naming_what_was_given(path):
    # was the TypeError of os.fspath, from inside checkpoint.read and atomic_write
    pattern = rf"^a checkpoint path must be a str or os.PathLike; got {type(path).__name__} {path!r}$"
    with pytest.raises(gpunn.InputTypeError, match=pattern):
        gpunn.load(path)
    m = gpunn.MLP([2, 1], device="cpu")
    with pytest.raises(gpunn.InputTypeError, match=pattern):
        m.save(path)


def test_a_symlink_to_a_checkpoint_loads(saved, tmp_path):
    link = tmp_path / "link.safetensors"
    link.symlink_to(saved)
    assert gpunn.load(link, device="cpu").epoch == 2


def test_a_sparse_2_gib_file_with_a_valid_header_is_rejected_from_its_size(saved, tmp_path):
    sparse = tmp_path / "sparse.safetensors"
    sparse.write_bytes(saved.read_bytes())
    os.truncate(sparse, 2**31)  # a hole: nothing is written, reading it would take 2 GB
    start = time.perf_counter()
    message = r"sparse.safetensors: file is truncated or padded: tensors need \d+ bytes of data, file has 21474"
    with pytest.raises(gpunn.CheckpointError, match=message):
        gpunn.load(sparse, device="cpu")
    assert time.perf_counter() - start < 1.0


def test_a_header_that_claims_huge_tensors_is_rejected_from_the_file_size(saved, tmp_path):
    """A consistent header for sizes [3, 10**6, 3] (36 MB of tensors) in a file of a few kB: refused from its size,
    before anything is allocated for the tensors."""
    with safe_open(saved, "np") as f:
        meta = f.metadata()
    config = json.loads(meta["gpunn"])
    config["sizes"] = [3, 10**6, 3]
    meta["gpunn"] = json.dumps(config)
    header, offset = {"__metadata__": meta}, 0
    for name, (shape, code, itemsize) in checkpoint._expected_tensors(config).items():
        end = offset + int(np.prod(shape)) * itemsize
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header).encode()
    path = tmp_path / "huge.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(1000))
    with pytest.raises(gpunn.CheckpointError, match=rf"huge.safetensors: file is truncated or padded: tensors need "
                                                    rf"{offset} bytes of data, file has 1000"):  # fmt: skip
        gpunn.load(path, device="cpu")


def test_overlapping_tensor_offsets_are_corrupt(saved, tmp_path):
    data = saved.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    a, b = "layers.0.bias", "optimizer.m.1"  # same dtype and shape: swapping one offset makes them overlap
    assert header[a]["shape"] == header[b]["shape"]
    header[a]["data_offsets"] = list(header[b]["data_offsets"])
    raw = json.dumps(header).encode()
    (tmp_path / "o.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])
    with pytest.raises(gpunn.CheckpointError, match=r"invalid data offsets.*corrupt file"):
        gpunn.load(tmp_path / "o.safetensors", device="cpu")


# ------------------------------------------------------------------------------------------ foreign files (20.7)
@pytest.mark.parametrize(
    "content",
    [
        b"PK\x03\x04" + bytes(200),  # a zip (a PyTorch .pt, a .npz)
        b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }" + bytes(40),
        b"\x80\x04\x95" + bytes(100),  # a pickle
        b"age,weight\n31,70.5\n" * 5,
        (64).to_bytes(8, "little") + b"\x00" * 200,  # a small length, then no JSON
    ],
)
def test_a_foreign_file_is_named_as_not_a_safetensors_file_without_a_header_size(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(gpunn.CheckpointError) as info:
        gpunn.load(path, device="cpu")
    message = str(info.value)
    assert message.startswith(f"{path}: not a safetensors file, or a corrupt one: this is not a gpunn checkpoint")
    assert "header of" not in message and not any(ch.isdigit() for ch in message.replace(str(path), ""))


# ------------------------------------------------------------------------------------------------- memory (22.8)
MEMORY = textwrap.dedent(
    """
    import sys
    import numpy as np
    from gpunn import checkpoint

    def high_water():  # this process's peak resident memory (ru_maxrss would include the parent's, before exec)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

    base = high_water()
    ckpt = checkpoint.read(sys.argv[1])
    print(high_water() - base, sum(t.nbytes for t in ckpt.tensors.values()))
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak memory from /proc")
def test_reading_a_50_mb_checkpoint_peaks_under_1_5x_its_size(tmp_path):
    m = gpunn.MLP([500, 2000, 2000, 1], device="cpu", seed=0)  # 5M float32 parameters, Adam's two slots: 60 MB
    X = np.random.default_rng(0).normal(size=(32, 500))
    m.fit(X, (X[:, 0] > 0).astype(int), epochs=1, optimizer="adam", batch_size=32, verbose=0)
    path = tmp_path / "big.safetensors"
    m.save(path)
    del m
    size = os.path.getsize(path)
    out = subprocess.run([sys.executable, "-c", MEMORY, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    extra, held = map(int, out.stdout.split())
    assert held > 0.99 * size > 50e6
    assert extra < 1.5 * size, f"reading {size / 1e6:.0f} MB took {extra / 1e6:.0f} MB more memory"


LOAD = MEMORY.replace("from gpunn import checkpoint", "import gpunn").replace(
    "ckpt = checkpoint.read(sys.argv[1])\nprint(high_water() - base, sum(t.nbytes for t in ckpt.tensors.values()))",
    "m = gpunn.load(sys.argv[1], device='cpu')\nprint(high_water() - base, m.params.nbytes * 3)",
)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak memory from /proc")
def test_loading_a_60_mb_checkpoint_peaks_under_1_5x_its_size(tmp_path):
    """gpunn.load builds the model's flat buffers as views of the one buffer the file is read into (gpunn packs
    them end to end): the file once, and the freshly drawn weights it replaces, not a second copy of everything."""
    m = gpunn.MLP([500, 2000, 2000, 1], device="cpu", seed=0)  # 5M float32 parameters, Adam's two slots: 60 MB
    X = np.random.default_rng(0).normal(size=(32, 500))
    m.fit(X, (X[:, 0] > 0).astype(int), epochs=1, optimizer="adam", batch_size=32, verbose=0)
    path = tmp_path / "big.safetensors"
    m.save(path)
    expected = m.params.copy()
    del m
    size = os.path.getsize(path)
    out = subprocess.run([sys.executable, "-c", LOAD, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    extra, held = map(int, out.stdout.split())
    assert held > 0.99 * size > 50e6
    assert extra < 1.5 * size, f"loading {size / 1e6:.0f} MB took {extra / 1e6:.0f} MB more memory"
    np.testing.assert_array_equal(gpunn.load(path, device="cpu").params, expected)


def test_gpunn_files_are_read_by_safetensors_itself(tmp_path):
    """gpunn writes its own safetensors header (to pack the flat buffers in order): the reference reader agrees."""
    import safetensors.numpy

    m = gpunn.MLP([3, 4, 2], output="softmax", device="cpu", dtype="float64")
    m.fit(np.eye(3), [0, 1, 1], epochs=2, optimizer="adam", verbose=0)
    m.save(tmp_path / "m.safetensors")
    tensors = safetensors.numpy.load_file(tmp_path / "m.safetensors")
    for i, (w, b) in enumerate(m.numpy_weights()):
        np.testing.assert_array_equal(tensors[f"layers.{i}.weight"], w)
        np.testing.assert_array_equal(tensors[f"layers.{i}.bias"], b)
    assert sorted(k for k in tensors if k.startswith("optimizer.m.")) == [f"optimizer.m.{j}" for j in range(4)]


# ------------------------------------------------------------------------------------- every field (22.10)
def _set(*keys, value):
    def edit(config):
        target = config
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


def _drop(key):
    return lambda config: config.pop(key)


FORGERIES = [
    (_set("scaling", 1, 0, value=0.0), r"scaling scale of feature 0 is 0.0; it must be a finite number > 0"),
    (_set("scaling", 1, 2, value=float("nan")), r"scaling scale of feature 2 is nan"),
    (_set("scaling", 1, 1, value=-1.0), r"scaling scale of feature 1 is -1.0"),
    (_set("scaling", 0, 1, value=float("inf")), r"scaling mean of feature 1 is inf; it must be a finite number"),
    (_set("scaling", 1, value=[1.0, 1.0]), r"scaling scale has 2 values; the model has 3 input features"),
    (_set("scaling", value=[[0.0] * 3]), r"scaling must be a pair \[mean, scale\]"),
    (_set("scaling", 0, 0, value="0"), r"scaling mean of feature 0 is '0'"),
    (_set("feature_names", value=["a", "b"]), r"feature_names is \['a', 'b'\]; it must list 3 column names"),
    (_set("feature_names", value=["a", "b", 3]), r"feature_names is"),
    (_set("target_name", value=5), r"target_name is 5"),
    (_set("metadata", "classes", value=[7]), r"metadata classes is \[7\]; the model's softmax output with 3 unit"),
    (_set("metadata", "classes", value=["a", "a", "b"]), r"metadata classes .*distinct numbers or strings"),
    (_set("metadata", "classes", value=[[1], 2, 3]), r"metadata classes .*distinct numbers or strings"),
    (_set("metadata", value=[]), r"metadata is \[\], not a JSON object"),
    (_set("sizes", value=[3, 0, 3]), r"sizes is \[3, 0, 3\]; it must list at least two layer widths >= 1"),
    (_set("sizes", value=[3]), r"sizes is \[3\]"),
    (_set("sizes", value=[3, True, 3]), r"sizes is"),
    (_set("activation", value="evil"), r"activation is 'evil'; it must be one of relu"),
    (_set("activation", value=["relu", "tanh"]), r"activation is \['relu', 'tanh'\]"),
    (_set("output", value="evil"), r"output is 'evil'; it must be one of sigmoid, softmax, identity"),
    (_set("loss", value="mse"), r"loss is 'mse', which output 'softmax' is not trained with"),
    (_set("dtype", value="float16"), r"dtype is 'float16'; it must be one of float32, float64"),
    (_set("seed", value=-1), r"seed is -1; it must be an integer >= 0"),
    (_set("seed", value=1.5), r"seed is 1.5"),
    (_set("standardize", value="yes"), r"standardize is 'yes'; it must be true or false"),
    (_set("fitted", value=1), r"fitted is 1; it must be true or false"),
    (_set("dropout", value=1.0), r"dropout is 1.0; it must be a number in \[0, 1\)"),
    (_set("dropout", value=float("nan")), r"dropout is nan"),
    (_set("optimizer", "name", value="evil"), r"optimizer is .*its name must be one of sgd, momentum, adam, adamw"),
    (_set("optimizer", "hyper", value={}), r"optimizer hyper is \{\}; adam has \['beta1', 'beta2', 'eps'\]"),
    (_set("optimizer", "hyper", "eps", value=0.0), r"optimizer hyper eps is 0.0; it must be a finite number > 0"),
    (_set("optimizer", "hyper", "beta1", value=float("nan")), r"optimizer hyper beta1 is nan"),
    (_set("optimizer", "step", value=-3), r"optimizer step is -3; it must be an integer >= 0"),
    (_set("schedule", "name", value="evil"), r"schedule is .*its name must be one of constant, step, cosine, plateau"),
    (_set("schedule", "params", "lr", value=-1.0), r"schedule .* is not valid \(lr must be a finite number > 0"),
    (_set("schedule", "params", "extra", value=1), r"schedule .* is not valid \(.*unexpected keyword"),
    (_set("schedule_state", value={}), r"schedule_state is \{\}; a plateau schedule's state is not that"),
    (_set("schedule_state", "lr", value=float("nan")), r"schedule_state is .*a rate >= 0"),
    (_set("schedule_state", "bad", value=-1), r"schedule_state is .*a count >= 0"),
    (_set("rng", value={"bit_generator": "MT19937"}), r"rng is not a PCG64 generator state"),
    (_set("rng", "state", value="evil"), r"rng is not a PCG64 generator state"),
    (_set("epoch", value=-1), r"epoch is -1; it must be an integer >= 0"),
    (_set("epoch", value="abc"), r"epoch is 'abc'"),
    (_set("history", "loss", value=["x"]), r"history loss must be a list of numbers"),
    (_set("history", "evil", value=[]), r"history has an unknown record 'evil'"),
    (_drop("sizes"), r"the model description lacks sizes"),
    (_drop("rng"), r"the model description lacks rng"),
]


@pytest.mark.parametrize("edit,pattern", FORGERIES)
def test_every_field_of_the_model_description_is_validated(saved, tmp_path, edit, pattern):
    forged = _forge(saved, tmp_path / "forged.safetensors", edit)
    with pytest.raises(gpunn.CheckpointError, match=rf"forged.safetensors: invalid model description: {pattern}"):
        gpunn.load(forged, device="cpu")
    with pytest.raises(gpunn.CheckpointError, match=r"invalid model description"):
        gpunn.MLP([3, 6, 3], output="softmax", device="cpu").load_weights(forged)


def test_validate_config_accepts_what_save_writes(saved):
    config = checkpoint.read(saved).config
    checkpoint.validate_config(config)
    for key in ("dropout", "schedule", "schedule_state"):  # a checkpoint written before these existed
        config.pop(key)
    checkpoint.validate_config(config)


@pytest.mark.parametrize(
    "output,units,classes,ok",
    [
        ("sigmoid", 1, [3, 7], True),
        ("sigmoid", 1, [7], False),
        ("sigmoid", 1, ["no", "yes", "maybe"], False),
        ("softmax", 4, ["a", "b", "c", "d"], True),
        ("softmax", 4, [0.5, 1.5, 2.5], False),
        ("identity", 1, [0, 1], False),
        ("exp", 1, [0, 1], False),
    ],
)
def test_classes_match_the_outputs(saved, output, units, classes, ok):
    config = checkpoint.read(saved).config
    config.update(output=output, loss=gpunn.losses.DEFAULT_LOSS[output], sizes=[3, 6, units], classes=None)
    config["metadata"]["classes"] = classes
    if ok:
        checkpoint.validate_config(config)
    else:
        with pytest.raises(gpunn.CheckpointError, match=r"invalid model description: metadata classes"):
            checkpoint.validate_config(config)


def test_predict_refuses_a_checkpoint_with_a_zero_scale(saved, tmp_path, capsys):
    """Before: 'gpunn predict' printed NaN probabilities and exited 0."""
    from gpunn import cli

    forged = _forge(saved, tmp_path / "zero.safetensors", _set("scaling", 1, 0, value=0.0))
    (tmp_path / "x.csv").write_text("a,b,c\n1,2,3\n4,5,6\n")
    assert cli.main(["predict", "--model", str(forged), "--data", str(tmp_path / "x.csv"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"gpunn: error: {forged}: invalid model description: scaling scale of feature 0 is 0.0; it must be "
                   "a finite number > 0")  # fmt: skip


def test_the_file_kind_is_read_from_the_open_descriptor(saved, tmp_path, monkeypatch):
    """A path swapped for a FIFO between a stat and the open is still refused: the check is on what was opened."""
    seen = []
    real = os.fstat

    def spy(fd):
        result = real(fd)
        seen.append(stat.S_IFMT(result.st_mode))
        return result

    monkeypatch.setattr(os, "fstat", spy)
    checkpoint.read(saved)
    assert seen and seen[0] == stat.S_IFREG


# ---------------------------------------------------------------------------- early-stopping state (22.1)
@pytest.fixture(scope="module")
def saved_with_stopping(tmp_path_factory):
    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    m = gpunn.MLP([3, 6, 1], device="cpu", seed=2)
    stop = gpunn.callbacks.EarlyStopping(patience=50)
    m.fit(X, (X[:, 0] > 0).astype(int), epochs=4, optimizer="adam", validation_data=(Xv, (Xv[:, 0] > 0).astype(int)),
          callbacks=[stop, stop.store_state], verbose=0)  # fmt: skip
    path = tmp_path_factory.mktemp("stopping") / "m.safetensors"
    m.save(path)
    return path


ES = ("metadata", "callbacks", "early_stopping")
STOPPING_FORGERIES = [
    (_set(*ES, "best_epoch", value=5), r"early_stopping best_epoch is 5, after the model's epoch 4"),
    (_set(*ES, "stopped_epoch", value=0), r"early_stopping stopped_epoch is 0"),
    (_set(*ES, "monitor", value="evil"), r"early_stopping monitor is 'evil'"),
    (_set(*ES, "waited", value=-1), r"early_stopping waited is -1"),
    (_set(*ES, "best", value=float("nan")), r"early_stopping best is nan"),
    (_set(*ES, "best_params", value="layers.0.weight"), r"early_stopping best_params is 'layers.0.weight'"),
    (_set(*ES, "best_optimizer", "step", value=-1), r"early_stopping best_optimizer is .*a adam state is"),
    (
        lambda c: c["metadata"]["callbacks"]["early_stopping"]["best_optimizer"].pop("v"),
        r"early_stopping best_optimizer is",
    ),
    (lambda c: c["metadata"]["callbacks"]["early_stopping"].pop("waited"), r"early_stopping must be an object with"),
    (_set("metadata", "callbacks", "evil", value={}), r"is .*it may hold an early_stopping state"),
]


@pytest.mark.parametrize("edit,pattern", STOPPING_FORGERIES)
def test_the_early_stopping_state_is_validated(saved_with_stopping, tmp_path, edit, pattern):
    forged = _forge(saved_with_stopping, tmp_path / "forged.safetensors", edit)
    prefix = "forged.safetensors: invalid model description: metadata callbacks "
    with pytest.raises(gpunn.CheckpointError, match=rf"{prefix}{pattern}"):
        gpunn.load(forged, device="cpu")


def test_the_best_weights_are_declared_tensors_of_the_model_size(saved_with_stopping, tmp_path):
    loaded = gpunn.load(saved_with_stopping, device="cpu")
    state = loaded.metadata["callbacks"]["early_stopping"]
    assert state["best_params"].shape == loaded.params.shape and state["best_params"].dtype == np.float32
    assert set(state["best_optimizer"]) == {"step", "m", "v"}

    def shorten(tensors):
        tensors["callbacks.early_stopping.params"] = tensors["callbacks.early_stopping.params"][:-1]

    forged = _forge(saved_with_stopping, tmp_path / "short.safetensors", lambda c: None, shorten)
    with pytest.raises(gpunn.CheckpointError, match=r"tensor callbacks.early_stopping.params is .* shape \[31\]"):
        gpunn.load(forged, device="cpu")

    def drop(tensors):
        del tensors["callbacks.early_stopping.optimizer.v"]

    forged = _forge(saved_with_stopping, tmp_path / "drop.safetensors", lambda c: None, drop)
    with pytest.raises(gpunn.CheckpointError, match=r"missing \['callbacks.early_stopping.optimizer.v'\]"):
        gpunn.load(forged, device="cpu")


# ------------------------------------------------------------------------------------------------ ensemble files
# An ensemble file goes through the same reader: every refusal above, a member of one gets too.
@pytest.fixture(scope="module")
def saved_ensemble(tmp_path_factory):
    """Two members of the classifier that ``saved`` holds, saved as an ensemble."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)) * 4 + 1
    y = (X[:, 0] > 1).astype(int) + (X[:, 1] > 1).astype(int)
    ens = gpunn.Ensemble([3, 6, 3], 2, output="softmax", device="cpu", standardize=True, seed=[2, 5])
    for m in ens.members:
        m.feature_names, m.target_name, m.metadata["classes"] = ["a", "b", "c"], "label", ["lo", "mid", "hi"]
    ens.fit(X, y, epochs=2, optimizer="adam", lr=gpunn.schedules.plateau(0.01), batch_size=20, verbose=0)
    path = tmp_path_factory.mktemp("ensemble") / "e.safetensors"
    ens.save(path)
    return path


@pytest.fixture(scope="module")
def saved_ensemble_with_stopping(tmp_path_factory):
    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    stops = [gpunn.callbacks.EarlyStopping(patience=50) for _ in range(2)]
    ens = gpunn.Ensemble([3, 6, 1], 2, device="cpu", seed=[2, 5])
    ens.fit(X, (X[:, 0] > 0).astype(int), epochs=4, optimizer="adam", validation_data=(Xv, (Xv[:, 0] > 0).astype(int)),
            callbacks=[[s, s.store_state] for s in stops], verbose=0)  # fmt: skip
    path = tmp_path_factory.mktemp("ensemble-stopping") / "e.safetensors"
    ens.save(path)
    return path


def _forge_member(src, dst, edit, k=1, edit_tensors=None):
    """``src``, an ensemble file, with member ``k``'s description (the shared fields and its own, its callbacks in
    its metadata, as the reader merges them) changed by ``edit`` and a checksum that matches. What the edit
    changes goes into member k: its own fields, and a shared field as member k's own; a shared field it drops
    goes from the shared fields. Written by safetensors.numpy, as Ensemble.save wrote files before gpunn packed
    them itself."""
    tensors = safetensors.numpy.load_file(src)
    with safe_open(src, "np") as f:
        meta = f.metadata()
    config = json.loads(meta["gpunn"])
    view = json.loads(json.dumps({**{key: config[key] for key in checkpoint.ENSEMBLE_SHARED}, **config["members"][k]}))
    callbacks = view.pop("callbacks")
    if callbacks is not None:
        view["metadata"]["callbacks"] = callbacks
    edit(view)
    if isinstance(view.get("metadata"), dict) and "callbacks" in view["metadata"]:
        view["callbacks"] = view["metadata"].pop("callbacks")
    elif "callbacks" not in view and "rng" in view:  # an edit that drops a field keeps the others as they were
        view["callbacks"] = None
    for key in checkpoint.ENSEMBLE_SHARED:
        if key not in view:
            config.pop(key)
    config["members"][k] = {key: v for key, v in view.items() if key not in config or v != config[key]}
    if edit_tensors is not None:
        edit_tensors(tensors)
    meta["gpunn"] = json.dumps(config, sort_keys=True)
    meta["sha256"] = checkpoint._digest(meta["gpunn"], tensors)
    safetensors.numpy.save_file(tensors, dst, metadata=meta)
    return dst


def _refused(path, pattern):
    """The CheckpointError that gpunn.load and gpunn.ensemble.load give ``path``; the file is left as it was."""
    before = path.read_bytes()
    with pytest.raises(gpunn.CheckpointError, match=pattern):
        gpunn.load(path, device="cpu")
    with pytest.raises(gpunn.CheckpointError, match=pattern):
        gpunn.ensemble.load(path, device="cpu")
    assert path.read_bytes() == before


def test_an_ensemble_file_forged_without_an_edit_loads(saved_ensemble, saved_ensemble_with_stopping, tmp_path):
    """The forging below changes nothing but what each edit changes: unedited, its files load as saved."""
    for src in (saved_ensemble, saved_ensemble_with_stopping):
        forged = _forge_member(src, tmp_path / "same.safetensors", lambda config: None)
        again, saved = gpunn.load(forged, device="cpu"), gpunn.load(src, device="cpu")
        assert isinstance(again, gpunn.Ensemble) and len(again) == 2
        X = np.random.default_rng(1).normal(size=(5, 3))
        np.testing.assert_array_equal(again.predict_proba(X), saved.predict_proba(X))


@pytest.mark.parametrize("edit,pattern", FORGERIES)
def test_every_field_of_an_ensemble_members_description_is_validated(saved_ensemble, tmp_path, edit, pattern):
    """Each edit that a one-network file refuses, made in member 1 of an ensemble file: refused, naming the member
    and the field (a shared field the edit drops: the ensemble's description lacks it)."""
    forged = _forge_member(saved_ensemble, tmp_path / "forged.safetensors", edit)
    if edit is FORGERIES[-2][0]:  # _drop("sizes"): sizes is shared, so it goes from the shared fields
        _refused(forged, r"forged.safetensors: invalid ensemble description: lacks sizes$")
    else:
        _refused(forged, rf"forged.safetensors: ensemble member 1: invalid model description: {pattern}")


@pytest.mark.parametrize("edit,pattern", STOPPING_FORGERIES)
def test_an_ensemble_members_early_stopping_state_is_validated(saved_ensemble_with_stopping, tmp_path, edit, pattern):
    forged = _forge_member(saved_ensemble_with_stopping, tmp_path / "forged.safetensors", edit)
    _refused(forged, rf"forged.safetensors: ensemble member 1: invalid model description: metadata callbacks {pattern}")


def test_ensemble_level_fields_are_validated(saved_ensemble, tmp_path):
    """The ensemble's own fields; a shared field's problem is named in member 0's description, the first to hold
    it; a member may not hold a shared field of its own (even a valid one); and its tensors match the members."""
    cases = [
        (lambda c: c.update(members=[]), r"invalid ensemble description: members is \[\]; an ensemble has at least"),
        (lambda c: c.update(members={"0": {}}), r"invalid ensemble description: members is dict, not a JSON list"),
        (lambda c: c.pop("members"), r"invalid ensemble description: lacks members$"),
        (lambda c: c.pop("metadata"), r"invalid ensemble description: lacks metadata$"),
        (lambda c: c["members"].__setitem__(1, 7), r"ensemble member 1: invalid model description: the model descr"),
        (lambda c: c["members"][1].update(sizes=[3, 5, 3]), r"ensemble member 1: holds its own sizes; the members sh"),
        (lambda c: c["members"][0].update(dtype="float64"), r"ensemble member 0: holds its own dtype"),
        (lambda c: c.update(sizes=[3, -6, 3]), r"ensemble member 0: invalid model description: sizes is \[3, -6, 3\]"),
        (lambda c: c.update(output="evil"), r"ensemble member 0: invalid model description: output is 'evil'"),
    ]
    for edit, pattern in cases:
        _refused(_forge_whole(saved_ensemble, tmp_path / "forged.safetensors", edit), rf"forged.safetensors: {pattern}")

    def shorten(tensors):
        tensors["members.1.params"] = tensors["members.1.params"][:-1]

    forged = _forge_member(saved_ensemble, tmp_path / "short.safetensors", lambda c: None, edit_tensors=shorten)
    _refused(forged, r"short.safetensors: tensor members.1.params is .* shape \[45\]")

    def drop(tensors):
        del tensors["members.0.optimizer.v"]

    forged = _forge_member(saved_ensemble, tmp_path / "drop.safetensors", lambda c: None, edit_tensors=drop)
    _refused(forged, r"drop.safetensors: tensors do not match the architecture: missing \['members.0.optimizer.v'\]")


def _forge_whole(src, dst, edit):
    """``src`` with its whole JSON description changed by ``edit`` and a checksum that matches."""
    tensors = safetensors.numpy.load_file(src)
    with safe_open(src, "np") as f:
        meta = f.metadata()
    config = json.loads(meta["gpunn"])
    edit(config)
    meta["gpunn"] = json.dumps(config, sort_keys=True)
    meta["sha256"] = checkpoint._digest(meta["gpunn"], tensors)
    safetensors.numpy.save_file(tensors, dst, metadata=meta)
    return dst


def test_predict_refuses_an_ensemble_with_a_nan_scale_in_a_member(saved_ensemble, tmp_path, capsys):
    """Before: 'gpunn predict' wrote NaN probabilities and exited 0."""
    from gpunn import cli

    forged = _forge_member(saved_ensemble, tmp_path / "nan.safetensors", _set("scaling", 1, 0, value=float("nan")))
    (tmp_path / "x.csv").write_text("a,b,c\n1,2,3\n4,5,6\n")
    out = tmp_path / "p.csv"
    argv = ["predict", "--model", str(forged), "--data", str(tmp_path / "x.csv"), "--device", "cpu", "--out", str(out)]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"gpunn: error: {forged}: ensemble member 1: invalid model description: scaling scale of feature 0 is nan; "
        "it must be a finite number > 0"
    )
    assert not out.exists()


def test_the_ensemble_digest_is_the_one_old_files_hold(saved_ensemble):
    """Ensemble files hold a SHA-256 over the JSON and then each tensor's name and little-endian bytes in name
    order (as Ensemble.save computed it with tobytes): checkpoint's digest gives that hash."""
    import hashlib

    tensors = safetensors.numpy.load_file(saved_ensemble)
    with safe_open(saved_ensemble, "np") as f:
        meta = f.metadata()
    h = hashlib.sha256(meta["gpunn"].encode())
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].astype(tensors[name].dtype.newbyteorder("<")).tobytes())
    assert meta["sha256"] == h.hexdigest() == checkpoint._digest(meta["gpunn"], tensors)
    assert meta["format"] == "gpunn.ensemble" and meta["format_version"] == "1"


# ------------------------------------------------------------------------------ special files, as ensembles
def _in_subprocess(code, timeout=30):
    """Run ``code`` in a child with a time limit, so that a reader that blocks fails the test instead of hanging."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout)
    return (out.stdout + out.stderr).strip()


def test_ensemble_load_and_is_ensemble_file_refuse_a_fifo_at_once(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)  # no writer: open() alone would block
    message = _in_subprocess(
        f"""
        import gpunn
        print(gpunn.ensemble.is_ensemble_file({str(fifo)!r}))
        try:
            gpunn.ensemble.load({str(fifo)!r}, device="cpu")
        except gpunn.CheckpointError as exc:
            print(exc)
        """
    )
    assert message == f"False\n{fifo}: not a regular file but a FIFO (named pipe); a checkpoint is a file written " \
                      "by MLP.save, Ensemble.save or 'gpunn train --save'"  # fmt: skip


def test_ensemble_load_refuses_a_symlink_to_dev_zero(tmp_path):
    """Before: read until MemoryError. In a child whose address space is capped, so that a reader that reads it
    fails the test at once instead of taking the machine's memory."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    link = tmp_path / "zero.safetensors"
    link.symlink_to("/dev/zero")
    message = _in_subprocess(
        f"""
        import resource
        import gpunn
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
        print(gpunn.ensemble.is_ensemble_file({str(link)!r}))
        try:
            gpunn.ensemble.load({str(link)!r}, device="cpu")
        except gpunn.CheckpointError as exc:
            print(exc)
        """
    )
    assert message == f"False\n{link}: not a regular file but a character device; a checkpoint is a file written by " \
                      "MLP.save, Ensemble.save or 'gpunn train --save'"  # fmt: skip


def test_a_sparse_1_gib_ensemble_file_is_refused_from_its_size_reading_its_header_alone(saved_ensemble, tmp_path):
    """Before: gpunn.ensemble.load read the whole file (1.09 GB of memory) before refusing it."""
    import tracemalloc

    sparse = tmp_path / "sparse.safetensors"
    sparse.write_bytes(saved_ensemble.read_bytes())
    os.truncate(sparse, 2**30)  # a hole: nothing is written, reading it would take 1 GiB
    header = 8 + int.from_bytes(saved_ensemble.read_bytes()[:8], "little")
    tracemalloc.start()
    try:
        assert gpunn.ensemble.is_ensemble_file(sparse)
        with pytest.raises(gpunn.CheckpointError, match=r"sparse.safetensors: file is truncated or padded: tensors "
                                                         r"need \d+ bytes of data, file has 10737"):  # fmt: skip
            gpunn.ensemble.load(sparse, device="cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * header < 2**20, f"{peak} bytes allocated to refuse a file whose header is {header} bytes"


# --------------------------------------------------------------------------------------------- nesting bombs
DEEP = 100_000


def _bomb(tmp_path, kind, where):
    """A file of format ``kind`` whose header (``where`` "header") or model description ("description") holds
    100,000 nested '['."""
    meta = {"format": kind, "format_version": "1", "gpunn": "[" * DEEP + "]" * DEEP, "sha256": "0" * 64}
    if where == "header":
        meta["gpunn"] = "{}"
    raw = json.dumps({"__metadata__": meta}).encode()
    if where == "header":
        raw = raw[:-1] + b', "x": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    path = tmp_path / f"{kind}-{where}.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    return path


@pytest.mark.parametrize("where", ["header", "description"])
@pytest.mark.parametrize("kind", ["gpunn.mlp", "gpunn.ensemble"])
def test_a_nested_json_bomb_is_a_checkpoint_error(tmp_path, capsys, kind, where):
    """Before: a RecursionError traceback from gpunn.load and gpunn predict."""
    from gpunn import cli

    path = _bomb(tmp_path, kind, where)
    what = "header" if where == "header" else "model description in the header"
    message = rf"^{path}: {what} nests {DEEP + (where == 'header')} levels deep, more than the 200 a gpunn file may"
    with pytest.raises(gpunn.CheckpointError, match=message):
        gpunn.load(path, device="cpu")
    with pytest.raises(gpunn.CheckpointError, match=message if kind == "gpunn.ensemble" or where == "header" else
                       rf"^{path}: not a gpunn ensemble file"):  # fmt: skip
        gpunn.ensemble.load(path, device="cpu")
    assert gpunn.ensemble.is_ensemble_file(path) == (kind == "gpunn.ensemble" and where == "description")
    (tmp_path / "x.csv").write_text("a,b,c\n1,2,3\n")
    assert cli.main(["predict", "--model", str(path), "--data", str(tmp_path / "x.csv"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"gpunn: error: {path}: {what} nests"), err


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "[[[\\"[", "b": [[1], {"c": "]}"}]}',
        '[[[[]]], [], {"x": [{"y": "\\\\"}]}]',
        '{"s": "{{{{{{{{{{{{{{{{", "t": ["\\u005b"]}',
        "[" * 300 + "]" * 300,
        "[" + ",".join(["[]"] * 1000) + "]",
        json.dumps({"deep": [[["]]]"]]], "k": {"z": '"[['}}),
    ],
)
def test_the_nesting_count_is_the_decoded_json_s(text):
    """The count against its oracle: the depth of what json.loads decodes."""

    def depth(value):
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        return 0 if children is None else 1 + max(map(depth, children), default=0)

    assert checkpoint._nesting(text) == depth(json.loads(text))


def test_the_nesting_count_takes_linear_time_on_an_unclosed_string():
    """A string that never closes, full of escaped quotes: a pattern that backtracked would take minutes."""
    text = '{"a": "' + '\\"[' * 2_000_000
    start = time.perf_counter()
    assert checkpoint._nesting(text) == 1
    assert time.perf_counter() - start < 5


def test_a_model_nested_deeper_than_a_file_holds_is_not_saved(tmp_path):
    """What save writes, load reads: metadata nested past the cap is refused at save, and nothing is written."""
    m = gpunn.MLP([2, 3, 1], device="cpu")
    m.metadata["notes"] = json.loads("[" * 190 + "]" * 190)  # within the cap: saved and loaded
    m.save(tmp_path / "ok.safetensors")
    assert gpunn.load(tmp_path / "ok.safetensors", device="cpu").metadata["notes"] == m.metadata["notes"]
    m.metadata["notes"] = json.loads("[" * 300 + "]" * 300)
    with pytest.raises(gpunn.CheckpointError, match=r"deep.safetensors: not saved: the model description nests 302 "):
        m.save(tmp_path / "deep.safetensors")
    assert os.listdir(tmp_path) == ["ok.safetensors"]


# ------------------------------------------------------------------------------------------------ full disk
@pytest.mark.parametrize("fails", ["fsync", "replace"])
@pytest.mark.parametrize("what", ["mlp", "ensemble"])
def test_a_save_onto_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, what, fails):
    """Before: OSError [Errno 28] without a file name (a failed write, fsync or rename)."""
    import errno

    model = gpunn.MLP([2, 3, 1], device="cpu") if what == "mlp" else gpunn.Ensemble([2, 3, 1], 2, device="cpu")
    path = tmp_path / "model.safetensors"
    model.save(path)
    before = path.read_bytes()

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, fails, full)
    with pytest.raises(OSError) as info:
        model.save(path)
    monkeypatch.undo()
    assert (info.value.errno, info.value.strerror, info.value.filename) == (
        errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)
    )  # fmt: skip
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.safetensors"]  # no temporary file left
