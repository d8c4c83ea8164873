"""Grafana dashboards: the committed JSON is the generator output, the linter rules hold, queries are real."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grafana.dashboards_src import OUTPUT_DIR, rendered
from grafana.rules_src.config import TUNABLES
from tests.conftest import require_binary
from tests.grafana_support import (
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
TEMPO_VARIABLE = "${tempo}"
FILTER_VARIABLES = {"scope", "agent", "model"}
UID = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
Dashboard = dict[str, Any]


def committed() -> dict[str, Dashboard]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(OUTPUT_DIR.glob("*.json"))
    }


DASHBOARDS = committed()


def panels(dashboard: Dashboard) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def variables(dashboard: Dashboard) -> list[dict[str, Any]]:
    return list(dashboard["templating"]["list"])


def expressions(dashboard: Dashboard) -> dict[str, str]:
    """Every PromQL expression of a dashboard, keyed by where it is."""
    found = {
        f"panel {p['id']} {p['title']} {t['refId']}": t["expr"]
        for p in panels(dashboard)
        for t in p["targets"]
    }
    found |= {f"annotation {a['name']}": a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a}
    for variable in variables(dashboard):
        if variable["type"] == "query":
            query = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
            assert query, f"variable {variable['name']}: use label_values(metric, label)"
            found[f"variable {variable['name']}"] = query.group(1)
    return found


def lint(dashboard: Dashboard) -> list[str]:
    """The dashboard-linter rules this project holds itself to; returns the problems found."""
    problems = []
    names = {v["name"]: v for v in variables(dashboard)}
    if names.get("datasource", {}).get("query") != "prometheus":
        problems.append("no 'datasource' variable of type prometheus")
    if names.get("tempo", {}).get("query") != "tempo":
        problems.append("no 'tempo' datasource variable for trace links")
    if not FILTER_VARIABLES & set(names):
        problems.append(f"no filter variable among {sorted(FILTER_VARIABLES)}")
    if not UID.fullmatch(dashboard.get("uid", "")):
        problems.append("uid missing or not a stable short slug")
    if not any("ALERTS" in a.get("expr", "") for a in dashboard["annotations"]["list"]):
        problems.append("no alert annotation (ALERTS)")
    counters = counter_series()
    all_exprs = " ".join(t["expr"] for p in panels(dashboard) for t in p["targets"])
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
        if panel.get("datasource", {}).get("uid") != PROMETHEUS_VARIABLE:
            problems.append(f"{where}: datasource is not {PROMETHEUS_VARIABLE}")
        if not panel.get("description"):
            problems.append(f"{where}: no description")
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        if not defaults.get("unit"):
            problems.append(f"{where}: no unit")
        if not any(TEMPO_VARIABLE in link.get("url", "") for link in defaults.get("links", [])):
            problems.append(f"{where}: no data link to traces ({TEMPO_VARIABLE})")
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
