"""Fault injection per protocol operation: latency, error answers, held responses and dropped connections."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

OPERATIONS = (
    "reserve",
    "commit",
    "release",
    "extend",
    "decide",
    "event",
    "balances",
    "get_reservation",
    "list_reservations",
)


@dataclass
class Fault:
    """What to do to the next request of one operation.

    ``kind`` is ``fail`` (answer ``status``/``error``), ``timeout`` (hold ``seconds``, then close the
    connection) or ``drop`` (close the connection at once). ``after`` means the ledger applies the
    request first, so the client sees a failure for work that was done (a lost response).
    """

    kind: str
    status: int = 500
    error: str = "INTERNAL_ERROR"
    message: str = "injected fault"
    seconds: float = 0.0
    after: bool = False
    details: dict[str, Any] | None = None


class Faults:
    """Faults armed on a running :class:`LocalCyclesServer`, consumed in the order they were armed.

    Unless ``after=True`` is given, every fault strikes *before* the ledger sees the request: a
    failed, timed-out or dropped commit did not commit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delays: dict[str, float] = {}
        self._queued: dict[str, list[tuple[Fault, int]]] = {}

    @staticmethod
    def _check(operation: str, times: int) -> None:
        if operation not in OPERATIONS:
            raise ValueError(f"operation {operation!r}: use one of {', '.join(OPERATIONS)}")
        if times < 1:
            raise ValueError(f"times={times}: a fault must strike at least once")

    def _arm(self, operation: str, fault: Fault, times: int) -> None:
        self._check(operation, times)
        with self._lock:
            self._queued.setdefault(operation, []).append((fault, times))

    def delay(self, operation: str, seconds: float) -> None:
        """Add ``seconds`` of latency to every ``operation`` call until :meth:`clear` (it still runs)."""
        self._check(operation, 1)
        with self._lock:
            self._delays[operation] = seconds

    def fail(
        self,
        operation: str,
        status: int,
        error: str = "INTERNAL_ERROR",
        message: str = "injected fault",
        times: int = 1,
        *,
        after: bool = False,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next ``times`` calls with ``status`` and an ``{error, message}`` body.

        The ledger is not touched, unless ``after=True``: then the request is applied and only its
        response is replaced (the "applied but the answer was lost" case). ``details`` is the error
        body's ``details`` object (e.g. a denial's ``{"deny_detail": {...}}``).
        """
        fault = Fault("fail", status=status, error=error, message=message, after=after, details=details)
        self._arm(operation, fault, times)

    def timeout(self, operation: str, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` calls for ``seconds`` (longer than the client's timeout), then close the
        connection without answering. The request is not applied."""
        self._arm(operation, Fault("timeout", seconds=seconds), times)

    def drop(self, operation: str, times: int = 1) -> None:
        """Close the connection of the next ``times`` calls without a response; nothing is applied."""
        self._arm(operation, Fault("drop"), times)

    def clear(self) -> None:
        """Disarm every fault and delay."""
        with self._lock:
            self._delays.clear()
            self._queued.clear()

    def take(self, operation: str) -> tuple[float, Fault | None]:
        """The delay for ``operation`` and the fault to apply to this call (consuming one strike)."""
        with self._lock:
            delay = self._delays.get(operation, 0.0)
            queue = self._queued.get(operation)
            if not queue:
                return delay, None
            fault, left = queue[0]
            if left <= 1:
                queue.pop(0)
            else:
                queue[0] = (fault, left - 1)
            return delay, fault
