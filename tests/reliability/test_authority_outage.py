"""The authority down for seconds in a paced burst: typed errors at once, no denial, nothing miscounted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import CreateResult, UserMessage
from runcycles import AsyncCyclesClient, CyclesProtocolError  # type: ignore[import-untyped]

from cycles_otel.autogen import BudgetedChatCompletionClient
from cycles_otel.pricing import PriceTable
from cycles_otel.testing.authority import LedgerSnapshot, LocalCyclesServer
from cycles_otel.testing.fake_openai import FakeOpenAI
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.protocol import SCOPE
from tests.support.reliability import (
    HOLD_SECONDS,
    MODEL,
    assert_reconciled,
    budgeted_client,
    charged_metric,
    governed_authority,
    settle,
)

pytestmark = pytest.mark.slow

CALLS_BEFORE, CALLS_DURING, CALLS_AFTER = 20, 30, 20
PACE_S = 0.05  # one call every 50 ms: the outage spans a second and a half of the burst at least
# The outage ends once every call made during it has completed, or after this long: calls that waited
# for the authority's return would still be pending when it comes back.
OUTAGE_LIMIT_S = 10.0
# runcycles retries a commit or an event this often (0.05 s, doubling to 0.5 s): longer than any outage here.
RETRY_ATTEMPTS = 40
PRICES = PriceTable.default()


@dataclass(frozen=True)
class Outage:
    """How the authority goes away and comes back."""

    begin: Callable[[LocalCyclesServer], object]
    end: Callable[[LocalCyclesServer], object]


def hang_every_operation(server: LocalCyclesServer) -> None:
    for operation in ("reserve", "commit", "release", "event"):
        server.faults.timeout(operation, HOLD_SECONDS, times=10_000)


OUTAGES = {
    # The process is gone: connections are refused, then it restarts on the same port with its ledger.
    "stopped": Outage(begin=LocalCyclesServer.stop, end=LocalCyclesServer.start),
    # The process is there but answers nothing: every request is held past the client's read timeout.
    "hanging": Outage(begin=hang_every_operation, end=lambda server: server.faults.clear()),
}


@dataclass
class Burst:
    """The calls made before, during and after the outage, and how many of the middle ones had completed
    before the authority came back."""

    before: list[asyncio.Task[CreateResult]]
    during: list[asyncio.Task[CreateResult]]
    after: list[asyncio.Task[CreateResult]]
    completed_while_down: int

    @property
    def calls(self) -> list[asyncio.Task[CreateResult]]:
        return [*self.before, *self.during, *self.after]


async def paced_burst(
    client: BudgetedChatCompletionClient, server: LocalCyclesServer, outage: Outage
) -> Burst:
    number = 0

    async def launch(count: int) -> list[asyncio.Task[CreateResult]]:
        nonlocal number
        tasks = []
        for _ in range(count):
            number += 1
            prompt = [UserMessage(content=f"call {number}: " + "budget " * (number % 17), source="user")]
            tasks.append(asyncio.ensure_future(client.create(prompt)))
            await asyncio.sleep(PACE_S)
        return tasks

    before = await launch(CALLS_BEFORE)
    outage.begin(server)
    during = await launch(CALLS_DURING)
    completed, _ = await asyncio.wait(during, timeout=OUTAGE_LIMIT_S)
    outage.end(server)
    after = await launch(CALLS_AFTER)
    await asyncio.wait([*before, *during, *after])
    await client.settled()
    return Burst(before, during, after, len(completed))


def priced(result: CreateResult) -> int:
    return PRICES.cost_microcents(MODEL, result.usage.prompt_tokens, result.usage.completion_tokens)


@contextmanager
def authority_and_model(
    telemetry: TelemetryCapture, **config: Any
) -> Iterator[tuple[LocalCyclesServer, AsyncCyclesClient, FakeOpenAI]]:
    options = {"retry_max_attempts": RETRY_ATTEMPTS, **config}
    with governed_authority(telemetry, **options) as (server, cycles_config), FakeOpenAI() as model:
        yield server, AsyncCyclesClient(cycles_config), model


def assert_no_denial(telemetry: TelemetryCapture) -> None:
    denied = [s for s in telemetry.spans() if (s.attributes or {}).get("cycles.decision") == "DENY"]
    assert not denied, f"an outage was reported as a budget denial: {[s.name for s in denied]}"
    deny_points = [
        p
        for p in telemetry.points("cycles.client.reservations")
        if (p.attributes or {}).get("cycles.decision") == "DENY"
    ]
    assert not deny_points, f"DENY counted in cycles.client.reservations: {deny_points}"


@pytest.mark.parametrize("outage", list(OUTAGES))
async def test_calls_during_an_outage_fail_typed_at_once_and_nothing_is_miscounted(
    telemetry: TelemetryCapture, outage: str
) -> None:
    with authority_and_model(telemetry) as (server, cycles_client, model):
        async with cycles_client:
            client = budgeted_client(cycles_client, telemetry, model.base_url)
            burst = await paced_burst(client, server, OUTAGES[outage])
            snapshot = await settle(server)
            await client.close()

    assert burst.completed_while_down == CALLS_DURING, (
        f"only {burst.completed_while_down} of {CALLS_DURING} calls made during the outage completed "
        "before the authority came back: the rest waited for it"
    )
    for task in burst.during:
        error = task.exception()
        assert isinstance(error, CyclesProtocolError), f"{error!r}: not runcycles' typed protocol error"
        assert type(error) is CyclesProtocolError, f"{error!r}: a subclass, not the protocol error itself"
        assert error.status == -1, f"{error!r}: an unreachable authority is a transport error"
    failed = [t for t in burst.calls if t.exception() is not None]
    assert all(isinstance(t.exception(), CyclesProtocolError) for t in failed)
    assert all(t.exception() is None for t in burst.after), "calls still failed after the authority came back"
    returned = [t.result() for t in burst.calls if t.exception() is None]
    assert len(model.requests) == len(returned), "a call that failed to reserve still called the model"
    reservation_spans = telemetry.spans("cycles.reservation")
    assert sum(
        1 for s in reservation_spans if (s.attributes or {}).get("error.type") == "CyclesProtocolError"
    ) == len(failed)
    assert_no_denial(telemetry)
    assert_reconciled(snapshot, telemetry)
    assert (
        snapshot.scopes[SCOPE].spent
        == sum(priced(result) for result in returned)
        == charged_metric(telemetry)
    )


def assert_recorded_through_events(
    snapshot: LedgerSnapshot, telemetry: TelemetryCapture, ungoverned: int
) -> None:
    spans = [s.attributes or {} for s in telemetry.spans("cycles.reservation")]
    recorded = [a for a in spans if a.get("cycles.governed") is False]
    assert len(recorded) == ungoverned >= CALLS_DURING
    assert all(a.get("cycles.outcome") == "recorded" for a in recorded), recorded[:2]
    assert telemetry.value("cycles.client.ungoverned") == ungoverned
    events = [e for e in snapshot.events if (e.metadata or {}).get("governance") == "authority_unavailable"]
    assert len(events) == len(snapshot.events) == ungoverned, (
        "not every ungoverned call reached the ledger once"
    )
    assert sorted(e.charged for e in events) == sorted(int(str(a["cycles.actual.amount"])) for a in recorded)


@pytest.mark.parametrize("outage", list(OUTAGES))
async def test_failing_open_runs_calls_during_an_outage_and_their_spend_reaches_the_ledger_after_it(
    telemetry: TelemetryCapture, outage: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    with authority_and_model(telemetry, journal_enabled=True, journal_dir=str(journal)) as (
        server,
        cycles_client,
        model,
    ):
        async with cycles_client:
            client = budgeted_client(cycles_client, telemetry, model.base_url, on_authority_error="allow")
            burst = await paced_burst(client, server, OUTAGES[outage])
            snapshot = await settle(server)
            await client.close()

    assert burst.completed_while_down == CALLS_DURING, "calls made during the outage waited for the authority"
    results = [task.result() for task in burst.calls]  # every call ran, none raised
    assert len(model.requests) == len(results)
    ungoverned = sum(
        1
        for s in telemetry.spans("cycles.reservation")
        if (s.attributes or {}).get("cycles.governed") is False
    )
    assert_recorded_through_events(snapshot, telemetry, ungoverned)
    assert_no_denial(telemetry)
    assert_reconciled(snapshot, telemetry)
    assert (
        snapshot.scopes[SCOPE].spent == sum(priced(result) for result in results) == charged_metric(telemetry)
    )
    assert not list(journal.rglob("v2-*.json")), "journaled spend was left behind"
