"""Faults at every step of a governed call: nothing lost, nothing leaked, the caller and the trace see it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from autogen_core.models import UserMessage
from openai import APIConnectionError, InternalServerError
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import StatusCode
from runcycles import (  # type: ignore[import-untyped]
    AsyncCyclesClient,
    BudgetExceededError,
    CyclesProtocolError,
    cycles,
    get_cycles_context,
)

from cycles_otel import semconv as sc
from cycles_otel.app.configure import configure_telemetry
from cycles_otel.autogen import BudgetedChatCompletionClient
from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.fake_openai import FakeOpenAI
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.gates import Gate, hold
from tests.support.ports import free_port
from tests.support.protocol import SCOPE
from tests.support.reliability import (
    HOLD_SECONDS,
    MODEL,
    TTL_MS,
    assert_reconciled,
    assert_spend_accounted,
    budgeted_client,
    governed_authority,
    on_authority_time,
    quiesce,
    settle,
)
from tests.support.waiting import PATIENCE_S

pytestmark = pytest.mark.slow

ESTIMATE, ACTUAL = 5_000, 3_000
Arm = Callable[[LocalCyclesServer], None]


class ModelFailed(Exception):
    """What the guarded work raises in the cases where the model fails."""


def nothing(server: LocalCyclesServer) -> None:
    del server


def fail(op: str, status: int, error: str = "INTERNAL_ERROR", times: int = 1, *, after: bool = False) -> Arm:
    return lambda server: server.faults.fail(op, status, error, times=times, after=after)


def held_too_long(op: str, times: int = 1) -> Arm:
    return lambda server: server.faults.timeout(op, HOLD_SECONDS, times=times)


def drop(op: str, times: int = 1) -> Arm:
    return lambda server: server.faults.drop(op, times=times)


@dataclass(frozen=True)
class Case:
    """One fault: where it strikes, what the guarded work does, and what everyone must then see."""

    arm: Arm
    work: str = "ok"  # ok | raise | cancel | expire (the reservation expires while the work runs)
    raises: type[BaseException] | None = None
    # The faulted protocol span: its name and the error.type it carries (None: no error expected).
    fault_span: str | None = None
    error_type: str | None = None
    statuses: frozenset[str] = field(default_factory=frozenset)  # final reservation statuses
    charged: int = 0
    late: str | None = None  # the settlement sent later by runcycles' retry engine, if any


def _s(*statuses: str) -> frozenset[str]:
    return frozenset(statuses)


def protocol_faults(model_error: type[BaseException], charged: int) -> dict[str, Case]:
    """Faults on reserve, commit and release, as both ways of governing a call meet them.

    ``model_error`` is what the guarded work raises in the release cases; ``charged`` what a
    committed call spends (-1: some amount, priced from usage).
    Reserve faults strike twice: runcycles retries a failed create once with the same key.
    """
    return {
        "reserve-500": Case(
            fail("reserve", 500, times=2),
            raises=CyclesProtocolError,
            fault_span=sc.SPAN_RESERVE,
            error_type="INTERNAL_ERROR",
        ),
        "reserve-timeout": Case(
            held_too_long("reserve", times=2),
            raises=CyclesProtocolError,
            fault_span=sc.SPAN_RESERVE,
            error_type="ReadTimeout",
        ),
        "reserve-dropped": Case(
            drop("reserve", times=2),
            raises=CyclesProtocolError,
            fault_span=sc.SPAN_RESERVE,
            error_type="RemoteProtocolError",
        ),
        "commit-500": Case(
            fail("commit", 500),
            fault_span=sc.SPAN_COMMIT,
            error_type="INTERNAL_ERROR",
            statuses=_s("COMMITTED"),
            charged=charged,
            late=sc.SPAN_COMMIT,
        ),
        "commit-timeout": Case(
            held_too_long("commit"),
            fault_span=sc.SPAN_COMMIT,
            error_type="ReadTimeout",
            statuses=_s("COMMITTED"),
            charged=charged,
            late=sc.SPAN_COMMIT,
        ),
        "commit-dropped": Case(
            drop("commit"),
            fault_span=sc.SPAN_COMMIT,
            error_type="RemoteProtocolError",
            statuses=_s("COMMITTED"),
            charged=charged,
            late=sc.SPAN_COMMIT,
        ),
        "commit-429": Case(
            fail("commit", 429, "LIMIT_EXCEEDED"),
            fault_span=sc.SPAN_COMMIT,
            error_type="LIMIT_EXCEEDED",
            statuses=_s("COMMITTED"),
            charged=charged,
            late=sc.SPAN_COMMIT,
        ),
        "commit-410-expired": Case(
            nothing,
            work="expire",
            fault_span=sc.SPAN_COMMIT,
            error_type="RESERVATION_EXPIRED",
            statuses=_s("EXPIRED"),
            charged=charged,
            late=sc.SPAN_EVENT,
        ),
        "release-500": Case(
            fail("release", 500),
            work="raise",
            raises=model_error,
            fault_span=sc.SPAN_RELEASE,
            error_type="INTERNAL_ERROR",
            statuses=_s("EXPIRED"),
        ),
        "release-timeout": Case(
            held_too_long("release"),
            work="raise",
            raises=model_error,
            fault_span=sc.SPAN_RELEASE,
            error_type="ReadTimeout",
            statuses=_s("EXPIRED"),
        ),
        "release-dropped": Case(
            drop("release"),
            work="raise",
            raises=model_error,
            fault_span=sc.SPAN_RELEASE,
            error_type="RemoteProtocolError",
            statuses=_s("EXPIRED"),
        ),
    }


DECORATOR_CASES: dict[str, Case] = {
    **protocol_faults(ModelFailed, ACTUAL),
    "reserve-500-once-recovers": Case(
        fail("reserve", 500),
        fault_span=sc.SPAN_RESERVE,
        error_type="INTERNAL_ERROR",
        statuses=_s("COMMITTED"),
        charged=ACTUAL,
    ),
    "reserve-answer-lost": Case(
        fail("reserve", 500, times=2, after=True),
        raises=CyclesProtocolError,
        fault_span=sc.SPAN_RESERVE,
        error_type="INTERNAL_ERROR",
        statuses=_s("EXPIRED"),
    ),
    "commit-answer-lost": Case(
        fail("commit", 500, after=True),
        fault_span=sc.SPAN_COMMIT,
        error_type="INTERNAL_ERROR",
        statuses=_s("COMMITTED"),
        charged=ACTUAL,
        late=sc.SPAN_COMMIT,
    ),
    "model-raises": Case(nothing, work="raise", raises=ModelFailed, statuses=_s("RELEASED")),
    "cancelled-mid-call": Case(
        nothing, work="cancel", raises=asyncio.CancelledError, statuses=_s("RELEASED")
    ),
}


def assert_late_settlement(telemetry: TelemetryCapture, case: Case) -> None:
    late = [s for s in telemetry.spans() if (s.attributes or {}).get(sc.CYCLES_LATE_SETTLEMENT)]
    if case.late is None:
        assert not late, [s.name for s in late]
        return
    assert [s.name for s in late] == [case.late], [s.name for s in late]
    outcome = sc.OUTCOME_RECOVERED if case.late == sc.SPAN_EVENT else sc.OUTCOME_COMMITTED
    assert (late[0].attributes or {}).get(sc.CYCLES_OUTCOME) == outcome
    assert late[0].links, "a late settlement links to its reservation's span"


def fault_spans(telemetry: TelemetryCapture, name: str) -> list[ReadableSpan]:
    return [s for s in telemetry.spans(name) if s.status.status_code is StatusCode.ERROR]


def assert_trace_shows(telemetry: TelemetryCapture, case: Case) -> None:
    if case.fault_span is None:
        assert not [s.name for s in telemetry.spans() if s.status.status_code is StatusCode.ERROR]
        return
    failed = fault_spans(telemetry, case.fault_span)
    assert failed, f"no failed {case.fault_span} span among {telemetry.span_names()}"
    types = {str((s.attributes or {}).get(sc.ERROR_TYPE)) for s in failed}
    assert case.error_type in types, types
    if case.error_type.isupper():  # a protocol error code: the span says what the authority said
        assert all(s.status.description for s in failed), "a failed span without the server's message"
        assert all((s.attributes or {}).get(sc.HTTP_RESPONSE_STATUS_CODE) for s in failed)


async def run_case(
    guarded: Callable[[], Awaitable[str]], case: Case, server: LocalCyclesServer, working: asyncio.Event
) -> BaseException | None:
    """Run the guarded work under ``case``'s fault (cancelled once ``working`` is set, if it says so)."""
    case.arm(server)
    task = asyncio.ensure_future(guarded())
    if case.work == "cancel":
        await asyncio.wait([task, asyncio.ensure_future(working.wait())], return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
    try:
        await task
    except BaseException as exc:
        return exc
    return None


@pytest.mark.parametrize("name", list(DECORATOR_CASES))
async def test_decorator_fault(name: str, telemetry: TelemetryCapture) -> None:
    case = DECORATOR_CASES[name]
    spent: set[str] = set()
    working = asyncio.Event()
    with governed_authority(telemetry) as (server, config):
        async with AsyncCyclesClient(config) as client:

            @cycles(
                estimate=ESTIMATE,
                actual=ACTUAL,
                action_kind="llm.completion",
                action_name="gpt-4o",
                ttl_ms=TTL_MS,
                client=client,
            )  # type: ignore[untyped-decorator]
            async def governed() -> str:
                context = get_cycles_context()
                working.set()
                if case.work == "raise":
                    raise ModelFailed("the model is down")
                if case.work == "cancel":
                    await asyncio.sleep(30)
                if case.work == "expire":
                    server.expire_now(context.reservation_id)
                spent.add(context.reservation_id)
                return "done"

            error = await run_case(governed, case, server, working)
            snapshot = await settle(server)
    if case.raises is None:
        assert error is None, f"{name}: caller got {error!r}"
    else:
        assert isinstance(error, case.raises), (
            f"{name}: caller got {error!r}, documented {case.raises.__name__}"
        )
    assert {r.status for r in snapshot.reservations} == case.statuses
    assert_reconciled(snapshot, telemetry)
    assert_spend_accounted(snapshot, spent)
    assert snapshot.scopes[SCOPE].spent == case.charged
    assert_trace_shows(telemetry, case)
    assert_late_settlement(telemetry, case)


async def test_the_active_gauge_forgets_a_reservation_that_expired_after_a_failed_release(
    telemetry: TelemetryCapture,
) -> None:
    """Nobody can settle it, so the authority lets it go at expiry + grace: the gauge follows."""
    with governed_authority(telemetry) as (server, config):
        on_authority_time(telemetry, server)
        async with AsyncCyclesClient(config) as client:

            @cycles(estimate=ESTIMATE, ttl_ms=TTL_MS, client=client)  # type: ignore[untyped-decorator]
            async def governed() -> str:
                raise ModelFailed("the model is down")

            server.faults.drop("release")
            with pytest.raises(ModelFailed):
                await governed()
            await quiesce()
            assert telemetry.value("cycles.client.active_reservations") == 1  # the release was lost
            snapshot = await settle(server)
            assert {r.status for r in snapshot.reservations} == {"EXPIRED"}
    assert telemetry.value("cycles.client.active_reservations") == 0


async def test_decorator_denied_mid_run_stops_with_the_typed_error(telemetry: TelemetryCapture) -> None:
    """The budget runs out part-way through a run: later calls are denied, earlier spend stands."""
    with governed_authority(telemetry, allocated=ESTIMATE * 2) as (server, config):
        async with AsyncCyclesClient(config) as client:

            @cycles(estimate=ESTIMATE, actual=ESTIMATE, ttl_ms=TTL_MS, client=client)  # type: ignore[untyped-decorator]
            async def governed() -> str:
                return "done"

            results = [await governed(), await governed()]
            with pytest.raises(BudgetExceededError) as denied:
                await governed()
            snapshot = await settle(server)
    assert results == ["done", "done"]
    assert denied.value.status == 409 and denied.value.error_code == "BUDGET_EXCEEDED"
    assert {r.status for r in snapshot.reservations} == {"COMMITTED"}
    assert_reconciled(snapshot, telemetry)
    reserve = [
        s for s in telemetry.spans(sc.SPAN_RESERVE) if (s.attributes or {}).get(sc.CYCLES_DECISION) == "DENY"
    ]
    assert len(reserve) == 1 and [e.name for e in reserve[0].events] == [sc.EVENT_DENIED]
    assert (
        telemetry.value(
            "cycles.client.reservations", cycles__decision="DENY", cycles__reason="BUDGET_EXCEEDED"
        )
        == 1
    )


async def test_decorator_authority_unreachable_at_start(telemetry: TelemetryCapture) -> None:
    with governed_authority(telemetry) as (server, config):
        config.base_url = f"http://127.0.0.1:{free_port()}"
        async with AsyncCyclesClient(config) as client:

            @cycles(estimate=ESTIMATE, client=client)  # type: ignore[untyped-decorator]
            async def governed() -> str:
                raise AssertionError("ran without a reservation")

            with pytest.raises(CyclesProtocolError) as caught:
                await governed()
        assert server.requests == [] and server.ledger().count() == 0
    assert caught.value.status == -1  # runcycles' documented transport-failure shape
    failed = fault_spans(telemetry, sc.SPAN_RESERVE)
    assert failed and {(s.attributes or {}).get(sc.ERROR_TYPE) for s in failed} == {"ConnectError"}
    assert telemetry.value("cycles.client.charged") == 0


@pytest.mark.parametrize("path", ["decorator", "budgeted-client"])
async def test_governed_calls_never_wait_for_a_collector_that_is_down(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """configure_telemetry's OTLP pipeline points at a collector that is not there, and its span exporter
    is stuck inside an export: every call completes meanwhile, and no export runs on the caller's thread."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    real_export = OTLPSpanExporter.export
    exporting, let_go = threading.Event(), threading.Event()
    exporter_threads: list[int] = []
    gave_up: list[bool] = []

    def stuck_export(self: OTLPSpanExporter, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        exporter_threads.append(threading.get_ident())
        exporting.set()
        gave_up.append(not let_go.wait(PATIENCE_S))
        return real_export(self, spans)

    monkeypatch.setattr(OTLPSpanExporter, "export", stuck_export)
    for name, value in {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        "OTEL_BSP_SCHEDULE_DELAY": "10",  # export as soon as a span has ended
    }.items():
        monkeypatch.setenv(name, value)
    handle = configure_telemetry("collector-down", set_global=False, instrument_cycles=False)
    # The app's own pipeline, its spans also kept in memory to be read here; metrics in memory only.
    telemetry = TelemetryCapture()
    handle.tracer_provider.add_span_processor(SimpleSpanProcessor(telemetry.span_exporter))
    telemetry.tracer_provider = handle.tracer_provider
    try:
        with governed_authority(telemetry) as (server, config), FakeOpenAI() as fake:
            async with AsyncCyclesClient(config) as cycles_client:
                client = budgeted_client(cycles_client, telemetry, fake.base_url)

                @cycles(estimate=ESTIMATE, actual=ACTUAL, ttl_ms=TTL_MS, client=cycles_client)  # type: ignore[untyped-decorator]
                async def governed() -> str:
                    return "done"

                async def one_call() -> None:
                    await (governed() if path == "decorator" else client.create(PROMPT))

                await one_call()
                await asyncio.to_thread(exporting.wait, PATIENCE_S)
                assert exporting.is_set(), "the first call's spans were never exported"
                for _ in range(9):  # all while that export is stuck
                    await one_call()
                calls_done_while_stuck = not let_go.is_set() and not gave_up
                snapshot = await settle(server)
                await client.close()
    finally:
        let_go.set()
        handle.shutdown()
        telemetry.meter_provider.shutdown()
    assert calls_done_while_stuck, "the calls waited for the stuck export"
    assert exporter_threads and threading.get_ident() not in exporter_threads
    assert {r.status for r in snapshot.reservations} == {"COMMITTED"} and snapshot.count() == 10
    assert_reconciled(snapshot, telemetry)
    assert len(telemetry.spans(sc.SPAN_COMMIT)) == 10  # the in-memory side still saw every span


# --- the same faults through BudgetedChatCompletionClient (real OpenAI client, FakeOpenAI) ---------
PROMPT = [UserMessage(content="Summarise the quarterly budget report", source="user")]


async def expire_before_the_commit(server: LocalCyclesServer, commit: Gate) -> None:
    """Once the call's commit reaches the authority, expire its reservation, then let the commit in."""
    await commit.arrived_async()
    (active,) = [r for r in server.ledger().reservations if r.status == "ACTIVE"]
    server.expire_now(active.reservation_id)
    commit.release()


async def drive(
    client: BudgetedChatCompletionClient, work: str, fake: FakeOpenAI, server: LocalCyclesServer
) -> None:
    """One governed call shaped by ``work``; raises whatever the caller would see."""
    if work == "raise":
        fake.faults.fail_next(status=500)
    elif work == "cut":
        fake.faults.cut_stream_next(after_chunks=2)
    if work in ("abandon", "cut"):
        stream = client.create_stream(PROMPT)
        async for item in stream:
            if work == "abandon" and isinstance(item, str):
                await stream.aclose()  # the caller walks away after the first chunk
                return
        return
    if work != "expire":
        await client.create(PROMPT)
        return
    commit = hold(server, "commit")  # the expire case arms no other fault
    await asyncio.gather(client.create(PROMPT), expire_before_the_commit(server, commit))


CLIENT_CASES: dict[str, Case] = {
    **protocol_faults(InternalServerError, -1),
    "model-raises": Case(
        nothing,
        work="raise",
        raises=InternalServerError,
        fault_span=f"chat {MODEL}",
        error_type="InternalServerError",
        statuses=_s("RELEASED"),
    ),
    "stream-abandoned": Case(nothing, work="abandon", statuses=_s("COMMITTED"), charged=-1),
    "stream-fails-mid-way": Case(
        nothing,
        work="cut",
        raises=APIConnectionError,
        fault_span=f"chat {MODEL}",
        error_type="APIConnectionError",
        statuses=_s("COMMITTED"),
        charged=-1,
    ),
}


@pytest.mark.parametrize("transport_name", ["aiohttp", "httpx"])
@pytest.mark.parametrize("name", list(CLIENT_CASES))
async def test_budgeted_client_fault(name: str, transport_name: str, telemetry: TelemetryCapture) -> None:
    """Each fault through the client over both transports (aiohttp, and runcycles' own httpx client)."""
    case = CLIENT_CASES[name]
    with governed_authority(telemetry) as (server, config), FakeOpenAI() as fake:
        async with AsyncCyclesClient(config) as cycles_client:
            client = budgeted_client(cycles_client, telemetry, fake.base_url, transport=transport_name)
            case.arm(server)
            try:
                await drive(client, case.work, fake, server)
                error: BaseException | None = None
            except BaseException as exc:
                error = exc
            snapshot = await settle(server)
            await client.close()
        model_calls = len(fake.requests)
    if case.raises is None:
        assert error is None, f"{name}: caller got {error!r}"
    else:
        assert isinstance(error, case.raises), (
            f"{name}: caller got {error!r}, expected {case.raises.__name__}"
        )
    assert {r.status for r in snapshot.reservations} == case.statuses
    assert_reconciled(snapshot, telemetry)
    spent = {r.reservation_id for r in snapshot.reservations} if case.charged else set()
    assert_spend_accounted(snapshot, spent)
    assert (snapshot.scopes[SCOPE].spent > 0) == bool(case.charged)
    if case.fault_span == sc.SPAN_RESERVE:
        assert model_calls == 0, "the model was called without a reservation"
    assert_trace_shows(telemetry, case)
    assert_late_settlement(telemetry, case)


async def test_budgeted_client_authority_unreachable_at_start(telemetry: TelemetryCapture) -> None:
    with governed_authority(telemetry) as (server, config), FakeOpenAI() as fake:
        config.base_url = f"http://127.0.0.1:{free_port()}"
        async with AsyncCyclesClient(config) as cycles_client:
            client = budgeted_client(cycles_client, telemetry, fake.base_url)
            with pytest.raises(CyclesProtocolError) as caught:
                await client.create(PROMPT)
            await client.close()
        assert fake.requests == [] and server.requests == []
    assert caught.value.status == -1
    reservation = telemetry.span(sc.SPAN_RESERVATION)
    assert reservation.status.status_code is StatusCode.ERROR
    assert {(s.attributes or {}).get(sc.ERROR_TYPE) for s in fault_spans(telemetry, sc.SPAN_RESERVE)} == {
        "ConnectError"
    }
    assert telemetry.value("cycles.client.charged") == 0


async def test_a_failed_model_call_records_its_exception_once(telemetry: TelemetryCapture) -> None:
    with governed_authority(telemetry) as (server, config), FakeOpenAI() as fake:
        async with AsyncCyclesClient(config) as cycles_client:
            client = budgeted_client(cycles_client, telemetry, fake.base_url)
            with pytest.raises(InternalServerError):
                await drive(client, "raise", fake, server)
            await client.close()
    for span in telemetry.spans():
        assert [e.name for e in span.events].count("exception") <= 1, f"{span.name}: {span.events}"
