"""A rule file as committed YAML: the header, one comment above each rule that has one, block expressions."""

from __future__ import annotations

from .model import Alert, Record, Rule, RuleFile
from .wording import promql
from .yaml_text import checked, comment, field, folded


def rule_file_text(file: RuleFile, runbook_base_url: str) -> str:
    lines = [*comment(0, file.header), "groups:"]
    for number, group in enumerate(file.groups):
        if number:
            lines.append("")
        lines += [f"  - name: {group.name}", "    rules:"]
        for rule in group.rules:
            lines += comment(6, rule.comment) if rule.comment else []
            lines += _rule_lines(rule, runbook_base_url)
    text = "\n".join(lines) + "\n"
    expected = {
        "groups": [
            {"name": g.name, "rules": [_data(r, runbook_base_url) for r in g.rules]} for g in file.groups
        ]
    }
    return checked(text, expected, file.name)


def _data(rule: Rule, runbook_base_url: str) -> dict[str, object]:
    return rule.as_data() if isinstance(rule, Record) else rule.as_data(runbook_base_url)


def _rule_lines(rule: Rule, runbook_base_url: str) -> list[str]:
    if isinstance(rule, Record):
        lines = [field(6, "- record", rule.name), field(8, "expr", rule.expr)]
        if rule.labels:
            lines += ["        labels:", *(field(10, key, value) for key, value in rule.labels.items())]
        return lines
    return _alert_lines(rule, runbook_base_url)


def _alert_lines(alert: Alert, runbook_base_url: str) -> list[str]:
    lines = [field(6, "- alert", alert.name), field(8, "expr", alert.expr)]
    if alert.hold:
        lines.append(field(8, "for", promql(alert.hold)))
    annotations = alert.annotations(runbook_base_url)
    return [
        *lines,
        "        labels:",
        field(10, "severity", alert.severity),
        "        annotations:",
        field(10, "summary", annotations["summary"]),
        folded(10, "description", annotations["description"]),
        field(10, "runbook_url", annotations["runbook_url"]),
    ]
