"""The committed Grafana dashboards and the PromQL they query."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from grafana.dashboards_src import OUTPUT_DIR

TEMPO_VARIABLE = "${tempo}"
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


def is_trace_list(panel: dict[str, Any]) -> bool:
    """A panel that lists traces from Tempo (every other panel queries Prometheus)."""
    return bool(panel.get("datasource", {}).get("uid") == TEMPO_VARIABLE)


def expressions(dashboard: Dashboard) -> dict[str, str]:
    """Every PromQL expression of a dashboard, keyed by where it is."""
    found = {
        f"panel {p['id']} {p['title']} {t['refId']}": t["expr"]
        for p in panels(dashboard)
        if not is_trace_list(p)
        for t in p["targets"]
    }
    found |= {f"annotation {a['name']}": a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a}
    for variable in variables(dashboard):
        if variable["type"] == "query":
            query = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
            assert query, f"variable {variable['name']}: use label_values(metric, label)"
            found[f"variable {variable['name']}"] = query.group(1)
    return found
