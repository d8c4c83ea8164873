"""Generator of the Grafana dashboards in grafana/dashboards/ (run ``python -m grafana.dashboards_src``)."""

from __future__ import annotations

import json
from pathlib import Path

from . import agents, budgets, reservations
from .builder import DEFAULT_CYCLES_ADMIN_URL, JSON

OUTPUT_DIR = Path(__file__).resolve().parents[1] / "dashboards"
BUILDERS = {
    "budgets.json": budgets.build,
    "reservations.json": reservations.build,
    "agents-models.json": agents.build,
}


def render(dashboard: JSON) -> str:
    """The committed form: two-space indent, stable key order, trailing newline."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def rendered(cycles_admin_url: str = DEFAULT_CYCLES_ADMIN_URL) -> dict[str, str]:
    """File name -> JSON text of every dashboard, ``cycles_admin_url`` the default of its variable."""
    return {name: render(build(cycles_admin_url)) for name, build in BUILDERS.items()}
