"""Ledger records (budgets, reservations, events), their protocol shapes, and the read-only snapshot."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any


class Clock:
    """The authority's notion of "now" (epoch ms); ``advance`` moves it forward so tests never sleep."""

    def __init__(self) -> None:
        self._offset_ms = 0
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return int(time.time() * 1000) + self._offset_ms

    def advance(self, seconds: float) -> None:
        """Move server time forward by ``seconds`` (expiry is then applied on the next ledger access)."""
        if seconds < 0:
            raise ValueError(f"advance(seconds={seconds}): time only moves forward; pass a value >= 0")
        with self._lock:
            self._offset_ms += int(seconds * 1000)


def amount(unit: str, value: int) -> dict[str, Any]:
    return {"unit": unit, "amount": value}


@dataclass
class Budget:
    """One (scope, unit) budget. ``capped`` marks an ALLOW_IF_AVAILABLE overage that could not be covered."""

    scope: str
    unit: str
    allocated: int
    overdraft_limit: int = 0
    overage_policy: str = "REJECT"
    status: str = "ACTIVE"
    spent: int = 0
    reserved: int = 0
    debt: int = 0
    capped: bool = False

    @property
    def remaining(self) -> int:
        return self.allocated - self.spent - self.reserved - self.debt

    @property
    def is_over_limit(self) -> bool:
        return self.capped or self.debt > self.overdraft_limit

    def to_protocol(self) -> dict[str, Any]:
        """The spec's ``Balance`` object."""
        return {
            "scope": self.scope,
            "scope_path": self.scope,
            "remaining": amount(self.unit, self.remaining),
            "reserved": amount(self.unit, self.reserved),
            "spent": amount(self.unit, self.spent),
            "allocated": amount(self.unit, self.allocated),
            "debt": amount(self.unit, self.debt),
            "overdraft_limit": amount(self.unit, self.overdraft_limit),
            "is_over_limit": self.is_over_limit,
        }


@dataclass
class Reservation:
    reservation_id: str
    tenant: str
    subject: dict[str, Any]
    action: dict[str, Any]
    unit: str
    reserved: int
    affected_scopes: list[str]
    budget_scopes: list[str]
    overage_policy: str
    grace_period_ms: int
    created_at_ms: int
    expires_at_ms: int
    idempotency_key: str
    metadata: dict[str, Any] | None = None
    status: str = "ACTIVE"
    extensions: int = 0
    charged: int | None = None
    finalized_at_ms: int | None = None
    committed_metadata: dict[str, Any] | None = None

    @property
    def scope_path(self) -> str:
        return self.affected_scopes[-1]

    def to_protocol(
        self, include: frozenset[str] = frozenset({"metadata", "committed_metadata"})
    ) -> dict[str, Any]:
        """The spec's ``ReservationDetail`` (or ``ReservationSummary`` with a narrower ``include``)."""
        body: dict[str, Any] = {
            "reservation_id": self.reservation_id,
            "status": self.status,
            "idempotency_key": self.idempotency_key,
            "subject": self.subject,
            "action": self.action,
            "reserved": amount(self.unit, self.reserved),
            "created_at_ms": self.created_at_ms,
            "expires_at_ms": self.expires_at_ms,
            "scope_path": self.scope_path,
            "affected_scopes": list(self.affected_scopes),
        }
        if self.charged is not None:
            body["committed"] = amount(self.unit, self.charged)
        if self.finalized_at_ms is not None:
            body["finalized_at_ms"] = self.finalized_at_ms
        if self.metadata and "metadata" in include:
            body["metadata"] = self.metadata
        if self.committed_metadata and "committed_metadata" in include:
            body["committed_metadata"] = self.committed_metadata
        return body


@dataclass(frozen=True)
class EventRecord:
    event_id: str
    tenant: str
    subject: dict[str, Any]
    action: dict[str, Any]
    scope_path: str
    unit: str
    actual: int
    charged: int
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class ScopeBalance:
    """A budget's state at snapshot time; ``remaining`` = allocated − spent − reserved − debt."""

    scope: str
    unit: str
    allocated: int
    spent: int
    reserved: int
    debt: int
    remaining: int
    overdraft_limit: int
    is_over_limit: bool


@dataclass(frozen=True)
class LedgerSnapshot:
    """A consistent copy of the whole ledger, for assertions."""

    scopes: dict[str, ScopeBalance]
    reservations: list[Reservation]
    events: list[EventRecord] = field(default_factory=list)

    def count(self, status: str | None = None) -> int:
        """Number of reservations, or of those in ``status`` (ACTIVE, COMMITTED, RELEASED, EXPIRED)."""
        return sum(1 for r in self.reservations if status is None or r.status == status)

    def reservation(self, reservation_id: str) -> Reservation:
        for record in self.reservations:
            if record.reservation_id == reservation_id:
                return record
        raise KeyError(f"no reservation {reservation_id!r} in the ledger")


def snapshot_of(
    budgets: dict[str, Budget], reservations: list[Reservation], events: list[EventRecord]
) -> LedgerSnapshot:
    scopes = {
        scope: ScopeBalance(
            scope=scope,
            unit=b.unit,
            allocated=b.allocated,
            spent=b.spent,
            reserved=b.reserved,
            debt=b.debt,
            remaining=b.remaining,
            overdraft_limit=b.overdraft_limit,
            is_over_limit=b.is_over_limit,
        )
        for scope, b in budgets.items()
    }
    return LedgerSnapshot(scopes=scopes, reservations=[replace(r) for r in reservations], events=list(events))
