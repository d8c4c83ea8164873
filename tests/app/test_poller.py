"""BalancePoller against the local authority: pagination, forgetting, back-off, errors, staleness."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import NumberDataPoint
from runcycles import AsyncCyclesClient, CyclesClient, CyclesResponse  # type: ignore[import-untyped]

from cycles_otel.app import poller as poller_module
from cycles_otel.app.poller import BalancePoller
from cycles_otel.balance_board import BalanceReading
from cycles_otel.cardinality import CardinalityGuard
from cycles_otel.instruments import Instruments, get_instruments
from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.waiting import wait_until

UNIT = "USD_MICROCENTS"
SCOPES = (
    "tenant:acme",
    "tenant:acme/workflow:alpha",
    "tenant:acme/workflow:beta",
    "tenant:acme/agent:writer",
)


@pytest.fixture
def polled_server() -> Iterator[LocalCyclesServer]:
    """An authority with a budget at each of ``SCOPES`` (and one of another tenant)."""
    with LocalCyclesServer() as running:
        for i, scope in enumerate(SCOPES):
            running.set_budget(scope, 1_000_000 * (i + 1))
        running.set_budget("tenant:beta", 5)
        yield running


@pytest.fixture
def polled_key(polled_server: LocalCyclesServer) -> str:
    """An API key of tenant ``acme`` on ``polled_server``."""
    return polled_server.create_api_key("acme")


def gauges(telemetry: TelemetryCapture, field: str) -> dict[str, float]:
    points = telemetry.points(f"cycles.budget.{field}")
    assert all(isinstance(p, NumberDataPoint) for p in points), points
    return {
        str((p.attributes or {})["cycles.scope"]): p.value for p in points if isinstance(p, NumberDataPoint)
    }


@pytest.fixture(autouse=True)
def instruments(telemetry: TelemetryCapture) -> Instruments:
    """The provider's instruments, made first with the default guard whatever the environment says."""
    return get_instruments(telemetry.meter_provider, CardinalityGuard())


def new_poller(client: Any, telemetry: TelemetryCapture, **options: Any) -> BalancePoller:
    return BalancePoller(client, [{"tenant": "acme"}], meter_provider=telemetry.meter_provider, **options)


async def test_every_page_of_every_scope_is_recorded_in_its_unit(
    polled_server: LocalCyclesServer,
    polled_key: str,
    telemetry: TelemetryCapture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(poller_module, "PAGE_LIMIT", 3)
    async with AsyncCyclesClient(polled_server.config(polled_key)) as client:
        recorded = await new_poller(client, telemetry).poll_once()
    ledger = polled_server.ledger().scopes
    assert recorded == len(SCOPES)
    assert gauges(telemetry, "remaining") == {scope: ledger[scope].remaining for scope in SCOPES}
    assert gauges(telemetry, "allocated") == {scope: ledger[scope].allocated for scope in SCOPES}
    assert {(p.attributes or {})["cycles.unit"] for p in telemetry.points("cycles.budget.spent")} == {UNIT}
    pages = [r for r in polled_server.requests if r.path == "/v1/balances"]
    assert len(pages) == 2 and "cursor=" in pages[1].query


def test_scopes_the_authority_stops_listing_are_forgotten(
    polled_server: LocalCyclesServer, polled_key: str, telemetry: TelemetryCapture, instruments: Instruments
) -> None:
    board = instruments.board
    board.update(BalanceReading("tenant:acme/workflow:deleted", UNIT, remaining=1, updated_at=time.time()))
    board.update(
        BalanceReading("tenant:other", UNIT, remaining=2, updated_at=time.time())
    )  # not ours to judge
    with CyclesClient(polled_server.config(polled_key)) as client:
        new_poller(client, telemetry).poll_once_sync()
    assert set(gauges(telemetry, "remaining")) == {*SCOPES, "tenant:other"}


def test_a_failed_poll_counts_backs_off_and_keeps_the_last_values(
    polled_server: LocalCyclesServer, polled_key: str, telemetry: TelemetryCapture
) -> None:
    with CyclesClient(polled_server.config(polled_key)) as client:
        poller = new_poller(client, telemetry, interval=2.0, max_backoff=5.0)
        poller.poll_once_sync()
        polled_server.faults.fail("balances", 503, times=3)
        delays = []
        for _ in range(3):
            assert poller.poll_once_sync() == 0
            delays.append(poller.next_delay())
        assert delays == [4.0, 5.0, 5.0]
        assert telemetry.value("cycles.exporter.poll_errors", error__type="503") == 3
        assert set(gauges(telemetry, "remaining")) == set(SCOPES)  # fresh enough: kept
        assert poller.poll_once_sync() == len(SCOPES)
        assert (poller.failures, poller.next_delay(), poller.last_error) == (0, 2.0, None)


def test_an_unreachable_authority_is_a_counted_transport_error_then_values_go_stale(
    polled_server: LocalCyclesServer, polled_key: str, telemetry: TelemetryCapture
) -> None:
    with CyclesClient(polled_server.config(polled_key, connect_timeout=0.5)) as client:
        poller = new_poller(client, telemetry, stale_after=0.2)
        poller.poll_once_sync()
        polled_server.stop()
        assert poller.poll_once_sync() == 0
        assert poller.last_error is not None and poller.last_error.transport
        assert telemetry.value("cycles.exporter.poll_errors", error__type=poller.last_error.error_type) == 1
        time.sleep(0.3)
    assert gauges(telemetry, "remaining") == {}
    assert set(gauges(telemetry, "updated_timestamp")) == set(SCOPES)  # still says when each was last seen


def test_two_pollers_on_one_provider_each_keep_their_own_staleness(
    polled_server: LocalCyclesServer, polled_key: str, telemetry: TelemetryCapture
) -> None:
    with (
        CyclesClient(polled_server.config(polled_key)) as acme,
        CyclesClient(polled_server.config(polled_server.create_api_key("beta"))) as beta,
    ):
        quick = BalancePoller(acme, [{"tenant": "acme"}], 0.1, meter_provider=telemetry.meter_provider)
        slow = BalancePoller(beta, [{"tenant": "beta"}], 60.0, meter_provider=telemetry.meter_provider)
        assert (quick.poll_once_sync(), slow.poll_once_sync()) == (len(SCOPES), 1)
        assert set(gauges(telemetry, "remaining")) == {*SCOPES, "tenant:beta"}
        time.sleep(0.4)  # past the quick poller's 0.3 s, well within the slow one's 180 s
    assert set(gauges(telemetry, "remaining")) == {"tenant:beta"}
    assert set(gauges(telemetry, "updated_timestamp")) == {*SCOPES, "tenant:beta"}


@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [("42", 42.0), ("99999999999", 300.0)],  # the second: past what a timer can wait, capped at max_backoff
)
def test_retry_after_sets_the_floor_of_the_next_delay_up_to_the_cap(
    telemetry: TelemetryCapture, retry_after: str, delay: float
) -> None:
    class RateLimited:
        def get_balances(self, **query: str) -> CyclesResponse:
            return CyclesResponse.http_error(
                429, "slow down", {"error": "LIMIT_EXCEEDED"}, {"retry-after": retry_after}
            )

    poller = new_poller(RateLimited(), telemetry, interval=1.0, max_backoff=300.0)
    assert poller.poll_once_sync() == 0
    assert poller.next_delay() == delay
    assert telemetry.value("cycles.exporter.poll_errors", error__type="429") == 1


def test_a_client_that_raises_never_reaches_the_app(telemetry: TelemetryCapture) -> None:
    class Broken:
        def get_balances(self, **query: str) -> CyclesResponse:
            raise RuntimeError("boom")

    poller = new_poller(Broken(), telemetry)
    assert poller.poll_once_sync() == 0
    assert telemetry.value("cycles.exporter.poll_errors", error__type="RuntimeError") == 1


def test_an_answer_without_balances_is_an_invalid_response(telemetry: TelemetryCapture) -> None:
    class Odd:
        def get_balances(self, **query: str) -> CyclesResponse:
            return CyclesResponse.success(200, {"items": []})

    assert new_poller(Odd(), telemetry).poll_once_sync() == 0
    assert telemetry.value("cycles.exporter.poll_errors", error__type="invalid_response") == 1


def test_a_thread_polls_for_a_sync_client(
    polled_server: LocalCyclesServer, polled_key: str, telemetry: TelemetryCapture
) -> None:
    with (
        CyclesClient(polled_server.config(polled_key)) as client,
        new_poller(client, telemetry, interval=0.05),
    ):
        wait_until(lambda: gauges(telemetry, "remaining"), lambda found: len(found) >= len(SCOPES))
    assert set(gauges(telemetry, "remaining")) == set(SCOPES)


async def test_a_task_polls_for_an_async_client(
    polled_server: LocalCyclesServer, polled_key: str, telemetry: TelemetryCapture
) -> None:
    import asyncio

    async with AsyncCyclesClient(polled_server.config(polled_key)) as client:
        async with new_poller(client, telemetry, interval=0.05) as running:
            for _ in range(500):
                if len(gauges(telemetry, "remaining")) == len(SCOPES):
                    break
                await asyncio.sleep(0.02)
        assert running._task is None
    assert set(gauges(telemetry, "remaining")) == set(SCOPES)


@pytest.mark.parametrize(
    ("subjects", "options", "message"),
    [
        ([], {}, "subjects"),
        ([{"tenant": ""}], {}, "tenant"),
        ([{"team": "x"}], {}, "team"),
        ([{"tenant": "acme"}], {"interval": 0}, "interval"),
        ([{"tenant": "acme"}], {"interval": float("inf")}, "interval"),
        ([{"tenant": "acme"}], {"stale_after": -1}, "stale_after"),
        ([{"tenant": "acme"}], {"stale_after": float("nan")}, "stale_after"),
        ([{"tenant": "acme"}], {"max_backoff": float("inf")}, "max_backoff"),
    ],
)
def test_bad_arguments_name_the_parameter(
    telemetry: TelemetryCapture, subjects: Any, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BalancePoller(
            object.__new__(CyclesClient), subjects, meter_provider=telemetry.meter_provider, **options
        )
