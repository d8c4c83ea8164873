"""A thousand governed calls under random faults and concurrency: metrics and ledger agree to the unit."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from autogen_core.models import CreateResult, LLMMessage, RequestUsage, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient
from runcycles import (  # type: ignore[import-untyped]
    AsyncCyclesClient,
    CyclesProtocolError,
    cycles,
    get_cycles_context,
)

from cycles_otel.autogen import BudgetedChatCompletionClient
from cycles_otel.pricing import PriceTable
from cycles_otel.testing.authority import LedgerSnapshot, LocalCyclesServer
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.reliability_support import (
    HOLD_SECONDS,
    MAX_OUTPUT_TOKENS,
    MODEL,
    SCOPE,
    TTL_MS,
    assert_reconciled,
    assert_spend_accounted,
    charged_metric,
    governed_authority,
    settle,
)

CALLS = 1_000
CONCURRENCY = 8
SEED = 20_261_128
ESTIMATE = 50_000
# Faults are queued per operation, so one commit's retries can meet several of them in a row. The exact
# guarantee holds while retries outlast the faults; with runcycles' default of 3 they can run out, and then
# a commit that applied but lost its answer is spend the client never learns of (see the report).
RETRY_ATTEMPTS = 12
PRICES = PriceTable.default()


class ModelFailed(Exception):
    """The guarded work failing on purpose."""


@dataclass
class Tally:
    """What the callers saw: the spend of every call whose work completed, by reservation."""

    spent: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def arm_random_fault(rng: random.Random, server: LocalCyclesServer) -> str:
    """Arm one fault (or none) for whichever call reaches that operation next; returns what the work does."""
    roll = rng.random()
    faults = server.faults
    if roll < 0.55:
        return "ok"
    if roll < 0.60:
        faults.fail("reserve", 500)  # recovered by runcycles' same-key retry
    elif roll < 0.63:
        faults.drop("reserve", times=2)  # the call fails before any work
    elif roll < 0.65:
        faults.fail("reserve", 503, times=2, after=True)  # held, but the caller never learns the id
    elif roll < 0.71:
        faults.fail("commit", rng.choice([500, 502, 503]))
    elif roll < 0.75:
        faults.drop("commit")
    elif roll < 0.77:
        faults.timeout("commit", HOLD_SECONDS)
    elif roll < 0.81:
        faults.fail("commit", 429, "LIMIT_EXCEEDED")
    elif roll < 0.84:
        faults.fail("commit", 500, after=True)  # committed, but the answer was lost
    elif roll < 0.87:
        faults.fail("release", 500)
        return "raise"
    elif roll < 0.90:
        faults.drop("release")
        return "raise"
    elif roll < 0.94:
        return "raise"
    elif roll < 0.97:
        return "expire"
    else:
        return "cancel"
    return "ok"


WORK: ContextVar[tuple[str, asyncio.Event]] = ContextVar("reconciliation_work")


async def do_work(server: LocalCyclesServer, tally: Tally, amount: int) -> None:
    """The guarded work of one call, shaped by the ``WORK`` its caller set; records spend that happened."""
    work, started = WORK.get()
    context = get_cycles_context()  # both runcycles' decorator and stream_reservation set it
    started.set()
    if work == "raise":
        raise ModelFailed("the model failed")
    if work == "cancel":
        await asyncio.sleep(30)
    if work == "expire":
        server.expire_now(context.reservation_id)
    tally.spent[context.reservation_id] = amount


async def observed(call: Callable[[], Awaitable[object]], work: str, tally: Tally) -> None:
    """Run one governed call as its caller would, cancelling it mid-work when told to; count what it saw."""
    started = asyncio.Event()
    WORK.set((work, started))
    task = asyncio.ensure_future(call())
    if work == "cancel":
        # Cancel inside the work (a cancel that lands inside runcycles' reserve can be lost on 3.11).
        waiter = asyncio.ensure_future(started.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        task.cancel()
    try:
        await task
        tally.count("returned")
    except ModelFailed:
        tally.count("model_failed")
    except asyncio.CancelledError:
        tally.count("cancelled")
    except CyclesProtocolError:
        tally.count("reserve_failed")


async def run_workload(
    server: LocalCyclesServer, call: Callable[[random.Random], Awaitable[object]], tally: Tally
) -> LedgerSnapshot:
    rng = random.Random(SEED)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with gate:
            work = arm_random_fault(rng, server)
            await observed(lambda: call(rng), work, tally)

    await asyncio.gather(*(one() for _ in range(CALLS)))
    server.faults.clear()
    return await settle(server)


def assert_exact(snapshot: LedgerSnapshot, telemetry: TelemetryCapture, tally: Tally) -> None:
    assert sum(tally.outcomes.values()) == CALLS
    # The workload really went through every path it claims to.
    assert set(tally.outcomes) == {"returned", "model_failed", "cancelled", "reserve_failed"}, tally.outcomes
    assert {r.status for r in snapshot.reservations} == {"COMMITTED", "RELEASED", "EXPIRED"}
    assert snapshot.events, "no expired reservation was recovered through /v1/events"
    assert_reconciled(snapshot, telemetry)
    assert_spend_accounted(snapshot, set(tally.spent))
    # Exactly the spend of the work that ran: nothing lost, nothing counted twice.
    assert snapshot.scopes[SCOPE].spent == sum(tally.spent.values()) == charged_metric(telemetry)


async def test_a_thousand_faulty_decorated_calls_reconcile_exactly(telemetry: TelemetryCapture) -> None:
    tally = Tally()
    with governed_authority(telemetry, retry_max_attempts=RETRY_ATTEMPTS) as (server, config):
        async with AsyncCyclesClient(config) as client:

            @cycles(
                estimate=ESTIMATE,
                actual=lambda result: result,
                action_kind="llm.completion",
                action_name=MODEL,
                ttl_ms=TTL_MS,
                client=client,
            )  # type: ignore[untyped-decorator]
            async def governed(amount: int) -> int:
                await do_work(server, tally, amount)
                return amount

            snapshot = await run_workload(server, lambda rng: governed(rng.randint(0, ESTIMATE)), tally)
    assert_exact(snapshot, telemetry, tally)


class ScriptedModel(ReplayChatCompletionClient):
    """Replays results with random usage; each call does the work its caller set (fail, hang, expire)."""

    def __init__(self, server: LocalCyclesServer, tally: Tally, rng: random.Random) -> None:
        usages = [RequestUsage(rng.randint(1, 400), rng.randint(1, MAX_OUTPUT_TOKENS)) for _ in range(CALLS)]
        replies = [CreateResult(finish_reason="stop", content="ok", usage=u, cached=False) for u in usages]
        super().__init__(replies)
        self._server, self._tally = server, tally

    async def create(self, messages: Sequence[LLMMessage], **options: Any) -> CreateResult:
        result = self.chat_completions[self._current_index]
        assert isinstance(result, CreateResult)
        usage = result.usage
        await do_work(
            self._server,
            self._tally,
            PRICES.cost_microcents(MODEL, usage.prompt_tokens, usage.completion_tokens),
        )
        return await super().create(messages, **options)


async def test_a_thousand_faulty_budgeted_client_calls_reconcile_exactly(telemetry: TelemetryCapture) -> None:
    tally = Tally()
    prompt = [UserMessage(content="reconcile this", source="user")]
    with governed_authority(telemetry, retry_max_attempts=RETRY_ATTEMPTS) as (server, config):
        async with AsyncCyclesClient(config) as cycles_client:
            client = BudgetedChatCompletionClient(
                ScriptedModel(server, tally, random.Random(SEED + 1)),
                cycles_client,
                model=MODEL,
                max_output_tokens=MAX_OUTPUT_TOKENS,
                tracer_provider=telemetry.tracer_provider,
                meter_provider=telemetry.meter_provider,
                instrument_protocol=False,
            )
            snapshot = await run_workload(server, lambda rng: client.create(prompt), tally)
    assert_exact(snapshot, telemetry, tally)
