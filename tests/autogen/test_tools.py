"""Governed tool runs: BudgetedTool, budgeted_tools and BudgetedWorkbench with real AutoGen agents."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import ToolCallExecutionEvent
from autogen_agentchat.teams import RoundRobinGroupChat, Swarm
from autogen_core import CancellationToken, FunctionCall
from autogen_core.tools import FunctionTool, StaticWorkbench
from runcycles import BudgetExceededError  # type: ignore[import-untyped]

from cycles_otel.autogen import BudgetedTool, BudgetedWorkbench, budgeted_tools
from cycles_otel.testing.telemetry import SpanNode, TelemetryCapture
from tests.support.budgeted import USD, Authority, budgeted, final_text, replay, reply
from tests.support.reliability import charged_metric

SEARCH_ESTIMATE = 50_000
SEARCH_PRICE = 30_000  # what one search costs, in USD_MICROCENTS


async def search_papers(query: str) -> str:
    """Search the literature."""
    return f"3 papers on {query}"


def search_tool() -> FunctionTool:
    return FunctionTool(search_papers, description="Search the literature", name="search_papers")


def calls_search(call_id: str = "call_1") -> Any:
    return reply(
        "",
        60,
        12,
        finish_reason="function_calls",
        content=[FunctionCall(id=call_id, name="search_papers", arguments='{"query": "budgets"}')],
    )


def governed_tool(authority: Authority, telemetry: TelemetryCapture, **options: Any) -> BudgetedTool:
    return BudgetedTool(
        search_tool(),
        authority.client(),
        estimate_amount=options.pop("estimate_amount", SEARCH_ESTIMATE),
        actual=options.pop("actual", SEARCH_PRICE),
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        **options,
    )


def find(nodes: Sequence[SpanNode], name: str) -> list[SpanNode]:
    found = [node for node in nodes if node.name == name]
    for node in nodes:
        found += find(node.children, name)
    return found


async def test_a_tool_run_is_reserved_on_the_calling_agent_and_committed_inside_execute_tool(
    authority: Authority, global_telemetry: TelemetryCapture
) -> None:
    model = budgeted(
        authority, global_telemetry, replay(calls_search(), reply("Found 3.", 80, 5), tools=True)
    )
    agent = AssistantAgent(
        "researcher",
        model_client=model,
        tools=[governed_tool(authority, global_telemetry)],
        reflect_on_tool_use=True,
    )

    result = await agent.run(task="Find papers on budgets.")

    assert final_text(result) == "Found 3."
    snap = authority.assert_settled()
    tool_runs = [r for r in snap.reservations if r.action["kind"] == "tool.call"]
    (run,) = tool_runs
    assert run.action["name"] == "search_papers"
    assert run.subject == {"tenant": "acme", "agent": "researcher"}
    assert (run.reserved, run.charged, run.status) == (SEARCH_ESTIMATE, SEARCH_PRICE, "COMMITTED")
    (execute,) = find(global_telemetry.trees(), "execute_tool search_papers")
    (reservation,) = execute.children
    assert reservation.name == "cycles.reservation"
    assert reservation.names() == ["cycles.reserve", "cycles.commit"]
    attrs = reservation.span.attributes or {}
    assert attrs["gen_ai.tool.name"] == "search_papers"
    assert attrs["cycles.action.kind"] == "tool.call"
    assert attrs["cycles.outcome"] == "committed"
    assert attrs["cycles.actual.amount"] == SEARCH_PRICE
    assert global_telemetry.value(
        "cycles.client.cost.usd", gen_ai__tool__name="search_papers", gen_ai__agent__name="researcher"
    ) == pytest.approx(SEARCH_PRICE / USD)
    assert charged_metric(global_telemetry) == snap.scopes["tenant:acme"].spent


async def test_a_computed_actual_reads_the_arguments_and_the_result(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    seen: list[tuple[str, dict[str, Any], str]] = []

    def priced(name: str, arguments: dict[str, Any], result: str) -> int:
        seen.append((name, arguments, result))
        return 1_000 * int(result.split()[0])

    tool = governed_tool(authority, instrumented_telemetry, actual=priced, agent="librarian")

    result = await tool.run_json({"query": "caps"}, CancellationToken())

    assert result == "3 papers on caps"
    assert seen == [("search_papers", {"query": "caps"}, "3 papers on caps")]
    (run,) = authority.assert_settled().reservations
    assert run.charged == 3_000
    assert (instrumented_telemetry.span("cycles.reservation").attributes or {})[
        "cycles.actual.source"
    ] == "callable"


async def test_a_failing_or_cancelled_tool_run_is_released(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    started = asyncio.Event()

    async def broken(query: str) -> str:
        """Fails."""
        raise ConnectionError("the search service is down")

    async def slow(query: str) -> str:
        """Never answers in time."""
        started.set()
        await asyncio.sleep(30)
        return "late"

    failing = BudgetedTool(FunctionTool(broken, description="x"), authority.client(), estimate_amount=10)
    hanging = BudgetedTool(FunctionTool(slow, description="x"), authority.client(), estimate_amount=10)

    with pytest.raises(ConnectionError):
        await failing.run_json({"query": "q"}, CancellationToken())
    task = asyncio.ensure_future(hanging.run_json({"query": "q"}, CancellationToken()))
    await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await hanging._governance.governor.settlements.wait()

    snap = authority.assert_settled()
    assert [r.status for r in snap.reservations] == ["RELEASED", "RELEASED"]
    assert snap.scopes["tenant:acme"].spent == 0


async def test_a_denied_run_answers_the_model_which_recovers(
    authority: Authority, global_telemetry: TelemetryCapture
) -> None:
    # global_telemetry: a single agent's name comes from its invoke_agent span
    authority.server.set_budget("tenant:acme/agent:researcher", 40_000)  # the model call fits, a search not
    model = budgeted(
        authority,
        global_telemetry,
        replay(
            calls_search(), reply("I could not search; from memory: budgets cap spend.", 80, 9), tools=True
        ),
        estimate_amount=1_000,
    )
    tool = governed_tool(authority, global_telemetry, on_denied="result")
    agent = AssistantAgent("researcher", model_client=model, tools=[tool], reflect_on_tool_use=True)

    result = await agent.run(task="Find papers on budgets.")

    (execution,) = [m for m in result.messages if isinstance(m, ToolCallExecutionEvent)]
    (answer,) = execution.content
    assert answer.content.startswith("budget denied: BUDGET_EXCEEDED")
    assert final_text(result).startswith("I could not search")
    snap = authority.assert_settled()
    assert [r.action["kind"] for r in snap.reservations] == ["llm.completion", "llm.completion"]


@pytest.mark.parametrize("through", ["workbench", "tools"])
async def test_a_denied_run_stops_the_team_with_the_typed_error(
    authority: Authority, instrumented_telemetry: TelemetryCapture, through: str
) -> None:
    authority.server.set_budget("tenant:acme/agent:researcher", 40_000)
    inner = replay(calls_search(), reply("never", 1, 1), tools=True)
    model = budgeted(authority, instrumented_telemetry, inner, estimate_amount=1_000)
    if through == "workbench":
        workbench = BudgetedWorkbench(
            StaticWorkbench([search_tool()]),
            authority.client(),
            estimate_amount=SEARCH_ESTIMATE,
            tracer_provider=instrumented_telemetry.tracer_provider,
            meter_provider=instrumented_telemetry.meter_provider,
        )
        researcher = AssistantAgent(
            "researcher", model_client=model, workbench=workbench, reflect_on_tool_use=True
        )
    else:
        tool = governed_tool(authority, instrumented_telemetry)
        researcher = AssistantAgent("researcher", model_client=model, tools=[tool], reflect_on_tool_use=True)
    team = RoundRobinGroupChat([researcher], termination_condition=MaxMessageTermination(4))

    with pytest.raises(BudgetExceededError) as caught:
        await team.run(task="Find papers on budgets.")

    assert caught.value.error_code == "BUDGET_EXCEEDED"
    assert RuntimeError in type(caught.value).__mro__  # AutoGen's own error type too
    denied = [
        s
        for s in instrumented_telemetry.spans("cycles.reservation")
        if (s.attributes or {}).get("gen_ai.tool.name")
    ]
    assert [(s.attributes or {})["cycles.decision"] for s in denied] == ["DENY"]
    assert authority.assert_settled().count(status="COMMITTED") == 1  # the model call before the tool


async def test_a_workbench_run_that_errors_is_released_and_one_that_returns_is_committed(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    workbench = BudgetedWorkbench(
        StaticWorkbench([search_tool()]), authority.client(), estimate_amount=5, actual=4
    )

    ok = await workbench.call_tool("search_papers", {"query": "q"})
    missing = await workbench.call_tool("no_such_tool", {})

    assert not ok.is_error and missing.is_error
    snap = authority.assert_settled()
    assert [(r.action["name"], r.status) for r in snap.reservations] == [
        ("search_papers", "COMMITTED"),
        ("no_such_tool", "RELEASED"),
    ]


async def test_wrapped_tools_keep_name_description_schema_and_round_trip(
    authority: Authority, instrumented_telemetry: TelemetryCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = search_tool()
    (tool,) = budgeted_tools(
        [original], authority.client(), estimate_amount=SEARCH_ESTIMATE, actual=SEARCH_PRICE
    )
    assert (tool.name, tool.description, tool.schema) == (
        original.name,
        original.description,
        original.schema,
    )

    monkeypatch.setenv("CYCLES_API_KEY", authority.key)
    dumped = tool.dump_component()
    assert "api_key" not in str(dumped.config)
    loaded = BudgetedTool.load_component(dumped)
    assert (loaded.name, loaded.description, loaded.schema) == (
        original.name,
        original.description,
        original.schema,
    )
    assert (dumped.config["estimate_amount"], dumped.config["actual"]) == (SEARCH_ESTIMATE, SEARCH_PRICE)
    assert await loaded.run_json({"query": "q"}, CancellationToken()) == "3 papers on q"
    workbench = BudgetedWorkbench(StaticWorkbench([original]), authority.client(), estimate_amount=7)
    loaded_bench = BudgetedWorkbench.load_component(workbench.dump_component())
    assert await loaded_bench.list_tools() == await workbench.list_tools()
    assert [r.charged for r in authority.assert_settled().reservations] == [SEARCH_PRICE]  # governed too


async def test_swarm_handoffs_are_not_reserved(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    handoff = reply(
        "",
        30,
        2,
        finish_reason="function_calls",
        content=[FunctionCall(id="h", name="transfer_to_approver", arguments="{}")],
    )
    inner = replay(handoff, reply("Approved.", 40, 3), tools=True)
    reviewer = AssistantAgent(
        "reviewer",
        model_client=budgeted(authority, instrumented_telemetry, inner, estimate_amount=1_000),
        tools=[governed_tool(authority, instrumented_telemetry)],
        handoffs=["approver"],
    )
    approver = AssistantAgent(
        "approver", model_client=budgeted(authority, instrumented_telemetry, inner, estimate_amount=1_000)
    )

    await Swarm([reviewer, approver], termination_condition=MaxMessageTermination(3)).run(task="Review it.")

    kinds = [r.action["kind"] for r in authority.assert_settled().reservations]
    assert kinds == ["llm.completion", "llm.completion"]


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        ({"estimate_amount": -5}, ValueError, "estimate_amount"),
        ({"estimate_amount": "lots"}, TypeError, "estimate_amount"),
        ({"actual": "cheap"}, TypeError, "actual"),
        ({"mode": "sometimes"}, ValueError, "mode"),
        ({"on_denied": "ignore"}, ValueError, "on_denied"),
        ({"settle_in_background": "false"}, TypeError, "settle_in_background"),
    ],
)
def test_bad_tool_input_fails_at_construction_naming_the_field(
    authority: Authority, options: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        BudgetedTool(search_tool(), authority.client(), **{"estimate_amount": 10, **options})
    assert authority.server.requests == []
