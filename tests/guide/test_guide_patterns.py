"""The guide's own programs, one class renamed, on the real OpenAI client, a local endpoint and authority.

Each program is the guide's code as it prints it, joined from its sections in ``tests/guide/programs``
(``PROGRAMS`` in ``tests/support/guide.py`` names them); its
``CyclesBudgetClient`` is ``BudgetedChatCompletionClient`` and the agent names are Python
identifiers (AutoGen 0.7.5 refuses ``"support-bot"``), nothing else. Where a test needs more (an
``AsyncCyclesClient`` for ``@cycles`` on an ``async def``, a streaming member, a reflecting tool
agent), it applies that one edit in the open, and the edit must match the program exactly once.
Charges are checked against the endpoint's deterministic usage priced by ``PriceTable.default()``.
"""

from __future__ import annotations

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import HandoffMessage, TextMessage, ToolCallSummaryMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import SingleThreadedAgentRuntime
from autogen_core.models import CreateResult
from runcycles import BudgetExceededError  # type: ignore[import-untyped]

from cycles_otel.protocol import CyclesInstrumentor
from cycles_otel.testing.fake_openai import ScriptedReply
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.budgeted import USD, Authority, assert_governed, budgeted, replay, reply, reservation_nodes
from tests.support.guide import (
    GUIDE_ESTIMATE,
    MODEL_ACTION,
    TENANT_SCOPE,
    Guide,
    assert_charged_exactly,
    assert_metrics_match_ledger,
    attributes,
    denied_spans,
    model_calls,
    parent_name,
    reservation_spans,
)

pytestmark = pytest.mark.slow

# The one change @cycles on an ``async def`` needs (runcycles raises TypeError for a sync client).
ASYNC_QUICK_START = (
    (
        "from runcycles import CyclesClient, CyclesConfig, cycles, set_default_client",
        "from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig, cycles, set_default_client",
    ),
    ("set_default_client(CyclesClient(", "set_default_client(AsyncCyclesClient("),
)
ASYNC_PIPELINE = (
    (
        "from runcycles import cycles, set_default_client, BudgetExceededError",
        "from runcycles import AsyncCyclesClient, cycles, set_default_client, BudgetExceededError",
    ),
    ("set_default_client(CyclesClient(", "set_default_client(AsyncCyclesClient("),
)
STREAMING_MEMBERS = (
    ("model_client=researcher_model,", "model_client=researcher_model, model_client_stream=True,"),
    ("model_client=writer_model,", "model_client=writer_model, model_client_stream=True,"),
)
# AutoGen 0.7.5's AssistantAgent answers with the tool's result unless it reflects on it: the
# guide's "LLM call -> tool -> LLM call" loop needs this keyword.
REFLECTING = (
    (
        'system_message="Use the weather tool to answer questions.",',
        'system_message="Use the weather tool to answer questions.", reflect_on_tool_use=True,',
    ),
)
RESEARCHER_SCOPE = "tenant:acme/workflow:research-pipeline/agent:researcher"
WRITER_SCOPE = "tenant:acme/workflow:research-pipeline/agent:writer"
TEAM_CALLS = [("researcher", 3_000_000, "fixed"), ("writer", 2_000_000, "fixed")] * 2 + [
    ("researcher", 3_000_000, "fixed")
]  # MaxMessageTermination(max_messages=6): the task, then five turns


def script_team(guide: Guide) -> list[str]:
    """Five scripted turns, the last one being what the guide prints."""
    turns = [f"Turn {n} of the research pipeline." for n in range(1, len(TEAM_CALLS) + 1)]
    guide.openai.script(turns)
    return turns


def no_budget_left(guide: Guide, scope: str = TENANT_SCOPE) -> None:
    guide.authority.server.set_budget(scope, 0)


def budget_for_one_call(guide: Guide, scope: str, estimate: int = GUIDE_ESTIMATE) -> None:
    """Room for one reservation of ``estimate``; once the first call's charge lands, not for another."""
    guide.authority.server.set_budget(scope, estimate + 1)


def assert_nothing_reached_the_model(guide: Guide) -> None:
    assert guide.openai.requests == []
    snapshot = guide.settled()
    assert model_calls(snapshot) == []
    assert_metrics_match_ledger(guide, snapshot)


# --- 60-second quick start -------------------------------------------------------------------------
def test_quick_start_as_printed_raises_type_error_before_reserving(guide: Guide) -> None:
    with pytest.raises(TypeError, match="Async function requires an AsyncCyclesClient"):
        guide.run("quick_start")

    assert guide.openai.requests == []
    assert guide.settled().reservations == []


def test_quick_start_with_an_async_cycles_client_guards_the_run(
    guide: Guide, capsys: pytest.CaptureFixture[str]
) -> None:
    guide.openai.script(["Budget authority decides who may spend."])
    CyclesInstrumentor().instrument()  # the quick start makes no wrapper: instrumented as an app would be

    guide.run("quick_start", *ASYNC_QUICK_START)

    assert capsys.readouterr().out == "Budget authority decides who may spend.\n"
    assert len(guide.openai.requests) == 1  # the model call itself is not governed: the run is
    snapshot = guide.settled()
    (run,) = snapshot.reservations
    assert (run.action, run.status, run.reserved, run.charged) == (
        MODEL_ACTION,
        "COMMITTED",
        2_000_000,
        2_000_000,  # @cycles with no actual= commits its estimate
    )
    protocol = [
        (s.name, (s.attributes or {}).get("cycles.reservation.id"))
        for s in guide.telemetry.spans()
        if s.name.startswith("cycles.")
    ]
    assert protocol == [("cycles.reserve", run.reservation_id), ("cycles.commit", run.reservation_id)]
    assert_metrics_match_ledger(guide, snapshot)


def test_quick_start_with_no_budget_left_stops_before_the_agent_runs(guide: Guide) -> None:
    no_budget_left(guide)

    with pytest.raises(BudgetExceededError):
        guide.run("quick_start", *ASYNC_QUICK_START)

    assert_nothing_reached_the_model(guide)


# --- create() and create_stream() ------------------------------------------------------------------
def test_direct_create_and_create_stream_are_each_reserved_and_charged_their_usage(guide: Guide) -> None:
    guide.openai.script(["Budget authority decides who may spend.", "Streams are governed too."])

    program = guide.run("direct_calls")

    assert program["result"].content == "Budget authority decides who may spend."
    *chunks, final = program["chunks"]
    assert "".join(chunks) == "Streams are governed too." == final.content
    assert isinstance(final, CreateResult)
    streamed = guide.openai.requests[1].body
    assert (streamed["stream"], streamed["stream_options"]) == (True, {"include_usage": True})
    assert_charged_exactly(guide, [("support-bot", GUIDE_ESTIMATE, "default")] * 2)


def test_direct_stream_is_denied_once_the_first_call_has_spent_the_rest(guide: Guide) -> None:
    budget_for_one_call(guide, TENANT_SCOPE)

    with pytest.raises(BudgetExceededError):
        guide.run("direct_calls")

    assert len(guide.openai.requests) == 1  # the stream never reached the model
    assert_charged_exactly(guide, [("support-bot", GUIDE_ESTIMATE, "default")])
    assert len(denied_spans(guide)) == 1


# --- single agent ----------------------------------------------------------------------------------
def test_single_agent_as_printed(guide: Guide, capsys: pytest.CaptureFixture[str]) -> None:
    guide.openai.script(["Budget governance caps what agents spend."])

    guide.run("single_agent")

    assert capsys.readouterr().out == "Budget governance caps what agents spend.\n"
    assert_charged_exactly(guide, [("support-bot", GUIDE_ESTIMATE, "default")])
    (call,) = reservation_spans(guide.telemetry)
    assert parent_name(guide, call) == "invoke_agent support_bot"  # in AutoGen's own agent span


def test_single_agent_with_no_budget_left_prints_the_guides_message(
    guide: Guide, capsys: pytest.CaptureFixture[str]
) -> None:
    no_budget_left(guide)

    guide.run("single_agent")

    assert capsys.readouterr().out == "Budget exhausted.\n"
    assert_nothing_reached_the_model(guide)
    (denied,) = denied_spans(guide)
    assert attributes(denied)["cycles.estimate.source"] == "default"
    assert guide.telemetry.value("cycles.client.reservations", cycles__decision="DENY") == 1


# --- with tools ------------------------------------------------------------------------------------
def script_weather(guide: Guide) -> None:
    guide.openai.script(
        [
            ScriptedReply(tool_calls=[("get_weather", {"location": "NYC"})]),
            "It is 72°F and sunny in NYC.",
        ]
    )


def test_tools_as_printed_the_agent_answers_with_the_tools_result(guide: Guide) -> None:
    script_weather(guide)

    program = guide.run("with_tools")

    answer = program["result"].messages[-1]
    assert isinstance(answer, ToolCallSummaryMessage)
    assert answer.content == "72°F and sunny in NYC"
    assert [t["function"]["name"] for t in guide.openai.requests[0].body["tools"]] == ["get_weather"]
    assert_charged_exactly(guide, [("support-bot", GUIDE_ESTIMATE, "default")])


def test_tools_the_model_tool_model_loop_reserves_each_model_call(guide: Guide) -> None:
    script_weather(guide)

    program = guide.run("with_tools", *REFLECTING)

    assert program["result"].messages[-1].content == "It is 72°F and sunny in NYC."
    assert_charged_exactly(guide, [("support-bot", GUIDE_ESTIMATE, "default")] * 2)
    (invocation,) = [t for t in guide.telemetry.trees() if t.name == "invoke_agent weather_agent"]
    assert [n for n in invocation.names() if n != "create_agent weather_agent"] == [
        "cycles.reservation",
        "execute_tool get_weather",
        "cycles.reservation",
    ]


def test_tools_the_agent_stops_when_the_call_after_the_tool_is_denied(guide: Guide) -> None:
    script_weather(guide)
    budget_for_one_call(guide, "tenant:acme/agent:support-bot")

    with pytest.raises(BudgetExceededError):
        guide.run("with_tools", *REFLECTING)

    assert len(guide.openai.requests) == 1
    assert guide.telemetry.spans("execute_tool get_weather")  # the tool ran between the two calls
    assert_charged_exactly(guide, [("support-bot", GUIDE_ESTIMATE, "default")])
    assert len(denied_spans(guide)) == 1


# --- per-agent budgets in a round-robin team -------------------------------------------------------
def test_round_robin_team_as_printed_charges_each_member_its_own_scope(
    guide: Guide, capsys: pytest.CaptureFixture[str]
) -> None:
    for scope in (RESEARCHER_SCOPE, WRITER_SCOPE):
        guide.authority.server.set_budget(scope, USD)
    turns = script_team(guide)

    program = guide.run("team_per_agent")

    assert [m.content for m in program["result"].messages[1:]] == turns
    assert capsys.readouterr().out == f"{turns[-1]}\n"
    snapshot = assert_charged_exactly(guide, TEAM_CALLS)
    for scope, agent in ((RESEARCHER_SCOPE, "researcher"), (WRITER_SCOPE, "writer")):
        charges = [r.charged for r in model_calls(snapshot) if r.subject["agent"] == agent]
        assert snapshot.scopes[scope].spent == sum(c or 0 for c in charges)
    for call in reservation_spans(guide.telemetry):
        assert parent_name(guide, call) == f"invoke_agent {attributes(call)['cycles.subject.agent']}"


def test_round_robin_team_with_streaming_members_governs_every_stream(guide: Guide) -> None:
    turns = script_team(guide)

    program = guide.run("team_per_agent", *STREAMING_MEMBERS)

    messages = [m for m in program["result"].messages if isinstance(m, TextMessage)]
    assert [(m.source, m.content) for m in messages[1:]] == [
        (agent, turn) for (agent, _, _), turn in zip(TEAM_CALLS, turns, strict=True)
    ]
    for request in guide.openai.requests:
        assert (request.body["stream"], request.body["stream_options"]) == (True, {"include_usage": True})
    assert_charged_exactly(guide, TEAM_CALLS)


def test_round_robin_team_with_no_budget_left_prints_the_guides_message(
    guide: Guide, capsys: pytest.CaptureFixture[str]
) -> None:
    no_budget_left(guide)

    guide.run("team_per_agent")

    assert capsys.readouterr().out == "Team stopped — budget exhausted.\n"
    assert_nothing_reached_the_model(guide)
    assert [attributes(s)["cycles.subject.agent"] for s in denied_spans(guide)] == ["researcher"]


def test_round_robin_team_stops_mid_run_when_the_writer_is_out_of_budget(
    guide: Guide, capsys: pytest.CaptureFixture[str]
) -> None:
    guide.authority.server.set_budget(WRITER_SCOPE, 1_000_000)  # below its 2,000,000 estimate

    guide.run("team_per_agent")

    assert capsys.readouterr().out == "Team stopped — budget exhausted.\n"
    assert_charged_exactly(guide, TEAM_CALLS[:1])
    assert [attributes(s)["cycles.subject.agent"] for s in denied_spans(guide)] == ["writer"]


# --- @cycles around the team, per-call wrappers inside ---------------------------------------------
def test_decorator_as_printed_raises_type_error_before_the_team_runs(guide: Guide) -> None:
    with pytest.raises(TypeError, match="Async function requires an AsyncCyclesClient"):
        guide.run("team_with_decorator")

    assert guide.openai.requests == []
    assert guide.settled().reservations == []


def test_decorator_reserves_the_pipeline_around_the_per_call_reservations(
    guide: Guide, capsys: pytest.CaptureFixture[str]
) -> None:
    turns = script_team(guide)

    guide.run("team_with_decorator", *ASYNC_PIPELINE)

    assert capsys.readouterr().out == f"{turns[-1]}\n"  # the report: the team's last message
    snapshot = assert_charged_exactly(guide, TEAM_CALLS)
    (run,) = [r for r in snapshot.reservations if r.action["name"] == "research-pipeline"]
    assert (run.status, run.reserved, run.charged) == ("COMMITTED", 10_000_000, 10_000_000)
    calls = sum(r.charged or 0 for r in model_calls(snapshot))
    assert snapshot.scopes[TENANT_SCOPE].spent == 10_000_000 + calls


def test_decorator_is_released_when_a_per_call_budget_runs_out_inside_it(
    guide: Guide, capsys: pytest.CaptureFixture[str]
) -> None:
    guide.authority.server.set_budget(WRITER_SCOPE, 1_000_000)

    guide.run("team_with_decorator", *ASYNC_PIPELINE)

    assert capsys.readouterr().out == "Pipeline budget exhausted.\n"
    snapshot = assert_charged_exactly(guide, TEAM_CALLS[:1])
    (run,) = [r for r in snapshot.reservations if r.action["name"] == "research-pipeline"]
    assert (run.status, run.charged) == ("RELEASED", None)
    assert snapshot.scopes[TENANT_SCOPE].spent == model_calls(snapshot)[0].charged
    assert [attributes(s)["cycles.subject.agent"] for s in denied_spans(guide)] == ["writer"]


def test_decorator_without_budget_for_the_pipeline_stops_before_the_team_runs(
    guide: Guide, capsys: pytest.CaptureFixture[str]
) -> None:
    guide.authority.server.set_budget(TENANT_SCOPE, 5_000_000)  # below the pipeline's 10,000,000

    guide.run("team_with_decorator", *ASYNC_PIPELINE)

    assert capsys.readouterr().out == "Pipeline budget exhausted.\n"
    assert_nothing_reached_the_model(guide)
    assert guide.settled().reservations == []


# --- swarm with handoffs ---------------------------------------------------------------------------
def script_handoff(guide: Guide) -> None:
    guide.openai.script([ScriptedReply(tool_calls=[("transfer_to_approver", {})]), "Approved."])


def test_swarm_as_printed_hands_off_and_charges_each_agent(guide: Guide) -> None:
    script_handoff(guide)

    program = guide.run("swarm")

    messages = program["result"].messages
    (handoff,) = [m for m in messages if isinstance(m, HandoffMessage)]
    assert (handoff.source, handoff.target) == ("reviewer", "approver")
    texts = [(m.source, m.content) for m in messages if isinstance(m, TextMessage)]
    # MaxMessageTermination(max_messages=10): the task, the handoff, then the approver's eight turns
    assert [source for source, _ in texts] == ["user"] + ["approver"] * 8
    assert texts[1][1] == "Approved."
    calls = [("reviewer", GUIDE_ESTIMATE, "default")] + [("approver", GUIDE_ESTIMATE, "default")] * 8
    assert_charged_exactly(guide, calls)


def test_swarm_stops_when_the_approver_is_out_of_budget(guide: Guide) -> None:
    script_handoff(guide)
    no_budget_left(guide, "tenant:acme/agent:approver")

    with pytest.raises(BudgetExceededError) as stopped:
        guide.run("swarm")

    assert isinstance(stopped.value, RuntimeError)  # AutoGen's own error type too
    assert len(guide.openai.requests) == 1
    assert_charged_exactly(guide, [("reviewer", GUIDE_ESTIMATE, "default")])
    assert [attributes(s)["cycles.subject.agent"] for s in denied_spans(guide)] == ["approver"]


# --- beyond the guide: an application that gives only the runtime a tracer provider -----------------
async def test_with_only_a_runtime_provider_the_reservation_joins_the_agents_trace(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    runtime = SingleThreadedAgentRuntime(tracer_provider=instrumented_telemetry.tracer_provider)
    model = budgeted(authority, instrumented_telemetry, replay(reply("a", 5, 5), reply("b", 5, 5)))
    team = RoundRobinGroupChat(
        [AssistantAgent("alice", model_client=model), AssistantAgent("bob", model_client=model)],
        termination_condition=MaxMessageTermination(3),
        runtime=runtime,
    )
    runtime.start()
    await team.run(task="go")
    await runtime.stop()

    calls = reservation_nodes(instrumented_telemetry)
    assert len(calls) == 2
    by_id = {s.context.span_id: s for s in instrumented_telemetry.spans() if s.context is not None}
    for call in calls:
        assert_governed(call)
        assert call.span.parent is not None and call.span.context is not None
        parent = by_id[call.span.parent.span_id]
        agent = str(attributes(call)["gen_ai.agent.name"])
        assert parent.name.startswith(f"autogen process {agent}_"), parent.name
        assert parent.context is not None and parent.context.trace_id == call.span.context.trace_id
