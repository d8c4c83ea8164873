"""Prometheus rules and alerts in grafana/prometheus: promtool checks and unit tests, house rules, runbook."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary
from tests.grafana_support import (
    GRAFANA,
    RULE_FILES,
    RULE_TESTS,
    RUNBOOK,
    alerts,
    known_labels,
    label_names,
    load_yaml,
    metric_names,
    recorded_names,
    rules,
)

SEVERITIES = {"critical", "warning", "info"}
ALERT_NAME = re.compile(r"Cycles(?:[A-Z][a-z0-9]+)+")
RUNBOOK_PREFIX = "grafana/runbook.md#"


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, check=False, cwd=cwd)


def runbook_anchors() -> set[str]:
    """GitHub-style anchors of the runbook's headings."""
    headings = re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def rule_tests() -> list[dict[str, Any]]:
    return [case for path in RULE_TESTS for case in load_yaml(path)["tests"]]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_rule_file_passes_promtool_check(path: Path) -> None:
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool test files under grafana/tests"
    result = promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_fail_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The harness can fail: the same cases with one expected label changed must not pass."""
    shutil.copytree(GRAFANA, tmp_path / "grafana", ignore=shutil.ignore_patterns("dashboards*"))
    broken = tmp_path / "grafana" / "tests" / RULE_TESTS[0].name
    text = broken.read_text(encoding="utf-8")
    assert "severity: warning" in text
    broken.write_text(text.replace("severity: warning", "severity: critical", 1), encoding="utf-8")
    result = promtool("test", "rules", broken)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_rule_tests_load_the_committed_rule_files() -> None:
    for path in RULE_TESTS:
        loaded = {(path.parent / name).resolve() for name in load_yaml(path)["rule_files"]}
        assert loaded <= set(RULE_FILES), (
            f"{path.name} loads {loaded}: point rule_files at grafana/prometheus"
        )


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: f"{a['alert']}-{a['labels']['severity']}")
def test_alert_follows_the_house_rules(alert: dict[str, Any]) -> None:
    assert ALERT_NAME.fullmatch(alert["alert"]), "alert names are CamelCase with the Cycles prefix"
    assert alert["labels"]["severity"] in SEVERITIES
    annotations = alert["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    assert "{{" not in annotations["summary"], "summary is a static sentence"
    assert "$value" in annotations["description"] and "$labels." in annotations["description"], (
        "description names what fired (a label) and how bad it is ($value)"
    )
    url = annotations["runbook_url"]
    assert url == RUNBOOK_PREFIX + alert["alert"].lower(), "runbook_url points at the alert's own section"
    assert url.removeprefix(RUNBOOK_PREFIX) in runbook_anchors(), f"{RUNBOOK.name} has no section for {url}"


def test_runbook_has_no_section_without_an_alert() -> None:
    sections = set(re.findall(r"^## (Cycles\w+)$", RUNBOOK.read_text(encoding="utf-8"), flags=re.M))
    assert sections == {alert["alert"] for alert in alerts()}


def test_every_alert_is_tested_silent_and_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in rule_tests():
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {alert["alert"] for alert in alerts()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown silent (before their condition or for:)"


def test_every_alert_severity_is_tested() -> None:
    tested = {
        (check["alertname"], expected["exp_labels"]["severity"])
        for case in rule_tests()
        for check in case.get("alert_rule_test", [])
        for expected in check.get("exp_alerts") or []
    }
    assert {(a["alert"], a["labels"]["severity"]) for a in alerts()} <= tested


def test_every_recording_rule_is_tested() -> None:
    exprs = [check["expr"] for case in rule_tests() for check in case.get("promql_expr_test", [])]
    untested = {name for name in recorded_names() if not any(name in metric_names(e) for e in exprs)}
    assert untested == set()


def test_recording_rules_follow_the_naming_convention() -> None:
    for name in recorded_names():
        level, metric, operation = name.split(":")
        assert level and metric.startswith("cycles_") and operation, f"{name}: use level:metric:operations"


def test_alerts_read_recorded_series_only_from_their_own_group() -> None:
    """promtool and Prometheus evaluate groups independently: keep rule and reader together."""
    records: dict[tuple[Path, str], set[str]] = {}
    for path, group, rule in rules():
        if "record" in rule:
            records.setdefault((path, group), set()).add(rule["record"])
    for path, group, rule in rules():
        if "alert" in rule:
            used = metric_names(rule["expr"]) & recorded_names()
            assert used <= records.get((path, group), set()), (
                f"{rule['alert']} reads {used} from another group"
            )


def test_alerts_file_reads_raw_metrics_only() -> None:
    for path, _, rule in rules():
        if path.name == "alerts.yaml":
            assert "record" not in rule
            assert not metric_names(rule["expr"]) & recorded_names(), (
                f"{rule['alert']}: move it to rules.yaml"
            )


def test_rules_use_only_known_labels() -> None:
    added = {label for _, _, rule in rules() for label in rule.get("labels", {})}
    for _, _, rule in rules():
        unknown = label_names(rule["expr"]) - known_labels() - added
        assert unknown == set(), f"{rule.get('alert') or rule.get('record')}: unknown labels {unknown}"


def test_rule_files_are_plain_yaml_groups() -> None:
    for path in RULE_FILES:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert set(document) == {"groups"}
        names = [group["name"] for group in document["groups"]]
        assert len(names) == len(set(names))
