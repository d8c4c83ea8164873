"""docs/telemetry.md and the code agree: span names, attribute keys, and the real Prometheus exposition."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Counter, Histogram, UpDownCounter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, Sum
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GenAiTokenTypeValues
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from runcycles.models import Decision, Unit  # type: ignore[import-untyped]

from cycles_otel import cardinality, instruments, semconv
from cycles_otel.balance_board import BalanceReading
from cycles_otel.cardinality import CardinalityGuard
from cycles_otel.tally import Tally
from tests.support.ci import require_binary
from tests.support.paths import REPO

DOC_PATH = REPO / "docs" / "telemetry.md"
DOC = DOC_PATH.read_text(encoding="utf-8")
NONE_CELL = "—"
SCOPE_LABELS = frozenset({"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"})
ATTRIBUTE_KEY = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+")


# --- reading the doc ----------------------------------------------------------------------------
def doc_table(heading: str) -> list[dict[str, str]]:
    """Rows of the first markdown table under ``heading`` (a whole heading line), keyed by header."""
    lines = DOC.splitlines()
    assert heading in lines, f"{DOC_PATH.name} has no heading {heading!r}"
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith("#") or (header is not None and not line.startswith("|")):
            break
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set("".join(cells)) <= set("-: "):
            assert len(cells) == len(header), f"malformed row under {heading!r}: {line}"
            rows.append(dict(zip(header, cells, strict=True)))
    assert rows, f"no table under {heading!r}"
    return rows


def code(cell: str) -> list[str]:
    """The backticked items of a cell, in order."""
    return re.findall(r"`([^`]+)`", cell)


def only_code(cell: str) -> str:
    found = code(cell)
    assert len(found) == 1, f"expected one `name` in {cell!r}"
    return found[0]


def labels_of(cell: str) -> frozenset[str]:
    return frozenset() if cell == NONE_CELL else frozenset(code(cell))


# --- reading the code -----------------------------------------------------------------------------
def semconv_values(prefix: str) -> set[str]:
    return {v for k, v in vars(semconv).items() if k.startswith(prefix) and isinstance(v, str)}


SPAN_NAMES = semconv_values("SPAN_")
EVENT_NAMES = semconv_values("EVENT_")
ATTRIBUTE_KEYS = (
    {
        value
        for name, value in vars(semconv).items()
        if name.isupper()
        and not name.startswith(("LABEL_", "METRIC_"))  # metric label keys and names: listed under Metrics
        and isinstance(value, str)
        and ATTRIBUTE_KEY.fullmatch(value)
        and value not in SPAN_NAMES | EVENT_NAMES
    }
    | {semconv.CYCLES_SUBJECT_PREFIX + field for field in semconv.SUBJECT_FIELDS}
    | {semconv.CYCLES_DENY_PREFIX + field for field in semconv.DENY_DETAIL_FIELDS}
)
CHAT_SPAN = f"{semconv.GEN_AI_OPERATION_CHAT} {{model}}"
BUCKET_CONSTANTS = {
    name: value
    for name, value in vars(instruments).items()
    if name.endswith("_BUCKETS") and isinstance(value, tuple)
}


# The label keys of each synchronous instrument: the DESIGN.md contract, pinned here so that the doc
# is checked against it (the budget gauges' labels come from the balance board's own code).
PINNED_LABELS: dict[str, tuple[str, ...]] = {
    "cycles.client.reservations": (
        semconv.LABEL_DECISION,
        semconv.LABEL_REASON,
        semconv.LABEL_ACTION_KIND,
        semconv.LABEL_ACTION_NAME,
    ),
    "cycles.client.decisions": (
        semconv.LABEL_DECISION,
        semconv.LABEL_REASON,
        semconv.LABEL_ACTION_KIND,
        semconv.LABEL_ACTION_NAME,
    ),
    "cycles.client.settlements": (semconv.LABEL_OUTCOME,),
    "cycles.client.reserved": (semconv.LABEL_UNIT,),
    "cycles.client.charged": (semconv.LABEL_UNIT,),
    "cycles.client.cost.usd": (
        semconv.GEN_AI_REQUEST_MODEL,
        semconv.GEN_AI_TOOL_NAME,
        semconv.GEN_AI_AGENT_NAME,
    ),
    "cycles.client.ungoverned": (semconv.ERROR_TYPE,),
    "cycles.client.operation.duration": (semconv.LABEL_OPERATION, semconv.ERROR_TYPE),
    "cycles.client.active_reservations": (),
    "gen_ai.client.token.usage": (
        semconv.GEN_AI_TOKEN_TYPE,
        semconv.GEN_AI_REQUEST_MODEL,
        semconv.GEN_AI_OPERATION_NAME,
        semconv.GEN_AI_PROVIDER_NAME,
    ),
    "gen_ai.client.operation.duration": (
        semconv.GEN_AI_REQUEST_MODEL,
        semconv.GEN_AI_OPERATION_NAME,
        semconv.GEN_AI_PROVIDER_NAME,
        semconv.ERROR_TYPE,
    ),
    "cycles.otel.label_overflow": (semconv.LABEL_OVERFLOW_KEY,),
    "cycles.exporter.poll_errors": (semconv.ERROR_TYPE,),
}


def prometheus_name(otel_name: str, unit: str, instrument: str) -> str:
    """The documented mapping rules (section "From OTel names to Prometheus names")."""
    name = re.sub(r"[^a-zA-Z0-9_:]", "_", otel_name)
    if unit and not unit.startswith("{"):
        name += "_" + {"s": "seconds"}[unit]
    return name + "_total" if instrument == "Counter" else name


# --- 1. spans and attributes, both ways -----------------------------------------------------------
def test_every_span_name_is_documented_and_every_documented_span_exists() -> None:
    documented = {only_code(row["name"]) for row in doc_table("## Spans")}
    assert documented - {CHAT_SPAN} == SPAN_NAMES
    assert CHAT_SPAN in documented


def test_every_attribute_key_is_documented_and_every_documented_key_exists() -> None:
    rows = doc_table("## Span attributes")
    documented = [only_code(row["key"]) for row in rows]
    assert len(documented) == len(set(documented)), "an attribute is listed twice"
    assert set(documented) == ATTRIBUTE_KEYS
    assert all(row["type"] in {"string", "int", "double", "boolean", "string[]"} for row in rows)


def test_every_span_event_is_documented_with_real_spans_and_attributes() -> None:
    rows = doc_table("## Span events")
    assert {only_code(row["name"]) for row in rows} == EVENT_NAMES
    for row in rows:
        assert set(code(row["span"])) <= SPAN_NAMES
        assert set(code(row["attributes"])) <= ATTRIBUTE_KEYS


def test_spans_columns_name_documented_spans_only() -> None:
    known = SPAN_NAMES | {CHAT_SPAN} | ATTRIBUTE_KEYS  # "as `cycles.subject.tenant`" refers to a key
    for row in doc_table("## Span attributes"):
        unknown = set(code(row["spans"])) - known
        assert not unknown, f"{row['key']}: {unknown} is not a span"


def test_no_stale_name_anywhere_in_the_prose(contract: Contract) -> None:
    otel_names = {row.otel_name for row in contract.rows}
    prometheus_names = {row.prometheus_name for row in contract.rows} | set().union(
        *(row.labels for row in contract.rows)
    )
    for token in set(code(DOC)):
        if re.fullmatch(r"cycles\.[a-z_.]*[a-z_]", token):
            assert token in SPAN_NAMES | EVENT_NAMES | ATTRIBUTE_KEYS | otel_names, f"unknown name `{token}`"
        if re.fullmatch(r"(?:cycles|gen_ai)_[a-z_]+", token) and token != instruments.METER_NAME:
            assert token in prometheus_names, f"unknown Prometheus name `{token}`"


def test_configuration_names_in_the_doc_are_the_codes() -> None:
    for expected in (
        semconv.CAPTURE_CONTENT_ENV,
        semconv.SCHEMA_URL,
        instruments.METER_NAME,
        cardinality.LIMIT_ENV,
        cardinality.ALLOW_ENV,
        f"(default {cardinality.DEFAULT_LIMIT})",
        f"`{cardinality.OVERFLOW_VALUE}`",
    ):
        assert expected in DOC


def test_label_value_sets_are_the_codes() -> None:
    values = {only_code(row["label"]): set(code(row["values"])) for row in doc_table("## Label values")}
    assert values["cycles_decision"] == semconv_values("DECISION_") == {d.value for d in Decision}
    assert values["cycles_reason"] == set(semconv.DENIAL_CODES)
    assert values["cycles_outcome"] == semconv_values("OUTCOME_")
    assert values["cycles_operation"] == {
        name.removeprefix("cycles.") for name in SPAN_NAMES - {semconv.SPAN_RESERVATION}
    }
    assert values["cycles_unit"] == {u.value for u in Unit}
    assert values["gen_ai_token_type"] == {t.value for t in GenAiTokenTypeValues}
    assert values["gen_ai_operation_name"] == {semconv.GEN_AI_OPERATION_CHAT}


# --- 2. metrics: the doc's table against a real Prometheus exposition -------------------------------
@dataclass(frozen=True)
class MetricRow:
    otel_name: str
    prometheus_name: str
    instrument: str
    type: str
    unit: str
    labels: frozenset[str]
    buckets: str | None


@dataclass
class Contract:
    rows: list[MetricRow]
    exposition: str
    otel: dict[str, tuple[str, str]]  # OTel name -> (unit, instrument kind) as the SDK exported them

    def row(self, prometheus: str) -> MetricRow:
        return next(r for r in self.rows if r.prometheus_name == prometheus)


def metric_rows() -> list[MetricRow]:
    return [
        MetricRow(
            otel_name=only_code(row["OTel name"]),
            prometheus_name=only_code(row["Prometheus name"]),
            instrument=row["instrument"],
            type=row["type"],
            unit=only_code(row["unit"]),
            labels=labels_of(row["labels"]),
            buckets=None if row["buckets"] == NONE_CELL else only_code(row["buckets"]),
        )
        for row in doc_table("## Metrics")
    ]


def instrument_kind(data: object) -> str:
    if isinstance(data, Sum):
        return "Counter" if data.is_monotonic else "UpDownCounter"
    if isinstance(data, Gauge):
        return "ObservableGauge"
    assert isinstance(data, HistogramData), f"unexpected metric data {data!r}"
    return "Histogram"


def full_reading(scope: str) -> BalanceReading:
    return BalanceReading(
        scope,
        "USD_MICROCENTS",
        remaining=7,
        allocated=10,
        reserved=1,
        spent=2,
        debt=0,
        over_limit=False,
        updated_at=1.0,
    )


@pytest.fixture
def providers() -> Iterator[tuple[MeterProvider, CollectorRegistry, InMemoryMetricReader]]:
    registry = CollectorRegistry(auto_describe=True)
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry), memory])
    yield provider, registry, memory
    provider.shutdown()


@pytest.fixture
def contract(providers: tuple[MeterProvider, CollectorRegistry, InMemoryMetricReader]) -> Contract:
    """One data point on every instrument, with the labels the doc lists, rendered for Prometheus."""
    provider, registry, memory = providers
    rows = metric_rows()
    found = instruments.get_instruments(provider, CardinalityGuard())
    for attribute, instrument in vars(found).items():
        if not isinstance(instrument, (Counter, UpDownCounter, Histogram, Tally)):
            continue
        name = getattr(instrument, "name", attribute)
        assert name in PINNED_LABELS, f"new instrument {name!r}: pin its label keys in PINNED_LABELS"
        attributes = {key: f"{key}-value" for key in PINNED_LABELS[name]}
        if isinstance(instrument, Histogram):
            instrument.record(0.5, attributes)
        else:
            instrument.add(1, attributes)
    found.board.update(full_reading("tenant:acme"))
    exposition = generate_latest(registry).decode()
    data = memory.get_metrics_data()
    assert data is not None
    otel = {
        metric.name: (metric.unit or "", instrument_kind(metric.data))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    return Contract(rows, exposition, otel)


def exposition_families(exposition: str) -> dict[str, tuple[str, set[str], list[float]]]:
    """Family name as exposed (counters with ``_total``) -> (type, label names, histogram bounds)."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.MULTILINE))
    families: dict[str, tuple[str, set[str], list[float]]] = {}
    for family in text_string_to_metric_families(exposition):
        exposed = family.name + "_total" if family.name + "_total" in types else family.name
        assert types[exposed] == family.type
        labels = {key for sample in family.samples for key in sample.labels} - {"le"}
        bounds = [
            float(sample.labels["le"])
            for sample in family.samples
            if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf"
        ]
        families[exposed] = (family.type, labels, bounds)
    return families


def test_doc_rows_follow_the_documented_name_mapping(contract: Contract) -> None:
    for row in contract.rows:
        assert row.prometheus_name == prometheus_name(row.otel_name, row.unit, row.instrument), row


def test_every_instrument_is_documented_with_its_unit_and_kind(contract: Contract) -> None:
    assert {row.otel_name: (row.unit, row.instrument) for row in contract.rows} == contract.otel


def test_exposition_has_exactly_the_documented_metrics_and_labels(contract: Contract) -> None:
    families = exposition_families(contract.exposition)
    exported_target_info = families.pop("target_info", None)
    assert exported_target_info is not None  # the exporter's extra, documented as such
    assert set(families) == {row.prometheus_name for row in contract.rows}
    for name, (kind, labels, _) in families.items():
        row = contract.row(name)
        assert kind == row.type, name
        assert labels == row.labels | SCOPE_LABELS, name
    assert f'otel_scope_name="{instruments.METER_NAME}"' in contract.exposition


def test_histogram_buckets_are_the_constants(contract: Contract) -> None:
    families = exposition_families(contract.exposition)
    documented = {
        only_code(row["constant"]): [float(v) for v in row["boundaries"].split(",")]
        for row in doc_table("## Histogram buckets")
    }
    assert set(documented) == set(BUCKET_CONSTANTS)
    for constant, bounds in documented.items():
        assert bounds == list(BUCKET_CONSTANTS[constant]), constant
    histograms = [row for row in contract.rows if row.type == "histogram"]
    assert {row.buckets for row in histograms} == set(BUCKET_CONSTANTS)
    for row in histograms:
        assert row.buckets is not None
        assert families[row.prometheus_name][2] == list(BUCKET_CONSTANTS[row.buckets]), row.prometheus_name
    assert all(row.buckets is None for row in contract.rows if row.type != "histogram")


def test_exposition_passes_promtool_lint(contract: Contract, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=contract.exposition, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- 3. behaviour the doc promises about the budget gauges ---------------------------------------
def budget_series(registry: CollectorRegistry) -> dict[str, dict[str, str]]:
    """Budget series name -> labels (one scope per test, so one series per name)."""
    return {
        sample.name: {k: v for k, v in sample.labels.items() if k not in SCOPE_LABELS}
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
        if sample.name.startswith("cycles_budget_")
    }


def test_budget_gauges_are_absent_when_the_value_is_unknown(
    providers: tuple[MeterProvider, CollectorRegistry, InMemoryMetricReader],
) -> None:
    provider, registry, _ = providers
    board = instruments.get_instruments(provider, CardinalityGuard()).board
    board.update(BalanceReading("tenant:acme", "TOKENS", remaining=5, updated_at=1.0))
    series = budget_series(registry)
    assert set(series) == {"cycles_budget_remaining", "cycles_budget_updated_timestamp_seconds"}
    assert series["cycles_budget_remaining"] == {"cycles_scope": "tenant:acme", "cycles_unit": "TOKENS"}


def test_the_guard_collapses_scopes_over_the_limit_to_other(
    providers: tuple[MeterProvider, CollectorRegistry, InMemoryMetricReader],
) -> None:
    provider, registry, _ = providers
    board = instruments.get_instruments(provider, CardinalityGuard(limit=1)).board
    board.update(full_reading("tenant:first"))
    board.update(full_reading("tenant:second"))
    scopes = {
        sample.labels["cycles_scope"]
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
        if sample.name == "cycles_budget_remaining"
    }
    assert scopes == {"tenant:first", cardinality.OVERFLOW_VALUE}
