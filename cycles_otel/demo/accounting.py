"""Reconcile the authority's ledger with what the metrics endpoint says, scope by scope and agent by agent."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from cycles_otel.balance_board import BalanceReading, reading_from_balance
from cycles_otel.pricing import MICROCENTS_PER_USD, microcents_to_usd

UNIT = "USD_MICROCENTS"


def usd(microcents: int | None, places: int = 6) -> str:
    """``USD_MICROCENTS`` shown as dollars (``-`` when unknown)."""
    return "-" if microcents is None else f"{microcents_to_usd(microcents):.{places}f}"


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


def scrape(metrics_url: str) -> dict[str, list[Sample]]:
    """Every sample of a Prometheus text endpoint, by sample name (``..._total`` included)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as answer:
        text = answer.read().decode("utf-8")
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(Sample(dict(sample.labels), float(sample.value)))
    return samples


def _lookup(samples: Mapping[str, list[Sample]], name: str, **labels: str) -> float | None:
    found = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found) if found else None


def _whole(value: float | None) -> int | None:
    return None if value is None else round(value)


@dataclass(frozen=True)
class ScopeCheck:
    """One scope's ledger balance next to the ``cycles_budget_*`` gauges scraped from the endpoint."""

    scope: str
    allocated: int | None
    ledger_spent: int | None
    ledger_remaining: int | None
    metric_spent: int | None
    metric_remaining: int | None

    @property
    def agrees(self) -> bool:
        return (self.ledger_spent, self.ledger_remaining) == (self.metric_spent, self.metric_remaining)


@dataclass(frozen=True)
class AgentCheck:
    """An agent scope's ledger spend next to what its spans say was charged, and its priced cost.

    ``priced`` (``cycles_client_cost_usd_total``) is what the calls cost at list price; it exceeds
    ``charged`` when the authority capped an overage (ALLOW_IF_AVAILABLE with too little left).
    """

    agent: str
    ledger_spent: int | None
    span_charged: int
    priced: int | None

    @property
    def agrees(self) -> bool:
        return self.ledger_spent == self.span_charged


@dataclass(frozen=True)
class Reconciliation:
    scopes: list[ScopeCheck]
    agents: list[AgentCheck]
    tenant_spent: int | None
    metric_charged: int | None

    @property
    def agrees(self) -> bool:
        return (
            bool(self.scopes)
            and all(c.agrees for c in self.scopes)
            and all(a.agrees for a in self.agents)
            and self.tenant_spent == self.metric_charged
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "agrees": self.agrees,
            "scopes": [{**vars(c), "agrees": c.agrees} for c in self.scopes],
            "agents": [{**vars(a), "agrees": a.agrees} for a in self.agents],
            "tenant_spent": self.tenant_spent,
            "metric_charged": self.metric_charged,
        }


def readings_from_ledger(scopes: Mapping[str, Any]) -> list[BalanceReading]:
    """Readings from a local authority snapshot (``LedgerSnapshot.scopes``)."""
    return [
        BalanceReading(
            scope=s.scope,
            unit=s.unit,
            remaining=s.remaining,
            allocated=s.allocated,
            reserved=s.reserved,
            spent=s.spent,
            debt=s.debt,
            over_limit=s.is_over_limit,
        )
        for s in scopes.values()
    ]


def readings_from_balances(body: Mapping[str, Any] | None) -> list[BalanceReading]:
    """Readings from a ``GET /v1/balances`` answer of any Cycles server."""
    balances = (body or {}).get("balances") or []
    return [r for b in balances if isinstance(b, Mapping) and (r := reading_from_balance(b)) is not None]


def reconcile(
    readings: Iterable[BalanceReading],
    samples: Mapping[str, list[Sample]],
    tenant_scope: str,
    agents: Mapping[str, str],
    charged_by_agent: Mapping[str, int],
    compare_totals: bool = True,
) -> Reconciliation:
    """Compare ``readings`` (the ledger) with scraped ``samples`` and traced charges.

    ``agents`` maps agent name to its scope. ``compare_totals=False`` (a live ledger that holds
    earlier runs' spend) compares the balance gauges only.
    """
    by_scope = {r.scope: r for r in readings if r.unit == UNIT}
    checks = [
        ScopeCheck(
            scope=scope,
            allocated=r.allocated,
            ledger_spent=r.spent,
            ledger_remaining=r.remaining,
            metric_spent=_whole(
                _lookup(samples, "cycles_budget_spent", cycles_scope=scope, cycles_unit=UNIT)
            ),
            metric_remaining=_whole(
                _lookup(samples, "cycles_budget_remaining", cycles_scope=scope, cycles_unit=UNIT)
            ),
        )
        for scope, r in sorted(by_scope.items())
    ]
    agent_checks = []
    for agent, scope in agents.items() if compare_totals else ():
        usd = _lookup(samples, "cycles_client_cost_usd_total", gen_ai_agent_name=agent)
        reading = by_scope.get(scope)
        agent_checks.append(
            AgentCheck(
                agent=agent,
                ledger_spent=reading.spent if reading else None,
                span_charged=charged_by_agent.get(agent, 0),
                priced=None if usd is None else round(usd * MICROCENTS_PER_USD),
            )
        )
    tenant = by_scope.get(tenant_scope) if compare_totals else None
    return Reconciliation(
        scopes=checks,
        agents=agent_checks,
        tenant_spent=tenant.spent if tenant else None,
        metric_charged=(
            _whole(_lookup(samples, "cycles_client_charged_total", cycles_unit=UNIT))
            if compare_totals
            else None
        ),
    )
