"""Reliability helpers: an instrumented authority with fast retries, settling past every TTL, reconciling."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runcycles import AsyncCyclesClient, CyclesConfig  # type: ignore[import-untyped]

from cycles_otel.autogen import BudgetedChatCompletionClient
from cycles_otel.instruments import get_instruments
from cycles_otel.testing.authority import LedgerSnapshot, LocalCyclesServer
from cycles_otel.testing.authority.protocol import Request, Response
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.protocol import SCOPE, UNIT, instrumentation, running_authority

# Short client timeouts so a held ("timeout") fault costs well under a second.
FAST_TIMEOUTS: dict[str, Any] = {"connect_timeout": 0.5, "read_timeout": 0.3}
HOLD_SECONDS = 0.6  # how long a timeout fault holds a request: longer than read_timeout
TTL_MS = 60_000
# Past every TTL + grace the tests use (server default grace is 5 s): nothing may stay ACTIVE after it.
EXPIRY_HORIZON_S = TTL_MS / 1000 + 5 + 1
RECOVERED_ID = "recovered_reservation_id"
MODEL = "gpt-4o"
MAX_OUTPUT_TOKENS = 200
MODEL_API_KEY = "sk-reliability-MODELKEY-7f3a9c2e5b1d4068"


class RetryAfterCyclesServer(LocalCyclesServer):
    """The local authority, whose 429 answers carry ``Retry-After`` (its faults can send no header)."""

    def __init__(self, retry_after_s: int = 1, **options: Any) -> None:
        super().__init__(**options)
        self.retry_after_s = retry_after_s

    def _answer(
        self, request: Request, operation: str | None, request_id: str, trace_id: str
    ) -> Response | None:
        response = super()._answer(request, operation, request_id, trace_id)
        if response is not None and response.status == 429:
            response.headers["Retry-After"] = str(self.retry_after_s)
        return response


@contextmanager
def governed_authority(
    telemetry: TelemetryCapture,
    allocated: int = 10**12,
    server: LocalCyclesServer | None = None,
    **options: Any,
) -> Iterator[tuple[LocalCyclesServer, CyclesConfig]]:
    """:func:`running_authority` with runcycles instrumented into ``telemetry`` and fast timeouts."""
    with (
        running_authority(allocated, server, **{**FAST_TIMEOUTS, **options}) as found,
        instrumentation(telemetry),
    ):
        yield found


def on_authority_time(telemetry: TelemetryCapture, server: LocalCyclesServer) -> None:
    """Time the active gauge's leases on the authority's simulated clock, so tests move both at once."""
    get_instruments(telemetry.meter_provider).active.clock = lambda: server.clock.now_ms() / 1000


def budgeted_client(
    cycles_client: AsyncCyclesClient, telemetry: TelemetryCapture, base_url: str, **options: Any
) -> BudgetedChatCompletionClient:
    """The real OpenAI client (no SDK retries, short timeout) at ``base_url``, governed and traced in memory.

    Protocol spans come from :func:`instrumented`, so the client does not instrument runcycles itself;
    ``options`` override any argument, those included.
    """
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    inner = OpenAIChatCompletionClient(
        model=MODEL, base_url=base_url, api_key=MODEL_API_KEY, max_retries=0, timeout=5.0
    )
    defaults: dict[str, Any] = {
        "tracer_provider": telemetry.tracer_provider,
        "meter_provider": telemetry.meter_provider,
        "instrument_protocol": False,
        "max_output_tokens": MAX_OUTPUT_TOKENS,
    }
    return BudgetedChatCompletionClient(inner, cycles_client, **{**defaults, **options})


def rss_bytes() -> int:
    """This process's resident set size (``VmRSS`` of ``/proc/self/status``), after a full collection."""
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line in /proc/self/status")


async def quiesce(seconds: float = 10.0) -> None:
    """Wait until every other task on this loop (runcycles' retries, heartbeats) has finished."""
    current = asyncio.current_task()
    deadline = time.monotonic() + seconds
    while pending := [t for t in asyncio.all_tasks() if t is not current and not t.done()]:
        assert time.monotonic() < deadline, f"background work still running after {seconds}s: {pending}"
        await asyncio.sleep(0.02)


async def settle(server: LocalCyclesServer) -> LedgerSnapshot:
    """Let retries flush, move the clock past TTL + grace, let recovery flush; the final ledger."""
    await quiesce()
    server.clock.advance(EXPIRY_HORIZON_S)
    await quiesce()
    return server.ledger()


def charged_metric(telemetry: TelemetryCapture) -> int:
    value = telemetry.value("cycles.client.charged", cycles__unit=UNIT)
    assert value == int(value), f"charged is not a whole number of {UNIT}: {value}"
    return int(value)


def recovered_ids(snapshot: LedgerSnapshot) -> set[str]:
    """Reservations whose spend was re-recorded through ``POST /v1/events`` after they expired."""
    return {
        str(e.metadata[RECOVERED_ID]) for e in snapshot.events if e.metadata and RECOVERED_ID in e.metadata
    }


def assert_reconciled(snapshot: LedgerSnapshot, telemetry: TelemetryCapture, scope: str = SCOPE) -> None:
    """Nothing held, nothing lost: zero ACTIVE, and the metrics' charges equal the ledger's spend."""
    active = [r.reservation_id for r in snapshot.reservations if r.status == "ACTIVE"]
    assert not active, f"reservations still ACTIVE after TTL + grace: {active}"
    balance = snapshot.scopes[scope]
    assert balance.reserved == 0, f"{scope} still holds {balance.reserved}"
    assert charged_metric(telemetry) == balance.spent + balance.debt, (
        f"metrics say {charged_metric(telemetry)} charged, "
        f"the ledger spent {balance.spent} (+debt {balance.debt})"
    )


def assert_spend_accounted(snapshot: LedgerSnapshot, spent_ids: set[str]) -> None:
    """Work that happened ends COMMITTED or EXPIRED-and-recovered; the rest hold nothing."""
    recovered = recovered_ids(snapshot)
    for record in snapshot.reservations:
        if record.reservation_id in spent_ids:
            assert record.status == "COMMITTED" or (
                record.status == "EXPIRED" and record.reservation_id in recovered
            ), (
                f"spend of {record.reservation_id} lost: {record.status}, "
                f"recovered={record.reservation_id in recovered}"
            )
        else:
            assert record.status in ("RELEASED", "EXPIRED"), f"{record.reservation_id}: {record.status}"
