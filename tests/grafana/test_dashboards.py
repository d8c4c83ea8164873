"""Grafana dashboards: the committed JSON is the generator output, the linter rules hold, queries are real."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from cycles_otel import semconv
from grafana.dashboards_src import OUTPUT_DIR, rendered
from grafana.dashboards_src.builder import CYCLES_ADMIN_URL_ENV, DEFAULT_CYCLES_ADMIN_URL
from grafana.rules_src.config import TUNABLES
from tests.support.ci import require_binary
from tests.support.dashboards import (
    DASHBOARDS,
    TEMPO_VARIABLE,
    Dashboard,
    expressions,
    is_trace_list,
    panels,
    variables,
)
from tests.support.grafana import (
    BUILTIN_SERIES,
    counter_series,
    counters_outside_rate,
    exported_series,
    known_labels,
    label_names,
    metric_names,
    promtool_check_expressions,
    rate_ranges,
    recorded_names,
    rules,
    with_grafana_variables,
)

PROMETHEUS_VARIABLE = "${datasource}"
CYCLES_ADMIN_VARIABLE = "cycles_admin_url"
TRACE_ID = "${__value.raw}"  # how a data link on a trace id column reads the id
CYCLES_EVENTS = "${cycles_admin_url:raw}/events?trace_id="
FILTER_VARIABLES = {"scope", "agent", "model"}
UID = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


def panel_links(panel: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """A panel's data links, one list per place they appear (the defaults, each override)."""
    field_config = panel.get("fieldConfig", {})
    found = [field_config.get("defaults", {}).get("links", [])]
    for override in field_config.get("overrides", []):
        found += [p["value"] for p in override.get("properties", []) if p.get("id") == "links"]
    return found


def traceql_queries(dashboard: Dashboard) -> dict[str, str]:
    """Every TraceQL query of a dashboard (trace lists and the Explore links), keyed by where it is."""
    found: dict[str, str] = {}
    for panel in panels(dashboard):
        where = f"panel {panel.get('id')} {panel.get('title')}"
        if is_trace_list(panel):
            found |= {f"{where} {t['refId']}": t["query"] for t in panel["targets"]}
        for number, link in enumerate(link for links in panel_links(panel) for link in links):
            panes = parse_qs(urlsplit(link["url"]).query).get("panes")
            if panes:
                pane = json.loads(panes[0])["traces"]
                found |= {f"{where} link {number}": q["query"] for q in pane["queries"]}
    return found


def lint_trace_links(where: str, panel: dict[str, Any]) -> list[str]:
    """A panel links to traces; every link that opens one trace by id sits beside its Cycles events.

    Prometheus panels link to a TraceQL search of the calls behind a series; their exemplars open
    one trace by id through the Prometheus datasource, whose exemplar links (to Tempo and to the
    Cycles events of the trace) are checked with the deploy configs in tests/deploy/test_deploy.py.
    """
    problems = []
    groups = panel_links(panel)
    if not any(TEMPO_VARIABLE in link.get("url", "") for links in groups for link in links):
        problems.append(f"{where}: no data link to traces ({TEMPO_VARIABLE})")
    for links in groups:
        opens_trace = any(TEMPO_VARIABLE in link["url"] and TRACE_ID in link["url"] for link in links)
        if opens_trace and not any(link["url"] == CYCLES_EVENTS + TRACE_ID for link in links):
            problems.append(f"{where}: a link opens a trace by id, none its Cycles events ({CYCLES_EVENTS})")
    return problems


def lint_trace_list(where: str, panel: dict[str, Any]) -> list[str]:
    problems = []
    if not panel.get("description"):
        problems.append(f"{where}: no description")
    for query in panel.get("targets", []):
        if query.get("datasource", {}).get("uid") != TEMPO_VARIABLE or query.get("queryType") != "traceql":
            problems.append(f"{where}: query {query.get('refId')} is not TraceQL on {TEMPO_VARIABLE}")
    if not any(TRACE_ID in link["url"] for links in panel_links(panel)[1:] for link in links):
        problems.append(f"{where}: the trace id column links nowhere ({TRACE_ID})")
    return problems + lint_trace_links(where, panel)


def lint(dashboard: Dashboard) -> list[str]:
    """The dashboard-linter rules this project holds itself to; returns the problems found."""
    problems = []
    names = {v["name"]: v for v in variables(dashboard)}
    if names.get("datasource", {}).get("query") != "prometheus":
        problems.append("no 'datasource' variable of type prometheus")
    if names.get("tempo", {}).get("query") != "tempo":
        problems.append("no 'tempo' datasource variable for trace links")
    admin = names.get(CYCLES_ADMIN_VARIABLE, {})
    if admin.get("type") not in ("textbox", "constant") or not admin.get("query", "").startswith("http"):
        problems.append(f"no '{CYCLES_ADMIN_VARIABLE}' textbox with an http(s) default for Cycles links")
    if not FILTER_VARIABLES & set(names):
        problems.append(f"no filter variable among {sorted(FILTER_VARIABLES)}")
    if not UID.fullmatch(dashboard.get("uid", "")):
        problems.append("uid missing or not a stable short slug")
    if not any("ALERTS" in a.get("expr", "") for a in dashboard["annotations"]["list"]):
        problems.append("no alert annotation (ALERTS)")
    counters = counter_series()
    all_exprs = " ".join(t["expr"] for p in panels(dashboard) if not is_trace_list(p) for t in p["targets"])
    for variable in names.values():
        if variable["type"] == "query":
            if variable["datasource"]["uid"] != PROMETHEUS_VARIABLE:
                problems.append(f"variable {variable['name']} does not use {PROMETHEUS_VARIABLE}")
            if f"${variable['name']}" not in all_exprs:
                problems.append(f"variable {variable['name']} is used by no panel")
    for panel in panels(dashboard):
        where = f"panel {panel.get('title')!r}"
        if panel.get("type") == "row":
            continue
        if is_trace_list(panel):
            problems += lint_trace_list(where, panel)
            continue
        if panel.get("datasource", {}).get("uid") != PROMETHEUS_VARIABLE:
            problems.append(f"{where}: datasource is not {PROMETHEUS_VARIABLE}")
        if not panel.get("description"):
            problems.append(f"{where}: no description")
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        if not defaults.get("unit"):
            problems.append(f"{where}: no unit")
        problems += lint_trace_links(where, panel)
        if not panel.get("targets"):
            problems.append(f"{where}: no query")
        for query in panel.get("targets", []):
            expr = query["expr"]
            if query.get("datasource", {}).get("uid") != PROMETHEUS_VARIABLE:
                problems.append(f"{where}: query {query.get('refId')} is not on {PROMETHEUS_VARIABLE}")
            if not query.get("refId"):
                problems.append(f"{where}: query without refId")
            if query.get("range") and not query.get("exemplar"):
                problems.append(f"{where}: range query without exemplars")
            problems += [
                f"{where}: rate over [{r}], use $__rate_interval"
                for r in rate_ranges(expr)
                if r != "$__rate_interval"
            ]
            problems += [
                f"{where}: counter {c} outside rate()/increase()"
                for c in counters_outside_rate(expr, counters)
            ]
    return problems


def test_committed_json_is_the_generator_output() -> None:
    expected = rendered()
    assert set(DASHBOARDS) == set(expected), "run python -m grafana.dashboards_src"
    for name, text in expected.items():
        assert (OUTPUT_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: python -m grafana.dashboards_src"
        )


def test_three_dashboards_with_unique_uids() -> None:
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert len(uids) >= 3 and len(set(uids)) == len(uids)
    titles = " ".join(d["title"] for d in DASHBOARDS.values())
    assert all(word in titles for word in ("Budgets", "Reservations", "Agents"))


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_passes_the_linter(name: str) -> None:
    assert lint(DASHBOARDS[name]) == []


@pytest.mark.parametrize(
    ("breakage", "problem"),
    [
        (lambda p, t: t.update(expr=t["expr"].replace("$__rate_interval", "5m")), "use $__rate_interval"),
        (lambda p, t: t.update(expr="sum(cycles_client_charged_total)"), "outside rate()"),
        (lambda p, t: p["fieldConfig"]["defaults"].pop("unit"), "no unit"),
        (lambda p, t: p.pop("description"), "no description"),
        (lambda p, t: p.update(datasource={"type": "prometheus", "uid": "prom"}), "datasource is not"),
        (lambda p, t: p["fieldConfig"]["defaults"].update(links=[]), "no data link to traces"),
        (lambda p, t: t.update(exemplar=False), "without exemplars"),
    ],
)
def test_linter_catches_a_broken_panel(breakage: Any, problem: str) -> None:
    dashboard = copy.deepcopy(DASHBOARDS["reservations.json"])
    panel = next(
        p for p in panels(dashboard) if "rate(" in p["targets"][0]["expr"] and p["targets"][0]["range"]
    )
    breakage(panel, panel["targets"][0])
    assert any(problem in found for found in lint(dashboard))


def test_panel_thresholds_are_the_alerts_thresholds() -> None:
    """Panels colour and describe what the alerts fire on, read from the same config."""

    def steps(dashboard: str, title: str) -> list[float]:
        panel = next(p for p in panels(DASHBOARDS[dashboard]) if p["title"] == title)
        return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]]

    utilisation = [TUNABLES.utilisation_warning, TUNABLES.utilisation_critical]
    assert steps("budgets.json", "Utilisation per scope") == utilisation
    assert steps("budgets.json", "Utilisation over time") == utilisation
    assert steps("budgets.json", "Burn rate")[0] == TUNABLES.burn_rate
    assert steps("budgets.json", "Oldest balance reading")[-1] == TUNABLES.stale_after.total_seconds()
    assert steps("reservations.json", "Authority latency")[-1] == TUNABLES.authority_p99_seconds
    assert steps("reservations.json", "Estimate accuracy")[-1] == TUNABLES.estimate_factor


def trace_list(dashboard: Dashboard) -> dict[str, Any]:
    return next(p for p in panels(dashboard) if is_trace_list(p))


def test_reservations_are_listed_with_links_to_tempo_and_to_cycles_events() -> None:
    listed = trace_list(DASHBOARDS["reservations.json"])
    assert 'name = "cycles.reservation"' in listed["targets"][0]["query"]
    (override,) = listed["fieldConfig"]["overrides"]
    assert override["matcher"] == {"id": "byName", "options": "Trace ID"}, "the column Tempo's search fills"
    urls = [link["url"] for link in override["properties"][0]["value"]]
    assert any(TEMPO_VARIABLE in url and TRACE_ID in url for url in urls)
    assert CYCLES_EVENTS + TRACE_ID in urls


@pytest.mark.parametrize(
    ("breakage", "problem"),
    [
        (lambda links: links.pop(), "none its Cycles events"),
        (lambda links: links.clear(), "the trace id column links nowhere"),
        (
            lambda links: links[1].update(url="http://127.0.0.1:8080/events?trace_id=" + TRACE_ID),
            "Cycles events",
        ),
    ],
)
def test_linter_catches_a_trace_list_without_its_links(breakage: Any, problem: str) -> None:
    dashboard = copy.deepcopy(DASHBOARDS["reservations.json"])
    breakage(trace_list(dashboard)["fieldConfig"]["overrides"][0]["properties"][0]["value"])
    assert any(problem in found for found in lint(dashboard))


def test_linter_catches_a_dashboard_without_the_cycles_admin_variable() -> None:
    dashboard = copy.deepcopy(DASHBOARDS["agents-models.json"])
    dashboard["templating"]["list"] = [v for v in variables(dashboard) if v["name"] != CYCLES_ADMIN_VARIABLE]
    assert any(f"'{CYCLES_ADMIN_VARIABLE}'" in found for found in lint(dashboard))


def dashboards_generator(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != CYCLES_ADMIN_URL_ENV} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "grafana.dashboards_src", *args],
        capture_output=True, text=True, check=False, cwd=OUTPUT_DIR.parents[1], env=environment,
    )  # fmt: skip


def test_generator_check_passes_and_sees_another_cycles_admin_url() -> None:
    assert dashboards_generator("--check").returncode == 0
    other = "https://cycles.example.org"
    for result in (
        dashboards_generator("--check", "--cycles-admin-url", other),
        dashboards_generator("--check", env={CYCLES_ADMIN_URL_ENV: other}),
    ):
        assert result.returncode == 1 and "reservations.json" in result.stderr
    for dashboard in map(json.loads, rendered(other).values()):
        admin = next(v for v in variables(dashboard) if v["name"] == CYCLES_ADMIN_VARIABLE)
        assert admin["query"] == admin["current"]["value"] == other


def test_generator_refuses_a_cycles_admin_url_links_cannot_be_built_on() -> None:
    for url in ("localhost:8080", "http://127.0.0.1:8080/events?trace_id=x"):
        result = dashboards_generator("--check", "--cycles-admin-url", url)
        assert result.returncode == 2 and "--cycles-admin-url" in result.stderr, result.stderr
    assert DEFAULT_CYCLES_ADMIN_URL.startswith("http://127.0.0.1:")


def test_every_span_attribute_queried_is_one_the_library_sets() -> None:
    attributes = {value for value in vars(semconv).values() if isinstance(value, str) and "." in value}
    used = {
        (where, key)
        for dashboard in DASHBOARDS.values()
        for where, query in traceql_queries(dashboard).items()
        for key in re.findall(r"\bspan\.([a-z_][\w.]*)", query)
    }
    assert used, "the TraceQL extraction found nothing"
    assert {(where, key) for where, key in used if key not in attributes} == set()


def test_linter_catches_a_dashboard_without_variables_or_alerts() -> None:
    dashboard = copy.deepcopy(DASHBOARDS["budgets.json"])
    dashboard["templating"]["list"] = []
    dashboard["annotations"]["list"] = []
    problems = " | ".join(lint(dashboard))
    for expected in ("'datasource' variable", "'tempo'", "filter variable", "alert annotation"):
        assert expected in problems


def test_every_query_parses(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    exprs = {
        f"{name} {where}": with_grafana_variables(expr)
        for name, dashboard in DASHBOARDS.items()
        for where, expr in expressions(dashboard).items()
    }
    assert promtool_check_expressions(promtool, exprs, tmp_path) == ""


def test_the_parse_check_rejects_a_bad_query(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    assert promtool_check_expressions(promtool, {"bad": "sum by (x (rate(y[5m]))"}, tmp_path) != ""


def test_every_metric_used_is_exported() -> None:
    """Dashboards and rules select only series the library exports, our recording rules, or ALERTS."""
    allowed = set(exported_series()) | recorded_names() | BUILTIN_SERIES
    used = {
        (where, name)
        for dashboard in DASHBOARDS.values()
        for where, expr in expressions(dashboard).items()
        for name in metric_names(expr)
    }
    used |= {
        (rule.get("alert") or rule["record"], name)
        for _, _, rule in rules()
        for name in metric_names(rule["expr"])
    }
    assert {(where, name) for where, name in used if name not in allowed} == set()
    assert {name for _, name in used} & set(exported_series()), "the name extraction found nothing"


def test_every_label_used_is_known() -> None:
    for dashboard in DASHBOARDS.values():
        for where, expr in expressions(dashboard).items():
            assert label_names(expr) - known_labels() == set(), where


def test_exported_set_comes_from_the_code() -> None:
    """The reference set is the real exposition, histograms and counters with their suffixes."""
    series = exported_series()
    assert series["cycles_client_reservations_total"] == "counter"
    assert {"cycles_client_operation_duration_seconds_bucket", "gen_ai_client_token_usage_count"} <= set(
        series
    )
    assert series["cycles_budget_remaining"] == "gauge"
    assert "cycles_client_reservations" not in series
