"""The guide's five patterns, and each defect of its naive client, against the local authority."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat, Swarm
from autogen_core import FunctionCall, SingleThreadedAgentRuntime
from autogen_core.models import UserMessage
from autogen_core.tools import FunctionTool
from budgeted_support import (
    USD,
    Authority,
    assert_governed,
    authority,
    budgeted,
    cancel_inside,
    cost,
    global_telemetry,
    instrumented,
    replay,
    reply,
    reservation_nodes,
    stall,
)
from runcycles import BudgetExceededError, cycles

from cycles_otel.autogen import stop_on_budget
from cycles_otel.testing.telemetry import SpanNode, TelemetryCapture

__all__ = ["authority", "global_telemetry", "instrumented"]


def invocations(telemetry: TelemetryCapture, agent: str) -> list[SpanNode]:
    """Every ``invoke_agent <agent>`` node in the captured traces."""
    found: list[SpanNode] = []

    def walk(nodes: Sequence[SpanNode]) -> None:
        for node in nodes:
            if node.name == f"invoke_agent {agent}":
                found.append(node)
            walk(node.children)

    walk(telemetry.trees())
    return found


def governed_calls(node: SpanNode) -> list[SpanNode]:
    calls = [child for child in node.children if child.name == "cycles.reservation"]
    for call in calls:
        assert_governed(call)
    return calls


def assert_cost_points(telemetry: TelemetryCapture, agent: str, usages: Sequence[tuple[int, int]]) -> None:
    labels = {"gen_ai__request__model": "gpt-4o"}
    assert telemetry.value("cycles.client.cost.usd", gen_ai__agent__name=agent, **labels) == pytest.approx(
        sum(cost(i, o) for i, o in usages) / USD
    )


def tool_call(name: str, arguments: str, call_id: str = "call_1") -> object:
    return reply(
        "",
        60,
        12,
        finish_reason="function_calls",
        content=[FunctionCall(id=call_id, name=name, arguments=arguments)],
    )


# --- pattern 1: single agent ------------------------------------------------------------------
async def test_single_agent(authority: Authority, global_telemetry: TelemetryCapture) -> None:
    model = budgeted(
        authority,
        global_telemetry,
        replay(reply("Budget governance caps spend.", 90, 20)),
        agent="support_bot",
    )
    agent = AssistantAgent("support_bot", model_client=model)

    result = await agent.run(task="Explain budget governance for AI agents.")

    assert result.messages[-1].content == "Budget governance caps spend."
    (invocation,) = invocations(global_telemetry, "support_bot")
    assert len(governed_calls(invocation)) == 1
    assert_cost_points(global_telemetry, "support_bot", [(90, 20)])
    assert authority.assert_settled().scopes["tenant:acme"].spent == cost(90, 20)


# --- pattern 2: agent with a tool -------------------------------------------------------------
async def test_agent_with_tools_reserves_every_model_call_of_the_tool_loop(
    authority: Authority, global_telemetry: TelemetryCapture
) -> None:
    async def get_weather(location: str) -> str:
        """Get current weather for a location."""
        return f"72°F and sunny in {location}"

    model = budgeted(
        authority,
        global_telemetry,
        replay(
            tool_call("get_weather", '{"location": "NYC"}'),
            reply("It is 72°F and sunny.", 110, 9),
            tools=True,
        ),
        agent="weather_agent",
    )
    agent = AssistantAgent(
        "weather_agent",
        model_client=model,
        tools=[FunctionTool(get_weather, description="Get current weather")],
        reflect_on_tool_use=True,
    )

    result = await agent.run(task="What's the weather in NYC?")

    assert result.messages[-1].content == "It is 72°F and sunny."
    (invocation,) = invocations(global_telemetry, "weather_agent")
    assert [c.name for c in invocation.children if c.name != "create_agent weather_agent"] == [
        "cycles.reservation",
        "execute_tool get_weather",
        "cycles.reservation",
    ]
    assert len(governed_calls(invocation)) == 2
    snap = authority.assert_settled()
    assert [r.charged for r in snap.reservations] == [cost(60, 12), cost(110, 9)]
    assert_cost_points(global_telemetry, "weather_agent", [(60, 12), (110, 9)])


# --- pattern 3: per-agent budgets in a team ----------------------------------------------------
async def test_per_agent_budgets_in_a_round_robin_team(
    authority: Authority, global_telemetry: TelemetryCapture
) -> None:
    for agent in ("researcher", "writer"):
        authority.server.set_budget(f"tenant:acme/workflow:research-pipeline/agent:{agent}", USD)
    inner = replay(reply("Findings.", 70, 30), reply("Report.", 95, 25))
    researcher_model = budgeted(
        authority,
        global_telemetry,
        inner,
        workflow="research-pipeline",
        agent="researcher",
        estimate_amount=3_000_000,
    )
    writer_model = budgeted(
        authority,
        global_telemetry,
        inner,
        workflow="research-pipeline",
        agent="writer",
        estimate_amount=2_000_000,
    )
    team = stop_on_budget(
        RoundRobinGroupChat(
            [
                AssistantAgent("researcher", model_client=researcher_model),
                AssistantAgent("writer", model_client=writer_model),
            ],
            termination_condition=MaxMessageTermination(3),
        )
    )

    await team.run(task="Analyze AI safety trends for Q4.")

    for agent, usage, estimate in (("researcher", (70, 30), 3_000_000), ("writer", (95, 25), 2_000_000)):
        (invocation,) = invocations(global_telemetry, agent)
        (call,) = governed_calls(invocation)
        assert (call.span.attributes or {})["cycles.estimate.amount"] == estimate
        assert_cost_points(global_telemetry, agent, [usage])
    snap = authority.assert_settled()
    assert snap.scopes["tenant:acme/workflow:research-pipeline/agent:researcher"].spent == cost(70, 30)
    assert snap.scopes["tenant:acme/workflow:research-pipeline/agent:writer"].spent == cost(95, 25)


# --- pattern 4: a swarm with handoffs ----------------------------------------------------------
async def test_a_swarm_with_handoffs(authority: Authority, global_telemetry: TelemetryCapture) -> None:
    inner = replay(tool_call("transfer_to_approver", "{}"), reply("Approved.", 80, 3), tools=True)
    reviewer = AssistantAgent(
        "reviewer",
        model_client=budgeted(authority, global_telemetry, inner, agent="reviewer"),
        handoffs=["approver"],
    )
    approver = AssistantAgent(
        "approver",
        model_client=budgeted(authority, global_telemetry, inner, agent="approver"),
        handoffs=["reviewer"],
    )
    team = stop_on_budget(Swarm([reviewer, approver], termination_condition=MaxMessageTermination(3)))

    result = await team.run(task="Review this budget proposal.")

    assert [m.source for m in result.messages if m.__class__.__name__ != "ToolCallRequestEvent"][
        -1
    ] == "approver"
    for agent in ("reviewer", "approver"):
        (invocation,) = invocations(global_telemetry, agent)
        assert len(governed_calls(invocation)) == 1
    snap = authority.assert_settled()
    assert [(r.subject["agent"], r.charged) for r in snap.reservations] == [
        ("reviewer", cost(60, 12)),
        ("approver", cost(80, 3)),
    ]


# --- pattern 5: @cycles around the team plus per-call wrappers -----------------------------------
async def test_the_cycles_decorator_around_a_team_with_per_call_wrappers(
    authority: Authority, global_telemetry: TelemetryCapture
) -> None:
    model = budgeted(authority, global_telemetry, replay(reply("Draft.", 40, 10), reply("Final.", 50, 10)))
    team = stop_on_budget(
        RoundRobinGroupChat(
            [AssistantAgent("researcher", model_client=model), AssistantAgent("writer", model_client=model)],
            termination_condition=MaxMessageTermination(3),
        )
    )
    pipeline_client = authority.client()

    @cycles(
        estimate=10_000_000,
        action_kind="llm.completion",
        action_name="research-pipeline",
        client=pipeline_client,
    )
    async def run_research_pipeline(topic: str) -> str:
        result = await team.run(task=f"Research and write a report on: {topic}")
        return str(result.messages[-1].content)

    report = await run_research_pipeline("quantum computing")

    assert report == "Final."
    snap = authority.assert_settled()
    by_action = {
        r.action["name"]: r.charged for r in snap.reservations if r.action["name"] == "research-pipeline"
    }
    assert by_action == {"research-pipeline": 10_000_000}
    per_call = [
        (r.subject.get("agent"), r.charged) for r in snap.reservations if r.action["name"] == "gpt-4o"
    ]
    assert per_call == [("researcher", cost(40, 10)), ("writer", cost(50, 10))]
    assert snap.scopes["tenant:acme"].spent == 10_000_000 + cost(40, 10) + cost(50, 10)
    for agent in ("researcher", "writer"):
        (invocation,) = invocations(global_telemetry, agent)
        assert len(governed_calls(invocation)) == 1


# --- telemetry setups ----------------------------------------------------------------------------
async def test_with_only_a_runtime_provider_the_reservation_joins_the_agents_trace(
    authority: Authority, instrumented: TelemetryCapture
) -> None:
    runtime = SingleThreadedAgentRuntime(tracer_provider=instrumented.tracer_provider)
    model = budgeted(authority, instrumented, replay(reply("a", 5, 5), reply("b", 5, 5)))
    team = RoundRobinGroupChat(
        [AssistantAgent("alice", model_client=model), AssistantAgent("bob", model_client=model)],
        termination_condition=MaxMessageTermination(3),
        runtime=runtime,
    )
    runtime.start()
    await team.run(task="go")
    await runtime.stop()

    calls = reservation_nodes(instrumented)
    assert len(calls) == 2
    by_id = {s.context.span_id: s for s in instrumented.spans()}  # type: ignore[union-attr]
    for call in calls:
        assert_governed(call)
        parent = by_id[call.span.parent.span_id]  # type: ignore[union-attr]
        agent = (call.span.attributes or {})["gen_ai.agent.name"]
        assert parent.name.startswith(f"autogen process {agent}_"), parent.name
        assert parent.context.trace_id == call.span.context.trace_id  # type: ignore[union-attr]


# --- the guide's defects ---------------------------------------------------------------------------
HELLO = [UserMessage(content="hi", source="user")]


async def test_defect_blocking_client_the_loop_keeps_ticking(
    authority: Authority, instrumented: TelemetryCapture
) -> None:
    authority.server.faults.delay("reserve", 0.15)
    authority.server.faults.delay("commit", 0.15)
    model = budgeted(authority, instrumented, replay(reply("ok", 1, 1), reply("ok", 1, 1)))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.gather(model.create(HELLO), model.create(HELLO))
    task.cancel()

    assert ticks >= 10  # the naive client would freeze the loop for every round trip


async def test_defect_streams_are_governed(authority: Authority, instrumented: TelemetryCapture) -> None:
    model = budgeted(authority, instrumented, replay(reply("streamed", 12, 3)))

    async for _ in model.create_stream(HELLO):
        pass

    assert [(r.status, r.charged) for r in authority.assert_settled().reservations] == [
        ("COMMITTED", cost(12, 3))
    ]


async def test_defect_cancellation_releases(authority: Authority, instrumented: TelemetryCapture) -> None:
    inner = replay()
    entered = stall(inner)

    await cancel_inside(budgeted(authority, instrumented, inner).create(HELLO), entered)

    assert [r.status for r in authority.assert_settled().reservations] == ["RELEASED"]


async def test_defect_typed_error_through_a_team(
    authority: Authority, instrumented: TelemetryCapture
) -> None:
    authority.server.set_budget("tenant:acme/agent:writer", 1)
    writer = AssistantAgent(
        "writer", model_client=budgeted(authority, instrumented, replay(), agent="writer")
    )
    team = stop_on_budget(RoundRobinGroupChat([writer], termination_condition=MaxMessageTermination(3)))

    try:
        await team.run(task="Analyze AI safety trends for Q4.")
    except BudgetExceededError as exc:  # exactly as the guide writes it
        stopped = exc
    assert stopped.error_code == "BUDGET_EXCEEDED"
