"""grafana/prometheus rules and alerts: generated, checked and tested by promtool; house rules; runbook."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from grafana.rules_src import GRAFANA_DIR, rendered
from grafana.rules_src.config import DEFAULT_RUNBOOK_URL, RUNBOOK_URL_ENV, TUNABLES
from tests.support.ci import require_binary
from tests.support.grafana import (
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

pytestmark = pytest.mark.slow

SEVERITIES = {"critical", "warning", "info"}
ALERT_NAME = re.compile(r"Cycles(?:[A-Z][a-z0-9]+)+")
RUNBOOK_PREFIX = DEFAULT_RUNBOOK_URL + "#"
OTHER_RUNBOOK = "https://runbooks.example.org/cycles/runbook.md"


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, check=False, cwd=cwd)


def runbook_anchors() -> set[str]:
    """GitHub-style anchors of the runbook's headings."""
    headings = re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def rule_tests() -> list[dict[str, Any]]:
    return [case for path in RULE_TESTS for case in load_yaml(path)["tests"]]


def generator(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m grafana.rules_src ARGS`` from the repository root, with ``env`` added to ours."""
    environment = {k: v for k, v in os.environ.items() if k != RUNBOOK_URL_ENV} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "grafana.rules_src", *args],
        capture_output=True, text=True, check=False, cwd=GRAFANA.parent, env=environment,
    )  # fmt: skip


def write_generated(root: Path, files: dict[str, str]) -> Path:
    """``files`` (paths under grafana/) laid out under ``root``/grafana; returns that folder."""
    for name, text in files.items():
        path = root / "grafana" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "grafana"


def test_committed_files_are_the_generator_output() -> None:
    for name, text in rendered().items():
        assert (GRAFANA_DIR / name).read_text(encoding="utf-8") == text, (
            f"grafana/{name} is stale: python -m grafana.rules_src"
        )
    assert {f"prometheus/{p.name}" for p in RULE_FILES} | {f"tests/{p.name}" for p in RULE_TESTS} <= set(
        rendered()
    )


def test_generator_check_passes_on_the_committed_files() -> None:
    result = generator("--check")
    assert result.returncode == 0, result.stderr


def test_generator_check_fails_when_the_committed_files_are_stale() -> None:
    """Another runbook URL, by flag or by environment, makes every rule and test file stale."""
    for result in (
        generator("--check", "--runbook-url", OTHER_RUNBOOK),
        generator("--check", env={RUNBOOK_URL_ENV: OTHER_RUNBOOK}),
    ):
        assert result.returncode == 1
        assert "prometheus/alerts.yaml" in result.stderr and "tests/budget_test.yaml" in result.stderr
        assert "runbook.md" not in result.stderr.split(";")[0], "the runbook does not depend on its own URL"


@pytest.mark.parametrize(
    ("url", "problem"),
    [("grafana/runbook.md", "absolute http(s) URL"), (OTHER_RUNBOOK + "#top", "#...")],
)
def test_generator_refuses_a_runbook_url_alertmanager_cannot_open(url: str, problem: str) -> None:
    result = generator("--check", "--runbook-url", url)
    assert result.returncode == 2
    assert "--runbook-url" in result.stderr and problem in result.stderr
    result = generator("--check", env={RUNBOOK_URL_ENV: url})
    assert result.returncode == 2 and RUNBOOK_URL_ENV in result.stderr


def test_the_runbook_url_is_written_once(tmp_path: Path) -> None:
    """Rules and their tests generated for another runbook URL agree with each other (promtool passes)."""
    folder = write_generated(tmp_path, rendered(OTHER_RUNBOOK))
    result = promtool("test", "rules", *sorted((folder / "tests").glob("*.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    urls = re.findall(r"runbook_url: (\S+)", "".join(p.read_text() for p in folder.rglob("*.yaml")))
    assert urls and all(url.startswith(OTHER_RUNBOOK + "#") for url in urls)


def test_promtool_tests_fail_when_a_threshold_moves_without_its_test_data(tmp_path: Path) -> None:
    """The tests read holds and annotations from the config, but their data crosses thresholds where it
    says it does: a threshold changed alone makes ``promtool test rules`` fail."""
    moved = dataclasses.replace(TUNABLES, utilisation_warning=0.7)
    folder = write_generated(tmp_path, rendered(tunables=moved))
    result = promtool("test", "rules", folder / "tests" / "budget_test.yaml")
    assert result.returncode == 1
    assert "CyclesBudgetNearlyExhausted" in result.stdout + result.stderr


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
    assert url.startswith("https://"), "an absolute URL, so a notification's link opens"


def test_runbook_generation_refuses_a_template_that_leaves_a_tunable_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runbook quotes every threshold, window and hold from the config, never a copy of its own."""
    from grafana.rules_src import runbook

    template = tmp_path / "runbook.template.md"
    template.write_text(runbook.TEMPLATE.read_text(encoding="utf-8").replace("${stale_for}", "5 minutes"))
    monkeypatch.setattr(runbook, "TEMPLATE", template)
    with pytest.raises(ValueError, match="stale_for"):
        rendered()


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
