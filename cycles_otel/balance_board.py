"""The latest known balance per scope, read by the ``cycles_budget_*`` observable gauges."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from cycles_otel.semconv import LABEL_SCOPE, LABEL_UNIT
from cycles_otel.wire import whole

BALANCE_FIELDS = ("remaining", "allocated", "reserved", "spent", "debt")


@dataclass(frozen=True)
class BalanceReading:
    """One scope's balance; ``None`` means unknown, and its gauge is then absent.

    ``max_age`` is how many seconds the reading stays fresh, as its source promises (a poller:
    its ``stale_after``); ``None`` makes no promise of its own (see :meth:`BalanceBoard.update`).
    """

    scope: str
    unit: str
    remaining: int | None = None
    allocated: int | None = None
    reserved: int | None = None
    spent: int | None = None
    debt: int | None = None
    over_limit: bool | None = None
    updated_at: float = 0.0
    max_age: float | None = None


def _amount(value: Any) -> int | None:
    return whole(value.get("amount") if isinstance(value, Mapping) else value)


def reading_from_balance(
    balance: Mapping[str, Any], now: float | None = None, max_age: float | None = None
) -> BalanceReading | None:
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
        # The spec defines no debt without overdraft; a Balance that omits it has none to report.
        debt=_amount(balance.get("debt")),
        # "Defaults to false when absent" (Balance.is_over_limit).
        over_limit=over if isinstance(over, bool) else False,
        updated_at=time.time() if now is None else now,
        max_age=max_age,
    )


def _sum_or_unknown(values: list[int | None]) -> int | None:
    """The sum, or unknown when any part is unknown (a partial sum would be a guess)."""
    known = [v for v in values if v is not None]
    return sum(known) if len(known) == len(values) else None


def _any_over(values: list[bool | None]) -> bool | None:
    if any(values):
        return True
    return None if None in values else False


class BalanceBoard:
    """Thread-safe store of the latest :class:`BalanceReading` per (scope, unit).

    Gauges show only what is known and fresh: a reading older than its ``max_age`` loses its
    amount and over-limit series, while ``cycles_budget_updated_timestamp_seconds`` keeps saying
    when it was last seen, so an alert can tell stale data from an empty budget. Each reading
    carries its own ``max_age``, so sources that refresh at different rates (two pollers, say)
    never judge each other's readings. A reading disappears entirely when :meth:`forget` drops it
    (its scope no longer exists).

    Scopes the cardinality guard collapses to ``other`` share one series per label set:
    amounts are summed (absent if any part is unknown or stale), ``over_limit`` is 1 if any
    collapsed scope is over its limit, and the timestamp is the oldest one.
    """

    def __init__(
        self,
        scope_label: Callable[[str], str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._readings: dict[tuple[str, str], BalanceReading] = {}
        self._labels: dict[str, str] = {}
        self._lock = threading.Lock()
        self._scope_label = scope_label or (lambda scope: scope)
        self._clock = clock

    def update(self, reading: BalanceReading) -> None:
        """Keep ``reading`` unless a newer one of its scope and unit is held.

        A reading without a ``max_age`` (a protocol answer's) takes that of the reading it
        replaces: whoever watches the scope keeps judging its freshness, and a scope no one
        watches is never stale.
        """
        key = (reading.scope, reading.unit)
        with self._lock:
            current = self._readings.get(key)
            if current is None or reading.updated_at >= current.updated_at:
                if reading.max_age is None and current is not None and current.max_age is not None:
                    reading = replace(reading, max_age=current.max_age)
                self._readings[key] = reading

    def update_from_balances(
        self, balances: Iterable[Mapping[str, Any]], max_age: float | None = None
    ) -> int:
        """Record every usable balance, fresh for ``max_age`` seconds; returns how many were recorded."""
        count = 0
        for balance in balances:
            if (
                isinstance(balance, Mapping)
                and (reading := reading_from_balance(balance, max_age=max_age)) is not None
            ):
                self.update(reading)
                count += 1
        return count

    def forget(self, keep: Callable[[BalanceReading], bool]) -> None:
        """Drop every reading for which ``keep`` is false (its gauges disappear)."""
        with self._lock:
            self._readings = {k: r for k, r in self._readings.items() if keep(r)}
            scopes = {scope for scope, _ in self._readings}
            self._labels = {s: label for s, label in self._labels.items() if s in scopes}

    def snapshot(self) -> list[BalanceReading]:
        with self._lock:
            return list(self._readings.values())

    def _label(self, scope: str) -> str:
        # Bound once per scope, so the guard (and its overflow counter) sees each scope once.
        label = self._labels.get(scope)
        if label is None:
            label = self._labels[scope] = self._scope_label(scope)
        return label

    def _groups(self) -> Iterator[tuple[str, str, list[BalanceReading], list[BalanceReading]]]:
        """(scope label, unit, every reading, fresh readings) per exported label set."""
        now = self._clock()
        groups: dict[tuple[str, str], list[BalanceReading]] = {}
        for reading in self.snapshot():
            groups.setdefault((self._label(reading.scope), reading.unit), []).append(reading)
        for (label, unit), readings in groups.items():
            fresh = [r for r in readings if r.max_age is None or now - r.updated_at <= r.max_age]
            yield label, unit, readings, fresh

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
            for label, unit, readings, fresh in self._groups():
                if len(fresh) < len(readings):
                    continue
                value = _sum_or_unknown([getattr(r, name) for r in readings])
                if value is not None:
                    yield Observation(value, {LABEL_SCOPE: label, LABEL_UNIT: unit})

        return observe

    def _observe_over_limit(self, _: CallbackOptions) -> Iterable[Observation]:
        by_scope: dict[str, list[bool | None]] = {}
        for label, _unit, readings, fresh in self._groups():
            flags = by_scope.setdefault(label, [])
            flags += [r.over_limit for r in fresh] + [None] * (len(readings) - len(fresh))
        for label, flags in by_scope.items():
            over = _any_over(flags)
            if over is not None:
                yield Observation(int(over), {LABEL_SCOPE: label})

    def _observe_updated(self, _: CallbackOptions) -> Iterable[Observation]:
        oldest: dict[str, float] = {}
        for label, _unit, readings, _fresh in self._groups():
            seen = min(r.updated_at for r in readings)
            oldest[label] = min(seen, oldest.get(label, seen))
        for label, seen in oldest.items():
            yield Observation(seen, {LABEL_SCOPE: label})
