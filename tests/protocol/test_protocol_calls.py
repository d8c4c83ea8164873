"""Every protocol operation, sync and async, over HTTP: its span, its metrics and the traceparent sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from cycles_otel import semconv as sc
from cycles_otel.protocol import CyclesInstrumentor
from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.protocol import (
    CLIENT_KINDS,
    SCOPE,
    TENANT,
    UNIT,
    Client,
    call,
    close,
    hex_ids,
    instrumentation,
    make_client,
    reserve_body,
    running_authority,
    settle_body,
    traceparents,
)
from tests.support.transports import AsyncClientFactory


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(params=CLIENT_KINDS)
async def server_and_client(
    request: pytest.FixtureRequest, telemetry: TelemetryCapture
) -> AsyncIterator[tuple[LocalCyclesServer, Client]]:
    """An authority, and a client of each kind (sync, async, aiohttp) with runcycles instrumented."""
    with running_authority() as (server, config):
        client = make_client(request.param, config)  # created before instrument(): must still be traced
        with instrumentation(telemetry):
            yield server, client
        await close(client)


# --- tests --------------------------------------------------------------------------------------
async def test_every_operation_gives_a_client_span_metrics_and_a_traceparent(
    server_and_client: tuple[LocalCyclesServer, Client], telemetry: TelemetryCapture
) -> None:
    server, client = server_and_client
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        held = await call(client, "create_reservation", reserve_body(1_000))
        rid = held.body["reservation_id"]
        extended = await call(client, "extend_reservation", rid, settle_body(extend_by_ms=30_000))
        fetched = await call(client, "get_reservation", rid)
        listed = await call(client, "list_reservations", tenant=TENANT)
        balances = await call(client, "get_balances", tenant=TENANT)
        decided = await call(client, "decide", {k: v for k, v in reserve_body(10).items() if k != "ttl_ms"})
        committed = await call(
            client, "commit_reservation", rid, settle_body(actual={"unit": UNIT, "amount": 700})
        )
        second = await call(client, "create_reservation", reserve_body(500))
        released = await call(client, "release_reservation", second.body["reservation_id"], settle_body())
        event = await call(
            client,
            "create_event",
            {
                **settle_body(actual={"unit": UNIT, "amount": 300}),
                "subject": {"tenant": TENANT},
                "action": {"kind": "tool.search", "name": "web"},
            },
        )
    responses = [held, extended, fetched, listed, balances, decided, committed, second, released, event]
    assert all(r.is_success for r in responses), [(r.status, r.body) for r in responses]

    spans = [s for s in telemetry.spans() if s.name != "caller"]
    assert [s.name for s in spans] == [
        sc.SPAN_RESERVE, sc.SPAN_EXTEND, sc.SPAN_GET_RESERVATION, sc.SPAN_LIST_RESERVATIONS, sc.SPAN_BALANCES,
        sc.SPAN_DECIDE, sc.SPAN_COMMIT, sc.SPAN_RESERVE, sc.SPAN_RELEASE, sc.SPAN_EVENT,
    ]  # fmt: skip
    for span, response in zip(spans, responses, strict=True):
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
        assert span.status.status_code is StatusCode.UNSET
        assert span.attributes is not None
        assert span.attributes[sc.CYCLES_OPERATION] == span.name.removeprefix("cycles.")
        assert span.attributes[sc.HTTP_RESPONSE_STATUS_CODE] == response.status
        assert span.attributes[sc.CYCLES_REQUEST_ID] == response.request_id
    # The authority joined the trace of exactly the span that made each request.
    assert traceparents(server) == [hex_ids(s) for s in spans]

    reserve = dict(spans[0].attributes or {})
    assert reserve[sc.CYCLES_RESERVATION_ID] == rid
    assert reserve[sc.CYCLES_DECISION] == sc.DECISION_ALLOW
    assert reserve[sc.CYCLES_SUBJECT_PREFIX + "tenant"] == TENANT
    assert reserve[sc.CYCLES_SUBJECT_PREFIX + "agent"] == "writer"
    assert (reserve[sc.CYCLES_ACTION_KIND], reserve[sc.CYCLES_ACTION_NAME]) == ("llm.completion", "gpt-4o")
    assert (reserve[sc.CYCLES_ESTIMATE_AMOUNT], reserve[sc.CYCLES_UNIT]) == (1_000, UNIT)
    assert reserve[sc.CYCLES_SCOPE] == held.body["scope_path"]
    assert list(reserve[sc.CYCLES_AFFECTED_SCOPES]) == held.body["affected_scopes"]  # type: ignore[arg-type]
    commit = dict(spans[6].attributes or {})
    assert commit[sc.CYCLES_RESERVATION_ID] == rid
    assert (commit[sc.CYCLES_ACTUAL_AMOUNT], commit[sc.CYCLES_CHARGED_AMOUNT]) == (700, 700)
    assert commit[sc.CYCLES_OUTCOME] == sc.OUTCOME_COMMITTED
    assert sc.CYCLES_LATE_SETTLEMENT not in commit
    release = dict(spans[8].attributes or {})
    assert (release[sc.CYCLES_RELEASED_AMOUNT], release[sc.CYCLES_OUTCOME]) == (500, sc.OUTCOME_RELEASED)
    assert dict(spans[9].attributes or {})[sc.CYCLES_CHARGED_AMOUNT] == 300
    assert dict(spans[5].attributes or {})[sc.CYCLES_DECISION] == sc.DECISION_ALLOW

    for span in spans:
        operation = span.name.removeprefix("cycles.")
        expected = 2 if operation == "reserve" else 1
        assert telemetry.count("cycles.client.operation.duration", cycles__operation=operation) == expected
    allowed = {"cycles__action__kind": "llm.completion", "cycles__action__name": "gpt-4o"}
    assert telemetry.value("cycles.client.reservations", cycles__decision=sc.DECISION_ALLOW, **allowed) == 2
    assert telemetry.value("cycles.client.reserved", cycles__unit=UNIT) == 1_500
    assert telemetry.value("cycles.client.settlements", cycles__outcome=sc.OUTCOME_COMMITTED) == 1
    assert telemetry.value("cycles.client.settlements", cycles__outcome=sc.OUTCOME_RELEASED) == 1
    spent = server.ledger().scopes[SCOPE].spent
    assert spent == 1_000
    assert telemetry.value("cycles.client.charged", cycles__unit=UNIT) == spent
    assert telemetry.value("cycles.client.active_reservations") == 0
    assert telemetry.value("cycles.budget.spent", cycles__scope=SCOPE, cycles__unit=UNIT) == spent
    for point in telemetry.points("cycles.client.reservations"):
        assert not any("id" in key or "scope" in key for key in (point.attributes or {}))


async def test_a_denied_reservation_is_a_decision_not_an_error(
    server_and_client: tuple[LocalCyclesServer, Client], telemetry: TelemetryCapture
) -> None:
    server, client = server_and_client
    denied = await call(client, "create_reservation", reserve_body(5_000_000))
    dry = await call(client, "create_reservation", reserve_body(5_000_000, dry_run=True))
    decided = await call(
        client, "decide", {k: v for k, v in reserve_body(5_000_000).items() if k != "ttl_ms"}
    )
    assert denied.status == 409 and denied.body["error"] == "BUDGET_EXCEEDED"
    assert dry.status == decided.status == 200
    assert dry.body["decision"] == decided.body["decision"] == sc.DECISION_DENY

    reserve, dry_reserve = telemetry.spans(sc.SPAN_RESERVE)
    for span in (reserve, dry_reserve, telemetry.span(sc.SPAN_DECIDE)):
        attributes = dict(span.attributes or {})
        assert attributes[sc.CYCLES_DECISION] == sc.DECISION_DENY
        assert attributes[sc.CYCLES_REASON] == "BUDGET_EXCEEDED"
        assert sc.ERROR_TYPE not in attributes
        assert span.status.status_code is StatusCode.UNSET
        assert [e.name for e in span.events] == [sc.EVENT_DENIED]
        assert dict(span.events[0].attributes or {})[sc.CYCLES_REASON] == "BUDGET_EXCEEDED"
    assert dict(dry_reserve.attributes or {})[sc.CYCLES_DRY_RUN] is True
    # One reservation decision: dry runs and /decide reserve nothing.
    assert telemetry.value("cycles.client.reservations") == 1
    assert (
        telemetry.value(
            "cycles.client.reservations", cycles__decision="DENY", cycles__reason="BUDGET_EXCEEDED"
        )
        == 1
    )
    assert telemetry.value("cycles.client.reserved") == 0
    assert telemetry.count("cycles.client.operation.duration", cycles__operation="reserve") == 2
    assert all(
        sc.ERROR_TYPE not in (p.attributes or {})
        for p in telemetry.points("cycles.client.operation.duration")
    )
    assert telemetry.value("cycles.client.active_reservations") == 0
    assert server.ledger().count(status="ACTIVE") == 0


async def test_server_errors_transport_errors_and_rejections_are_span_errors(
    server_and_client: tuple[LocalCyclesServer, Client], telemetry: TelemetryCapture
) -> None:
    server, client = server_and_client
    server.faults.fail("reserve", 500, error="INTERNAL_ERROR")
    server.faults.drop("balances")
    failed = await call(client, "create_reservation", reserve_body(100))
    dropped = await call(client, "get_balances", tenant=TENANT)
    unknown = await call(
        client, "commit_reservation", "res_missing", settle_body(actual={"unit": UNIT, "amount": 1})
    )
    assert failed.status == 500 and dropped.status == -1 and 400 <= unknown.status < 500
    transport_error = type(dropped.transport_exception).__name__

    expected = {
        sc.SPAN_RESERVE: ("INTERNAL_ERROR", 500),
        sc.SPAN_BALANCES: (transport_error, None),
        sc.SPAN_COMMIT: (unknown.body["error"], unknown.status),
    }
    for name, (error_type, status) in expected.items():
        span = telemetry.span(name)
        attributes = dict(span.attributes or {})
        assert span.status.status_code is StatusCode.ERROR
        assert attributes[sc.ERROR_TYPE] == error_type
        assert attributes.get(sc.HTTP_RESPONSE_STATUS_CODE) == status
        operation = name.removeprefix("cycles.")
        assert (
            telemetry.count(
                "cycles.client.operation.duration", cycles__operation=operation, error__type=error_type
            )
            == 1
        )
    assert telemetry.value("cycles.client.reservations") == 0
    assert telemetry.value("cycles.client.settlements", cycles__outcome=sc.OUTCOME_FAILED) == 1
    assert telemetry.value("cycles.client.charged") == 0


async def test_a_failing_call_raises_its_own_exception_and_ends_its_span(
    server_and_client: tuple[LocalCyclesServer, Client], telemetry: TelemetryCapture
) -> None:
    _, client = server_and_client
    with pytest.raises(ValueError, match="subject filter") as raised:
        await call(client, "get_balances")  # runcycles refuses an unfiltered balance query
    span = telemetry.span(sc.SPAN_BALANCES)
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})[sc.ERROR_TYPE] == "ValueError"
    assert [(e.attributes or {})["exception.message"] for e in span.events] == [str(raised.value)]


async def test_unsampled_calls_still_count_and_still_propagate(
    telemetry: TelemetryCapture, transport: AsyncClientFactory
) -> None:
    unsampled = TracerProvider(sampler=ALWAYS_OFF)
    with running_authority() as (server, config):
        instrumentor = CyclesInstrumentor()
        instrumentor.instrument(tracer_provider=unsampled, meter_provider=telemetry.meter_provider)
        try:
            async with transport(config) as client:
                held = await client.create_reservation(reserve_body(1_000))
                await client.commit_reservation(
                    held.body["reservation_id"], settle_body(actual={"unit": UNIT, "amount": 250})
                )
        finally:
            instrumentor.uninstrument()
        headers = [request.headers["traceparent"] for request in server.requests]
    assert telemetry.value("cycles.client.charged", cycles__unit=UNIT) == 250
    assert telemetry.count("cycles.client.operation.duration") == 2
    assert telemetry.value("cycles.client.active_reservations") == 0
    # Not sampled here, but the authority still joins the (unsampled) trace: the sampled bit is clear.
    assert len({h.split("-")[1] for h in headers}) == 2
    assert all(int(h.split("-")[3], 16) & 0x01 == 0 for h in headers)


async def test_repeated_settlements_count_once_and_the_active_gauge_never_goes_negative(
    server_and_client: tuple[LocalCyclesServer, Client], telemetry: TelemetryCapture
) -> None:
    server, client = server_and_client
    held = await call(client, "create_reservation", reserve_body(1_000))
    rid = held.body["reservation_id"]
    commit = settle_body(actual={"unit": UNIT, "amount": 900})
    first = await call(client, "commit_reservation", rid, commit)
    replayed = await call(client, "commit_reservation", rid, commit)  # same key: the authority replays
    again = await call(client, "commit_reservation", rid, settle_body(actual={"unit": UNIT, "amount": 900}))
    late_release = await call(client, "release_reservation", rid, settle_body())
    assert (first.status, replayed.status) == (200, 200)
    assert again.status == late_release.status == 409
    spent = server.ledger().scopes[SCOPE].spent
    assert spent == 900
    assert telemetry.value("cycles.client.charged", cycles__unit=UNIT) == spent
    assert telemetry.value("cycles.client.settlements") == 1
    assert telemetry.value("cycles.client.active_reservations") == 0
    assert [dict(s.attributes or {}).get(sc.ERROR_TYPE) for s in telemetry.spans(sc.SPAN_COMMIT)] == [
        None,
        None,
        again.body["error"],
    ]
