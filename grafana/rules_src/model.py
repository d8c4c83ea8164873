"""Typed Prometheus rules: recording rules, alerts, groups and rule files, as the generator builds them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from .wording import promql

Severity = Literal["critical", "warning", "info"]

# The pieces of Go templates our annotations use: Prometheus fills them in when an alert fires.
VALUE = "{{ $value }}"
VALUE_HUMAN = "{{ $value | humanize }}"
VALUE_PERCENT = "{{ $value | humanizePercentage }}"
VALUE_DURATION = "{{ $value | humanizeDuration }}"

# Budget series are per scope and unit; several processes may report one scope.
BY_SCOPE = "by (cycles_scope, cycles_unit)"
SCOPE_MATCH = "on (cycles_scope, cycles_unit)"


def label(name: str) -> str:
    """The template of one label's value, e.g. ``{{ $labels.cycles_scope }}``."""
    return "{{ $labels." + name + " }}"


@dataclass(frozen=True)
class Record:
    """A recording rule; ``comment`` says why it is computed this way."""

    name: str
    expr: str
    labels: Mapping[str, str] = field(default_factory=dict)
    comment: str = ""

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"record": self.name, "expr": self.expr}
        if self.labels:
            data["labels"] = dict(self.labels)
        return data


@dataclass(frozen=True)
class Alert:
    """An alert: a static ``summary``, a templated ``description``, its runbook section by name."""

    name: str
    severity: Severity
    expr: str
    summary: str
    description: str
    hold: timedelta | None = None  # the rule's `for:`; None fires at the first evaluation
    comment: str = ""

    @property
    def anchor(self) -> str:
        """The runbook section's anchor, as GitHub and most Markdown renderers derive it."""
        return self.name.lower()

    def runbook_url(self, base_url: str) -> str:
        return f"{base_url}#{self.anchor}"

    def annotations(self, runbook_base_url: str) -> dict[str, str]:
        return {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": self.runbook_url(runbook_base_url),
        }

    def as_data(self, runbook_base_url: str) -> dict[str, Any]:
        data: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.hold:
            data["for"] = promql(self.hold)
        data["labels"] = {"severity": self.severity}
        data["annotations"] = self.annotations(runbook_base_url)
        return data


Rule = Record | Alert


@dataclass(frozen=True)
class Group:
    name: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class RuleFile:
    """One file under grafana/prometheus/; ``header`` is its opening comment."""

    name: str
    header: str
    groups: tuple[Group, ...]

    def alerts(self) -> Iterator[Alert]:
        for group in self.groups:
            yield from (rule for rule in group.rules if isinstance(rule, Alert))


def find_alert(files: tuple[RuleFile, ...], name: str, severity: Severity | None = None) -> Alert:
    """The alert called ``name`` (at ``severity`` when several share the name)."""
    found = [
        alert
        for file in files
        for alert in file.alerts()
        if alert.name == name and severity in (None, alert.severity)
    ]
    if len(found) != 1:
        raise LookupError(f"{len(found)} alerts named {name} (severity {severity}): name one severity")
    return found[0]
