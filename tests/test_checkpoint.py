"""Checkpoints: a faithful round trip, every corruption caught as CheckpointError, atomic saves."""

from __future__ import annotations

import errno
import json
import os
import pickle
import stat

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpunn
from gpunn import checkpoint


def _trained(tmp_path, **kw):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)) * 5 + 2
    y = (X[:, 0] > 2).astype(int)
    m = gpunn.MLP([3, 5, 1], device="cpu", standardize=True, seed=3, **kw)
    m.feature_names, m.target_name = ["a", "b", "c"], "label"
    m.fit(X, y, epochs=3, optimizer="adam", lr=0.01, batch_size=16, verbose=0)
    path = tmp_path / "m.safetensors"
    m.save(path)
    return m, path, X


def test_round_trip_restores_everything(tmp_path, backend):
    m, path, X = _trained(tmp_path)
    loaded = gpunn.load(path, **backend.kwargs())
    for (w, b), (w2, b2) in zip(m.weights, loaded.weights):
        np.testing.assert_array_equal(w, gpunn._backend.to_numpy(w2))
        np.testing.assert_array_equal(b, gpunn._backend.to_numpy(b2))
    assert loaded.sizes == m.sizes and loaded.output == m.output and loaded.dtype == m.dtype
    assert loaded.history == m.history and loaded.epoch == 3
    assert loaded.feature_names == ["a", "b", "c"] and loaded.target_name == "label"
    np.testing.assert_array_equal(loaded.scaling[0], m.scaling[0])
    assert loaded.optimizer == m.optimizer and loaded.optimizer_state["step"] == m.optimizer_state["step"]
    assert loaded.rng.bit_generator.state == m.rng.bit_generator.state
    np.testing.assert_allclose(
        gpunn._backend.to_numpy(loaded.predict_proba(X)), m.predict_proba(X), rtol=1e-6, atol=1e-7
    )


def test_truncation_at_any_offset_is_detected(tmp_path):
    _, path, _ = _trained(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    for cut in sorted({0, 1, 7, 8, 9, 50, len(data) // 2, len(data) - 8, len(data) - 1, *range(0, len(data), 97)}):
        bad.write_bytes(data[:cut])
        with pytest.raises(gpunn.CheckpointError, match="bad.safetensors: .*(truncated|corrupt|JSON)"):
            gpunn.load(bad, device="cpu")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return _trained(tmp_path_factory.mktemp("ckpt"))[1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_bit_flips_are_detected_or_harmless(saved, tmp_path, data):
    path = saved
    original = path.read_bytes()
    header_len = 8 + int.from_bytes(original[:8], "little")
    region = data.draw(st.sampled_from(["header", "data"]))
    lo, hi = (0, header_len) if region == "header" else (header_len, len(original))
    pos = data.draw(st.integers(lo, hi - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(original)
    flipped[pos] ^= 1 << bit
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(flipped))
    try:
        loaded = gpunn.load(bad, device="cpu")
    except gpunn.CheckpointError:
        return
    # A flip the reader accepts must not have changed what the model is (for example, JSON whitespace).
    ref = gpunn.load(path, device="cpu")
    for (w, b), (w2, b2) in zip(ref.weights, loaded.weights):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)
    assert loaded.history == ref.history and loaded.sizes == ref.sizes


def test_a_pickle_payload_is_never_executed(tmp_path):
    canary = tmp_path / "canary"

    class Exploit:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(gpunn.CheckpointError):
        gpunn.load(path, device="cpu")
    # The same payload smuggled behind a valid-looking header.
    payload = pickle.dumps(Exploit())
    header = json.dumps({"__metadata__": {"format": "gpunn.mlp", "format_version": "1", "gpunn": "{}"}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + payload)
    with pytest.raises(gpunn.CheckpointError):
        gpunn.load(path, device="cpu")
    assert not canary.exists()


def test_unknown_format_version_is_named(tmp_path):
    _, path, _ = _trained(tmp_path)
    data = path.read_bytes()
    patched = data.replace(b'"format_version":"1"', b'"format_version":"9"')
    assert patched != data
    path.write_bytes(patched)
    with pytest.raises(gpunn.CheckpointError, match="format version '9' is not supported"):
        gpunn.load(path, device="cpu")


def test_foreign_safetensors_file_is_not_a_gpunn_checkpoint(tmp_path):
    import safetensors.numpy

    path = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"w": np.ones(3, np.float32)}, path)
    with pytest.raises(gpunn.CheckpointError, match="not a gpunn checkpoint"):
        gpunn.load(path, device="cpu")


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(gpunn.CheckpointError, match="nope.safetensors: cannot read"):
        gpunn.load(tmp_path / "nope.safetensors")


def test_load_weights_checks_the_architecture(tmp_path):
    m, path, X = _trained(tmp_path)
    other = gpunn.MLP([3, 6, 1], device="cpu")
    with pytest.raises(gpunn.CheckpointError, match=r"sizes \[3, 5, 1\].*sizes \[3, 6, 1\]"):
        other.load_weights(path)
    same = gpunn.MLP([3, 5, 1], device="cpu", seed=99)
    same.load_weights(path)
    np.testing.assert_array_equal(same.weights[0][0], m.weights[0][0])


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    m, path, X = _trained(tmp_path)
    before = path.read_bytes()
    m.fit(X, (X[:, 0] > 2).astype(int), epochs=1, verbose=0)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        m.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    gpunn.load(path, device="cpu")


def test_save_writes_through_a_temporary_file_in_the_same_folder(tmp_path, monkeypatch):
    m, path, _ = _trained(tmp_path)
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((os.path.dirname(src), os.path.basename(src), dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    m.save(path)
    assert len(seen) == 1 and seen[0][0] == str(tmp_path) and seen[0][1].startswith(".m.safetensors.")
    assert checkpoint.read(path).config["epoch"] == 3


def test_a_checkpoint_written_before_the_flat_parameter_buffer_loads_and_resumes_as_it_did():
    """gpunn 0.1 kept parameters and Adam's moments as one array per layer; its checkpoint, written by that code
    (tests/data), loads into the flat buffer, and two more epochs give the weights that code gave (saved beside
    the checkpoint by it)."""
    import os

    import safetensors.numpy

    data = os.path.join(os.path.dirname(__file__), "data")
    path = os.path.join(data, "gpunn-0.1-adam.safetensors")
    stored = safetensors.numpy.load_file(path)
    m = gpunn.load(path, device="cpu")
    assert m.epoch == 2 and m.optimizer.name == "adam" and m.optimizer_state["step"] == 8
    for i, (w, b) in enumerate(m.weights):
        np.testing.assert_array_equal(w, stored[f"layers.{i}.weight"])
        np.testing.assert_array_equal(b, stored[f"layers.{i}.bias"])
    for slot in ("m", "v"):
        flat = np.concatenate([stored[f"optimizer.{slot}.{j}"].reshape(-1) for j in range(4)])
        np.testing.assert_array_equal(m.optimizer_state[slot], flat)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    m.fit(X, y, epochs=2, batch_size=16, optimizer="adam", lr=0.01, verbose=0)
    np.testing.assert_allclose(m.params, np.load(os.path.join(data, "gpunn-0.1-adam-next.npy")), rtol=0, atol=1e-14)


def test_a_model_pickled_before_the_flat_parameter_buffer_unpickles_and_resumes_as_it_did():
    """A gpunn 0.1 model (lists of per-layer arrays, momentum's velocities) pickled by that code (tests/data)
    unpickles into the flat buffer, and two more epochs give the weights that code gave."""
    import os
    import pickle

    data = os.path.join(os.path.dirname(__file__), "data")
    with open(os.path.join(data, "gpunn-0.1-momentum.pkl"), "rb") as f:
        m = pickle.load(f)  # a file this repository wrote itself
    assert m.epoch == 2 and m.optimizer_state["velocity"].shape == m.params.shape
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    m.fit(X, y, epochs=2, batch_size=16, optimizer="momentum", lr=0.05, verbose=0)
    expected = np.load(os.path.join(data, "gpunn-0.1-momentum-next.npy"))
    np.testing.assert_allclose(m.params, expected, rtol=0, atol=1e-14)


def test_a_file_that_is_not_a_checkpoint_says_so(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("age,weight,height,label\n" + "31,70.5,180,yes\n" * 20)
    with pytest.raises(gpunn.CheckpointError, match=r"people.csv: not a safetensors file, or a corrupt one"):
        gpunn.load(path, device="cpu")


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o664])
def test_saving_over_a_file_keeps_its_permissions(tmp_path, mode):
    """Before, every save went through mkstemp and left the file 0600, whatever it had been."""
    m, path, _ = _trained(tmp_path)
    os.chmod(path, mode)
    m.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    checkpoint.atomic_write(path, b"x")
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_new_file_follows_the_umask(tmp_path, umask):
    m = gpunn.MLP([3, 5, 1], device="cpu")
    old = os.umask(umask)
    try:
        m.save(tmp_path / "new.safetensors")
        checkpoint.atomic_write(tmp_path / "other.bin", b"x")
    finally:
        os.umask(old)
    for name in ("new.safetensors", "other.bin"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask
