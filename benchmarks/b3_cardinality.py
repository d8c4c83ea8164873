"""B3: series and memory after 100,000 governed calls' telemetry over 10,000 agent names and 1,000 scopes."""

from __future__ import annotations

import gc
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from autogen_core.models import CreateResult, RequestUsage
from opentelemetry import trace

from benchmarks.common import MODEL, PROMPT, BenchResult, Scale, SdkTelemetry, rss_bytes

NAME = "b3"
TITLE = "cardinality and memory"
COMMAND = "python -m benchmarks b3"
AGENTS = 10_000
SCOPES = 1_000
GUARD_LIMIT = 500
RSS_GOAL_BYTES = 50 * 2**20
GUARDED_LABELS = ("gen_ai.agent.name", "gen_ai.request.model", "cycles.scope", "cycles.action.name")
UNIT = "USD_MICROCENTS"


@dataclass
class CannedResponse:
    """What the protocol telemetry reads from a runcycles ``CyclesResponse``: status, body, headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _balance(scope: str, spent: int) -> dict[str, Any]:
    return {
        "scope": scope,
        "scope_path": scope,
        "remaining": {"amount": 10**12 - spent, "unit": UNIT},
        "allocated": {"amount": 10**12, "unit": UNIT},
        "reserved": {"amount": 0, "unit": UNIT},
        "spent": {"amount": spent, "unit": UNIT},
    }


class TelemetryPath:
    """Every telemetry step of one governed call, without the HTTP: both layers, real providers."""

    def __init__(self, sdk: SdkTelemetry) -> None:
        from cycles_otel.autogen.telemetry import ClientFacts, ClientTelemetry
        from cycles_otel.cardinality import CardinalityGuard
        from cycles_otel.instruments import get_instruments
        from cycles_otel.protocol.call import ProtocolTelemetry
        from cycles_otel.protocol.operations import OPERATIONS

        get_instruments(sdk.meter_provider, CardinalityGuard(limit=GUARD_LIMIT))
        self.client = ClientTelemetry(
            ClientFacts(MODEL, "openai", UNIT, "llm.completion"),
            sdk.tracer_provider,
            sdk.meter_provider,
            emit_inference_span=True,
            capture_content=False,
        )
        tracer = trace.get_tracer("cycles_otel", tracer_provider=sdk.tracer_provider)
        self.protocol = ProtocolTelemetry(tracer, get_instruments(sdk.meter_provider))
        self.ops = {op.name: op for op in OPERATIONS}
        self.result = CreateResult(
            finish_reason="stop",
            content="ok",
            usage=RequestUsage(prompt_tokens=10, completion_tokens=5),
            cached=False,
        )

    def call(self, index: int) -> None:
        from runcycles import Action, Amount, Subject  # type: ignore[import-untyped]

        from cycles_otel.autogen.estimate import Estimate
        from cycles_otel.autogen.plan import CallPlan, Priced

        agent, scope = f"agent-{index % AGENTS}", f"tenant:acme/workflow:w{index % SCOPES}"
        rid = f"rsv_{index}"
        subject = {"tenant": "acme", "agent": agent}
        action = Action(kind="llm.completion", name=MODEL)
        estimate = Estimate(2_000_000, "fixed")
        amount = Amount(unit=UNIT, amount=2_000_000)
        plan = CallPlan(subject, Subject(**subject), action, estimate, amount, None, agent)
        call = self.client.start(plan, None)
        request = {
            "subject": {"tenant": "acme", "agent": agent},
            "action": {"kind": "llm.completion", "name": MODEL},
            "estimate": {"amount": 2_000_000, "unit": UNIT},
        }
        with call.current():
            reserve = self.protocol.start(self.ops["reserve"], (request,), {})
            reserve.finish(CannedResponse(200, {
                "decision": "ALLOW", "reservation_id": rid, "reserved": {"amount": 2_000_000, "unit": UNIT},
                "scope_path": scope, "affected_scopes": [scope], "balances": [_balance(scope, index)],
            }, {"x-request-id": f"req_{index}"}))  # fmt: skip
        call.reserved(rid, "ALLOW")
        call.start_inference(PROMPT, None)
        priced = Priced(7_500, 0.000075, input_tokens=10, output_tokens=5)
        call.inference_done(self.result, priced, "usage")
        commit_request = {"actual": {"amount": 7_500, "unit": UNIT}}
        with call.current():
            commit = self.protocol.start(self.ops["commit"], (rid, commit_request), {})
            commit.finish(CannedResponse(200, {
                "status": "COMMITTED", "charged": {"amount": 7_500, "unit": UNIT},
                "balances": [_balance(scope, index + 7_500)],
            }))  # fmt: skip
        call.settled("committed", priced, 7_500, "usage", False)
        call.end()


def _series(sdk: SdkTelemetry) -> tuple[dict[str, int], dict[str, int]]:
    """Data points per metric, and the most distinct values any guarded label has in one metric."""
    data = sdk.reader.get_metrics_data()
    per_metric: dict[str, int] = {}
    label_values: dict[str, set[str]] = defaultdict(set)
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points: list[Any] = list(metric.data.data_points)
                per_metric[metric.name] = per_metric.get(metric.name, 0) + len(points)
                for point in points:
                    for key in GUARDED_LABELS:
                        if key in point.attributes:
                            label_values[f"{metric.name}:{key}"].add(str(point.attributes[key]))
    widest: dict[str, int] = {}
    for name, values in label_values.items():
        label = name.split(":", 1)[1]
        widest[label] = max(widest.get(label, 0), len(values))
    return per_metric, widest


def run(scale: Scale) -> BenchResult:
    calls = scale.n(100_000, 200)
    warmup = min(2_000, calls // 10)
    result = BenchResult(NAME, TITLE, COMMAND, scale.name)
    sdk = SdkTelemetry.create()
    path = TelemetryPath(sdk)
    for index in range(warmup):  # imports, first allocations of every structure
        path.call(index)
    sdk.tracer_provider.force_flush()
    gc.collect()
    rss_before, started = rss_bytes(), time.perf_counter()
    for index in range(warmup, calls):
        path.call(index)
    elapsed = time.perf_counter() - started
    sdk.tracer_provider.force_flush()
    per_metric, widest = _series(sdk)
    gc.collect()
    growth = rss_bytes() - rss_before
    sdk.shutdown()

    bound = GUARD_LIMIT + 1  # the admitted values plus "other"
    max_series = max(per_metric.values(), default=0)
    labels_ok = all(count <= bound for count in widest.values())
    result.figures = {
        "calls": calls,
        "agents": AGENTS,
        "scopes": SCOPES,
        "guard_limit": GUARD_LIMIT,
        "series_per_metric": per_metric,
        "distinct_values_per_guarded_label": widest,
        "rss_growth_bytes": growth,
        "seconds": elapsed,
        "spans_exported": sdk.exporter.exported,
    }
    result.add("telemetry path of governed calls", "—", f"{calls:,} calls in {elapsed:.1f} s")
    result.add(
        "distinct values of any guarded label (agent, model, scope, action)",
        f"<= {bound} (limit + other)",
        ", ".join(f"{k} {v}" for k, v in sorted(widest.items())),
        labels_ok,
    )
    result.add("most series in one metric", "—", f"{max_series:,}")
    result.add(
        "RSS growth",
        "<= 50 MB",
        f"{growth / 2**20:.1f} MB",
        growth <= RSS_GOAL_BYTES,
    )
    result.notes.append(
        "drives the telemetry of both layers (ClientTelemetry spans and metrics, ProtocolTelemetry "
        "reserve and commit with balances feeding the budget board) with canned protocol answers, "
        "not HTTP: 100,000 full calls would take minutes of HTTP client time and measure httpx, not us."
    )
    return result
