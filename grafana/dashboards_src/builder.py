"""A small builder for Grafana dashboard JSON: the house rules are built in, not remembered."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

JSON = dict[str, Any]

PROMETHEUS: JSON = {"type": "prometheus", "uid": "${datasource}"}
TEMPO_VARIABLE = "tempo"
TEMPO: JSON = {"type": "tempo", "uid": f"${{{TEMPO_VARIABLE}}}"}
# The Cycles admin dashboard (a Vue app of its own) lists the authority's events and audit entries
# of one W3C trace at <base>/events?trace_id=<trace id>; the base is a dashboard variable.
CYCLES_ADMIN_VARIABLE = "cycles_admin_url"
CYCLES_ADMIN_URL_ENV = "CYCLES_ADMIN_URL"
DEFAULT_CYCLES_ADMIN_URL = "http://127.0.0.1:8080"  # where deploy/docker-compose.yaml publishes it
# Grafana's Tempo search results name the trace id column so (display name of field traceID).
TRACE_ID_FIELD = "Trace ID"
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


def trace_link(traceql: str, title: str = "Traces of these calls") -> JSON:
    """A data link opening Tempo in Explore with ``traceql`` (or a trace id) over the panel's time range."""
    pane = {
        "datasource": f"${{{TEMPO_VARIABLE}}}",
        "queries": [{"refId": "A", "datasource": TEMPO, "queryType": "traceql", "query": traceql}],
        "range": {"from": "${__from}", "to": "${__to}"},
    }
    # Keep ${...} unescaped: Grafana interpolates them before the browser decodes the URL.
    panes = urllib.parse.quote(json.dumps({"traces": pane}, separators=(",", ":")), safe="${}:,")
    return {"title": title, "url": f"/explore?schemaVersion=1&panes={panes}"}


def cycles_events_link(trace_id: str) -> JSON:
    """A data link to the Cycles admin dashboard's events of one trace (``trace_id``: a link variable)."""
    # :raw keeps the base URL's "://" intact whatever escaping Grafana applies to the link.
    return {
        "title": "Cycles events of this trace",
        "url": f"${{{CYCLES_ADMIN_VARIABLE}:raw}}/events?trace_id={trace_id}",
        "targetBlank": True,
    }


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


def trace_table(title: str, description: str, traceql: str, *, width: int = 24, height: int = 8) -> JSON:
    """A Tempo panel listing the traces ``traceql`` finds, newest first.

    Each trace id opens the trace in Tempo and the Cycles events of the same trace. The links
    replace the ones Tempo puts on that column, so both are given here.
    """
    trace_id = "${__value.raw}"
    links = [trace_link(trace_id, "This trace in Tempo"), cycles_events_link(trace_id)]
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": TEMPO,
        "targets": [
            {
                "refId": "A",
                "datasource": TEMPO,
                "queryType": "traceql",
                "query": traceql,
                "tableType": "traces",
                "limit": 20,
            }
        ],
        "gridPos": {"h": height, "w": width, "x": 0, "y": 0},
        "fieldConfig": {
            "defaults": {},
            "overrides": [
                {
                    "matcher": {"id": "byName", "options": TRACE_ID_FIELD},
                    "properties": [{"id": "links", "value": links}],
                }
            ],
        },
        "options": {"showHeader": True, "sortBy": [{"displayName": "Start time", "desc": True}]},
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


def cycles_admin_variable(url: str) -> JSON:
    """The base URL of the Cycles admin dashboard, a textbox a viewer can change (``url`` by default)."""
    return {
        "type": "textbox",
        "name": CYCLES_ADMIN_VARIABLE,
        "label": "Cycles admin",
        "description": "Base URL of the Cycles admin dashboard: trace links open <this>/events?trace_id=...",
        "query": url,
        "current": {"selected": False, "text": url, "value": url},
        "options": [{"selected": True, "text": url, "value": url}],
        "hide": 0,
    }


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


def dashboard(
    uid: str, title: str, description: str, variables: list[JSON], panels: list[JSON], cycles_admin_url: str
) -> JSON:
    """The dashboard: panels get ids and flow left to right, top to bottom.

    ``cycles_admin_url`` is the default of the ``cycles_admin_url`` variable, which the trace
    tables' links and the Prometheus datasource's exemplar links (deploy/grafana) read.
    """
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
                cycles_admin_variable(cycles_admin_url),
            ]
        },
        "panels": placed,
    }
