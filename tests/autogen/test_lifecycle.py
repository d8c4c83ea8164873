"""One lifecycle for create() and create_stream(): one settlement rule, whoever cancels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from autogen_core.models import CreateResult, UserMessage
from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import (
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from runcycles import CyclesProtocolError  # type: ignore[import-untyped]

from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.budgeted import Authority, budgeted, cost, replay, reply
from tests.support.reliability import charged_metric, quiesce

HELLO = [UserMessage(content="Tell me about budgets.", source="user")]
SWEEP = 40  # cancellation points, STEP_S apart: through the reserve, the model call and the (delayed) commit
STEP_S = 0.002
COMMIT_DELAY_S = 0.05


def uncached(*results: CreateResult | str) -> Any:
    inner = replay(*results)
    inner.set_cached_bool_value(False)
    return inner


def outcomes(telemetry: TelemetryCapture) -> list[object]:
    return [(s.attributes or {}).get("cycles.outcome") for s in telemetry.spans("cycles.reservation")]


async def consume_then_cancel(stream: AsyncIterator[object], after_s: float) -> None:
    """Read ``stream`` in a task of its own; cancel it ``after_s`` after its final result arrived."""
    got_result = asyncio.Event()

    async def consume() -> None:
        async for item in stream:
            if isinstance(item, CreateResult):
                got_result.set()

    task = asyncio.ensure_future(consume())
    await asyncio.wait([task, asyncio.ensure_future(got_result.wait())], return_when=asyncio.FIRST_COMPLETED)
    await asyncio.sleep(after_s)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["create", "create_stream"])
async def test_a_caller_cancelled_at_any_point_of_settling_still_commits_and_is_counted(
    authority: Authority, instrumented_telemetry: TelemetryCapture, method: str
) -> None:
    authority.server.faults.delay("commit", COMMIT_DELAY_S)  # a commit in flight: many awaits to land on
    client = budgeted(
        authority, instrumented_telemetry, uncached(*[reply("ok", 40, 8) for _ in range(SWEEP)])
    )

    for step in range(SWEEP):
        if method == "create":
            task = asyncio.ensure_future(client.create(HELLO))
            await asyncio.sleep(step * STEP_S)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        else:
            await consume_then_cancel(client.create_stream(HELLO), step * STEP_S / 2)

    await client.settled()
    await quiesce()
    snap = authority.assert_settled()
    assert snap.count() == SWEEP
    assert charged_metric(instrumented_telemetry) == snap.scopes["tenant:acme"].spent
    committed = snap.count(status="COMMITTED")
    assert instrumented_telemetry.value("cycles.client.settlements", cycles__outcome="committed") == committed
    assert instrumented_telemetry.value(
        "cycles.client.settlements", cycles__outcome="released"
    ) == snap.count(status="RELEASED")
    assert committed > 0  # the sweep reached past the answer
    assert None not in outcomes(instrumented_telemetry), "a cycles.reservation span ended without its outcome"


async def test_a_failing_span_processor_costs_only_its_own_data(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    class Broken(SpanProcessor):
        def on_start(self, span: Span, parent_context: Context | None = None) -> None:
            raise RuntimeError("a span processor that always fails")

        def on_end(self, span: ReadableSpan) -> None:
            raise RuntimeError("a span processor that always fails")

    instrumented_telemetry.tracer_provider.add_span_processor(Broken())
    client = budgeted(authority, instrumented_telemetry, uncached(reply("ok", 40, 8)))

    result = await client.create(HELLO)

    assert result.content == "ok"
    (reservation,) = authority.assert_settled().reservations
    assert reservation.charged == cost(40, 8)
    assert charged_metric(instrumented_telemetry) == cost(40, 8)


async def test_each_measurement_points_at_its_own_span(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(authority, instrumented_telemetry, uncached(reply("ok", 40, 8)), agent="writer")

    await client.create(HELLO)

    span_id = {
        name: instrumented_telemetry.span(name).context.span_id
        for name in ("cycles.reservation", "chat gpt-4o")
    }
    span_id["cycles.commit"] = instrumented_telemetry.span("cycles.commit").context.span_id
    span_id["cycles.reserve"] = instrumented_telemetry.span("cycles.reserve").context.span_id

    data = instrumented_telemetry.metric_reader.get_metrics_data()  # once: a collection resets the exemplars
    assert data is not None
    collected: dict[str, list[NumberDataPoint | HistogramDataPoint | ExponentialHistogramDataPoint]] = {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }

    def exemplar_spans(metric: str, **labels: str) -> set[int | None]:
        points = [
            p for p in collected[metric] if all((p.attributes or {}).get(k) == v for k, v in labels.items())
        ]
        return {e.span_id for p in points for e in p.exemplars}

    assert exemplar_spans("gen_ai.client.operation.duration") == {span_id["chat gpt-4o"]}
    assert exemplar_spans("gen_ai.client.token.usage") == {span_id["chat gpt-4o"]}
    assert exemplar_spans("cycles.client.cost.usd") == {span_id["cycles.reservation"]}
    assert exemplar_spans("cycles.client.operation.duration", **{"cycles.operation": "commit"}) == {
        span_id["cycles.commit"]
    }
    # The ledger-like counts are tallied in the process and read at collection: no exemplars.
    assert exemplar_spans("cycles.client.charged") == exemplar_spans("cycles.client.reservations") == set()


async def test_an_authority_outage_is_an_error_not_a_denial(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    authority.server.faults.fail("reserve", 503, times=1_000)
    client = budgeted(authority, instrumented_telemetry, uncached(reply("ok", 40, 8)))

    with pytest.raises(CyclesProtocolError) as caught:
        await client.create(HELLO)

    assert caught.value.status == 503
    attrs = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert "cycles.decision" not in attrs
    assert attrs["error.type"] == "CyclesProtocolError"
    assert [e.name for e in instrumented_telemetry.span("cycles.reservation").events] == ["exception"]
    assert not [
        p
        for p in instrumented_telemetry.points("cycles.client.reservations")
        if (p.attributes or {}).get("cycles.decision") == "DENY"
    ]


async def test_failing_open_runs_the_call_and_records_its_spend_through_an_event(
    authority: Authority, instrumented_telemetry: TelemetryCapture, tmp_path: Any
) -> None:
    authority.server.faults.fail("reserve", 503, times=1_000)
    authority.server.faults.fail("event", 503, times=2)  # still down when the spend is first sent
    cycles = authority.client(journal_enabled=True, journal_dir=str(tmp_path / "journal"))
    client = budgeted(
        authority,
        instrumented_telemetry,
        uncached(reply("ok", 40, 8)),
        cycles_client=cycles,
        on_authority_error="allow",
    )

    result = await client.create(HELLO)

    assert result.content == "ok"
    reservation = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert reservation["cycles.governed"] is False
    assert reservation["cycles.outcome"] == "recorded"
    assert "cycles.decision" not in reservation
    assert [e.name for e in instrumented_telemetry.span("cycles.reservation").events] == [
        "cycles.authority_unavailable"
    ]
    assert (
        instrumented_telemetry.value("cycles.client.ungoverned", **{"error.type": "CyclesProtocolError"}) == 1
    )
    assert list((tmp_path / "journal").rglob("v2-*.json")), "the ungoverned spend was not journaled"
    await quiesce(15)
    snap = authority.ledger()
    assert snap.reservations == []
    (event,) = snap.events
    assert event.charged == cost(40, 8)
    assert snap.scopes["tenant:acme"].spent == cost(40, 8) == charged_metric(instrumented_telemetry)
    assert not list((tmp_path / "journal").rglob("v2-*.json"))
    await client.close()
