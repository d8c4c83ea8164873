"""Protocol-layer helpers: an authority with a budget, runcycles instrumented, any client called alike."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

from opentelemetry.sdk.trace import ReadableSpan
from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig  # type: ignore[import-untyped]

from cycles_otel.protocol import CyclesInstrumentor
from cycles_otel.protocol.transport import AiohttpCyclesClient
from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.telemetry import TelemetryCapture

TENANT = "acme"
SCOPE = f"tenant:{TENANT}"
UNIT = "USD_MICROCENTS"
Client: TypeAlias = Any  # CyclesClient or AsyncCyclesClient (runcycles ships no type information)
# The sync client, and the async one over each transport (runcycles' httpx, aiohttp).
CLIENT_CLASSES: dict[str, Any] = {
    "sync": CyclesClient,
    "async": AsyncCyclesClient,
    "aiohttp": AiohttpCyclesClient,
}
CLIENT_KINDS = tuple(CLIENT_CLASSES)


@contextmanager
def running_authority(
    allocated: int = 1_000_000, server: LocalCyclesServer | None = None, **options: Any
) -> Iterator[tuple[LocalCyclesServer, CyclesConfig]]:
    """A running authority (``server``, else a new one) with one tenant budget, and a config for it.

    ``options`` override any field of the config (see ``LocalCyclesServer.config``).
    """
    with server or LocalCyclesServer() as running:
        running.set_budget(SCOPE, allocated, unit=UNIT)
        yield running, running.config(running.create_api_key(TENANT), **options)


def uninstrument_runcycles() -> None:
    """Undo whatever instrumented runcycles before (a test's, or a client's own)."""
    instrumentor = CyclesInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@contextmanager
def instrumentation(telemetry: TelemetryCapture) -> Iterator[CyclesInstrumentor]:
    """runcycles instrumented into ``telemetry``'s providers while the block runs."""
    instrumentor = CyclesInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()


async def call(client: Client, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call a protocol method of a sync or an async client alike."""
    result = getattr(client, method)(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


def make_client(kind: str, config: CyclesConfig) -> Client:
    return CLIENT_CLASSES[kind](config)


async def close(client: Client) -> None:
    if isinstance(client, AsyncCyclesClient):
        await client.aclose()
    else:
        client.close()


def reserve_body(estimate: int, *, dry_run: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "idempotency_key": str(uuid.uuid4()),
        "subject": {"tenant": TENANT, "agent": "writer"},
        "action": {"kind": "llm.completion", "name": "gpt-4o"},
        "estimate": {"unit": UNIT, "amount": estimate},
        "ttl_ms": 60_000,
    }
    if dry_run:
        body["dry_run"] = True
    return body


def settle_body(**fields: Any) -> dict[str, Any]:
    return {"idempotency_key": str(uuid.uuid4()), **fields}


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def traceparents(server: LocalCyclesServer) -> list[tuple[str, str]]:
    """(trace id, span id) of every traceparent the authority received, in order."""
    found = []
    for request in server.requests:
        header = request.headers.get("traceparent")
        assert header, f"{request.method} {request.path} reached the authority without traceparent"
        _, trace_id, span_id, _ = header.split("-")
        found.append((trace_id, span_id))
    return found
