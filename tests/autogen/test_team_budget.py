"""Budget denial inside a team: the team stops, the typed error (or the stop reason) says why."""

from __future__ import annotations

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat
from autogen_core import SingleThreadedAgentRuntime
from runcycles import BudgetExceededError, CyclesProtocolError

from cycles_otel.autogen import is_budget_stop, stop_on_budget, typed_team_errors
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.budgeted import USD, Authority, budgeted, cost, replay, reply


def writer_team(authority: Authority, telemetry: TelemetryCapture, **team: object) -> RoundRobinGroupChat:
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
    return RoundRobinGroupChat([researcher, writer], termination_condition=MaxMessageTermination(6), **team)  # type: ignore[arg-type]


async def test_a_plain_team_run_raises_the_typed_error_which_is_also_autogens_runtime_error(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    team = writer_team(authority, instrumented_telemetry)

    with pytest.raises(BudgetExceededError) as caught:
        await team.run(task="Analyze AI safety trends.")

    error = caught.value
    assert isinstance(error, RuntimeError)  # code written against AutoGen's error keeps catching it
    assert type(error).__name__ == "BudgetExceededError"
    assert error.error_code == "BUDGET_EXCEEDED"
    assert error.request_id
    assert isinstance(error.__cause__, RuntimeError)
    assert str(error.__cause__).startswith("BudgetExceededError: ")
    snap = authority.assert_settled()
    committed = [r for r in snap.reservations if r.status == "COMMITTED"]
    assert [r.subject["agent"] for r in committed] == ["researcher"]
    assert snap.scopes["tenant:acme"].spent == cost(50, 10)
    denied = [
        s
        for s in instrumented_telemetry.spans("cycles.reservation")
        if (s.attributes or {}).get("cycles.decision") == "DENY"
    ]
    assert [(s.attributes or {})["cycles.subject.agent"] for s in denied] == ["writer"]


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

    async def broken(*args: object, **kwargs: object) -> None:
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

    assert isinstance(caught.value, RuntimeError)
    assert caught.value.status == 503
    assert not isinstance(caught.value, BudgetExceededError)
    reservation = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert "cycles.decision" not in reservation
    assert reservation["error.type"] == "CyclesProtocolError"


async def test_a_stopped_team_can_return_its_result_with_the_reason(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    team = stop_on_budget(writer_team(authority, instrumented_telemetry), raise_error=False)

    result = await team.run(task="Analyze AI safety trends.")

    assert isinstance(result, TaskResult)
    assert is_budget_stop(result)
    assert result.stop_reason is not None and "BUDGET_EXCEEDED" in result.stop_reason
    assert [m.source for m in result.messages] == ["user", "researcher"]


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


async def test_a_denied_selector_stops_the_team_with_the_typed_error(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    authority.server.set_budget("tenant:acme/agent:selector", 10)
    shared = budgeted(
        authority, instrumented_telemetry, replay(reply("writer", 40, 1)), estimate_amount=100_000
    )
    team = SelectorGroupChat(
        [
            AssistantAgent("researcher", model_client=shared),
            AssistantAgent("writer", model_client=shared),
        ],
        model_client=shared.with_agent("selector"),
        termination_condition=MaxMessageTermination(3),
    )

    with pytest.raises(BudgetExceededError):
        await team.run(task="Write a note.")

    assert authority.assert_settled().reservations == []


async def test_a_swarm_stops_with_the_typed_error(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    from autogen_agentchat.teams import Swarm

    authority.server.set_budget("tenant:acme/agent:approver", 10)
    inner = replay(reply("Looks fine.", 20, 3))
    reviewer = AssistantAgent(
        "reviewer", model_client=budgeted(authority, instrumented_telemetry, inner, estimate_amount=100_000)
    )
    approver = AssistantAgent(
        "approver", model_client=budgeted(authority, instrumented_telemetry, inner, estimate_amount=100_000)
    )
    team = Swarm([approver, reviewer], termination_condition=MaxMessageTermination(3))

    with pytest.raises(BudgetExceededError):
        await team.run(task="Review this budget proposal.")

    assert authority.assert_settled().reservations == []


async def test_a_magentic_one_team_raises_the_typed_error_of_its_orchestrator(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    from autogen_agentchat.teams import MagenticOneGroupChat

    authority.server.set_budget("tenant:acme/agent:orchestrator", 10)
    shared = budgeted(
        authority, instrumented_telemetry, replay(reply("facts", 20, 3)), estimate_amount=100_000
    )
    team = MagenticOneGroupChat(
        [AssistantAgent("researcher", model_client=shared)],
        model_client=shared.with_agent("orchestrator"),
        max_turns=2,
    )

    with pytest.raises(BudgetExceededError):  # the orchestrator's own error reaches run() unwrapped
        await team.run(task="Review this budget proposal.")

    assert authority.assert_settled().reservations == []
