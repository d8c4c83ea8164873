"""The latest known balance per scope, read by the ``cycles_budget_*`` observable gauges."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from cycles_otel.semconv import LABEL_SCOPE, LABEL_UNIT

BALANCE_FIELDS = ("remaining", "allocated", "reserved", "spent", "debt")


@dataclass(frozen=True)
class BalanceReading:
    """One scope's balance; ``None`` means unknown, and its gauge is then absent."""

    scope: str
    unit: str
    remaining: int | None = None
    allocated: int | None = None
    reserved: int | None = None
    spent: int | None = None
    debt: int | None = None
    over_limit: bool | None = None
    updated_at: float = 0.0


def _amount(value: Any) -> int | None:
    if isinstance(value, Mapping):
        value = value.get("amount")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def reading_from_balance(balance: Mapping[str, Any], now: float | None = None) -> BalanceReading | None:
    """Build a reading from a protocol ``Balance`` object (a JSON mapping); ``None`` if unusable."""
    scope = balance.get("scope_path") or balance.get("scope")
    remaining = balance.get("remaining")
    unit = remaining.get("unit") if isinstance(remaining, Mapping) else None
    if not isinstance(scope, str) or not isinstance(unit, str):
        return None
    over = balance.get("is_over_limit")
    return BalanceReading(
        scope=scope,
        unit=unit,
        remaining=_amount(remaining),
        allocated=_amount(balance.get("allocated")),
        reserved=_amount(balance.get("reserved")),
        spent=_amount(balance.get("spent")),
        debt=_amount(balance.get("debt")),
        over_limit=over if isinstance(over, bool) else None,
        updated_at=time.time() if now is None else now,
    )


class BalanceBoard:
    """Thread-safe store of the latest :class:`BalanceReading` per (scope, unit)."""

    def __init__(self, scope_label: Callable[[str], str] | None = None) -> None:
        self._readings: dict[tuple[str, str], BalanceReading] = {}
        self._lock = threading.Lock()
        self._scope_label = scope_label or (lambda scope: scope)

    def update(self, reading: BalanceReading) -> None:
        key = (reading.scope, reading.unit)
        with self._lock:
            current = self._readings.get(key)
            if current is None or reading.updated_at >= current.updated_at:
                self._readings[key] = reading

    def update_from_balances(self, balances: Iterable[Mapping[str, Any]]) -> int:
        """Record every usable balance; returns how many were recorded."""
        count = 0
        for balance in balances:
            if isinstance(balance, Mapping) and (reading := reading_from_balance(balance)) is not None:
                self.update(reading)
                count += 1
        return count

    def forget(self, keep: Callable[[BalanceReading], bool]) -> None:
        """Drop every reading for which ``keep`` is false (its gauges disappear)."""
        with self._lock:
            self._readings = {k: r for k, r in self._readings.items() if keep(r)}

    def snapshot(self) -> list[BalanceReading]:
        with self._lock:
            return list(self._readings.values())

    def register_gauges(self, meter: Meter) -> None:
        for name in BALANCE_FIELDS:
            meter.create_observable_gauge(
                f"cycles.budget.{name}",
                callbacks=[self._field_callback(name)],
                unit="{amount}",
                description=f"Budget {name} per scope, in the scope's unit.",
            )
        meter.create_observable_gauge(
            "cycles.budget.over_limit",
            callbacks=[self._observe_over_limit],
            unit="{bool}",
            description="1 when the scope is over its limit (overage capped or debt over overdraft).",
        )
        meter.create_observable_gauge(
            "cycles.budget.updated_timestamp",
            callbacks=[self._observe_updated],
            unit="s",
            description="Unix time the scope's balance was last observed.",
        )

    def _field_callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            for reading in self.snapshot():
                value = getattr(reading, name)
                if value is not None:
                    yield Observation(
                        value, {LABEL_SCOPE: self._scope_label(reading.scope), LABEL_UNIT: reading.unit}
                    )

        return observe

    def _observe_over_limit(self, _: CallbackOptions) -> Iterable[Observation]:
        for reading in self.snapshot():
            if reading.over_limit is not None:
                yield Observation(int(reading.over_limit), {LABEL_SCOPE: self._scope_label(reading.scope)})

    def _observe_updated(self, _: CallbackOptions) -> Iterable[Observation]:
        for reading in self.snapshot():
            yield Observation(reading.updated_at, {LABEL_SCOPE: self._scope_label(reading.scope)})
