"""Generator of the alert rules, their promtool tests and the runbook (``python -m grafana.rules_src``).

One configuration (:mod:`.config`: the runbook base URL, every threshold, window and ``for:``)
feeds ``prometheus/rules.yaml``, ``prometheus/alerts.yaml``, ``tests/*_test.yaml`` and
``runbook.md``, all under ``grafana/`` and committed as generated.
"""

from __future__ import annotations

from pathlib import Path

from . import alerts, rules
from .cases import alerts as alert_cases
from .cases import budget as budget_cases
from .cases import client as client_cases
from .config import DEFAULT_RUNBOOK_URL, TUNABLES, Tunables
from .model import RuleFile
from .promtool_tests import rule_tests_text
from .rule_text import rule_file_text
from .runbook import runbook_text

GRAFANA_DIR = Path(__file__).resolve().parents[1]


def rule_files(tunables: Tunables = TUNABLES) -> tuple[RuleFile, ...]:
    return rules.rule_file(tunables), alerts.rule_file(tunables)


def rendered(runbook_url: str = DEFAULT_RUNBOOK_URL, tunables: Tunables = TUNABLES) -> dict[str, str]:
    """Path under grafana/ -> text, for every generated file."""
    files = rule_files(tunables)
    out = {f"prometheus/{file.name}": rule_file_text(file, runbook_url) for file in files}
    for cases in (alert_cases, budget_cases, client_cases):
        suite = cases.suite(files, tunables)
        out[f"tests/{suite.name}"] = rule_tests_text(suite, runbook_url)
    out["runbook.md"] = runbook_text(files, tunables)
    return out
