"""Runs the demo: stands up every part, runs the team, then reports, exports and (optionally) serves."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from cycles_otel.app.configure import TelemetryHandle
from cycles_otel.demo import scenario
from cycles_otel.demo.accounting import Reconciliation, reconcile, scrape, usd
from cycles_otel.demo.live import LiveSetupError, resolve_live
from cycles_otel.demo.progress import CallRecord, ProgressPrinter, Style
from cycles_otel.demo.prometheus_run import (
    EXHAUSTED_ALERT,
    DemoPrometheus,
    FiringAlert,
    PrometheusSetupError,
    find_prometheus,
)
from cycles_otel.demo.services import Services, SetupError, start_services
from cycles_otel.demo.span_tree import find_governed_turn, render, shape
from cycles_otel.demo.tables import agent_table, agent_totals, budget_table
from cycles_otel.demo.team import TeamOutcome, run_team
from cycles_otel.instruments import get_instruments
from cycles_otel.testing.telemetry import TelemetryCapture

ALERT_WAIT_SECONDS = 10.0
SUMMARY_FILE = "summary.json"
TELEMETRY_FILE = "telemetry.json"
LIVE_MAX_MESSAGES = 12  # a real model does not follow the script: cap what a live run can spend
OFFLINE_MAX_MESSAGES = 60  # never reached offline; a guard against a budget that never runs out


@dataclass(frozen=True)
class DemoOptions:
    seed: int = 7
    short: bool = False
    output: Path = Path("demo-output")
    prometheus_port: int | None = None
    with_prometheus: bool = False
    serve: bool = False
    live: str | None = None


def run_demo(options: DemoOptions, out: TextIO | None = None) -> int:
    """Run the demo, print its report to ``out`` (stdout) and return the exit status."""
    stream = out or sys.stdout
    try:
        live = resolve_live(options.live)
        if options.with_prometheus:
            find_prometheus()
        with ExitStack() as stack:
            services = start_services(stack, options, live)
            return _Demo(options, stream, services).run(stack)
    except (LiveSetupError, PrometheusSetupError, SetupError) as exc:
        print(f"cycles-otel demo: {exc}", file=sys.stderr)
        return 2


class _Demo:
    def __init__(self, options: DemoOptions, out: TextIO, services: Services) -> None:
        self.options, self.out, self.services = options, out, services
        self.style = Style(out)

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def section(self, title: str) -> None:
        self.say()
        self.say(self.style.head(f"== {title} =="))

    def run(self, stack: ExitStack) -> int:
        started = time.monotonic()
        telemetry = self.services.telemetry
        capture = TelemetryCapture()  # a local copy of every span: the progress lines and the tree read it
        stack.callback(capture.shutdown)
        telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(capture.span_exporter))
        board = get_instruments(telemetry.meter_provider).board
        progress = ProgressPrinter(self.out, lambda scope: _remaining(board.snapshot(), scope))
        telemetry.tracer_provider.add_span_processor(progress)
        prometheus = None
        if self.options.with_prometheus and telemetry.prometheus_url:
            prometheus = stack.enter_context(DemoPrometheus(telemetry.prometheus_url))
        self._print_setup(prometheus)

        self.section("Run: every line is one governed model call or tool run")
        outcome = asyncio.run(
            run_team(
                model_base_url=self.services.model_base_url,
                model_api_key=self.services.model_api_key,
                cycles_config=self.services.cycles_config,
                tenant=self.services.tenant,
                estimate_amount=scenario.ESTIMATE_PER_CALL,
                max_messages=LIVE_MAX_MESSAGES if self.services.live.real_openai else OFFLINE_MAX_MESSAGES,
            )
        )
        self.say()
        self._print_stop(outcome, progress.records)

        telemetry.tracer_provider.force_flush()
        check = self._reconcile(telemetry, progress)
        self.section("Spend per agent")
        self.say(agent_table(agent_totals(progress.records, [scenario.RESEARCHER, scenario.WRITER])))
        self.section("Budgets: the authority's ledger next to the metrics")
        self.say(budget_table(check))
        turn = find_governed_turn(capture.trees(), scenario.RESEARCHER)
        self.section("One agent turn as a trace")
        self.say(render(turn) if turn else "(no committed researcher turn was traced)")
        alerts = self._alerts(prometheus)
        telemetry.meter_provider.force_flush()  # the last points over OTLP (scrapes stay single)
        self._export(progress, check, outcome, alerts, turn)
        self._print_destinations(prometheus)
        self.say(f"\nDone in {time.monotonic() - started:.1f} s.")
        if self.options.serve:
            self._serve()
        return _status(outcome, check, self.services.live.real_openai)

    # --- steps -------------------------------------------------------------------------------------
    def _print_setup(self, prometheus: DemoPrometheus | None) -> None:
        s = self.services
        self.say(
            self.style.head(
                f"cycles-otel demo (seed {self.options.seed}{', short' if self.options.short else ''})"
            )
        )
        team = f"{scenario.RESEARCHER} (tool: {scenario.TOOL_NAME}) + {scenario.WRITER}"
        self.say(f"  team       {team}, RoundRobinGroupChat, one BudgetedChatCompletionClient")
        self.say(f"  model      {s.model_description}")
        self.say(f"  authority  {s.authority_description}")
        self.say(f"  telemetry  {s.telemetry_description}")
        self.say(f"  metrics    {s.telemetry.prometheus_url}")
        if prometheus is not None:
            self.say(f"  prometheus {prometheus.url} (rules from {prometheus.rules_dir})")
            if prometheus.notes:
                exhausted = [n for n in prometheus.notes if n.startswith(EXHAUSTED_ALERT + " ")]
                self.say(
                    "             demo copy of the rules: every alert's for: set to 0s so alerts show in "
                    f"seconds (shipped: {(exhausted or prometheus.notes)[0]}, ...); shipped files unchanged"
                )
        if s.budgets:
            self.say(
                f"  budgets    flat estimate {usd(scenario.ESTIMATE_PER_CALL)} USD per call (as in the guide)"
            )
            width = max(len(scope) for scope in s.budgets)
            for scope, allocated in s.budgets.items():
                self.say(f"             {scope:<{width}}  {usd(allocated):>9} USD")

    def _print_stop(self, outcome: TeamOutcome, records: list[CallRecord]) -> None:
        if not outcome.budget_stop:
            self.say(f"Team stopped: {outcome.stop_reason}")
            return
        self.say(self.style.bad("Team stopped on budget: ") + outcome.stop_reason)
        self.say(
            "  a plain team.run() raised that typed runcycles error (also a RuntimeError), "
            "not AutoGen's bare RuntimeError."
        )
        capped = [r for r in records if r.uncharged]
        denied = [r for r in records if r.denied]
        if denied and denied[-1].reason == "BUDGET_EXCEEDED":
            self.say(
                f"  Why: {denied[-1].agent} had {usd(denied[-1].remaining)} USD left, less than the "
                f"{usd(scenario.ESTIMATE_PER_CALL)} USD each call reserves."
            )
        elif capped:
            last = capped[-1]
            self.say(
                f"  Why: {last.agent}'s call in turn {last.turn} cost {usd(last.actual)} USD, more than its "
                f"budget had left; Cycles charged the {usd(last.charged)} left (overage_policy "
                "ALLOW_IF_AVAILABLE), marked the scope over its limit, and refuses its reservations until "
                "the scope is funded."
            )

    def _reconcile(self, telemetry: TelemetryHandle, progress: ProgressPrinter) -> Reconciliation:
        assert telemetry.prometheus_url is not None
        charged: dict[str, int] = {}
        for record in progress.records:
            charged[record.agent] = charged.get(record.agent, 0) + record.charged
        return reconcile(
            self.services.ledger(),
            scrape(telemetry.prometheus_url),
            tenant_scope=scenario.scope_path(tenant=self.services.tenant),
            agents={
                agent: scenario.scope_path(scenario.WORKFLOW, agent, tenant=self.services.tenant)
                for agent in (scenario.RESEARCHER, scenario.WRITER)
            },
            charged_by_agent=charged,
            compare_totals=not self.services.live.real_cycles,
        )

    def _alerts(self, prometheus: DemoPrometheus | None) -> list[FiringAlert]:
        if prometheus is None:
            return []
        self.section(f"Alerts in Prometheus (waiting up to {ALERT_WAIT_SECONDS:.0f} s for {EXHAUSTED_ALERT})")
        alerts = prometheus.wait_for_alert(EXHAUSTED_ALERT, ALERT_WAIT_SECONDS)
        for alert in sorted(alerts, key=lambda a: (a.state != "firing", a.name)):
            where = alert.labels.get("cycles_scope") or alert.labels.get("cycles_reason") or ""
            line = f"{alert.state:<8} {alert.name:<28} {alert.labels.get('severity', ''):<9} {where}"
            self.say(self.style.bad(line) if alert.state == "firing" else line)
        if not alerts:
            self.say("(no alert is pending or firing)")
        return alerts

    def _export(
        self,
        progress: ProgressPrinter,
        check: Reconciliation,
        outcome: TeamOutcome,
        alerts: list[FiringAlert],
        turn: Any,
    ) -> None:
        folder = self.options.output
        folder.mkdir(parents=True, exist_ok=True)
        receiver = self.services.receiver
        if receiver is not None:
            receiver.write_json(folder / TELEMETRY_FILE)
        denied = [r for r in progress.records if r.denied]
        summary = {
            "seed": self.options.seed,
            "short": self.options.short,
            "stop": {
                "budget_stop": outcome.budget_stop,
                "reason": outcome.stop_reason,
                "error_type": outcome.error_type,
                "error_code": outcome.error_code,
                "agent": denied[-1].agent if denied else None,
            },
            "calls": [asdict(r) for r in progress.records],
            "agents": [
                asdict(t) for t in agent_totals(progress.records, [scenario.RESEARCHER, scenario.WRITER])
            ],
            "budgets": self.services.budgets,
            "ledger": [asdict(r) for r in self.services.ledger()],
            "reconciliation": check.to_json(),
            "span_tree": shape(turn) if turn is not None else None,
            "alerts": [asdict(a) for a in alerts],
            "telemetry_file": TELEMETRY_FILE if receiver is not None else None,
        }
        (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")

    def _print_destinations(self, prometheus: DemoPrometheus | None) -> None:
        s, folder = self.services, self.options.output
        self.section("Where the telemetry went")
        if s.receiver is not None:
            spans, points = len(s.receiver.spans()), len(s.receiver.metrics())
            self.say(f"  OTLP       {spans} spans, {points} metric points -> {folder / TELEMETRY_FILE}")
        else:
            self.say(f"  OTLP       {s.telemetry_description}")
        self.say(f"  summary    {folder / SUMMARY_FILE}")
        self.say(
            f"  metrics    {s.telemetry.prometheus_url}"
            + (" (up until Ctrl-C)" if self.options.serve else "")
        )
        if prometheus is not None:
            self.say(
                f"  prometheus {prometheus.url}/alerts" + (" (up until Ctrl-C)" if self.options.serve else "")
            )

    def _serve(self) -> None:
        self.say("Serving; press Ctrl-C to stop.")
        # A shell that starts the demo in the background ignores SIGINT for it: take it back, and let
        # SIGTERM end the wait the same way, so every part still shuts down in order.
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            self.say("Stopped.")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _remaining(readings: Any, scope: str) -> int | None:
    for reading in readings:
        if reading.scope == scope and reading.unit == "USD_MICROCENTS":
            value: int | None = reading.remaining
            return value
    return None


def _status(outcome: TeamOutcome, check: Reconciliation, live_model: bool) -> int:
    """0 for the promised run: a budget stop (live: or the message cap) with ledger and metrics agreeing."""
    expected_stop = outcome.budget_stop or live_model
    return 0 if expected_stop and check.agrees else 1
