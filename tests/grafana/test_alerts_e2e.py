"""A real AutoGen team spends a budget to zero; a real Prometheus scraping it fires the shipped alert.

The shipped alerts hold for minutes (``for: 1m`` and longer). The Prometheus started here reads
copies of ``grafana/prometheus/rules.yaml`` and ``alerts.yaml`` with every ``for:`` rewritten to
``0s`` (:func:`tests.prometheus_support.zero_hold_copies`); expressions, labels and annotations
are the shipped ones, so an alert fires at the first evaluation that sees its condition.

One workload serves every test: a ``RoundRobinGroupChat`` of two ``AssistantAgent``s calling the
real ``OpenAIChatCompletionClient`` against ``FakeOpenAI`` through one
``BudgetedChatCompletionClient``, governed by a ``LocalCyclesServer``, exported by
``configure_telemetry``'s Prometheus endpoint. Once the team has stopped and the alerts are read,
more happens, so that every series the dashboards and rules read exists: a second team whose
researcher pays for a ``BudgetedTool`` and whose writer runs in shadow mode on its spent budget, a
call the authority fails to answer that runs ungoverned, a call the model refuses, a balance poll
that overflows the cardinality guard and one that the authority refuses.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core.models import UserMessage
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient
from openai import BadRequestError
from prometheus_client.parser import text_string_to_metric_families
from runcycles import AsyncCyclesClient  # type: ignore[import-untyped]

from cycles_otel.app.configure import TelemetryHandle, configure_telemetry
from cycles_otel.app.poller import BalancePoller
from cycles_otel.autogen import BUDGET_STOP_PREFIX, BudgetedChatCompletionClient, BudgetedTool, stop_on_budget
from cycles_otel.pricing import MICROCENTS_PER_USD, ModelPrice, PriceTable
from cycles_otel.protocol import CyclesInstrumentor
from cycles_otel.semconv import LABEL_SCOPE
from cycles_otel.testing.authority import LedgerSnapshot, LocalCyclesServer
from cycles_otel.testing.fake_openai import FakeOpenAI, ScriptedReply, count_completion_tokens
from grafana.dashboards_src.agents import MODEL_COST, TOOL_COST
from tests.support.ci import require_binary
from tests.support.dashboards import DASHBOARDS, expressions
from tests.support.grafana import (
    BUILTIN_SERIES,
    RULE_FILES,
    metric_names,
    recorded_names,
    rules,
    selectors,
    with_grafana_variables,
)
from tests.support.prometheus import Prometheus, zero_hold_copies
from tests.support.waiting import poll, wait_until

pytestmark = pytest.mark.slow

UNIT = "USD_MICROCENTS"
MODEL = "gpt-4o"
REPLY = "The budget pays for one more careful answer."
# Input tokens are free here so that every call costs exactly one reply: the writer's budget, two
# calls' worth, then lands on exactly zero instead of on a remainder smaller than an estimate.
PRICES = PriceTable({MODEL: ModelPrice(input_usd_per_mtok=0, output_usd_per_mtok=10)})
CALL_COST = PRICES.cost_microcents(MODEL, 0, count_completion_tokens(REPLY))
EXHAUSTED = "tenant:acme/agent:writer"
BUDGETS = {
    "tenant:acme": 100 * CALL_COST,
    "tenant:acme/agent:researcher": 10 * CALL_COST,
    EXHAUSTED: 2 * CALL_COST,
}
# The guard admits exactly the team's scopes; the extra scope polled afterwards collapses to "other".
CARDINALITY_LIMIT = len(BUDGETS)
EXTRA_SCOPE = "tenant:acme/agent:auditor"
MAX_MESSAGES = 20  # a bound in case governance fails: the budget must stop the team long before
ALERT = "CyclesBudgetExhausted"
DENIALS_ALERT = "CyclesBudgetExceededDenials"
SHADOW_ALERT = "CyclesShadowDenials"
UNGOVERNED_ALERT = "CyclesUngovernedCalls"
# Nothing failed: a denial is a decision, not an authority error, every call settled, and an
# enforced denial is no shadow-mode one.
SILENT_ALERTS = ("CyclesAuthorityErrors", "CyclesSettlementFailures", SHADOW_ALERT, UNGOVERNED_ALERT)
AFTER_WORKLOAD_SERIES = (
    "cycles_exporter_poll_errors_total",
    "cycles_otel_label_overflow_total",
    "cycles_client_decisions_total",
    "cycles_client_ungoverned_total",
)
SEARCH_TOOL = "search_papers"
SEARCH_PRICE = CALL_COST  # microcents per search
COST = "cycles_client_cost_usd_total"


@dataclass
class Observed:
    """What one workload left behind: the team's result, the ledger, the alerts, the scrape."""

    result: TaskResult
    ledger: LedgerSnapshot  # when the team stopped
    fired: bool  # Prometheus reported ALERT firing after the team's stop
    alerts: list[dict[str, Any]]  # once every rule group evaluated the final state
    second_team: TaskResult  # the researcher with its tool, the writer in shadow mode
    governance_alerts: list[dict[str, Any]]  # shadow-mode denials and ungoverned calls, once firing
    exposition: str  # the app's /metrics after the whole workload
    prometheus_names: set[str]
    recorded_with_data: set[str]
    answers: dict[str, list[dict[str, Any]]]  # PromQL -> its instant vector after the whole workload


async def run_team(
    server: LocalCyclesServer, key: str, api: FakeOpenAI, handle: TelemetryHandle
) -> TaskResult:
    api.script([REPLY] * MAX_MESSAGES)
    async with AsyncCyclesClient(server.config(key)) as cycles:
        model = BudgetedChatCompletionClient(
            OpenAIChatCompletionClient(model=MODEL, base_url=api.base_url, api_key="sk-test"),
            cycles,
            estimate_amount=CALL_COST,
            pricing=PRICES,
            tracer_provider=handle.tracer_provider,
            meter_provider=handle.meter_provider,
        )
        team = RoundRobinGroupChat(
            [AssistantAgent("researcher", model_client=model), AssistantAgent("writer", model_client=model)],
            termination_condition=MaxMessageTermination(MAX_MESSAGES),
        )
        try:
            result: TaskResult = await stop_on_budget(team, raise_error=False).run(
                task="Research budget governance, then write it up."
            )
        finally:
            await model.close()
    return result


async def search_papers(topic: str) -> str:
    """Find recent papers on a topic."""
    return f"Three recent papers on {topic}."


async def govern_past_the_team(
    server: LocalCyclesServer, key: str, api: FakeOpenAI, handle: TelemetryHandle
) -> TaskResult:
    """A tool paid for, a writer in shadow mode on its spent budget, an authority outage, a model error."""
    api.clear()  # the first team's unused replies
    api.script([ScriptedReply(tool_calls=[(SEARCH_TOOL, {"topic": "budgets"})]), REPLY, REPLY])
    tracer_provider, meter_provider = handle.tracer_provider, handle.meter_provider
    async with AsyncCyclesClient(server.config(key)) as cycles:

        def governed(
            mode: Literal["enforce", "observe"] = "enforce",
            on_authority_error: Literal["raise", "allow"] = "raise",
            agent: str | None = None,
        ) -> BudgetedChatCompletionClient:
            return BudgetedChatCompletionClient(
                OpenAIChatCompletionClient(model=MODEL, base_url=api.base_url, api_key="sk-test"),
                cycles,
                agent=agent,
                estimate_amount=CALL_COST,
                pricing=PRICES,
                mode=mode,
                on_authority_error=on_authority_error,
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
            )

        enforced, shadow = governed(), governed(mode="observe")
        # Called outside any agent: it names the agent to charge.
        fail_open = governed(on_authority_error="allow", agent="researcher")
        search = BudgetedTool(
            FunctionTool(search_papers, description="Search recent papers on a topic."),
            cycles,
            estimate_amount=SEARCH_PRICE,
            actual=SEARCH_PRICE,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
        team = RoundRobinGroupChat(
            [
                AssistantAgent("researcher", model_client=enforced, tools=[search]),
                AssistantAgent("writer", model_client=shadow),  # its budget is spent: DENY, yet it runs
            ],
            termination_condition=MaxMessageTermination(3),
        )
        try:
            result: TaskResult = await team.run(task="Search papers on budgets, then write them up.")
            server.faults.fail("reserve", 503, times=100)
            await fail_open.create([UserMessage(content="Summarise the papers.", source="user")])
            server.faults.clear()
            api.faults.fail_next(status=400)
            with pytest.raises(BadRequestError):
                await enforced.create([UserMessage(content="Once more.", source="user")])
        finally:
            for client in (enforced, shadow, fail_open):
                await client.close()
    return result


async def poll_past_the_team(server: LocalCyclesServer, key: str, handle: TelemetryHandle) -> None:
    """A fourth scope the guard cannot admit, and a poll with a key the authority refuses."""
    server.set_budget(EXTRA_SCOPE, CALL_COST)
    async with AsyncCyclesClient(server.config(key)) as client:
        poller = BalancePoller(client, [{"tenant": "acme"}], meter_provider=handle.meter_provider)
        assert await poller.poll_once() == len(BUDGETS) + 1
    async with AsyncCyclesClient(server.config("sk-revoked", tenant="acme")) as stranger:
        refused = BalancePoller(stranger, [{"tenant": "acme"}], meter_provider=handle.meter_provider)
        assert await refused.poll_once() == 0
        assert refused.last_error is not None and refused.last_error.error_type == "401"


def firing(prometheus: Prometheus, *names: str) -> list[dict[str, Any]]:
    return [a for a in prometheus.alerts() if a["labels"]["alertname"] in names and a["state"] == "firing"]


def dashboard_selectors() -> dict[str, set[str]]:
    """Every vector selector with matchers the dashboards query (variables as ``.*``) -> where."""
    found: dict[str, set[str]] = {}
    for file, dashboard in DASHBOARDS.items():
        for where, expr in expressions(dashboard).items():
            for selector in selectors(with_grafana_variables(expr)):
                found.setdefault(selector, set()).add(f"{file} {where}")
    return found


def cost_queries() -> tuple[str, str]:
    """The Agents & models dashboard's selectors of LLM spend and of tool spend, every variable All."""
    return with_grafana_variables(MODEL_COST), with_grafana_variables(TOOL_COST)


def with_data(prometheus: Prometheus, names: frozenset[str]) -> set[str]:
    """Those of ``names`` with at least one series in Prometheus now."""
    return {name for name in names if prometheus.api("query", query=name)["result"]}


def evaluated_since(prometheus: Prometheus, moment: float) -> bool | None:
    """Whether every rule group has been evaluated after ``moment`` (Unix seconds)."""
    evaluations = prometheus.last_evaluations()
    return (bool(evaluations) and min(evaluations.values()) > moment) or None


def uninstrument_runcycles() -> None:
    # Another test's client may have instrumented runcycles process-wide into its own providers;
    # configure_telemetry leaves such an instrumentation alone, and this endpoint would miss the calls.
    instrumentor = CyclesInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    binary = require_binary("prometheus")
    workdir = tmp_path_factory.mktemp("alerts-e2e")
    uninstrument_runcycles()
    with (
        LocalCyclesServer() as server,
        FakeOpenAI() as api,
        configure_telemetry(
            "alerts-e2e",
            otlp=False,
            prometheus_port=0,
            set_global=False,
            cardinality_limit=CARDINALITY_LIMIT,
        ) as handle,
    ):
        assert handle.prometheus_url is not None
        wanted = set(used_metric_names())
        for scope, allocated in BUDGETS.items():
            server.set_budget(scope, allocated)
        key = server.create_api_key("acme")
        prometheus = Prometheus(binary, handle.prometheus_url, workdir, zero_hold_copies(RULE_FILES, workdir))
        try:
            prometheus.wait_ready()
            result = asyncio.run(run_team(server, key, api, handle))
            ledger = server.ledger()
            stopped_at = time.time()
            fired = bool(wait_until(lambda: firing(prometheus, ALERT), bool))
            # Two scrape intervals after the stop, every group has evaluated the final state.
            poll(lambda: evaluated_since(prometheus, stopped_at + 2), "every rule group to evaluate")
            alerts = prometheus.alerts()

            second_team = asyncio.run(govern_past_the_team(server, key, api, handle))
            governance = wait_until(
                lambda: firing(prometheus, SHADOW_ALERT, UNGOVERNED_ALERT),
                lambda found: len(found) == 2,
            )
            asyncio.run(poll_past_the_team(server, key, handle))
            # rate() and deriv() need two samples of a series: give the recording rules a few scrapes.
            names = wait_until(prometheus.series_names, lambda found: found >= wanted)
            recorded = wait_until(
                lambda: with_data(prometheus, recorded_names()),
                lambda found: found >= wanted & recorded_names(),
            )
            queries = {*dashboard_selectors(), *cost_queries(), COST}
            yield Observed(
                result=result,
                ledger=ledger,
                fired=fired,
                alerts=alerts,
                second_team=second_team,
                governance_alerts=governance,
                exposition=httpx.get(handle.prometheus_url, timeout=5).text,
                prometheus_names=names & wanted,
                recorded_with_data=recorded,
                answers={query: prometheus.api("query", query=query)["result"] for query in queries},
            )
        finally:
            prometheus.stop()


def shipped_rule(name: str) -> dict[str, Any]:
    (rule,) = [rule for _, _, rule in rules() if rule.get("alert") == name]
    return rule


def rendered(template: str, labels: Mapping[str, str], value: str) -> str:
    """An annotation template filled in like Prometheus does: ``$labels.x``, ``$value``, and
    ``$value | humanize`` of a whole number under 1000 (which humanize writes as it is)."""
    text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], template)
    if re.search(r"\|\s*humanize\s*\}\}", text):
        assert value.isdigit() and int(value) < 1000, f"humanize writes {value} otherwise"
    text = re.sub(r"\{\{\s*\$value(?:\s*\|\s*humanize)?\s*\}\}", value, text)
    assert "{{" not in text, f"this helper renders only $labels, $value and humanize: {template}"
    return text


def test_the_team_stops_on_its_budget_and_the_exhausted_alert_fires_for_that_scope(
    observed: Observed,
) -> None:
    assert observed.result.stop_reason is not None
    assert observed.result.stop_reason.startswith(f"{BUDGET_STOP_PREFIX} BUDGET_EXCEEDED")
    assert [m.source for m in observed.result.messages].count("writer") == 2
    remaining = {scope: observed.ledger.scopes[scope].remaining for scope in BUDGETS}
    assert remaining[EXHAUSTED] == 0
    assert all(value > 0 for scope, value in remaining.items() if scope != EXHAUSTED), remaining

    assert observed.fired, f"{ALERT} never fired after the team's stop"
    exhausted = [a for a in observed.alerts if a["labels"]["alertname"] == ALERT]
    assert [a["state"] for a in exhausted] == ["firing"]
    (alert,) = exhausted
    rule = shipped_rule(ALERT)
    labels = {"alertname": ALERT, "cycles_scope": EXHAUSTED, "cycles_unit": UNIT, **rule["labels"]}
    assert alert["labels"] == labels
    assert rule["labels"]["severity"] == "critical"
    assert float(alert["value"]) == 0
    assert alert["annotations"] == {
        key: rendered(template, labels, "0") for key, template in rule["annotations"].items()
    }
    assert EXHAUSTED in alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"].endswith(f"#{ALERT.lower()}")

    # The authority's denial itself pages too, though the team stopped at its first and only one.
    denials = [a for a in observed.alerts if a["labels"]["alertname"] == DENIALS_ALERT]
    assert [(a["state"], a["labels"], float(a["value"])) for a in denials] == [
        (
            "firing",
            {"alertname": DENIALS_ALERT, "job": "app", "cycles_action_name": MODEL}
            | shipped_rule(DENIALS_ALERT)["labels"],
            1.0,
        )
    ]
    assert [a["labels"] for a in observed.alerts if a["labels"]["alertname"] in SILENT_ALERTS] == []


def used_metric_names() -> dict[str, set[str]]:
    """Metric name -> the dashboard panels, variables and rules whose expressions read it."""
    used: dict[str, set[str]] = {}
    for file, dashboard in DASHBOARDS.items():
        for where, expr in expressions(dashboard).items():
            for name in metric_names(expr):
                used.setdefault(name, set()).add(f"{file} {where}")
    for _, _, rule in rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(rule.get("alert") or rule["record"])
    return used


def test_every_metric_the_dashboards_and_rules_read_is_in_the_real_scrape(observed: Observed) -> None:
    used = used_metric_names()
    raw = set(used) - recorded_names() - BUILTIN_SERIES
    samples = [
        sample for family in text_string_to_metric_families(observed.exposition) for sample in family.samples
    ]
    scraped = {sample.name for sample in samples}
    assert {name: sorted(used[name]) for name in raw - scraped} == {}, "not in the app's /metrics"
    assert raw - observed.prometheus_names == set(), "scraped, yet not stored by Prometheus"
    # The recorded series and ALERTS the dashboards read come out of that scrape, too.
    no_data = (set(used) & recorded_names()) - observed.recorded_with_data
    no_data |= (set(used) & BUILTIN_SERIES) - observed.prometheus_names
    assert {name: sorted(used[name]) for name in no_data} == {}

    # The extra step was needed, and did what it says: one scope past the guard, one refused poll.
    assert set(AFTER_WORKLOAD_SERIES) <= raw
    collapsed = [
        s.labels.get("cycles_label") for s in samples if s.name == "cycles_otel_label_overflow_total"
    ]
    assert collapsed == [LABEL_SCOPE]
    assert [
        (s.labels["error_type"], s.value) for s in samples if s.name == "cycles_exporter_poll_errors_total"
    ] == [("401", 1.0)]


def test_shadow_mode_denials_and_ungoverned_calls_fire_their_alerts(observed: Observed) -> None:
    """The writer ran on its spent budget in shadow mode, and a call ran while the authority failed."""
    assert [(m.source, type(m).__name__) for m in observed.second_team.messages] == [
        ("user", "TextMessage"),
        ("researcher", "ToolCallRequestEvent"),
        ("researcher", "ToolCallExecutionEvent"),
        ("researcher", "ToolCallSummaryMessage"),
        ("writer", "TextMessage"),
    ]
    expected = {
        SHADOW_ALERT: {
            "job": "app",
            "cycles_reason": "BUDGET_EXCEEDED",
            "cycles_action_kind": "llm.completion",
            "cycles_action_name": MODEL,
        },
        UNGOVERNED_ALERT: {"job": "app", "error_type": "CyclesProtocolError"},
    }
    assert sorted(a["labels"]["alertname"] for a in observed.governance_alerts) == sorted(expected)
    for alert in observed.governance_alerts:
        name = alert["labels"]["alertname"]
        rule = shipped_rule(name)
        labels = {"alertname": name, **expected[name], **rule["labels"]}
        assert alert["labels"] == labels
        assert float(alert["value"]) == 1
        assert alert["annotations"] == {
            key: rendered(template, labels, "1") for key, template in rule["annotations"].items()
        }
    assert {name: shipped_rule(name)["labels"]["severity"] for name in expected} == {
        SHADOW_ALERT: "info",
        UNGOVERNED_ALERT: "warning",
    }


def labelled(answer: list[dict[str, Any]]) -> dict[frozenset[tuple[str, str]], float]:
    return {frozenset(r["metric"].items()): float(r["value"][1]) for r in answer}


def test_llm_and_tool_spend_panels_split_the_cost_counter(observed: Observed) -> None:
    """The LLM spend and tool spend selectors share no series and together select every one."""
    model_query, tool_query = cost_queries()
    models, tools = labelled(observed.answers[model_query]), labelled(observed.answers[tool_query])
    assert models and tools
    assert models.keys() & tools.keys() == set()
    assert models | tools == labelled(observed.answers[COST])
    assert {
        (dict(labels)["gen_ai_agent_name"], dict(labels)["gen_ai_tool_name"]): value
        for labels, value in tools.items()
    } == {("researcher", SEARCH_TOOL): pytest.approx(SEARCH_PRICE / MICROCENTS_PER_USD)}
    assert {dict(labels)["gen_ai_request_model"] for labels in models} == {MODEL}


def test_every_dashboard_selector_finds_series_in_prometheus(observed: Observed) -> None:
    """Each selector a panel or variable queries (variables All) matches series of the real scrape:
    its metric, labels and label values are ones the library really exports together."""
    found = dashboard_selectors()
    assert set(cost_queries()) <= set(found), "the selector extraction missed the cost panels"
    empty = {selector: sorted(where) for selector, where in found.items() if not observed.answers[selector]}
    assert empty == {}
