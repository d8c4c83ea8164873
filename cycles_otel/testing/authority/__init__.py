"""A local Cycles-protocol authority: the official v0 runtime API over loopback, with an inspectable ledger.

Usage::

    from cycles_otel.testing.authority import LocalCyclesServer

    with LocalCyclesServer() as server:
        key = server.create_api_key(tenant="acme")
        server.set_budget("tenant:acme", 500_000_000)               # 5 USD in USD_MICROCENTS
        config = server.config(key)                                  # runcycles.CyclesConfig
        ...
        snap = server.ledger()
        assert snap.scopes["tenant:acme"].remaining == 500_000_000 - snap.scopes["tenant:acme"].spent

Time is controlled, never slept: ``server.clock.advance(seconds)`` (or ``server.expire_now(id)``).
Faults: ``server.faults.delay/fail/timeout/drop/clear``. Every request and its answer is kept in
``server.requests`` (with lowercased headers, e.g. the ``traceparent`` the server received).
A body over ``max_body_bytes`` (1 MiB) or nested deeper than 64 arrays/objects is answered 400
``INVALID_REQUEST``, like any other request the schema refuses.
Standalone: ``cycles-otel authority --tenant acme --budget tenant:acme=5USD``. Like the reference server,
it answers the health probe ``GET /actuator/health`` (200 ``{"status": "UP"}``, no API key needed).
"""

from cycles_otel.testing.authority.faults import Fault, Faults
from cycles_otel.testing.authority.records import (
    Clock,
    EventRecord,
    LedgerSnapshot,
    Reservation,
    ScopeBalance,
)
from cycles_otel.testing.authority.server import LocalCyclesServer, RecordedRequest

__all__ = [
    "Clock",
    "EventRecord",
    "Fault",
    "Faults",
    "LedgerSnapshot",
    "LocalCyclesServer",
    "RecordedRequest",
    "Reservation",
    "ScopeBalance",
]
