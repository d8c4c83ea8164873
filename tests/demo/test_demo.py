"""``cycles-otel demo --short``: its exports show a typed budget stop, a ledger that matches the metrics,
the governed span tree, and ``CyclesBudgetExhausted`` firing in a real Prometheus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import runcycles  # type: ignore[import-untyped]

from cycles_otel import semconv as sc
from cycles_otel.app.cli import main
from cycles_otel.demo import scenario
from cycles_otel.demo.live import resolve_live
from cycles_otel.demo.prometheus_run import EXHAUSTED_ALERT
from cycles_otel.demo.span_tree import RUNTIME_SPAN_PREFIX
from tests.support.ci import require_binary
from tests.support.ports import taken_port

pytestmark = pytest.mark.slow

RESEARCHER_SCOPE = scenario.scope_path(scenario.WORKFLOW, scenario.RESEARCHER)


@dataclass
class DemoRun:
    stdout: str
    summary: dict[str, Any]
    exported: dict[str, Any]


def run_demo(output: Path, *flags: str) -> DemoRun:
    """The demo in its own process (it sets the global OTel providers, as an app would)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-m", "cycles_otel.app.cli", "demo", "--short", "--output", str(output), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return DemoRun(
        done.stdout,
        json.loads((output / "summary.json").read_text()),
        json.loads((output / "telemetry.json").read_text()),
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    require_binary("prometheus")
    return run_demo(tmp_path_factory.mktemp("demo"), "--with-prometheus")


def exported_spans(run: DemoRun, name: str | None = None) -> list[dict[str, Any]]:
    return [s for s in run.exported["spans"] if name is None or s["name"] == name]


def latest(run: DemoRun, metric: str, **attributes: str) -> float:
    """The newest exported point of ``metric`` whose attributes include ``attributes``."""
    points = [
        p
        for p in run.exported["metrics"]
        if p["name"] == metric and all(p["attributes"].get(k) == v for k, v in attributes.items())
    ]
    assert points, f"no exported point of {metric} with {attributes}"
    return float(max(points, key=lambda p: p["time_unix_nano"])["value"])


def tree(spans: list[dict[str, Any]], root: dict[str, Any]) -> dict[str, Any]:
    """Names of ``root`` and its descendants in start order, AutoGen runtime plumbing left out."""
    children = sorted(
        (
            s
            for s in spans
            if s["parent_span_id"] == root["span_id"] and not s["name"].startswith(RUNTIME_SPAN_PREFIX)
        ),
        key=lambda s: s["start_time_unix_nano"],
    )
    return {"name": root["name"], "children": [tree(spans, child) for child in children]}


def test_team_stops_with_the_typed_budget_error(demo: DemoRun) -> None:
    stop = demo.summary["stop"]
    assert stop["budget_stop"] is True
    assert stop["error_code"] in sc.DENIAL_CODES
    assert issubclass(getattr(runcycles, stop["error_type"]), runcycles.CyclesProtocolError)
    assert stop["agent"] == scenario.RESEARCHER
    assert f"Team stopped on budget: {stop['error_type']} ({stop['error_code']})" in demo.stdout
    assert "\033[" not in demo.stdout  # not a terminal: plain text
    # The denial is the last governed call: nothing ran after the stop.
    last = demo.summary["calls"][-1]
    assert (last["agent"], last["decision"], last["reason"]) == (
        scenario.RESEARCHER,
        "DENY",
        stop["error_code"],
    )
    denied = [
        s
        for s in exported_spans(demo, sc.SPAN_RESERVATION)
        if s["attributes"].get(sc.CYCLES_DECISION) == "DENY"
    ]
    assert [s["attributes"][sc.ERROR_TYPE] for s in denied] == [stop["error_type"]]


def test_ledger_balances_with_the_exported_metrics(demo: DemoRun) -> None:
    ledger = {reading["scope"]: reading for reading in demo.summary["ledger"]}
    assert set(ledger) == set(demo.summary["budgets"])
    for scope, reading in ledger.items():
        assert latest(demo, "cycles.budget.spent", **{sc.LABEL_SCOPE: scope}) == reading["spent"], scope
        assert latest(demo, "cycles.budget.remaining", **{sc.LABEL_SCOPE: scope}) == reading["remaining"], (
            scope
        )
    tenant = ledger[scenario.scope_path()]
    assert tenant["spent"] > 0
    assert latest(demo, "cycles.client.charged", **{sc.LABEL_UNIT: "USD_MICROCENTS"}) == tenant["spent"]
    # Charged per agent, from the exported spans, is what each agent's scope spent.
    for agent in (scenario.RESEARCHER, scenario.WRITER):
        charged = sum(
            s["attributes"].get(sc.CYCLES_CHARGED_AMOUNT, 0)
            for s in exported_spans(demo, sc.SPAN_RESERVATION)
            if s["attributes"].get(sc.CYCLES_SUBJECT_PREFIX + "agent") == agent
        )
        assert charged == ledger[scenario.scope_path(scenario.WORKFLOW, agent)]["spent"], agent
    assert ledger[RESEARCHER_SCOPE]["remaining"] == 0
    assert demo.summary["reconciliation"]["agrees"] is True


def test_span_tree_of_a_governed_turn(demo: DemoRun) -> None:
    spans = exported_spans(demo)
    turns = sorted(
        (s for s in spans if s["name"] == f"invoke_agent {scenario.RESEARCHER}"),
        key=lambda s: s["start_time_unix_nano"],
    )
    first = tree(spans, turns[0])  # the researcher's first turn: tool call, tool, summary
    reservation = {
        "name": sc.SPAN_RESERVATION,
        "children": [
            {"name": sc.SPAN_RESERVE, "children": []},
            {"name": f"chat {scenario.MODEL}", "children": []},
            {"name": sc.SPAN_COMMIT, "children": []},
        ],
    }
    tool_run = {  # the paid search is governed too, inside AutoGen's execute_tool span
        "name": sc.SPAN_RESERVATION,
        "children": [{"name": sc.SPAN_RESERVE, "children": []}, {"name": sc.SPAN_COMMIT, "children": []}],
    }
    tool = {"name": f"execute_tool {scenario.TOOL_NAME}", "children": [tool_run]}
    assert first == {
        "name": f"invoke_agent {scenario.RESEARCHER}",
        "children": [reservation, tool, reservation],
    }
    assert demo.summary["span_tree"] == first
    assert "└─ cycles.commit" in demo.stdout


def test_exhaustion_alert_fires_in_prometheus(demo: DemoRun) -> None:
    firing = [a for a in demo.summary["alerts"] if a["name"] == EXHAUSTED_ALERT and a["state"] == "firing"]
    assert [a["labels"]["cycles_scope"] for a in firing] == [RESEARCHER_SCOPE]
    assert f"firing   {EXHAUSTED_ALERT}" in demo.stdout


def test_same_seed_same_run_without_prometheus(demo: DemoRun, tmp_path: Path) -> None:
    again = run_demo(tmp_path / "again")
    assert again.summary["calls"] == demo.summary["calls"]
    assert again.summary["alerts"] == []


def test_taken_prometheus_port_is_a_setup_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with taken_port() as port:
        status = main(["demo", "--prometheus-port", str(port), "--output", str(tmp_path)])
    assert status == 2
    assert f"--prometheus-port {port}" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


def test_missing_prometheus_binary_is_a_setup_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["demo", "--with-prometheus", "--output", str(tmp_path)]) == 2
    assert "'prometheus' binary" in capsys.readouterr().err


def test_live_without_its_environment_names_the_variables_and_never_a_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("CYCLES_BASE_URL", raising=False)
    monkeypatch.setenv("CYCLES_API_KEY", "cyc-live-secret-123")
    assert main(["demo", "--live"]) == 2
    out = capsys.readouterr()
    assert "OPENAI_API_KEY and CYCLES_BASE_URL" in out.err
    assert "cyc-live-secret-123" not in out.err + out.out


def test_live_targets_describe_endpoints_without_keys() -> None:
    targets = resolve_live(
        "both",
        {"OPENAI_API_KEY": "sk-live-1", "CYCLES_BASE_URL": "http://cycles:7878/", "CYCLES_API_KEY": "cyc-2"},
    )
    assert (targets.real_openai, targets.real_cycles, targets.cycles_url) == (
        True,
        True,
        "http://cycles:7878",
    )
    assert "sk-live-1" not in targets.describe() and "cyc-2" not in targets.describe()


@pytest.mark.parametrize("flags", [["--prometheus-port", "70000"], ["--seed", "x"], ["--live", "gemini"]])
def test_bad_flags_exit_2(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", *flags])
    assert exited.value.code == 2
    assert flags[0] in capsys.readouterr().err
