"""Waiting for work that runs elsewhere (threads, processes, Prometheus) and signals nothing when done.

Where the code under test offers an event, tests wait on it instead. The patience here bounds how
long a test waits before it fails with a message saying what never happened; it is not a measure
of how fast anything must be (pytest-timeout still ends a test that hangs in between).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
PATIENCE_S = 20.0
_INTERVAL_S = 0.02


def wait_until(probe: Callable[[], T], accept: Callable[[T], bool], timeout: float = PATIENCE_S) -> T:
    """Ask ``probe`` until ``accept`` holds or ``timeout`` passes; its last answer either way."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if accept(found) or time.monotonic() > deadline:
            return found
        time.sleep(_INTERVAL_S)


def poll(probe: Callable[[], T | None], what: str, timeout: float = PATIENCE_S) -> T:
    """The first answer of ``probe`` that is not None, else an AssertionError naming ``what``."""
    found = wait_until(probe, lambda answer: answer is not None, timeout)
    if found is None:
        raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
    return found


def eventually(condition: Callable[[], object], what: str, timeout: float = PATIENCE_S) -> None:
    """Return once ``condition()`` is truthy; an AssertionError naming ``what`` if it never is."""
    poll(lambda: True if condition() else None, what, timeout)


async def eventually_async(condition: Callable[[], object], what: str, timeout: float = PATIENCE_S) -> None:
    """:func:`eventually` on an event loop: the loop keeps running the work being waited for."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(_INTERVAL_S)
