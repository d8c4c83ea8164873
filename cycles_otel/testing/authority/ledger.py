"""Thread-safe budget ledger with the Cycles protocol's semantics (no HTTP): reserve, settle, expire."""

from __future__ import annotations

import heapq
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cycles_otel.testing.authority.accounting import ProtocolError, deny_reason, settle
from cycles_otel.testing.authority.records import (
    Budget,
    Clock,
    EventRecord,
    LedgerSnapshot,
    Reservation,
    amount,
    snapshot_of,
)
from cycles_otel.testing.authority.scopes import canonical_scope, derive_scopes, parse_scope
from cycles_otel.testing.authority.validation import OVERAGE_POLICIES, UNITS

DEFAULT_TTL_MS = 60_000


@dataclass(frozen=True)
class Outcome:
    """A successful answer; ``lease`` names the reservation whose ``remaining_ttl_ms`` is volatile."""

    status: int
    body: dict[str, Any]
    lease: str | None = None


@dataclass
class _Stored:
    fingerprint: str
    outcome: Outcome


@dataclass(frozen=True)
class _Evaluation:
    affected: list[str]
    budgets: list[Budget]
    deny: tuple[str, str] | None  # (reason code, message)


class Ledger:
    """All budgets, reservations and events of one authority, behind one lock (no lost updates)."""

    def __init__(
        self, clock: Clock, *, default_grace_period_ms: int = 5_000, max_extensions: int = 10
    ) -> None:
        self.clock = clock
        self.default_grace_period_ms = default_grace_period_ms
        self.max_extensions = max_extensions
        self._lock = threading.RLock()
        self._budgets: dict[str, Budget] = {}
        self._reservations: dict[str, Reservation] = {}
        self._events: list[EventRecord] = []
        self._closed_tenants: set[str] = set()
        self._idempotency: dict[tuple[str, str, str], _Stored] = {}
        self._deadlines: list[tuple[int, str]] = []  # (expires_at + grace, reservation id) min-heap

    # ---- operator plane (not part of the protocol) ----

    def set_budget(
        self, scope: str, allocated: int, unit: str, overdraft_limit: int, overage_policy: str, status: str
    ) -> None:
        path = canonical_scope(scope)
        if "tenant" not in parse_scope(path):
            raise ValueError(
                f"scope {scope!r}: a budget scope must start with tenant:NAME (tenancy is per tenant)"
            )
        if unit not in UNITS:
            raise ValueError(f"unit {unit!r}: use one of {', '.join(UNITS)}")
        if overage_policy not in OVERAGE_POLICIES:
            raise ValueError(f"overage_policy {overage_policy!r}: use one of {', '.join(OVERAGE_POLICIES)}")
        if status not in ("ACTIVE", "FROZEN", "CLOSED"):
            raise ValueError(f"status {status!r}: use ACTIVE, FROZEN or CLOSED")
        if allocated < 0 or overdraft_limit < 0:
            raise ValueError("allocated and overdraft_limit must be >= 0")
        with self._lock:
            old = self._budgets.get(path)
            budget = Budget(path, unit, allocated, overdraft_limit, overage_policy, status)
            if old is not None and old.unit == unit:  # re-configuring keeps what was already consumed
                budget.spent, budget.reserved, budget.debt = old.spent, old.reserved, old.debt
            self._budgets[path] = budget

    def fund(self, scope: str, value: int, unit: str) -> None:
        """Add ``value`` to a budget; outstanding debt is repaid first, as the spec requires."""
        path = canonical_scope(scope)
        with self._lock:
            budget = self._budgets.get(path)
            if budget is None:
                raise KeyError(f"no budget at {path!r}: call set_budget({path!r}, ...) first")
            if budget.unit != unit:
                raise ValueError(f"budget {path!r} is in {budget.unit}, not {unit}")
            repaid = min(budget.debt, value)
            budget.debt -= repaid
            budget.spent += repaid  # repaid debt is consumption that is now paid for
            budget.allocated += value
            budget.capped = False

    def close_tenant(self, tenant: str) -> None:
        with self._lock:
            self._closed_tenants.add(tenant.lower())

    def expire_now(self, reservation_id: str) -> None:
        """Expire one reservation at once (past its TTL and grace), returning its hold to the budgets."""
        with self._lock:
            record = self._reservations[reservation_id]
            if record.status == "ACTIVE":
                record.expires_at_ms = self.clock.now_ms() - record.grace_period_ms - 1
                self._expire(record)

    def snapshot(self) -> LedgerSnapshot:
        with self._lock:
            self._sweep()
            return snapshot_of(self._budgets, list(self._reservations.values()), self._events)

    # ---- idempotency ----

    def idempotent(
        self, tenant: str, endpoint: str, key: str, fingerprint: str, operation: Callable[[], Outcome]
    ) -> Outcome:
        """Run ``operation`` once per (tenant, endpoint, key); replay its success, refuse a new payload."""
        with self._lock:
            self._sweep()
            stored = self._idempotency.get((tenant, endpoint, key))
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise ProtocolError(
                        409,
                        "IDEMPOTENCY_MISMATCH",
                        f"idempotency_key {key!r} was already used with a different payload; "
                        "send a new key for a new request",
                    )
                return self._replayed(stored.outcome)
            outcome = operation()
            self._idempotency[(tenant, endpoint, key)] = _Stored(fingerprint, outcome)
            return outcome

    def _replayed(self, outcome: Outcome) -> Outcome:
        if outcome.lease is None or "remaining_ttl_ms" not in outcome.body:
            return outcome
        # remaining_ttl_ms is volatile: recomputed from the original expiry, 0 once not ACTIVE.
        record = self._reservations.get(outcome.lease)
        remaining = 0
        if record is not None and record.status == "ACTIVE":
            remaining = max(0, int(outcome.body["expires_at_ms"]) - self.clock.now_ms())
        return Outcome(outcome.status, {**outcome.body, "remaining_ttl_ms": remaining}, outcome.lease)

    # ---- evaluation shared by reserve, dry_run, decide and events ----

    def _evaluate(self, tenant: str, subject: dict[str, Any], unit: str, estimate: int) -> _Evaluation:
        affected = derive_scopes(subject)
        present = [self._budgets[s] for s in affected if s in self._budgets]
        budgets = [b for b in present if b.unit == unit]
        if present and not budgets:
            raise ProtocolError(
                400,
                "UNIT_MISMATCH",
                f"estimate unit {unit} matches no budget at {present[0].scope}; "
                f"budgets there are in {', '.join(sorted({b.unit for b in present}))}",
                {
                    "scope": present[0].scope,
                    "requested_unit": unit,
                    "expected_units": sorted({b.unit for b in present}),
                },
            )
        deny = deny_reason(budgets, estimate, unit, tenant, tenant in self._closed_tenants)
        return _Evaluation(affected, budgets, deny)

    @staticmethod
    def _no_budget(affected: list[str]) -> ProtocolError:
        return ProtocolError(404, "NOT_FOUND", f"Budget not found for provided scope: {', '.join(affected)}")

    def _policy(self, requested: str | None, budgets: list[Budget]) -> str:
        # The request's policy wins; without one, the most specific budget's configured policy applies.
        return requested or budgets[-1].overage_policy

    # ---- protocol operations (call through ``idempotent`` so they run under the lock) ----

    def evaluate_only(self, tenant: str, request: dict[str, Any], *, is_decide: bool) -> Outcome:
        """``dry_run`` reservations and ``/decide``: a decision, never a hold or a 409 for budget state."""
        estimate = request["estimate"]
        evaluation = self._evaluate(tenant, request["subject"], estimate["unit"], estimate["amount"])
        deny = evaluation.deny
        if not evaluation.budgets:
            deny = ("BUDGET_NOT_FOUND", self._no_budget(evaluation.affected).message)
        body: dict[str, Any] = {
            "decision": "DENY" if deny else "ALLOW",
            "affected_scopes": evaluation.affected,
        }
        if deny:
            body["reason_code"] = deny[0]
        if not is_decide:
            body["scope_path"] = evaluation.affected[-1]
            body["reserved"] = amount(estimate["unit"], 0 if deny else estimate["amount"])
            body["balances"] = [b.to_protocol() for b in evaluation.budgets]
        return Outcome(200, body)

    def reserve(self, tenant: str, request: dict[str, Any]) -> Outcome:
        estimate = request["estimate"]
        unit, value = estimate["unit"], estimate["amount"]
        evaluation = self._evaluate(tenant, request["subject"], unit, value)
        if not evaluation.budgets:
            raise self._no_budget(evaluation.affected)
        if evaluation.deny:
            code, message = evaluation.deny
            raise ProtocolError(409, code, message)
        now = self.clock.now_ms()
        record = Reservation(
            reservation_id=f"rsv_{uuid.uuid4().hex}",
            tenant=tenant,
            subject=request["subject"],
            action=request["action"],
            unit=unit,
            reserved=value,
            affected_scopes=evaluation.affected,
            budget_scopes=[b.scope for b in evaluation.budgets],
            overage_policy=self._policy(request.get("overage_policy"), evaluation.budgets),
            grace_period_ms=request.get("grace_period_ms", self.default_grace_period_ms),
            created_at_ms=now,
            expires_at_ms=now + request.get("ttl_ms", DEFAULT_TTL_MS),
            idempotency_key=request["idempotency_key"],
            metadata=request.get("metadata"),
        )
        for b in evaluation.budgets:
            b.reserved += value
        self._reservations[record.reservation_id] = record
        self._track(record)
        body = {
            "decision": "ALLOW",
            "reservation_id": record.reservation_id,
            "reserved": amount(unit, value),
            "expires_at_ms": record.expires_at_ms,
            "remaining_ttl_ms": max(0, record.expires_at_ms - now),
            "scope_path": record.scope_path,
            "affected_scopes": list(record.affected_scopes),
            "balances": self._balances(record.budget_scopes),
        }
        return Outcome(200, body, lease=record.reservation_id)

    def owned(self, tenant: str, reservation_id: str) -> Reservation:
        """The reservation, or 404 when it never existed, or 403 when another tenant owns it."""
        with self._lock:
            self._sweep()
            record = self._reservations.get(reservation_id)
            if record is None:
                raise ProtocolError(404, "NOT_FOUND", f"reservation {reservation_id!r} not found")
            if record.tenant != tenant:
                raise ProtocolError(
                    403, "FORBIDDEN", f"reservation {reservation_id!r} belongs to another tenant"
                )
            return record

    def _settleable(self, tenant: str, reservation_id: str) -> Reservation:
        record = self.owned(tenant, reservation_id)
        if record.tenant in self._closed_tenants:
            raise ProtocolError(409, "TENANT_CLOSED", f"tenant {record.tenant} is closed")
        if record.status == "EXPIRED":
            raise ProtocolError(
                410,
                "RESERVATION_EXPIRED",
                f"reservation {reservation_id} expired (TTL plus grace period elapsed)",
            )
        if record.status != "ACTIVE":
            raise ProtocolError(
                409, "RESERVATION_FINALIZED", f"reservation {reservation_id} is {record.status}"
            )
        return record

    def commit(self, tenant: str, reservation_id: str, request: dict[str, Any]) -> Outcome:
        record = self._settleable(tenant, reservation_id)
        actual = request["actual"]
        if actual["unit"] != record.unit:
            raise ProtocolError(
                400,
                "UNIT_MISMATCH",
                f"actual.unit {actual['unit']} differs from the reservation's unit {record.unit}",
                {
                    "scope": record.scope_path,
                    "requested_unit": actual["unit"],
                    "expected_units": [record.unit],
                },
            )
        budgets = [self._budgets[s] for s in record.budget_scopes]
        charged = settle(budgets, record.reserved, actual["amount"], record.overage_policy, commit=True)
        record.status, record.charged = "COMMITTED", charged
        record.finalized_at_ms = self.clock.now_ms()
        record.committed_metadata = request.get("metadata")
        body: dict[str, Any] = {"status": "COMMITTED", "charged": amount(record.unit, charged)}
        if record.reserved > actual["amount"]:
            body["released"] = amount(record.unit, record.reserved - actual["amount"])
        body["balances"] = self._balances(record.budget_scopes)
        return Outcome(200, body)

    def release(self, tenant: str, reservation_id: str) -> Outcome:
        record = self._settleable(tenant, reservation_id)
        for scope in record.budget_scopes:
            self._budgets[scope].reserved -= record.reserved
        record.status, record.finalized_at_ms = "RELEASED", self.clock.now_ms()
        body = {
            "status": "RELEASED",
            "released": amount(record.unit, record.reserved),
            "balances": self._balances(record.budget_scopes),
        }
        return Outcome(200, body)

    def extend(self, tenant: str, reservation_id: str, request: dict[str, Any]) -> Outcome:
        record = self._settleable(tenant, reservation_id)
        now = self.clock.now_ms()
        if now > record.expires_at_ms:  # extend, unlike commit, gets no grace period
            raise ProtocolError(410, "RESERVATION_EXPIRED", f"reservation {reservation_id} passed its expiry")
        if record.extensions >= self.max_extensions:
            raise ProtocolError(
                409,
                "MAX_EXTENSIONS_EXCEEDED",
                f"reservation {reservation_id} was already extended {record.extensions} times "
                f"(limit {self.max_extensions}); commit it or reserve again",
            )
        record.extensions += 1
        record.expires_at_ms += request["extend_by_ms"]
        self._track(record)
        body = {
            "status": "ACTIVE",
            "expires_at_ms": record.expires_at_ms,
            "remaining_ttl_ms": max(0, record.expires_at_ms - now),
            "balances": self._balances(record.budget_scopes),
        }
        return Outcome(200, body, lease=record.reservation_id)

    def event(self, tenant: str, request: dict[str, Any]) -> Outcome:
        actual = request["actual"]
        unit, value = actual["unit"], actual["amount"]
        evaluation = self._evaluate(tenant, request["subject"], unit, 0)
        if not evaluation.budgets:
            raise self._no_budget(evaluation.affected)
        if tenant in self._closed_tenants:
            raise ProtocolError(409, "TENANT_CLOSED", f"tenant {tenant} is closed")
        # Unlike reservations, an event without a policy gets the spec's default, which never rejects:
        # clients record already-happened spend this way (runcycles' expiry recovery relies on it).
        policy = request.get("overage_policy", "ALLOW_IF_AVAILABLE")
        charged = settle(evaluation.budgets, 0, value, policy, commit=False)
        record = EventRecord(
            f"evt_{uuid.uuid4().hex}",
            tenant,
            request["subject"],
            request["action"],
            evaluation.affected[-1],
            unit,
            value,
            charged,
            request.get("metadata"),
        )
        self._events.append(record)
        scopes = [b.scope for b in evaluation.budgets]
        body = {
            "status": "APPLIED",
            "event_id": record.event_id,
            "charged": amount(unit, charged),
            "balances": self._balances(scopes),
        }
        return Outcome(201, body)

    # ---- reads ----

    def _balances(self, scopes: list[str]) -> list[dict[str, Any]]:
        return [self._budgets[s].to_protocol() for s in scopes]

    def balances(self, tenant: str, filters: dict[str, str]) -> list[dict[str, Any]]:
        """Balances of ``tenant`` whose scope has every filtered level at the filtered value."""
        with self._lock:
            self._sweep()
            matches = []
            for scope in sorted(self._budgets):
                levels = parse_scope(scope)
                if levels.get("tenant") != tenant:
                    continue
                if all(levels.get(level) == value.lower() for level, value in filters.items()):
                    matches.append(self._budgets[scope].to_protocol())
            return matches

    def reservations_of(self, tenant: str) -> list[Reservation]:
        with self._lock:
            self._sweep()
            return [r for r in self._reservations.values() if r.tenant == tenant]

    # ---- expiry ----

    def _track(self, record: Reservation) -> None:
        heapq.heappush(
            self._deadlines, (record.expires_at_ms + record.grace_period_ms, record.reservation_id)
        )

    def _sweep(self) -> None:
        now = self.clock.now_ms()
        while self._deadlines and self._deadlines[0][0] < now:
            deadline, reservation_id = heapq.heappop(self._deadlines)
            record = self._reservations[reservation_id]
            # An extension pushed a newer deadline; this entry is stale.
            if record.status == "ACTIVE" and record.expires_at_ms + record.grace_period_ms == deadline:
                self._expire(record)

    def _expire(self, record: Reservation) -> None:
        record.status = "EXPIRED"
        for scope in record.budget_scopes:
            self._budgets[scope].reserved -= record.reserved
