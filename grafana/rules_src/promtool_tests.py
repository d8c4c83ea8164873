"""promtool unit tests as data: expected annotations come from the alerts, eval times from their ``for:``.

A case states its input series and, per alert, when the alert's condition starts to hold
(:func:`fires`): the test then checks the alert silent one evaluation before its hold has passed
and firing once it has, with the alert's own summary and runbook URL and its description
rendered for the case's labels and value. A threshold, a hold or the runbook URL is therefore
written once, in the config; test data that no longer crosses a threshold where the case says
it does makes ``promtool test rules`` fail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from .model import Alert
from .yaml_text import checked, comment, field

EVALUATION = timedelta(minutes=1)  # the tests' evaluation_interval and input series interval
_ACTION = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_LABEL = re.compile(r"\$labels\.(\w+)")


def minutes(count: int) -> timedelta:
    return timedelta(minutes=count)


def series(metric: str, **labels: str) -> str:
    """A series selector, labels in the given order: ``metric{a="1",b="2"}``."""
    return metric + "{" + ",".join(f'{name}="{value}"' for name, value in labels.items()) + "}"


@dataclass(frozen=True)
class Firing:
    """One alert expected to fire: its labels besides ``severity``, and what ``$value`` renders to."""

    alert: Alert
    labels: Mapping[str, str]
    value: str = ""  # the text of the description's {{ $value ... }} action at that evaluation

    def exp_labels(self) -> dict[str, str]:
        return {"severity": self.alert.severity, **self.labels}

    def description(self) -> str:
        def render(action: re.Match[str]) -> str:
            inner = action.group(1)
            if label := _LABEL.fullmatch(inner):
                if label.group(1) not in self.labels:
                    raise ValueError(f"{self.alert.name}: the case gives no label {label.group(1)}")
                return self.labels[label.group(1)]
            if "$value" in inner and self.value:
                return self.value
            raise ValueError(f"{self.alert.name}: give the case a value for {{{{ {inner} }}}}")

        return _ACTION.sub(render, self.alert.description)


@dataclass(frozen=True)
class Check:
    """``alertname`` at ``at``: exactly ``firing`` fire; ``silent`` alerts of that name do not."""

    at: timedelta
    alertname: str
    firing: tuple[Firing, ...] = ()
    silent: tuple[Alert, ...] = ()


def fires(alert: Alert, since: timedelta, labels: Mapping[str, str], value: str = "") -> tuple[Check, Check]:
    """The alert's condition holds from ``since``: silent until its ``for:`` has passed, firing from then."""
    at = since + (alert.hold or timedelta(0))
    return Check(at - EVALUATION, alert.name, silent=(alert,)), firing(alert, at, labels, value)


def firing(alert: Alert, at: timedelta, labels: Mapping[str, str], value: str = "") -> Check:
    return Check(at, alert.name, firing=(Firing(alert, labels, value),))


def silent(alert: Alert, at: timedelta) -> Check:
    return Check(at, alert.name, silent=(alert,))


@dataclass(frozen=True)
class Sample:
    labels: str
    value: float


@dataclass(frozen=True)
class ExprCheck:
    """A recording rule (or any PromQL) evaluated at ``at`` gives exactly ``samples``."""

    expr: str
    at: timedelta
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class Case:
    """One promtool test: ``series`` (selector -> values notation) and what to expect of them."""

    comment: str
    series: Mapping[str, str]
    exprs: tuple[ExprCheck, ...] = ()
    checks: tuple[Check, ...] = ()

    def merged_checks(self) -> list[Check]:
        """One check per (time, alert name), in first-mention order: promtool lists all alerts of a name."""
        merged: dict[tuple[timedelta, str], Check] = {}
        for check in self.checks:
            key = (check.at, check.alertname)
            old = merged.get(key, Check(check.at, check.alertname))
            merged[key] = Check(key[0], key[1], old.firing + check.firing, old.silent + check.silent)
        for check in merged.values():
            clash = {f.alert for f in check.firing} & set(check.silent)
            if clash:
                names = ", ".join(f"{a.name} ({a.severity})" for a in clash)
                raise ValueError(f"expected both silent and firing at {_eval_time(check.at)}: {names}")
        return list(merged.values())


@dataclass(frozen=True)
class RuleTests:
    """One file under grafana/tests/: the rule file it loads and its cases."""

    name: str
    header: str
    rule_file: str
    cases: tuple[Case, ...]


def rule_tests_text(file: RuleTests, runbook_base_url: str) -> str:
    lines = [
        *comment(0, file.header),
        "rule_files:",
        f"  - ../prometheus/{file.rule_file}",
        f"evaluation_interval: {_eval_time(EVALUATION)}",
        "",
        "tests:",
    ]
    for number, case in enumerate(file.cases):
        lines += [""] if number else []
        lines += [*comment(2, case.comment), *_case_lines(case, runbook_base_url)]
    text = "\n".join(lines) + "\n"
    expected = {
        "rule_files": [f"../prometheus/{file.rule_file}"],
        "evaluation_interval": _eval_time(EVALUATION),
        "tests": [_case_data(case, runbook_base_url) for case in file.cases],
    }
    return checked(text, expected, file.name)


def _case_data(case: Case, runbook_base_url: str) -> dict[str, object]:
    data: dict[str, object] = {
        "interval": _eval_time(EVALUATION),
        "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
    }
    if case.exprs:
        data["promql_expr_test"] = [
            {
                "expr": e.expr,
                "eval_time": _eval_time(e.at),
                "exp_samples": [{"labels": s.labels, "value": s.value} for s in e.samples],
            }
            for e in case.exprs
        ]
    if case.checks:
        data["alert_rule_test"] = [
            {
                "eval_time": _eval_time(c.at),
                "alertname": c.alertname,
                "exp_alerts": [
                    {"exp_labels": f.exp_labels(), "exp_annotations": _annotations(f, runbook_base_url)}
                    for f in c.firing
                ],
            }
            for c in case.merged_checks()
        ]
    return data


def _annotations(expected: Firing, runbook_base_url: str) -> dict[str, str]:
    return {**expected.alert.annotations(runbook_base_url), "description": expected.description()}


def _case_lines(case: Case, runbook_base_url: str) -> list[str]:
    lines = [field(2, "- interval", _eval_time(EVALUATION)), "    input_series:"]
    for series, values in case.series.items():
        lines += [field(6, "- series", series, quote=True), field(8, "values", values, quote=True)]
    if case.exprs:
        lines.append("    promql_expr_test:")
    for expr in case.exprs:
        lines += [field(6, "- expr", expr.expr), field(8, "eval_time", _eval_time(expr.at))]
        lines.append("        exp_samples:")
        for sample in expr.samples:
            lines += [field(10, "- labels", sample.labels, quote=True), field(12, "value", sample.value)]
    checks = case.merged_checks()
    if checks:
        lines.append("    alert_rule_test:")
    for check in checks:
        lines += [field(6, "- eval_time", _eval_time(check.at)), field(8, "alertname", check.alertname)]
        lines.append("        exp_alerts:" + ("" if check.firing else " []"))
        for expected in check.firing:
            lines.append("          - exp_labels:")
            lines += [field(14, key, value) for key, value in expected.exp_labels().items()]
            lines.append("            exp_annotations:")
            annotations = _annotations(expected, runbook_base_url)
            lines += [field(14, key, value) for key, value in annotations.items()]
    return lines


def _eval_time(at: timedelta) -> str:
    return f"{int(at.total_seconds() // 60)}m"
