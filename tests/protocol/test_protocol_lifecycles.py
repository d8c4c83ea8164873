"""The paths runcycles takes by itself (decorator, streams, heartbeats, retries, recovery) stay traced."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from contextlib import nullcontext

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from runcycles import (  # type: ignore[import-untyped]
    Action,
    Amount,
    CyclesClient,
    cycles,
)

from cycles_otel import semconv as sc
from cycles_otel.testing.telemetry import SpanNode, TelemetryCapture
from tests.support.protocol import SCOPE, UNIT, hex_ids, instrumentation, running_authority, traceparents
from tests.support.transports import AsyncClientFactory
from tests.support.waiting import eventually, eventually_async

pytestmark = pytest.mark.slow

PROTOCOL_SPANS = {sc.SPAN_RESERVE, sc.SPAN_EXTEND, sc.SPAN_COMMIT, sc.SPAN_RELEASE, sc.SPAN_EVENT}
# runcycles' minimum lease; its heartbeat then extends at once and about every half lease.
SHORT_TTL_MS = 1_000
HELD_SECONDS = 0.7


def only_tree(telemetry: TelemetryCapture) -> SpanNode:
    trees = telemetry.trees()
    assert len(trees) == 1, "expected one trace:\n" + "\n".join(t.render() for t in trees)
    return trees[0]


def assert_one_trace_under_caller(telemetry: TelemetryCapture, *, extends: bool) -> SpanNode:
    root = only_tree(telemetry)
    assert root.name == "caller"
    names = root.names()
    assert names[0] == sc.SPAN_RESERVE and names[-1] == sc.SPAN_COMMIT, root.render()
    assert set(names) <= PROTOCOL_SPANS
    assert (sc.SPAN_EXTEND in names) is extends, root.render()
    return root


def test_sync_decorator_reserve_heartbeat_and_commit_join_the_callers_trace(
    telemetry: TelemetryCapture,
) -> None:
    with running_authority() as (server, config), instrumentation(telemetry), CyclesClient(config) as client:

        @cycles(estimate=1_000, actual=600, action_kind="llm.completion", action_name="gpt-4o",
                ttl_ms=SHORT_TTL_MS, client=client)  # type: ignore[untyped-decorator]  # fmt: skip
        def governed() -> str:
            time.sleep(HELD_SECONDS)  # long enough for the heartbeat thread to extend
            return "done"

        with telemetry.tracer_provider.get_tracer("test").start_as_current_span("caller"):
            assert governed() == "done"
        root = assert_one_trace_under_caller(telemetry, extends=True)
        # create and extend ran in runcycles' worker threads, yet the authority saw each span's context.
        assert sorted(traceparents(server)) == sorted(hex_ids(child.span) for child in root.children)
        assert server.ledger().scopes[SCOPE].spent == 600
    assert telemetry.value("cycles.client.charged", cycles__unit=UNIT) == 600
    assert telemetry.value("cycles.client.active_reservations") == 0


async def test_async_decorator_joins_the_callers_trace(
    telemetry: TelemetryCapture, transport: AsyncClientFactory
) -> None:
    with running_authority() as (server, config), instrumentation(telemetry):
        async with transport(config) as client:

            @cycles(estimate=1_000, actual=400, ttl_ms=SHORT_TTL_MS, client=client)  # type: ignore[untyped-decorator]
            async def governed() -> str:
                await asyncio.sleep(HELD_SECONDS)
                return "done"

            with telemetry.tracer_provider.get_tracer("test").start_as_current_span("caller"):
                assert await governed() == "done"
        assert_one_trace_under_caller(telemetry, extends=True)
        assert server.ledger().scopes[SCOPE].spent == 400


@pytest.mark.parametrize("failing", [False, True], ids=["commit", "release"])
def test_sync_stream_reservation_joins_the_callers_trace(telemetry: TelemetryCapture, failing: bool) -> None:
    with running_authority() as (server, config), instrumentation(telemetry), CyclesClient(config) as client:
        tracer = telemetry.tracer_provider.get_tracer("test")
        stream = client.stream_reservation(
            action=Action(kind="llm.completion", name="gpt-4o"),
            estimate=Amount(unit=UNIT, amount=1_000),
            ttl_ms=SHORT_TTL_MS,
        )
        with (
            tracer.start_as_current_span("caller"),
            pytest.raises(RuntimeError) if failing else nullcontext(),
            stream,
        ):
            stream.usage.tokens_output = 10
            time.sleep(HELD_SECONDS)
            if failing:
                raise RuntimeError("model call failed")
        root = only_tree(telemetry)
        expected_end = sc.SPAN_RELEASE if failing else sc.SPAN_COMMIT
        assert (root.names()[0], root.names()[-1]) == (sc.SPAN_RESERVE, expected_end), root.render()
        assert sc.SPAN_EXTEND in root.names()
        assert server.ledger().count(status="ACTIVE") == 0
    outcome = sc.OUTCOME_RELEASED if failing else sc.OUTCOME_COMMITTED
    assert telemetry.value("cycles.client.settlements", cycles__outcome=outcome) == 1
    assert telemetry.value("cycles.client.active_reservations") == 0


async def test_async_stream_reservation_joins_the_callers_trace(
    telemetry: TelemetryCapture, transport: AsyncClientFactory
) -> None:
    with running_authority() as (_, config), instrumentation(telemetry):
        async with transport(config) as client:
            with telemetry.tracer_provider.get_tracer("test").start_as_current_span("caller"):
                async with client.stream_reservation(
                    action=Action(kind="llm.completion", name="gpt-4o"),
                    estimate=Amount(unit=UNIT, amount=1_000),
                    ttl_ms=SHORT_TTL_MS,
                ):
                    await asyncio.sleep(HELD_SECONDS)
    assert_one_trace_under_caller(telemetry, extends=True)


def late_commit(telemetry: TelemetryCapture) -> tuple[ReadableSpan, ReadableSpan]:
    """The reserve span and the commit (or recovery event) the retry engine sent later."""
    reserve = telemetry.span(sc.SPAN_RESERVE)
    late = [s for s in telemetry.spans() if (s.attributes or {}).get(sc.CYCLES_LATE_SETTLEMENT) is True]
    assert len(late) == 1, [(s.name, dict(s.attributes or {})) for s in telemetry.spans()]
    return reserve, late[0]


def assert_linked(reserve: ReadableSpan, late: ReadableSpan) -> None:
    assert reserve.context is not None
    assert [link.context.span_id for link in late.links] == [reserve.context.span_id]


def test_a_retried_commit_links_to_its_reservation(telemetry: TelemetryCapture) -> None:
    with running_authority() as (server, config), instrumentation(telemetry):
        fast_retry = dataclasses.replace(config, retry_initial_delay=0.05)
        server.faults.fail("commit", 503, error="INTERNAL_ERROR")
        with CyclesClient(fast_retry) as client:
            governed = cycles(estimate=1_000, actual=700, client=client)(lambda: "done")
            with telemetry.tracer_provider.get_tracer("test").start_as_current_span("caller"):
                governed()
            eventually(lambda: server.ledger().scopes[SCOPE].spent == 700, "the retried commit to land")
            eventually(lambda: len(telemetry.spans(sc.SPAN_COMMIT)) == 2, "the retried commit's span")
        reserve, late = late_commit(telemetry)
        assert late.name == sc.SPAN_COMMIT
        assert_linked(reserve, late)
        assert late.parent is None  # sent from runcycles' retry thread, outside the caller's trace
    assert telemetry.value("cycles.client.settlements", cycles__outcome=sc.OUTCOME_COMMITTED) == 1
    assert telemetry.value("cycles.client.charged", cycles__unit=UNIT) == 700
    assert telemetry.value("cycles.client.active_reservations") == 0


async def test_an_expired_reservation_is_recovered_by_a_linked_event(
    telemetry: TelemetryCapture, transport: AsyncClientFactory
) -> None:
    with running_authority() as (server, config), instrumentation(telemetry):
        server.faults.fail("commit", 410, error="RESERVATION_EXPIRED")
        async with transport(dataclasses.replace(config, retry_initial_delay=0.05)) as client:

            @cycles(estimate=1_000, actual=800, client=client)  # type: ignore[untyped-decorator]
            async def governed() -> str:
                return "done"

            with telemetry.tracer_provider.get_tracer("test").start_as_current_span("caller"):
                await governed()
            await eventually_async(lambda: bool(telemetry.spans(sc.SPAN_EVENT)), "the recovery event's span")
        reserve, late = late_commit(telemetry)
        assert late.name == sc.SPAN_EVENT
        assert dict(late.attributes or {})[sc.CYCLES_OUTCOME] == sc.OUTCOME_RECOVERED
        assert_linked(reserve, late)
        spent = server.ledger().scopes[SCOPE].spent
    assert spent == 800
    assert telemetry.value("cycles.client.charged", cycles__unit=UNIT) == spent
    assert telemetry.value("cycles.client.settlements", cycles__outcome=sc.OUTCOME_FAILED) == 1
    assert telemetry.value("cycles.client.settlements", cycles__outcome=sc.OUTCOME_RECOVERED) == 1
    assert telemetry.value("cycles.client.active_reservations") == 0
