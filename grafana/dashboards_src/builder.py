"""A small builder for Grafana dashboard JSON: the house rules are built in, not remembered."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

JSON = dict[str, Any]

PROMETHEUS: JSON = {"type": "prometheus", "uid": "${datasource}"}
TEMPO_VARIABLE = "tempo"
# Every governed LLM call is one of these spans; panels narrow it by the series' labels.
RESERVATION_SPANS = '{ name = "cycles.reservation" }'
GRID_WIDTH = 24


def target(expr: str, legend: str = "__auto", ref_id: str = "A", *, instant: bool = False) -> JSON:
    """One Prometheus query; range queries ask for exemplars, so points link to their traces."""
    return {
        "refId": ref_id,
        "datasource": PROMETHEUS,
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "exemplar": not instant,
    }


def targets(*queries: tuple[str, str]) -> list[JSON]:
    """Several ``(expr, legend)`` queries with refIds A, B, C, ..."""
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def trace_link(traceql: str) -> JSON:
    """A data link opening Tempo in Explore with ``traceql`` over the panel's time range."""
    pane = {
        "datasource": f"${{{TEMPO_VARIABLE}}}",
        "queries": [
            {
                "refId": "A",
                "datasource": {"type": "tempo", "uid": f"${{{TEMPO_VARIABLE}}}"},
                "queryType": "traceql",
                "query": traceql,
            }
        ],
        "range": {"from": "${__from}", "to": "${__to}"},
    }
    # Keep ${...} unescaped: Grafana interpolates them before the browser decodes the URL.
    panes = urllib.parse.quote(json.dumps({"traces": pane}, separators=(",", ":")), safe="${}:,")
    return {"title": "Traces of these calls", "url": f"/explore?schemaVersion=1&panes={panes}"}


def panel(
    kind: str,
    title: str,
    description: str,
    unit: str,
    queries: list[JSON],
    *,
    width: int = 12,
    height: int = 8,
    traceql: str = RESERVATION_SPANS,
    thresholds: tuple[float, ...] = (),
    options: JSON | None = None,
) -> JSON:
    """A panel on the Prometheus datasource variable, with a unit, a description and a trace link."""
    steps: list[JSON] = [{"color": "green", "value": None}]
    colors = ("orange", "red")
    steps += [{"color": color, "value": value} for color, value in zip(colors, thresholds, strict=False)]
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": PROMETHEUS,
        "targets": queries,
        "gridPos": {"h": height, "w": width, "x": 0, "y": 0},
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "links": [trace_link(traceql)],
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": [],
        },
        "options": options or _default_options(kind),
    }


def _default_options(kind: str) -> JSON:
    if kind == "timeseries":
        return {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}


def datasource_variable(name: str, plugin: str, label: str) -> JSON:
    return {"type": "datasource", "name": name, "label": label, "query": plugin, "current": {}, "hide": 0}


def label_variable(name: str, label: str, metric: str, label_name: str) -> JSON:
    """A multi-value variable over the values of ``label_name`` on ``metric`` (All = any)."""
    query = f"label_values({metric}, {label_name})"
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": PROMETHEUS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "sort": 1,
        "hide": 0,
    }


ALERT_ANNOTATION: JSON = {
    "name": "Cycles alerts",
    "datasource": PROMETHEUS,
    "enable": True,
    "iconColor": "red",
    "expr": 'ALERTS{alertname=~"Cycles.+", alertstate="firing"}',
    "step": "60s",
    "titleFormat": "{{alertname}} ({{severity}})",
    "tagKeys": "severity,cycles_scope,cycles_unit",
    "useValueForTime": False,
}


def dashboard(uid: str, title: str, description: str, variables: list[JSON], panels: list[JSON]) -> JSON:
    """The dashboard: panels get ids and flow left to right, top to bottom."""
    x = y = row_height = 0
    placed = []
    for number, item in enumerate(panels, start=1):
        pos = item["gridPos"]
        if x + pos["w"] > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        placed.append({"id": number, **item, "gridPos": {**pos, "x": x, "y": y}})
        x += pos["w"]
        row_height = max(row_height, pos["h"])
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["cycles", "cycles-otel"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": [ALERT_ANNOTATION]},
        "links": [
            {
                "type": "dashboards",
                "title": "Cycles",
                "tags": ["cycles"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {
            "list": [
                datasource_variable("datasource", "prometheus", "Prometheus"),
                datasource_variable(TEMPO_VARIABLE, "tempo", "Tempo"),
                *variables,
            ]
        },
        "panels": placed,
    }
