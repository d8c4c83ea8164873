"""A thousand governed calls under random faults and concurrency: metrics and ledger agree to the unit."""

from __future__ import annotations

import asyncio
import gc
import random
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from autogen_core.models import CreateResult, LLMMessage, RequestUsage, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from runcycles import (  # type: ignore[import-untyped]
    AsyncCyclesClient,
    BudgetExceededError,
    CyclesProtocolError,
    cycles,
    get_cycles_context,
)

from cycles_otel.autogen import BudgetedChatCompletionClient
from cycles_otel.pricing import PriceTable
from cycles_otel.testing.authority import LedgerSnapshot, LocalCyclesServer
from cycles_otel.testing.fake_openai import FakeOpenAI
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.protocol import SCOPE
from tests.support.reliability import (
    HOLD_SECONDS,
    MAX_OUTPUT_TOKENS,
    MODEL,
    RECOVERED_ID,
    TTL_MS,
    RetryAfterCyclesServer,
    assert_reconciled,
    assert_spend_accounted,
    budgeted_client,
    charged_metric,
    governed_authority,
    quiesce,
    recovered_ids,
    rss_bytes,
    settle,
)

pytestmark = pytest.mark.slow

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


# --- The real OpenAI client over a fake endpoint: create() and streams, faults on both sides, 32 at once ---

SEEDS = (101, 202, 303)
GOVERNED_CALLS = 1_000
GOVERNED_CONCURRENCY = 32
RSS_GROWTH_LIMIT = 30 * 2**20  # bytes the second half of a run may add to the first half's RSS
CANCEL_WITHIN_S = 0.04  # a cancelled caller gives up at a random moment of its call's first 40 ms
SLOW_MODEL_S = 0.02
RETRY_AFTER_S = 1
WORDS = ["budget", "agent", "token", "reserve", "commit", "release", "ledger", "span", "metric", "trace"]

# Faults armed on the authority as a call starts; it strikes whichever call reaches that operation next.
AUTHORITY_FAULTS: dict[str, tuple[int, Callable[[LocalCyclesServer], None]]] = {
    "none": (45, lambda s: None),
    "reserve-500": (3, lambda s: s.faults.fail("reserve", 500)),  # runcycles' same-key retry recovers it
    "reserve-timeout": (2, lambda s: s.faults.timeout("reserve", HOLD_SECONDS)),
    "reserve-dropped": (2, lambda s: s.faults.drop("reserve", times=2)),  # the call fails, nothing held
    "reserve-409": (4, lambda s: s.faults.fail("reserve", 409, "BUDGET_EXCEEDED", "budget exceeded")),
    "reserve-429": (2, lambda s: s.faults.fail("reserve", 429, "LIMIT_EXCEEDED", "slow down")),
    "reserve-lost-answer": (2, lambda s: s.faults.fail("reserve", 503, times=2, after=True)),  # held to TTL
    "commit-5xx": (6, lambda s: s.faults.fail("commit", 503)),
    "commit-timeout": (2, lambda s: s.faults.timeout("commit", HOLD_SECONDS)),
    "commit-dropped": (3, lambda s: s.faults.drop("commit")),
    "commit-429": (4, lambda s: s.faults.fail("commit", 429, "LIMIT_EXCEEDED", "slow down")),
    "commit-lost-answer": (3, lambda s: s.faults.fail("commit", 500, after=True)),
    "expire-now": (8, lambda s: expire_one_active(s)),  # its commit then meets a real 410
    "release-500": (2, lambda s: s.faults.fail("release", 500)),  # held until TTL, nothing spent
    "release-dropped": (2, lambda s: s.faults.drop("release")),
    "event-500": (2, lambda s: s.faults.fail("event", 500)),  # a recovery event retried
}
FAILS_THE_MODEL = frozenset({"release-500", "release-dropped"})  # armed with a model failure, to be used
MODEL_FAULTS = {"none": 70, "http": 10, "cut": 10, "slow": 10}
CREATE_CONSUMERS = {"await": 85, "cancel": 15}
STREAM_CONSUMERS = {"read": 50, "cancel": 15, "drop": 15, "aclose": 20}
# What a caller may see; every one of them must happen in every seed.
CALLER_PATHS = frozenset(
    {
        *(f"{kind}.{seen}" for kind in ("create", "stream") for seen in ("cancelled", "denied")),
        *(f"{kind}.{seen}" for kind in ("create", "stream") for seen in ("authority-error", "model-error")),
        "create.returned",
        "stream.usage",
        "stream.no-usage",
        "stream.cut",
        "stream.dropped",
        "stream.closed-early",
    }
)


def expire_one_active(server: LocalCyclesServer) -> None:
    """Expire an ACTIVE reservation of a call in flight (as a TTL running out under a slow model would)."""
    active = [r.reservation_id for r in server.ledger().reservations if r.status == "ACTIVE"]
    if active:
        server.expire_now(active[-1])


def pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


@dataclass(frozen=True)
class GovernedPlan:
    """What one call does, drawn up front from the seed: method, consumer, model and authority faults."""

    number: int
    stream: bool
    usage_chunk: bool
    consumer: str
    read_items: int
    cancel_after_s: float
    model_fault: str
    authority_fault: str
    prompt_words: int

    @classmethod
    def draw(cls, rng: random.Random, number: int) -> GovernedPlan:
        stream = rng.random() < 0.55
        authority_fault = pick(rng, {name: weight for name, (weight, _) in AUTHORITY_FAULTS.items()})
        model_fault = "http" if authority_fault in FAILS_THE_MODEL else pick(rng, MODEL_FAULTS)
        if model_fault == "cut" and not stream:
            model_fault = "slow"
        return cls(
            number=number,
            stream=stream,
            usage_chunk=rng.random() < 0.6,
            consumer=pick(rng, STREAM_CONSUMERS if stream else CREATE_CONSUMERS),
            read_items=rng.randint(1, 6),
            cancel_after_s=rng.uniform(0, CANCEL_WITHIN_S),
            model_fault=model_fault,
            authority_fault=authority_fault,
            prompt_words=rng.randint(1, 40),
        )

    def arm(self, server: LocalCyclesServer, model: FakeOpenAI) -> None:
        AUTHORITY_FAULTS[self.authority_fault][1](server)
        if self.model_fault == "http":
            model.faults.fail_next(status=(500, 503, 429)[self.number % 3])
        elif self.model_fault == "cut":
            model.faults.cut_stream_next(after_chunks=1 + self.read_items)
        elif self.model_fault == "slow":
            model.faults.delay_next(seconds=SLOW_MODEL_S)

    @property
    def messages(self) -> list[LLMMessage]:
        words = " ".join(WORDS[(self.number + i) % len(WORDS)] for i in range(self.prompt_words))
        return [UserMessage(content=f"call {self.number}: {words}", source="user")]


@dataclass
class CallerTally:
    """What the callers saw, by path, and the 429 errors they got from the authority."""

    paths: Counter[str] = field(default_factory=Counter)
    rate_limited: list[CyclesProtocolError] = field(default_factory=list)


async def consume(stream: AsyncGenerator[str | CreateResult, None], plan: GovernedPlan) -> str:
    """Read a governed stream the way ``plan.consumer`` says; the path it took."""
    stops_early = plan.consumer in ("drop", "aclose")
    final: CreateResult | None = None
    read = 0
    async for item in stream:
        read += 1
        final = item if isinstance(item, CreateResult) else None
        if stops_early and read == plan.read_items:
            break
    else:  # read to its end
        assert final is not None, "a stream ended without its final CreateResult"
        assert bool(final.usage.prompt_tokens) == plan.usage_chunk, f"usage {final.usage}, {plan}"
        return "usage" if plan.usage_chunk else "no-usage"
    if plan.consumer == "aclose":
        await stream.aclose()
        return "closed-early"
    del stream  # dropped unclosed: the event loop's async-generator finalizer closes it
    return "dropped"


async def governed_call(client: BudgetedChatCompletionClient, plan: GovernedPlan, tally: CallerTally) -> None:
    """One call as its caller makes it, cancelled at a random moment when the plan says so."""
    kind = "stream" if plan.stream else "create"

    async def call() -> str:
        if not plan.stream:
            await client.create(plan.messages)
            return "returned"
        options = {} if plan.usage_chunk else {"stream_options": {"include_usage": False}}
        return await consume(client.create_stream(plan.messages, extra_create_args=options), plan)

    task = asyncio.ensure_future(call())
    if plan.consumer == "cancel":
        await asyncio.wait([task], timeout=plan.cancel_after_s)
        task.cancel()
    try:
        seen = await task
    except asyncio.CancelledError:
        seen = "cancelled"
    except BudgetExceededError:
        seen = "denied"
    except CyclesProtocolError as exc:
        seen = "authority-error"
        if exc.status == 429:
            tally.rate_limited.append(exc)
    except openai.APIStatusError:
        seen = "model-error"
    except openai.APIError:  # the connection closed mid-stream
        seen = "cut"
    tally.paths[f"{kind}.{seen}"] += 1


async def run_governed(
    client: BudgetedChatCompletionClient,
    plans: Sequence[GovernedPlan],
    server: LocalCyclesServer,
    model: FakeOpenAI,
    tally: CallerTally,
) -> None:
    """Run ``plans``, ``GOVERNED_CONCURRENCY`` at a time, each arming its faults as it starts; wait for
    every settlement and retry."""
    gate = asyncio.Semaphore(GOVERNED_CONCURRENCY)

    async def one(plan: GovernedPlan) -> None:
        async with gate:
            plan.arm(server, model)
            await governed_call(client, plan, tally)

    await asyncio.gather(*(one(plan) for plan in plans))
    gc.collect()  # a dropped stream caught in a reference cycle is finalized (and so settled) now
    await asyncio.sleep(0)  # the loop's async-generator finalizer schedules its aclose()
    await client.settled()
    await quiesce(30)


def assert_every_span_says_how_it_ended(spans: Sequence[ReadableSpan]) -> None:
    assert len(spans) == GOVERNED_CALLS, (
        f"{len(spans)} cycles.reservation spans ended for {GOVERNED_CALLS} calls"
    )
    unexplained = [
        dict(s.attributes or {})
        for s in spans
        if not {"cycles.outcome", "error.type"} & set(s.attributes or {})
        and (s.attributes or {}).get("cycles.decision") != "DENY"
    ]
    assert not unexplained, f"spans with no outcome, denial or error: {unexplained[:3]}"


def spans_by_reservation(spans: Sequence[ReadableSpan]) -> dict[str, Mapping[str, Any]]:
    return {
        str(s.attributes["cycles.reservation.id"]): s.attributes
        for s in spans
        if s.attributes and "cycles.reservation.id" in s.attributes
    }


def recovered_charges(snapshot: LedgerSnapshot) -> dict[str, int]:
    """What each recovery event charged, by the reservation it recovers."""
    charges = {
        str(e.metadata[RECOVERED_ID]): e.charged
        for e in snapshot.events
        if e.metadata and RECOVERED_ID in e.metadata
    }
    assert len(charges) == len(snapshot.events), "an event recovers no reservation, or one twice"
    return charges


def assert_each_spend_reached_the_ledger(snapshot: LedgerSnapshot, spans: Sequence[ReadableSpan]) -> None:
    """What a span says its call cost is what the ledger charged its reservation (a commit or a recovery)."""
    recovered = recovered_charges(snapshot)
    named = spans_by_reservation(spans)
    for record in snapshot.reservations:
        attributes = named.get(record.reservation_id)
        if attributes is None:
            continue  # see assert_every_reservation_is_named
        actual = attributes.get("cycles.actual.amount")
        charged = record.charged if record.status == "COMMITTED" else recovered.get(record.reservation_id)
        assert charged == actual, (
            f"{record.reservation_id} ({record.status}, outcome {attributes.get('cycles.outcome')}): "
            f"the span says it cost {actual}, the ledger charged {charged}"
        )


def assert_every_reservation_is_named(snapshot: LedgerSnapshot, spans: Sequence[ReadableSpan]) -> None:
    """Each reservation the client held is named by its call's span; only a lost reserve answer is not."""
    named = spans_by_reservation(spans)
    unnamed = [
        (r.reservation_id, r.status)
        for r in snapshot.reservations
        if r.reservation_id not in named
        and (r.status != "EXPIRED" or r.reservation_id in recovered_ids(snapshot))
    ]
    assert not unnamed, (
        f"{len(unnamed)} reservations were settled by the client but no cycles.reservation span names them "
        f"(cycles.reservation.id), e.g. {unnamed[:3]}"
    )


def assert_settlements_match_the_ledger(snapshot: LedgerSnapshot, telemetry: TelemetryCapture) -> None:
    def settled(outcome: str) -> float:
        return telemetry.value("cycles.client.settlements", cycles__outcome=outcome)

    assert settled("committed") == snapshot.count(status="COMMITTED")
    assert settled("released") == snapshot.count(status="RELEASED")
    assert settled("recovered") == len(recovered_ids(snapshot))


def assert_denials_are_the_authoritys(server: LocalCyclesServer, telemetry: TelemetryCapture) -> None:
    denied = sum(1 for r in server.requests if r.operation == "reserve" and r.status == 409)
    deny_points = telemetry.value("cycles.client.reservations", cycles__decision="DENY")
    assert deny_points == denied > 0, f"{deny_points} DENY counted, the authority denied {denied}"


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_thousand_openai_calls_and_streams_under_faults_reconcile_exactly(
    telemetry: TelemetryCapture, seed: int
) -> None:
    rng = random.Random(seed)
    plans = [GovernedPlan.draw(rng, number) for number in range(GOVERNED_CALLS)]
    half = GOVERNED_CALLS // 2
    tally = CallerTally()
    server = RetryAfterCyclesServer(retry_after_s=RETRY_AFTER_S)
    with (
        governed_authority(telemetry, server=server, retry_max_attempts=RETRY_ATTEMPTS) as (_, config),
        FakeOpenAI(seed=seed) as model,
    ):
        async with AsyncCyclesClient(config) as cycles_client:
            client = budgeted_client(cycles_client, telemetry, model.base_url)
            await run_governed(client, plans[:half], server, model, tally)
            rss_after_first_half = rss_bytes()
            await run_governed(client, plans[half:], server, model, tally)
            rss_growth = rss_bytes() - rss_after_first_half
            server.faults.clear()
            model.faults.clear()
            snapshot = await settle(server)
            await client.close()

    spans = telemetry.spans("cycles.reservation")
    print(
        f"seed {seed}: callers {dict(sorted(tally.paths.items()))}; "
        f"ledger {dict(Counter(r.status for r in snapshot.reservations))}, {len(snapshot.events)} recovered; "
        f"RSS +{rss_growth / 2**20:.1f} MiB over the second half"
    )
    assert sum(tally.paths.values()) == GOVERNED_CALLS
    assert set(tally.paths) == CALLER_PATHS, (
        f"paths not taken: {CALLER_PATHS - set(tally.paths)}, unknown: {set(tally.paths) - CALLER_PATHS}"
    )
    assert {r.status for r in snapshot.reservations} == {"COMMITTED", "RELEASED", "EXPIRED"}
    assert snapshot.events, "no spend was recovered through POST /v1/events"
    assert_reconciled(snapshot, telemetry)
    assert_every_span_says_how_it_ended(spans)
    assert_settlements_match_the_ledger(snapshot, telemetry)
    assert_denials_are_the_authoritys(server, telemetry)
    assert tally.rate_limited, "no call met a rate-limited reserve"
    assert {e.retry_after_ms for e in tally.rate_limited} == {RETRY_AFTER_S * 1000}
    assert_each_spend_reached_the_ledger(snapshot, spans)
    assert rss_growth < RSS_GROWTH_LIMIT, f"RSS grew {rss_growth / 2**20:.1f} MiB over the second half"
    assert_every_reservation_is_named(snapshot, spans)


class ReserveSent(SpanProcessor):
    """Sets ``sent`` once a ``cycles.reserve`` span starts, i.e. as the reserve request leaves."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.name == "cycles.reserve":
            self.sent.set()


async def test_a_call_cancelled_while_its_reserve_is_on_the_wire_names_the_reservation_it_released(
    telemetry: TelemetryCapture,
) -> None:
    reserve = ReserveSent()
    telemetry.tracer_provider.add_span_processor(reserve)
    with governed_authority(telemetry) as (server, config), FakeOpenAI() as model:
        server.faults.delay("reserve", 0.2)  # the answer arrives after the caller has given up
        async with AsyncCyclesClient(config) as cycles_client:
            client = budgeted_client(cycles_client, telemetry, model.base_url)
            task = asyncio.ensure_future(client.create([UserMessage(content="hello", source="user")]))
            await reserve.sent.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await client.settled()
            await quiesce()
    (record,) = server.ledger().reservations
    assert record.status == "RELEASED"
    assert model.requests == []
    attributes = telemetry.span("cycles.reservation").attributes or {}
    assert attributes.get("cycles.outcome") == "released"
    assert attributes.get("cycles.reservation.id") == record.reservation_id, (
        "the span of a call whose reservation was released after its caller was cancelled does not name it"
    )
