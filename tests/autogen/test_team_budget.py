"""Budget denial inside a team: the team stops, the typed error (or the stop reason) says why."""

from __future__ import annotations

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult, Team
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import MagenticOneGroupChat, RoundRobinGroupChat, SelectorGroupChat, Swarm
from autogen_core import SingleThreadedAgentRuntime
from autogen_core.models import CreateResult
from runcycles import BudgetExceededError, CyclesProtocolError  # type: ignore[import-untyped]

from cycles_otel.autogen import is_budget_stop, stop_on_budget, typed_team_errors
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.budgeted import USD, Authority, budgeted, cost, replay, reply
from tests.support.reliability import charged_metric


def writer_team(
    authority: Authority, telemetry: TelemetryCapture, runtime: SingleThreadedAgentRuntime | None = None
) -> RoundRobinGroupChat:
    """Researcher and writer sharing one budgeted client; the writer's budget allows nothing."""
    authority.server.set_budget("tenant:acme/workflow:research/agent:writer", 1_000)
    shared = budgeted(
        authority,
        telemetry,
        replay(*[reply(f"finding {i}", 50, 10) for i in range(4)]),
        workflow="research",
        estimate_amount=100_000,
    )
    researcher = AssistantAgent("researcher", model_client=shared)
    writer = AssistantAgent("writer", model_client=shared)
    return RoundRobinGroupChat(
        [researcher, writer], termination_condition=MaxMessageTermination(6), runtime=runtime
    )


@pytest.mark.parametrize("how", ["plain", "stop_on_budget", "task_result"])
async def test_a_team_denied_mid_run_stops_with_the_typed_error_or_says_why_in_its_result(
    authority: Authority, instrumented_telemetry: TelemetryCapture, how: str
) -> None:
    """``plain``: ``team.run()`` as it is; ``stop_on_budget``: wrapped, raising; ``task_result``: wrapped,
    returning the run so far with the reason."""
    team = writer_team(authority, instrumented_telemetry)
    if how != "plain":
        team = stop_on_budget(team, raise_error=how == "stop_on_budget")

    if how == "task_result":
        result = await team.run(task="Analyze AI safety trends.")
        assert isinstance(result, TaskResult)
        assert is_budget_stop(result)
        assert result.stop_reason is not None and "BUDGET_EXCEEDED" in result.stop_reason
        assert [m.source for m in result.messages] == ["user", "researcher"]
    else:
        with pytest.raises(BudgetExceededError) as caught:
            await team.run(task="Analyze AI safety trends.")
        error = caught.value
        assert RuntimeError in type(error).__mro__  # code written against AutoGen's error keeps catching it
        assert type(error).__name__ == "BudgetExceededError"
        assert error.error_code == "BUDGET_EXCEEDED"
        assert error.request_id
        assert isinstance(error.__cause__, RuntimeError)
        assert str(error.__cause__).startswith("BudgetExceededError: ")
    snap = authority.assert_settled()
    committed = [r for r in snap.reservations if r.status == "COMMITTED"]
    assert [r.subject["agent"] for r in committed] == ["researcher"] and snap.count() == 1
    assert len(instrumented_telemetry.spans("chat gpt-4o")) == 1  # every model call was reserved, only those
    assert snap.scopes["tenant:acme"].spent == cost(50, 10) == charged_metric(instrumented_telemetry)
    denied = [
        s
        for s in instrumented_telemetry.spans("cycles.reservation")
        if (s.attributes or {}).get("cycles.decision") == "DENY"
    ]
    assert [(s.attributes or {})["cycles.subject.agent"] for s in denied] == ["writer"]
    assert (denied[0].attributes or {})["cycles.reason"] == "BUDGET_EXCEEDED"
    assert "cycles.denied" in [e.name for e in denied[0].events]


async def test_opting_out_leaves_autogens_runtime_error_and_stop_on_budget_still_types_it(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    try:
        assert typed_team_errors(False) is False
        budgeted(authority, instrumented_telemetry, replay("x"))  # a new client does not install it again

        with pytest.raises(RuntimeError, match=r"^BudgetExceededError: ") as caught:
            await writer_team(authority, instrumented_telemetry).run(task="Analyze AI safety trends.")
        assert not isinstance(caught.value, BudgetExceededError)

        with pytest.raises(BudgetExceededError):
            await stop_on_budget(writer_team(authority, instrumented_telemetry)).run(
                task="Analyze AI safety trends."
            )
    finally:
        assert typed_team_errors(True) is True


async def test_other_errors_of_a_team_are_untouched(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    inner = replay(reply("finding", 50, 10))

    async def broken(*args: object, **kwargs: object) -> CreateResult:
        raise ConnectionResetError("the model endpoint hung up")

    inner.create = broken  # type: ignore[method-assign]
    shared = budgeted(authority, instrumented_telemetry, inner, estimate_amount=100_000)
    team = RoundRobinGroupChat([AssistantAgent("researcher", model_client=shared)], max_turns=1)

    with pytest.raises(RuntimeError, match=r"^ConnectionResetError: the model endpoint hung up") as caught:
        await team.run(task="Analyze AI safety trends.")

    assert type(caught.value) is RuntimeError
    assert authority.assert_settled().count(status="RELEASED") == 1


async def test_an_authority_outage_raises_typed_and_is_no_budget_stop(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    authority.server.faults.fail("reserve", 503, times=10)  # runcycles retries a 5xx reserve
    team = stop_on_budget(writer_team(authority, instrumented_telemetry), raise_error=False)

    with pytest.raises(CyclesProtocolError) as caught:
        await team.run(task="Analyze AI safety trends.")

    assert RuntimeError in type(caught.value).__mro__
    assert caught.value.status == 503
    assert not isinstance(caught.value, BudgetExceededError)
    reservation = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert "cycles.decision" not in reservation
    assert reservation["error.type"] == "CyclesProtocolError"


async def test_a_team_on_an_app_runtime_is_stopped_too(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    runtime = SingleThreadedAgentRuntime()
    runtime.start()  # started before the run: its tasks never saw the run's context
    team = writer_team(authority, instrumented_telemetry, runtime=runtime)

    with pytest.raises(BudgetExceededError):
        await team.run(task="Analyze AI safety trends.")
    await runtime.stop()


async def test_the_selectors_calls_are_budgeted_under_their_own_agent(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    authority.server.set_budget("tenant:acme/agent:selector", 10 * USD)
    shared = budgeted(
        authority,
        instrumented_telemetry,
        replay(
            reply("writer", 40, 1), reply("A draft.", 30, 5), reply("writer", 45, 1), reply("Done.", 35, 3)
        ),
        estimate_amount=100_000,
    )
    researcher = AssistantAgent("researcher", model_client=shared, description="Finds facts.")
    writer = AssistantAgent("writer", model_client=shared, description="Writes.")
    team = SelectorGroupChat(
        [researcher, writer],
        model_client=shared.with_agent("selector"),
        termination_condition=MaxMessageTermination(3),
        allow_repeated_speaker=True,
    )

    await team.run(task="Write a note.")

    snap = authority.assert_settled()
    by_agent = [(r.subject["agent"], r.charged) for r in snap.reservations]
    assert by_agent == [
        ("selector", cost(40, 1)),
        ("writer", cost(30, 5)),
        ("selector", cost(45, 1)),
        ("writer", cost(35, 3)),
    ]
    assert snap.scopes["tenant:acme/agent:selector"].spent == cost(40, 1) + cost(45, 1)


def denied_selector(authority: Authority, telemetry: TelemetryCapture) -> Team:
    authority.server.set_budget("tenant:acme/agent:selector", 10)
    shared = budgeted(authority, telemetry, replay(reply("writer", 40, 1)), estimate_amount=100_000)
    return SelectorGroupChat(
        [AssistantAgent("researcher", model_client=shared), AssistantAgent("writer", model_client=shared)],
        model_client=shared.with_agent("selector"),
        termination_condition=MaxMessageTermination(3),
    )


def denied_swarm(authority: Authority, telemetry: TelemetryCapture) -> Team:
    authority.server.set_budget("tenant:acme/agent:approver", 10)
    inner = replay(reply("Looks fine.", 20, 3))
    approver, reviewer = (
        AssistantAgent(name, model_client=budgeted(authority, telemetry, inner, estimate_amount=100_000))
        for name in ("approver", "reviewer")
    )
    return Swarm([approver, reviewer], termination_condition=MaxMessageTermination(3))


def denied_orchestrator(authority: Authority, telemetry: TelemetryCapture) -> Team:
    authority.server.set_budget("tenant:acme/agent:orchestrator", 10)
    shared = budgeted(authority, telemetry, replay(reply("facts", 20, 3)), estimate_amount=100_000)
    return MagenticOneGroupChat(
        [AssistantAgent("researcher", model_client=shared)],
        model_client=shared.with_agent("orchestrator"),
        max_turns=2,
    )


# Each team's first model call is denied: the agent it is made for.
DENIED_FIRST = {
    "selector": (denied_selector, "selector"),
    "swarm": (denied_swarm, "approver"),
    "magentic-one": (denied_orchestrator, "orchestrator"),  # its own error reaches run() unwrapped
}


@pytest.mark.parametrize("kind", list(DENIED_FIRST))
async def test_every_kind_of_team_stops_with_the_typed_error(
    authority: Authority, instrumented_telemetry: TelemetryCapture, kind: str
) -> None:
    build, denied_agent = DENIED_FIRST[kind]
    team = build(authority, instrumented_telemetry)

    with pytest.raises(BudgetExceededError) as caught:
        await team.run(task="Review this budget proposal.")

    assert caught.value.error_code == "BUDGET_EXCEEDED"
    assert authority.assert_settled().reservations == []
    denied = [
        (s.attributes or {}).get("cycles.subject.agent")
        for s in instrumented_telemetry.spans("cycles.reservation")
        if (s.attributes or {}).get("cycles.decision") == "DENY"
    ]
    assert denied == [denied_agent]
