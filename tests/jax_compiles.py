"""XLA programs compiled in this process, counted from JAX's own monitoring events (the oracle the tests hold
gpunn's own count, ``History.compiles``, to): one listener for every test module that counts, registered when
the first of them imports this module (after ``pytest.importorskip("jax")``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # one event per XLA program compiled
seconds: list[float] = []  # every program's compile time, in order
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: seconds.append(duration) if event == COMPILE_EVENT else None
)


def count() -> int:
    """The programs compiled so far in this process."""
    return len(seconds)


def during(fn: Callable[..., Any], *args: Any) -> int:
    """How many XLA programs ``fn(*args)`` compiled."""
    before = len(seconds)
    fn(*args)
    return len(seconds) - before
