"""``settle_in_background=True``: create() answers before its commit lands; nothing is lost on the way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from autogen_core import ComponentModel
from autogen_core.models import ChatCompletionClient, CreateResult, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient

from cycles_otel import semconv as sc
from cycles_otel.autogen import BudgetedChatCompletionClient
from cycles_otel.autogen import client as client_module
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.budgeted import Authority, assert_governed, budgeted, cost, replay, reply
from tests.support.gates import hold
from tests.support.reliability import charged_metric, quiesce
from tests.support.waiting import PATIENCE_S, eventually_async

HELLO = [UserMessage(content="What is budget authority?", source="user")]
COMMIT_DELAY_S = 0.25  # far longer than a reserve + replayed answer on loopback


def statuses(authority: Authority) -> list[str]:
    return [r.status for r in authority.ledger().reservations]


async def test_create_answers_before_the_commit_lands_and_close_waits_for_it(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(
        authority,
        instrumented_telemetry,
        replay(reply("Budgets.", 120, 30)),
        agent="bot",
        settle_in_background=True,
    )
    held_commit = hold(authority.server, "commit")

    result = await client.create(HELLO)

    assert result.content == "Budgets."
    assert statuses(authority) == ["ACTIVE"]  # the commit is still on its way
    assert instrumented_telemetry.spans(sc.SPAN_RESERVATION) == []  # the span ends only when settled
    closing = asyncio.ensure_future(client.close())
    await held_commit.arrived_async()
    assert not closing.done(), "close() returned while the commit was still held at the authority"
    held_commit.release()
    await closing
    snap = authority.assert_settled()
    (reservation,) = snap.reservations
    assert reservation.status == "COMMITTED"
    assert reservation.charged == cost(120, 30) == snap.scopes["tenant:acme"].spent
    assert charged_metric(instrumented_telemetry) == reservation.charged
    (root,) = instrumented_telemetry.trees()
    assert root.name == sc.SPAN_RESERVATION
    assert_governed(root)
    attrs = root.span.attributes or {}
    assert attrs[sc.CYCLES_OUTCOME] == sc.OUTCOME_COMMITTED
    assert attrs[sc.CYCLES_RESERVATION_ID] == reservation.reservation_id
    assert attrs[sc.CYCLES_CHARGED_AMOUNT] == reservation.charged
    commit = root.child(sc.SPAN_COMMIT).span
    assert commit.end_time is not None and root.span.end_time is not None
    assert commit.end_time <= root.span.end_time


async def test_settled_waits_for_every_call_of_a_burst_and_of_with_agent_twins(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    calls = 6
    inner = replay(*(reply(f"answer {i}", 10 + i, 5) for i in range(calls)))
    client = budgeted(authority, instrumented_telemetry, inner, settle_in_background=True)
    twin = client.with_agent("selector")
    commits = hold(authority.server, "commit")

    await asyncio.gather(*(c.create(HELLO) for c in [client, twin] * (calls // 2)))
    assert "COMMITTED" not in statuses(authority)
    settling = asyncio.ensure_future(client.settled())  # the twin's commits too: they share one set
    await commits.arrived_async(calls)
    assert not settling.done(), "settled() returned while commits were still held at the authority"
    commits.release()
    await settling

    snap = authority.assert_settled()
    assert statuses(authority) == ["COMMITTED"] * calls
    assert sorted(r.charged or 0 for r in snap.reservations) == sorted(cost(10 + i, 5) for i in range(calls))
    assert charged_metric(instrumented_telemetry) == snap.scopes["tenant:acme"].spent
    assert {r.subject.get("agent") for r in snap.reservations} == {"selector", None}
    roots = instrumented_telemetry.trees()
    assert len(roots) == calls
    for root in roots:
        assert_governed(root)
        assert (root.span.attributes or {})[sc.CYCLES_OUTCOME] == sc.OUTCOME_COMMITTED
    await client.close()


async def test_a_failed_background_commit_never_reaches_the_caller_but_the_span_says_so(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(
        authority, instrumented_telemetry, replay(reply("ok", 40, 8)), settle_in_background=True
    )
    authority.server.faults.fail("commit", 500)

    result = await client.create(HELLO)
    await client.settled()

    assert result.content == "ok"
    attrs = instrumented_telemetry.span(sc.SPAN_RESERVATION).attributes or {}
    assert attrs[sc.CYCLES_OUTCOME] == sc.OUTCOME_FAILED
    failed_commit = instrumented_telemetry.spans(sc.SPAN_COMMIT)[0]
    assert (failed_commit.attributes or {})[sc.ERROR_TYPE] == "INTERNAL_ERROR"
    # runcycles retries the known spend: it lands, and the metrics agree with the ledger.
    await quiesce()  # runcycles' retry task
    snap = authority.ledger()
    assert snap.reservations[0].status == "COMMITTED"
    assert snap.reservations[0].charged == cost(40, 8) == charged_metric(instrumented_telemetry)
    await client.close()


async def test_a_background_commit_lets_calls_still_awaiting_answers_go_first(
    authority: Authority, instrumented_telemetry: TelemetryCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "SETTLE_DEFER_MAX_S", PATIENCE_S)  # only the order matters here
    inner = replay(reply("fast", 10, 2), reply("slow", 10, 2))  # the held call asks last
    gate = gate_first_call(inner)
    client = budgeted(authority, instrumented_telemetry, inner, settle_in_background=True)

    slow = asyncio.ensure_future(client.create(HELLO))
    await eventually_async(lambda: len(authority.ledger().reservations) == 1, "the slow call's reservation")
    fast = await client.create(HELLO)
    await asyncio.sleep(0.05)  # time a commit would have had to start
    gate.set()
    await slow
    await client.close()

    assert (fast.content, (await slow).content) == ("fast", "slow")
    assert statuses(authority) == ["COMMITTED", "COMMITTED"]
    slow_answered = max(s.end_time or 0 for s in instrumented_telemetry.spans("chat gpt-4o"))
    first_commit = min(s.start_time or 0 for s in instrumented_telemetry.spans(sc.SPAN_COMMIT))
    assert first_commit >= slow_answered, "a commit ran while a call was still waiting for its answer"


async def test_a_background_commit_waits_for_other_answers_only_so_long(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    inner = replay(reply("fast", 10, 2), reply("late", 10, 2))
    gate = gate_first_call(inner)
    client = budgeted(authority, instrumented_telemetry, inner, settle_in_background=True, ttl_ms=1_000)
    stuck = asyncio.ensure_future(client.create(HELLO))
    await eventually_async(lambda: len(authority.ledger().reservations) == 1, "the stuck call's reservation")

    await client.create(HELLO)
    await client.settled()  # returns although the first call is still waiting for its model

    assert sorted(statuses(authority)) == ["ACTIVE", "COMMITTED"]
    gate.set()
    await stuck
    await client.close()
    authority.assert_settled()


@pytest.mark.parametrize("in_background", [False, True], ids=["waiting", "background"])
async def test_cancelling_the_caller_after_the_answer_still_commits(
    authority: Authority, instrumented_telemetry: TelemetryCapture, in_background: bool
) -> None:
    inner = replay(reply("spent", 70, 20))
    answered = answered_event(inner)
    client = budgeted(authority, instrumented_telemetry, inner, settle_in_background=in_background)
    commit = hold(authority.server, "commit")

    async def caller() -> None:
        await client.create(HELLO)
        await asyncio.sleep(PATIENCE_S)  # a background create() has returned: cancel what comes next

    task = asyncio.ensure_future(caller())
    await answered.wait()
    await commit.arrived_async()  # the commit is on the wire when the caller goes
    task.cancel()
    commit.release()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.close()

    snap = authority.assert_settled()
    assert [(r.status, r.charged) for r in snap.reservations] == [("COMMITTED", cost(70, 20))]
    assert charged_metric(instrumented_telemetry) == cost(70, 20)
    (root,) = instrumented_telemetry.trees()
    assert_governed(root)
    assert (root.span.attributes or {})[sc.CYCLES_OUTCOME] == sc.OUTCOME_COMMITTED


async def test_by_default_create_returns_only_once_committed(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(authority, instrumented_telemetry, replay(reply("Budgets.", 120, 30)))
    authority.server.faults.delay("commit", COMMIT_DELAY_S)

    await client.create(HELLO)

    assert statuses(authority) == ["COMMITTED"]
    (root,) = instrumented_telemetry.trees()  # already ended
    assert_governed(root)
    assert (root.span.attributes or {})[sc.CYCLES_OUTCOME] == sc.OUTCOME_COMMITTED
    assert charged_metric(instrumented_telemetry) == cost(120, 30)
    await client.close()


async def test_a_background_commit_is_journaled_until_it_lands(
    authority: Authority, instrumented_telemetry: TelemetryCapture, tmp_path: Any
) -> None:
    journal = tmp_path / "journal"
    cycles = authority.client(journal_enabled=True, journal_dir=str(journal))
    inner = replay(reply("kept", 12, 3))
    client = budgeted(
        authority, instrumented_telemetry, inner, cycles_client=cycles, settle_in_background=True
    )
    commit = hold(authority.server, "commit")

    await client.create(HELLO)
    await commit.arrived_async()
    # The commit is held at the authority: it was journaled before it was sent.
    assert journaled(journal), "the in-flight commit is not on disk"
    assert statuses(authority) == ["ACTIVE"]
    commit.release()
    await client.settled()
    assert not journaled(journal), "the journal kept a commit that landed"
    assert statuses(authority) == ["COMMITTED"]
    await client.close()
    await cycles.aclose()


def test_the_option_round_trips_and_a_wrong_type_names_the_field(
    authority: Authority, instrumented_telemetry: TelemetryCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TypeError, match=r"settle_in_background='false' \(str\).*pass True or False"):
        budgeted(authority, instrumented_telemetry, replay("x"), settle_in_background="false")

    client = budgeted(authority, instrumented_telemetry, replay("x"), settle_in_background=True)
    dumped: ComponentModel = client.dump_component()
    assert dumped.config["settle_in_background"] is True
    monkeypatch.setenv("CYCLES_API_KEY", authority.key)
    loaded = ChatCompletionClient.load_component(dumped)
    assert isinstance(loaded, BudgetedChatCompletionClient)
    assert loaded.dump_component() == dumped
    default = budgeted(authority, instrumented_telemetry, replay("x")).dump_component()
    assert default.config["settle_in_background"] is False


def gate_first_call(inner: ReplayChatCompletionClient) -> asyncio.Event:
    """Hold the first ``inner.create`` until the returned event is set; later calls pass at once."""
    gate = asyncio.Event()
    original = inner.create
    calls = 0

    async def create(*args: Any, **kwargs: Any) -> CreateResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
        return await original(*args, **kwargs)

    inner.create = create  # type: ignore[method-assign]
    return gate


def journaled(journal: Any) -> list[Any]:
    """The non-empty files under runcycles' journal directory."""
    return [p for p in journal.rglob("*") if p.is_file() and p.stat().st_size]


def answered_event(inner: ReplayChatCompletionClient) -> asyncio.Event:
    """An event set the moment ``inner.create`` has its answer (before the wrapper sees it)."""
    answered = asyncio.Event()
    original = inner.create

    async def create(*args: Any, **kwargs: Any) -> CreateResult:
        result = await original(*args, **kwargs)
        answered.set()
        return result

    inner.create = create  # type: ignore[method-assign]
    return answered
