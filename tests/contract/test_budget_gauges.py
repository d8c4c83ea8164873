"""Budget gauges: only known, fresh values; gone with their scope; one series per label set."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cycles_otel.balance_board import BalanceBoard, BalanceReading
from cycles_otel.cardinality import OVERFLOW_VALUE, CardinalityGuard
from cycles_otel.instruments import get_instruments

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
OTEL_SCOPE_LABELS = {"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}
UNIT = "USD_MICROCENTS"


@dataclass
class Readers:
    board: BalanceBoard
    memory: InMemoryMetricReader
    registry: CollectorRegistry

    def memory_series(self) -> Series:
        data = self.memory.get_metrics_data()
        series: dict[tuple[str, frozenset[tuple[str, Any]]], float] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name.startswith("cycles.budget."):
                        for point in metric.data.data_points:
                            key = (metric.name, frozenset((point.attributes or {}).items()))
                            assert key not in series, f"duplicate observation {key}"
                            assert isinstance(point, NumberDataPoint), point  # gauges only
                            series[key] = point.value
        return {(name, frozenset((k, str(v)) for k, v in labels)): v for (name, labels), v in series.items()}

    def prometheus_series(self) -> Series:
        text = generate_latest(self.registry).decode()
        series: Series = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("cycles_budget_"):
                    labels = frozenset((k, v) for k, v in sample.labels.items() if k not in OTEL_SCOPE_LABELS)
                    assert (sample.name, labels) not in series, f"duplicate series {sample.name} {labels}"
                    series[(sample.name, labels)] = sample.value
        return series


@pytest.fixture
def readers() -> Iterator[Readers]:
    registry = CollectorRegistry(auto_describe=True)
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[memory, PrometheusMetricReader(registry=registry)])
    board = get_instruments(provider, CardinalityGuard(limit=2)).board
    yield Readers(board, memory, registry)
    provider.shutdown()


def scope_labels(scope: str, unit: str | None = UNIT) -> frozenset[tuple[str, str]]:
    labels = {"cycles_scope": scope} | ({"cycles_unit": unit} if unit else {})
    return frozenset(labels.items())


def otel_labels(scope: str, unit: str | None = UNIT) -> frozenset[tuple[str, str]]:
    return frozenset((k.replace("cycles_", "cycles."), v) for k, v in scope_labels(scope, unit))


def balance(scope: str, remaining: int, unit: str = UNIT, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "scope": scope,
        "scope_path": scope,
        "remaining": {"unit": unit, "amount": remaining},
    }
    for name, value in fields.items():
        body[name] = value if isinstance(value, bool) else {"unit": unit, "amount": value}
    return body


def test_a_forgotten_scope_disappears_from_both_readers(readers: Readers) -> None:
    readers.board.update_from_balances([balance("tenant:a", 5), balance("tenant:b", 7)])
    assert readers.memory_series()[("cycles.budget.remaining", otel_labels("tenant:b"))] == 7
    assert readers.prometheus_series()[("cycles_budget_remaining", scope_labels("tenant:b"))] == 7

    readers.board.forget(lambda reading: reading.scope != "tenant:b")

    for series in (readers.memory_series(), readers.prometheus_series()):
        scopes = {dict(labels).get("cycles_scope", dict(labels).get("cycles.scope")) for _, labels in series}
        assert scopes == {"tenant:a"}


def test_unknown_fields_are_absent_and_over_limit_defaults_to_false(readers: Readers) -> None:
    # Balance.allocated is optional (absent for unlimited scopes) and so is debt; is_over_limit
    # "defaults to false when absent".
    readers.board.update_from_balances([balance("tenant:a", 40, spent=60, reserved=0)])
    series = readers.prometheus_series()
    assert {name for name, _ in series} == {
        "cycles_budget_remaining",
        "cycles_budget_spent",
        "cycles_budget_reserved",
        "cycles_budget_over_limit",
        "cycles_budget_updated_timestamp_seconds",
    }
    assert series[("cycles_budget_over_limit", scope_labels("tenant:a", None))] == 0
    assert all(value != float("inf") for value in series.values())


def test_values_are_in_each_scope_own_unit(readers: Readers) -> None:
    readers.board.update_from_balances(
        [
            balance("tenant:a", -20, debt=120, allocated=100, spent=0, reserved=0),
            balance("tenant:b", 900, "TOKENS"),
        ]
    )
    series = readers.prometheus_series()
    assert series[("cycles_budget_remaining", scope_labels("tenant:a"))] == -20
    assert series[("cycles_budget_debt", scope_labels("tenant:a"))] == 120
    assert series[("cycles_budget_remaining", scope_labels("tenant:b", "TOKENS"))] == 900


def test_stale_values_drop_out_but_the_timestamp_stays(readers: Readers) -> None:
    seen_long_ago = time.time() - 600
    readers.board.update(
        BalanceReading(
            "tenant:old", UNIT, remaining=5, spent=1, over_limit=False, updated_at=seen_long_ago, max_age=60
        )
    )
    readers.board.update(
        BalanceReading("tenant:new", UNIT, remaining=9, over_limit=True, updated_at=time.time(), max_age=60)
    )
    series = readers.prometheus_series()
    assert {(name, dict(labels)["cycles_scope"]) for name, labels in series} == {
        ("cycles_budget_remaining", "tenant:new"),
        ("cycles_budget_over_limit", "tenant:new"),
        ("cycles_budget_updated_timestamp_seconds", "tenant:new"),
        ("cycles_budget_updated_timestamp_seconds", "tenant:old"),
    }
    assert series[
        ("cycles_budget_updated_timestamp_seconds", scope_labels("tenant:old", None))
    ] == pytest.approx(seen_long_ago)
    readers.board.update(BalanceReading("tenant:old", UNIT, remaining=4, updated_at=time.time(), max_age=60))
    assert readers.prometheus_series()[("cycles_budget_remaining", scope_labels("tenant:old"))] == 4


def test_a_reading_without_a_max_age_keeps_the_one_of_the_reading_it_replaces(readers: Readers) -> None:
    now = time.time()
    # A protocol answer for a scope no poller watches: no freshness promised, none withdrawn.
    readers.board.update(BalanceReading("tenant:quiet", UNIT, remaining=1, updated_at=now - 600))
    # A polled scope, then a newer protocol answer for it: still judged by the poller's max age.
    readers.board.update(
        BalanceReading("tenant:watched", UNIT, remaining=2, updated_at=now - 600, max_age=60)
    )
    readers.board.update(BalanceReading("tenant:watched", UNIT, remaining=3, updated_at=now - 300))
    remaining = {
        dict(labels)["cycles_scope"]: value
        for (name, labels), value in readers.prometheus_series().items()
        if name == "cycles_budget_remaining"
    }
    assert remaining == {"tenant:quiet": 1}
    readers.board.update(BalanceReading("tenant:watched", UNIT, remaining=4, updated_at=now))
    assert readers.prometheus_series()[("cycles_budget_remaining", scope_labels("tenant:watched"))] == 4


def test_scopes_collapsed_to_other_share_one_aggregated_series(readers: Readers) -> None:
    # The guard admits two scopes; the next three share `other`.
    now = time.time()
    readers.board.update_from_balances([balance("tenant:a", 1), balance("tenant:b", 2)])
    readers.board.update(
        BalanceReading("tenant:c", UNIT, remaining=10, allocated=50, over_limit=False, updated_at=now - 5)
    )
    readers.board.update(
        BalanceReading("tenant:d", UNIT, remaining=20, allocated=None, over_limit=True, updated_at=now)
    )
    readers.board.update(
        BalanceReading("tenant:e", UNIT, remaining=30, allocated=70, over_limit=False, updated_at=now)
    )
    for series in (readers.prometheus_series(), readers.memory_series()):  # both assert no duplicates
        assert len(series) > 0
    series = readers.prometheus_series()
    other = scope_labels(OVERFLOW_VALUE)
    assert series[("cycles_budget_remaining", other)] == 60  # summed
    assert ("cycles_budget_allocated", other) not in series  # one part unknown: a sum would be a guess
    assert series[("cycles_budget_over_limit", scope_labels(OVERFLOW_VALUE, None))] == 1  # any is over
    assert series[
        ("cycles_budget_updated_timestamp_seconds", scope_labels(OVERFLOW_VALUE, None))
    ] == pytest.approx(now - 5)  # the stalest part
    scopes = {dict(labels)["cycles_scope"] for name, labels in series if name == "cycles_budget_remaining"}
    assert scopes == {"tenant:a", "tenant:b", OVERFLOW_VALUE}


def test_each_collapsed_scope_is_counted_once_however_often_it_is_scraped(readers: Readers) -> None:
    readers.board.update_from_balances([balance(f"tenant:t{i}", i) for i in range(5)])
    for _ in range(3):
        readers.prometheus_series()
    text = generate_latest(readers.registry).decode()
    overflow = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "cycles_otel_label_overflow_total" and s.labels.get("cycles_label") == "cycles.scope"
    ]
    assert overflow == [3]
