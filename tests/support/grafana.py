"""grafana/ and deploy/ helpers: rule files, PromQL read for names, the exported metric set, promtool."""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Counter, Histogram, UpDownCounter
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cycles_otel import semconv
from cycles_otel.balance_board import BalanceReading
from cycles_otel.instruments import METER_NAME, Instruments
from cycles_otel.tally import Tally
from tests.support.paths import REPO

GRAFANA = REPO / "grafana"
RULE_FILES = (GRAFANA / "prometheus" / "rules.yaml", GRAFANA / "prometheus" / "alerts.yaml")
RULE_TESTS = tuple(sorted((GRAFANA / "tests").glob("*.yaml")))
RUNBOOK = GRAFANA / "runbook.md"

# Series Prometheus itself adds (ALERTS) and labels it or the OTel exporter put on every series.
BUILTIN_SERIES = frozenset({"ALERTS", "ALERTS_FOR_STATE"})
BUILTIN_LABELS = frozenset(
    {"job", "instance", "le", "quantile", "alertname", "alertstate", "severity"}
    | {"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}
)
RATE_FUNCTIONS = ("rate", "irate", "increase")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> Iterator[tuple[Path, str, dict[str, Any]]]:
    """(file, group name, rule) for every rule of both rule files."""
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                yield path, group["name"], rule


def alerts() -> list[dict[str, Any]]:
    return [rule for _, _, rule in rules() if "alert" in rule]


def recorded_names() -> frozenset[str]:
    return frozenset(rule["record"] for _, _, rule in rules() if "record" in rule)


# --- PromQL, read just enough to find names -----------------------------------------------------
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_SELECTOR = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*\{[^{}]*\}")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$[a-zA-Z_]\w*")
KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"inf", "nan", "Inf", "NaN"}
)
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def with_grafana_variables(expr: str) -> str:
    """``expr`` with Grafana's interval variables as durations and other variables as ``.*``."""
    for name, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(name, value)
    return _VARIABLE.sub(".*", expr)


def _without_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def label_names(expr: str) -> frozenset[str]:
    """Labels named in matchers and in by/without/on/ignoring/group_* clauses."""
    bare = _without_strings(expr)
    found = {label for body in _MATCHERS.findall(bare) for label in _MATCHER_LABEL.findall(body)}
    for body in _GROUPING.findall(bare):
        found |= {part.strip() for part in body.split(",") if part.strip()}
    return frozenset(found)


def metric_names(expr: str) -> frozenset[str]:
    """Series names an expression selects (identifiers that are not functions, keywords or labels)."""
    bare = _RANGE.sub("", _GROUPING.sub("", _MATCHERS.sub("", _without_strings(expr))))
    names = set()
    for match in _IDENTIFIER.finditer(bare):
        name, call = match.groups()
        if call is None and name not in KEYWORDS:
            names.add(name)
    return frozenset(names)


def selectors(expr: str) -> list[str]:
    """The vector selectors of ``expr`` that carry matchers, as written: ``metric{a="1", b=~"x.*"}``."""
    return _SELECTOR.findall(expr)


def rate_ranges(expr: str) -> list[str]:
    """The range of every rate()/irate()/increase() call, e.g. ``['$__rate_interval']``."""
    pattern = r"\b(?:" + "|".join(RATE_FUNCTIONS) + r")\s*\([^\[\]]*\[([^\]]*)\]"
    return re.findall(pattern, _without_strings(expr))


def enclosing_functions(expr: str, position: int) -> list[str]:
    """Names of the calls around ``position``, innermost first (aggregations included)."""
    bare = _without_strings(expr)
    found: list[str] = []
    depth = 0
    for index in range(position - 1, -1, -1):
        char = bare[index]
        if char == ")":
            depth += 1
        elif char == "(":
            if depth:
                depth -= 1
                continue
            head = re.search(r"([a-zA-Z_]\w*)\s*$", bare[:index])
            found.append(head.group(1) if head else "")
    return found


def counters_outside_rate(expr: str, counters: frozenset[str]) -> list[str]:
    """Counter series used anywhere but directly inside rate()/irate()/increase()."""
    bare = _without_strings(expr)
    wrong = []
    for match in _IDENTIFIER.finditer(bare):
        name, call = match.groups()
        if call is None and name in counters:
            calls = enclosing_functions(bare, match.start())
            if not calls or calls[0] not in RATE_FUNCTIONS:
                wrong.append(name)
    return wrong


# --- what the library really exports -----------------------------------------------------------------
@functools.cache
def exported_series() -> Mapping[str, str]:
    """Every series name the OTel Prometheus exporter renders for our instruments -> its family type.

    One point on each instrument of :class:`Instruments` and one balance on its board, so an
    instrument added later is covered without editing this test.
    """
    registry = CollectorRegistry(auto_describe=True)
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    try:
        instruments = Instruments(provider.get_meter(METER_NAME))
        for instrument in vars(instruments).values():
            if isinstance(instrument, Counter | UpDownCounter):
                instrument.add(1)
            elif isinstance(instrument, Tally):
                instrument.add(1, {})
            elif isinstance(instrument, Histogram):
                instrument.record(1.0)
        instruments.board.update(
            BalanceReading("tenant:t", "USD_MICROCENTS", 1, 2, 0, 1, 0, over_limit=False, updated_at=1.0)
        )
        text = generate_latest(registry).decode()
    finally:
        provider.shutdown()
    return {
        sample.name: family.type
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def counter_series() -> frozenset[str]:
    """Series that only ever grow: counter ``_total`` and histogram ``_bucket``/``_sum``/``_count``."""
    return frozenset(name for name, kind in exported_series().items() if kind in {"counter", "histogram"})


@functools.cache
def known_labels() -> frozenset[str]:
    """Every metric label the library can emit: semconv's label and GenAI keys, dots as underscores."""
    keys = {
        value
        for name, value in vars(semconv).items()
        if (name.startswith(("LABEL_", "GEN_AI_")) or name == "ERROR_TYPE")
        and isinstance(value, str)
        and "." in value
    }
    return frozenset(key.replace(".", "_") for key in keys) | BUILTIN_LABELS


# --- promtool --------------------------------------------------------------------------------------
def promtool_check_expressions(promtool: str, exprs: Mapping[str, str], workdir: Path) -> str:
    """Run ``promtool check rules`` over each expression as a recording rule; return its output on failure."""
    group = [
        {"record": f"check:{re.sub(r'[^a-zA-Z0-9_]', '_', name)}", "expr": expr}
        for name, expr in exprs.items()
    ]
    path = workdir / "expressions.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "expressions", "rules": group}]}), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    return "" if result.returncode == 0 else result.stdout + result.stderr
