"""Dropout masks from a counter-based generator written with the standard's integer operations.

A mask element is a hash of (seed, step, layer, position), so the same seed gives the same masks on every
namespace and device, masks are drawn where the model lives (no host generator, no copy per step), and a run
that resumes from a checkpoint (which keeps the step count) draws the masks the uninterrupted run would have.

The hash works on int32 values below 2**31 and never overflows, so it is exact in every namespace, JAX without
64-bit mode included. Each round is an xorshift, a multiplication modulo the prime 2**31 - 1 computed by
Schrage's method (every product stays below 2**31), and an xor with the key; each is a bijection, so distinct
positions never share a hash within a step. The same functions run on Python ints (to derive a key on
the host) and on arrays, since they use only ``>>``, ``^``, ``//``, ``%``, ``*`` and ``-``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MODULUS = 2**31 - 1  # a prime
_A = 48271  # a multiplier modulo MODULUS (the "MINSTD" one): Schrage's q and r below keep products < 2**31
_Q, _R = MODULUS // _A, MODULUS % _A
ROUNDS = 3


def _mulmod(x: Any) -> Any:
    """``_A * x mod MODULUS`` for 0 <= x < 2**31 without forming the product (Schrage's method)."""
    return (_A * (x % _Q) - _R * (x // _Q)) % MODULUS  # remainder takes the divisor's sign: the result is >= 0


def _hash(x: Any, key: Any) -> Any:
    """A bijection of [0, 2**31) for each key (every step of it is one), mixing every input bit."""
    x = x ^ key
    for _ in range(ROUNDS):
        x = _mulmod(x ^ (x >> 15)) ^ key
    return x


def seed_key(seed: int) -> int:
    """The 31-bit key of a model's seed (its own stream, independent of the initial weights and shuffling)."""
    return int(np.random.SeedSequence(seed, spawn_key=(2,)).generate_state(1, np.uint32)[0]) >> 1


def step_key(seed_key: int, step: Any) -> Any:
    """The key of the masks of optimizer step ``step`` (a Python int, or a 0-d int32 array when compiled)."""
    return _hash(step, seed_key)


def threshold(rate: float) -> int:
    """Hashes below this are dropped: a fraction ``rate`` of [0, 2**31 - 1)."""
    return round(rate * MODULUS)


def masks(
    rate: float, seed_key: int, step: Any, rows: int, units: list[int], dtype: Any, xp: Any, device: Any,
    row_offset: Any = 0,
):  # fmt: skip
    """One inverted-dropout multiplier per hidden layer, shaped (rows, units[i]): 0 where a unit is dropped,
    1 / (1 - rate) where it is kept.

    The hidden layers' units are laid side by side, H of them in all, and the element at row r and column c of
    that (rows, H) table is kept when ``_hash(r * H + c, step_key(seed_key, step)) >= threshold(rate)``. One
    hash over the whole table draws every layer's mask: about 30 array operations per step, whatever the
    depth. ``row_offset`` is the first row's position in the global batch (a rank's shard in distributed
    training), so every rank draws its rows' part of the one global table."""
    return masks_of(values(rate, seed_key), step, rows, units, dtype, xp, device, row_offset)


def values(rate: float, seed_key: int) -> dict[str, Any]:
    """A dropout's numbers as :func:`masks_of` takes them (a compiled step takes them as 0-d arrays)."""
    return {"dropout_threshold": threshold(rate), "dropout_scale": 1.0 / (1.0 - rate), "dropout_key": seed_key}


def masks_of(
    v: dict[str, Any], step: Any, rows: int, units: list[int], dtype: Any, xp: Any, device: Any, row_offset: Any = 0
) -> list[Any]:
    """:func:`masks` from the numbers of :func:`values`."""
    width = sum(units)
    position = xp.reshape(xp.arange(rows * width, dtype=xp.int32, device=device), (rows, width))
    if not (isinstance(row_offset, int) and row_offset == 0):  # traced when compiled
        position = position + row_offset * width
    keep = _hash(position, step_key(v["dropout_key"], step)) >= v["dropout_threshold"]
    table = xp.astype(keep, dtype) * v["dropout_scale"]
    out, column = [], 0
    for u in units:
        out.append(table[:, column : column + u])
        column += u
    return out


def masks_stacked(
    keys: Any, thresholds: Any, scales: Any, step: Any, rows: int, units: list[int], dtype: Any, xp: Any, device: Any,
    row_offset: int = 0,
) -> list[Any]:  # fmt: skip
    """:func:`masks` of K stacked networks at once, each with its own key and rate: one multiplier per hidden
    layer, shaped (K, rows, units[i]), member k's equal to what ``masks`` draws for it alone.

    ``keys`` is the members' :func:`seed_key` as an int32 array (K, 1, 1); ``thresholds`` and ``scales`` are
    :func:`threshold` and 1 / (1 - rate) of the members' rates, (K, 1, 1) arrays or one Python number for all (a
    member without dropout has threshold 0 and scale 1: every unit kept, times 1); ``step`` the optimizer's step
    count, a Python int or a (K, 1, 1) int array. ``row_offset`` is, as for :func:`masks`, the first row's
    position in every member's global batch (a rank's shard in distributed training)."""
    width = sum(units)
    position = xp.reshape(xp.arange(rows * width, dtype=xp.int32, device=device), (rows, width))
    if not (isinstance(row_offset, int) and row_offset == 0):  # traced when compiled
        position = position + row_offset * width
    keep = _hash(position, step_key(keys, step)) >= thresholds
    table = xp.astype(keep, dtype) * scales
    out, column = [], 0
    for u in units:
        out.append(table[:, :, column : column + u])
        column += u
    return out
