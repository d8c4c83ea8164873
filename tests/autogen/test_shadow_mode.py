"""Shadow mode (``mode="observe"``): the authority is asked and its decision recorded; nothing is held."""

from __future__ import annotations

import pytest
from autogen_core import CancellationToken
from autogen_core.models import UserMessage
from autogen_core.tools import FunctionTool

from cycles_otel.autogen import BudgetedTool
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.budgeted import USD, Authority, budgeted, cost, replay, reply

HELLO = [UserMessage(content="What is budget authority?", source="user")]


def decisions(telemetry: TelemetryCapture, decision: str) -> float:
    return telemetry.value("cycles.client.decisions", cycles__decision=decision)


async def test_a_call_that_would_be_denied_runs_and_says_what_the_authority_would_have_done(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    authority.server.set_budget("tenant:acme/agent:writer", 1_000)
    client = budgeted(
        authority, instrumented_telemetry, replay(reply("Budgets.", 120, 30)), agent="writer", mode="observe"
    )

    result = await client.create(HELLO)

    assert result.content == "Budgets."
    snap = authority.ledger()
    assert snap.reservations == [] and snap.events == []
    assert snap.scopes["tenant:acme/agent:writer"].spent == 0
    (root,) = instrumented_telemetry.trees()
    assert root.names() == ["cycles.decide", "chat gpt-4o"]
    attrs = root.span.attributes or {}
    assert attrs["cycles.mode"] == "observe"
    assert attrs["cycles.decision"] == "DENY"
    assert attrs["cycles.reason"] == "BUDGET_EXCEEDED"
    assert attrs["cycles.outcome"] == "observed"
    assert decisions(instrumented_telemetry, "DENY") == 1
    assert instrumented_telemetry.points("cycles.client.reservations") == []
    assert instrumented_telemetry.value(
        "cycles.client.cost.usd", gen_ai__agent__name="writer"
    ) == pytest.approx(cost(120, 30) / USD)


async def test_an_allowed_observed_call_holds_nothing(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(authority, instrumented_telemetry, replay(reply("ok", 10, 2)), mode="observe")

    await client.create(HELLO)

    assert authority.ledger().reservations == []
    assert (instrumented_telemetry.span("cycles.reservation").attributes or {})["cycles.decision"] == "ALLOW"
    assert decisions(instrumented_telemetry, "ALLOW") == 1
    assert decisions(instrumented_telemetry, "DENY") == 0


async def test_an_unreachable_authority_never_stops_an_observed_call(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    authority.server.faults.fail("decide", 503, times=10)
    client = budgeted(authority, instrumented_telemetry, replay(reply("ok", 10, 2)), mode="observe")

    result = await client.create(HELLO)

    assert result.content == "ok"
    span = instrumented_telemetry.span("cycles.reservation")
    assert [e.name for e in span.events] == ["cycles.authority_unavailable"]
    assert "cycles.decision" not in (span.attributes or {})


async def test_an_observed_tool_run_runs_when_it_would_be_denied(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    authority.server.set_budget("tenant:acme/agent:librarian", 10)

    async def lookup(term: str) -> str:
        """Look a term up."""
        return f"{term}: found"

    tool = BudgetedTool(
        FunctionTool(lookup, description="Look a term up"),
        authority.client(),
        estimate_amount=5_000,
        agent="librarian",
        mode="observe",
        tracer_provider=instrumented_telemetry.tracer_provider,
        meter_provider=instrumented_telemetry.meter_provider,
    )

    assert await tool.run_json({"term": "caps"}, CancellationToken()) == "caps: found"

    assert authority.ledger().reservations == []
    attrs = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert (attrs["cycles.mode"], attrs["cycles.decision"], attrs["gen_ai.tool.name"]) == (
        "observe",
        "DENY",
        "lookup",
    )
    assert (
        instrumented_telemetry.value(
            "cycles.client.decisions", cycles__decision="DENY", cycles__action__kind="tool.call"
        )
        == 1
    )
