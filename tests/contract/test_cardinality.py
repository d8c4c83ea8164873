"""The cardinality guard: configuration, the overflow counter, and the series bound under load."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cycles_otel import semconv
from cycles_otel.app.configure import configure_telemetry
from cycles_otel.balance_board import BalanceReading
from cycles_otel.cardinality import ALLOW_ENV, DEFAULT_LIMIT, LIMIT_ENV, OVERFLOW_VALUE, CardinalityGuard
from cycles_otel.instruments import get_instruments
from cycles_otel.testing.telemetry import TelemetryCapture

GEN_AI_AGENT_LABEL = semconv.GEN_AI_AGENT_NAME.replace(".", "_")


def test_limit_and_allow_list_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LIMIT_ENV, "2")
    monkeypatch.setenv(ALLOW_ENV, " vip , gold ")
    guard = CardinalityGuard.from_env()
    assert (guard.limit, guard.allow) == (2, frozenset({"vip", "gold"}))
    assert [guard.bound("k", v) for v in ("a", "b", "c", "vip", "gold")] == [
        "a",
        "b",
        OVERFLOW_VALUE,
        "vip",
        "gold",
    ]


def test_explicit_values_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LIMIT_ENV, "2")
    monkeypatch.setenv(ALLOW_ENV, "vip")
    guard = CardinalityGuard.from_env(limit=7, allow=["gold"])
    assert (guard.limit, guard.allow) == (7, frozenset({"vip", "gold"}))


def test_default_limit_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    assert CardinalityGuard.from_env().limit == DEFAULT_LIMIT


@pytest.mark.parametrize("raw", ["lots", "0", "-3", "1.5"])
def test_a_bad_limit_in_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(LIMIT_ENV, raw)
    with pytest.raises(ValueError, match=LIMIT_ENV):
        CardinalityGuard.from_env()


@pytest.mark.parametrize("limit", [0, -1, True, 2.5])
def test_a_bad_limit_argument_is_refused(limit: object) -> None:
    with pytest.raises(ValueError, match="cardinality_limit"):
        CardinalityGuard.from_env(limit=limit)  # type: ignore[arg-type]


def test_each_collapse_is_counted_once_by_label_key(telemetry: TelemetryCapture) -> None:
    instruments = get_instruments(telemetry.meter_provider, CardinalityGuard(limit=1))
    guard = instruments.guard
    for value in ("first", "second", "third", "first", OVERFLOW_VALUE):
        guard.bound(semconv.GEN_AI_AGENT_NAME, value)
    guard.bound(semconv.LABEL_SCOPE, "tenant:a")
    guard.bound(semconv.LABEL_SCOPE, "tenant:b")
    assert guard.overflowed == {semconv.GEN_AI_AGENT_NAME: 2, semconv.LABEL_SCOPE: 1}
    counted = {
        key: telemetry.value("cycles.otel.label_overflow", cycles__label=key)
        for key in (semconv.GEN_AI_AGENT_NAME, semconv.LABEL_SCOPE)
    }
    assert counted == {semconv.GEN_AI_AGENT_NAME: 2, semconv.LABEL_SCOPE: 1}


def test_the_first_caller_fixes_the_guard_of_a_provider(telemetry: TelemetryCapture) -> None:
    first = CardinalityGuard(limit=1)
    instruments = get_instruments(telemetry.meter_provider, first)
    assert get_instruments(telemetry.meter_provider) is instruments
    assert get_instruments(telemetry.meter_provider, first) is instruments
    with pytest.raises(ValueError, match=r"another cardinality guard \(limit 1\).*pass no guard"):
        get_instruments(telemetry.meter_provider, CardinalityGuard(limit=100))
    assert instruments.guard is first
    for scope in ("tenant:a", "tenant:b"):
        instruments.board.update(BalanceReading(scope, "TOKENS", remaining=1, updated_at=time.time()))
    scopes = {(p.attributes or {})["cycles.scope"] for p in telemetry.points("cycles.budget.remaining")}
    assert scopes == {"tenant:a", OVERFLOW_VALUE}  # still the first guard's limit


def test_configure_telemetry_fixes_the_guard_before_anyone_else() -> None:
    with configure_telemetry(
        "fixed", otlp=False, prometheus_port=0, set_global=False, instrument_cycles=False, cardinality_limit=1
    ) as handle:
        with pytest.raises(ValueError, match="configure_telemetry"):
            get_instruments(handle.meter_provider, CardinalityGuard(limit=100))
        guard = get_instruments(handle.meter_provider).guard
        assert [guard.bound("k", v) for v in ("a", "b")] == ["a", OVERFLOW_VALUE]
        assert handle.prometheus_url is not None
        text = httpx.get(handle.prometheus_url, timeout=5).text
    overflow = [
        (s.labels["cycles_label"], s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "cycles_otel_label_overflow_total"
    ]
    assert overflow == [("k", 1.0)]


def test_a_failing_overflow_hook_never_reaches_the_caller() -> None:
    def explode(key: str) -> None:
        raise RuntimeError(key)

    guard = CardinalityGuard(limit=1, on_overflow=explode)
    assert [guard.bound("k", v) for v in ("a", "b")] == ["a", OVERFLOW_VALUE]


def test_ten_thousand_agent_names_make_at_most_limit_plus_one_series() -> None:
    limit = 25
    handle = configure_telemetry(
        "cardinality", otlp=False, prometheus_port=0, set_global=False, instrument_cycles=False,
        cardinality_limit=limit,
    )  # fmt: skip
    try:
        instruments = get_instruments(handle.meter_provider)
        guard = instruments.guard
        for i in range(10_000):
            labels = {
                semconv.GEN_AI_AGENT_NAME: guard.bound(semconv.GEN_AI_AGENT_NAME, f"agent-{i}"),
                semconv.GEN_AI_REQUEST_MODEL: guard.bound(semconv.GEN_AI_REQUEST_MODEL, "gpt-4o"),
            }
            instruments.cost_usd.add(0.01, labels)
        assert handle.prometheus_url is not None
        text = httpx.get(handle.prometheus_url, timeout=5).text
    finally:
        handle.shutdown()
    families = {family.name: family.samples for family in text_string_to_metric_families(text)}
    agents = [
        s.labels[GEN_AI_AGENT_LABEL] for s in families["cycles_client_cost_usd"] if s.name.endswith("_total")
    ]
    assert len(agents) == len(set(agents)) == limit + 1
    assert set(agents) == {f"agent-{i}" for i in range(limit)} | {OVERFLOW_VALUE}
    overflow = [
        (s.labels["cycles_label"], s.value)
        for s in families["cycles_otel_label_overflow"]
        if s.name.endswith("_total")
    ]
    assert overflow == [(semconv.GEN_AI_AGENT_NAME, 10_000 - limit)]
