"""Hold one protocol operation inside the local authority, so a test orders events instead of timing them.

``hold(server, "commit")`` keeps every commit waiting inside the authority (before it touches the
ledger) until the test calls :meth:`Gate.release`; ``hold(server, "reserve", until=8)`` keeps each
reserve waiting until eight are waiting at once, then lets them all go. A request the test never
lets go is let go after :data:`~tests.support.waiting.PATIENCE_S`, and the gate says so.
"""

from __future__ import annotations

import asyncio
import threading

from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.authority.faults import Fault, Faults
from tests.support.waiting import PATIENCE_S


class Gate(Faults):
    """The server's faults (armed as usual), plus a hold on every request of one operation."""

    def __init__(self, operation: str, until: int | None) -> None:
        super().__init__()
        self.operation, self.until = operation, until
        self.arrived = 0  # requests of the operation that reached the gate
        self.filled = False  # ``until`` requests were held at once
        self.gave_up = False  # a request was let go because the test never released it
        self._released = False
        self._changed = threading.Condition()

    def take(self, operation: str) -> tuple[float, Fault | None]:
        if operation == self.operation:
            with self._changed:
                self.arrived += 1
                if self.until is not None and self.arrived >= self.until:
                    self.filled = True
                self._changed.notify_all()
                if not self._changed.wait_for(self._open, PATIENCE_S):
                    self.gave_up = True
        return super().take(operation)

    def _open(self) -> bool:
        return self._released or self.filled

    def release(self) -> None:
        """Let every held request, and every later one, through."""
        with self._changed:
            self._released = True
            self._changed.notify_all()

    def wait_arrived(self, count: int = 1) -> None:
        """Block until ``count`` requests have reached the gate (an AssertionError if they never do)."""
        with self._changed:
            assert self._changed.wait_for(lambda: self.arrived >= count, PATIENCE_S), (
                f"{self.arrived} of {count} {self.operation} requests reached the authority"
            )

    async def arrived_async(self, count: int = 1) -> None:
        """:meth:`wait_arrived` without blocking the event loop."""
        await asyncio.to_thread(self.wait_arrived, count)


def hold(server: LocalCyclesServer, operation: str, until: int | None = None) -> Gate:
    """Put a :class:`Gate` on ``operation`` of a running ``server`` (arm its other faults afterwards)."""
    gate = Gate(operation, until)
    server.faults = gate
    return gate
