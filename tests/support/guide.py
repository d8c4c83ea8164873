"""Runs the guide's programs (``tests/guide/programs``) against the local authority and OpenAI endpoint.

A program is the guide's code as it prints it: configured only through the environment it names
(``CYCLES_BASE_URL``, ``CYCLES_API_KEY``, ``CYCLES_TENANT``, ``OPENAI_API_KEY``, plus the OpenAI
SDK's ``OPENAI_BASE_URL``), with its telemetry going to the global OpenTelemetry providers, as an
application's would. Its top-level ``await`` (the guide's snippets read like a notebook) is
compiled with ``PyCF_ALLOW_TOP_LEVEL_AWAIT`` and run with ``asyncio.run``, so tests are plain
functions: the programs that call ``asyncio.run`` themselves must not find a loop running.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import runcycles.decorator  # type: ignore[import-untyped]
from opentelemetry import metrics, trace

from cycles_otel.testing.authority import LedgerSnapshot, Reservation
from cycles_otel.testing.fake_openai import FakeOpenAI
from cycles_otel.testing.telemetry import SpanNode, TelemetryCapture
from tests.support.budgeted import USD, Authority, assert_governed, cost, reservation_nodes
from tests.support.otel_globals import reset_global_providers
from tests.support.paths import TESTS
from tests.support.protocol import uninstrument_runcycles

SECTIONS = TESTS / "guide" / "programs"
# Each program: the guide's sections it is made of, in order (one file each in ``SECTIONS``).
PROGRAMS: dict[str, tuple[str, ...]] = {
    "quick_start": ("quick_start",),
    "single_agent": ("single_agent_client", "support_bot_model", "single_agent"),
    "direct_calls": ("single_agent_client", "support_bot_model", "direct_calls"),
    "with_tools": ("single_agent_client", "support_bot_model", "with_tools"),
    "team_per_agent": ("single_agent_client", "per_agent_team", "per_agent_team_run"),
    "team_with_decorator": ("single_agent_client", "per_agent_team", "pipeline_decorator"),
    "swarm": ("single_agent_client", "swarm"),
}
OPENAI_KEY = "sk-guide-local-endpoint"
GUIDE_ESTIMATE = 2_000_000  # what the guide's CyclesBudgetClient reserves when given no estimate_amount
UNIT = "USD_MICROCENTS"
TENANT_SCOPE = "tenant:acme"
MODEL_ACTION = {"kind": "llm.completion", "name": "gpt-4o"}
# The guide's own GPT-4o prices (PRICE_PER_INPUT_TOKEN / PRICE_PER_OUTPUT_TOKEN), USD_MICROCENTS per token.
GUIDE_INPUT_PRICE, GUIDE_OUTPUT_PRICE = 250, 1_000

Edit = tuple[str, str]


def program_source(name: str, edits: Sequence[Edit] = ()) -> str:
    """The program's text, its sections joined, each ``(old, new)`` edit applied where ``old`` occurs once."""
    source = "\n\n".join((SECTIONS / f"{section}.py").read_text() for section in PROGRAMS[name])
    for old, new in edits:
        found = source.count(old)
        assert found == 1, f"edit {old!r} -> {new!r}: {name} has it {found} times, not once"
        source = source.replace(old, new)
    return source


def run_program(name: str, *edits: Edit) -> dict[str, Any]:
    """Run a guide program as a script; its globals afterwards (``result``, ``team`` ...)."""
    code = compile(
        program_source(name, edits),
        f"<guide program {name}: {' + '.join(PROGRAMS[name])}>",
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
    )
    namespace: dict[str, Any] = {"__name__": "__main__"}
    body = eval(code, namespace)  # a coroutine when the program awaits at top level, else already run
    if inspect.iscoroutine(body):
        asyncio.run(body)
    return namespace


@dataclass
class Guide:
    """What a guide program talks to: the authority, the OpenAI endpoint, and the global telemetry."""

    authority: Authority
    openai: FakeOpenAI
    telemetry: TelemetryCapture

    def run(self, name: str, *edits: Edit) -> dict[str, Any]:
        return run_program(name, *edits)

    def usages(self) -> list[tuple[int, int]]:
        """(prompt, completion) tokens of every chat completion the endpoint answered, in order."""
        return [
            (r.usage["prompt_tokens"], r.usage["completion_tokens"]) for r in self.openai.requests if r.usage
        ]

    def settled(self) -> LedgerSnapshot:
        """The ledger, after checking nothing is ACTIVE and every scope's spend is its charges."""
        return self.authority.assert_settled()


@contextmanager
def guide_environment(authority: Authority, monkeypatch: pytest.MonkeyPatch) -> Iterator[Guide]:
    """The guide's environment pointed at local fakes, global providers capturing, runcycles untouched.

    runcycles starts uninstrumented: the first ``BudgetedChatCompletionClient`` instruments it
    into the global providers, exactly as in a guide user's process.
    """
    monkeypatch.setattr(runcycles.decorator, "_default_client", None)  # set_default_client is global
    capture = TelemetryCapture()
    uninstrument_runcycles()
    reset_global_providers()
    trace.set_tracer_provider(capture.tracer_provider)
    metrics.set_meter_provider(capture.meter_provider)
    with FakeOpenAI(api_key=OPENAI_KEY) as api:
        for name, value in {
            "CYCLES_BASE_URL": authority.server.base_url,
            "CYCLES_API_KEY": authority.key,
            "CYCLES_TENANT": "acme",
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": api.base_url,  # the OpenAI SDK's own variable: the guide's client is unchanged
        }.items():
            monkeypatch.setenv(name, value)
        try:
            yield Guide(authority, api, capture)
        finally:
            uninstrument_runcycles()
            reset_global_providers()
            capture.shutdown()


# --- what the ledger and the telemetry must say ---------------------------------------------------
def model_calls(snapshot: LedgerSnapshot) -> list[Reservation]:
    """The governed model calls on the ledger (the wrapper's action), in reservation order."""
    return [r for r in snapshot.reservations if r.action == MODEL_ACTION]


def reservation_spans(telemetry: TelemetryCapture) -> list[SpanNode]:
    """Every ``cycles.reservation`` node, in start order."""
    return sorted(reservation_nodes(telemetry), key=lambda node: node.span.start_time or 0)


def attributes(node: SpanNode) -> dict[str, Any]:
    return dict(node.span.attributes or {})


def assert_charged_exactly(
    guide: Guide, estimates: Sequence[tuple[str, int, str]], *, actual_source: str = "usage"
) -> LedgerSnapshot:
    """Each model call the endpoint answered was reserved and committed at exactly its priced usage.

    ``estimates``: per call in order, ``(agent, reserved amount, cycles.estimate.source)``. Checks the
    ledger (statuses, reservations, charges, nothing ACTIVE), each call's ``cycles.reservation``
    span (reserve, inference and commit inside; its ids, amounts and sources) and the charged and
    cost metrics against the ledger.
    """
    snapshot = guide.settled()
    usages = guide.usages()
    for prompt, completion in usages:  # what the guide's own client would have committed
        assert cost(prompt, completion) == prompt * GUIDE_INPUT_PRICE + completion * GUIDE_OUTPUT_PRICE
    calls = [r for r in model_calls(snapshot) if r.status == "COMMITTED"]
    assert [(r.subject.get("agent"), r.reserved, r.charged) for r in calls] == [
        (agent, reserved, cost(*usage)) for (agent, reserved, _), usage in zip(estimates, usages, strict=True)
    ]
    spans = {attributes(n).get("cycles.reservation.id"): n for n in reservation_spans(guide.telemetry)}
    for record, (_, _, source) in zip(calls, estimates, strict=True):
        node = spans[record.reservation_id]
        assert_governed(node)
        seen = attributes(node)
        assert (
            seen["cycles.decision"],
            seen["cycles.outcome"],
            seen["cycles.estimate.source"],
            seen["cycles.estimate.amount"],
            seen["cycles.charged.amount"],
            seen["cycles.actual.source"],
            seen["cycles.subject.agent"],
        ) == (
            "ALLOW",
            "committed",
            source,
            record.reserved,
            record.charged,
            actual_source,
            record.subject["agent"],
        )
    assert_metrics_match_ledger(guide, snapshot)
    assert guide.telemetry.value("cycles.client.cost.usd") == pytest.approx(
        sum(r.charged or 0 for r in calls) / USD
    )
    return snapshot


def assert_metrics_match_ledger(guide: Guide, snapshot: LedgerSnapshot) -> None:
    """``cycles.client.charged`` counts exactly what the tenant's budget spent."""
    assert (
        guide.telemetry.value("cycles.client.charged", cycles__unit=UNIT)
        == snapshot.scopes[TENANT_SCOPE].spent
    )


def denied_spans(guide: Guide) -> list[SpanNode]:
    """The ``cycles.reservation`` spans of denied calls: a reserve and nothing else, error recorded."""
    denied = [n for n in reservation_spans(guide.telemetry) if attributes(n).get("cycles.decision") == "DENY"]
    for node in denied:
        assert node.names() == ["cycles.reserve"], node.render()
        assert attributes(node)["error.type"] == "BudgetExceededError"
        assert attributes(node)["cycles.reason"] == "BUDGET_EXCEEDED"
    return denied


def parent_name(guide: Guide, node: SpanNode) -> str:
    """The name of the span ``node`` was started under (AutoGen's ``invoke_agent <name>`` for agents)."""
    parent = node.span.parent
    assert parent is not None, f"{node.name} is a root span"
    (found,) = [
        s for s in guide.telemetry.spans() if s.context is not None and s.context.span_id == parent.span_id
    ]
    return found.name
