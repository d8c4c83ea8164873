"""Budget arithmetic of the protocol: why a request is denied, and how a charge settles under a policy."""

from __future__ import annotations

from typing import Any

from cycles_otel.testing.authority.records import Budget


class ProtocolError(Exception):
    """An error the protocol answers with ``{error, message}`` and an HTTP status."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


# Deny reasons in the order the spec ranks them: a closed tenant or budget first, then over-limit
# (which "takes precedence over DEBT_OUTSTANDING"), then debt, then plain insufficiency.
_DENY_ORDER = (
    "TENANT_CLOSED",
    "BUDGET_CLOSED",
    "BUDGET_FROZEN",
    "OVERDRAFT_LIMIT_EXCEEDED",
    "DEBT_OUTSTANDING",
    "BUDGET_EXCEEDED",
)


def deny_reason(
    budgets: list[Budget], estimate: int, unit: str, tenant: str, tenant_closed: bool
) -> tuple[str, str] | None:
    """The highest-ranked reason to refuse holding ``estimate`` on ``budgets`` (code, message), if any.

    Any debt denies (DEBT_OUTSTANDING), as the spec's ERROR SEMANTICS require, unless the scope is
    over its limit, which ranks first (OVERDRAFT_LIMIT_EXCEEDED).
    """
    reasons: dict[str, str] = {}
    if tenant_closed:
        reasons["TENANT_CLOSED"] = f"tenant {tenant} is closed"
    for b in budgets:
        if b.status == "CLOSED":
            reasons.setdefault("BUDGET_CLOSED", f"budget {b.scope} is closed")
        if b.status == "FROZEN":
            reasons.setdefault("BUDGET_FROZEN", f"budget {b.scope} is frozen")
        if b.is_over_limit:
            reasons.setdefault(
                "OVERDRAFT_LIMIT_EXCEEDED",
                f"scope {b.scope} is over its limit (debt {b.debt}, overdraft_limit "
                f"{b.overdraft_limit}); fund it to resume",
            )
        if b.debt > 0:
            reasons.setdefault("DEBT_OUTSTANDING", f"scope {b.scope} has outstanding debt {b.debt}; fund it")
        if b.remaining < estimate:
            reasons.setdefault(
                "BUDGET_EXCEEDED",
                f"Insufficient remaining budget for scope {b.scope}: remaining {b.remaining}, "
                f"requested {estimate} {unit}",
            )
    return next(((code, reasons[code]) for code in _DENY_ORDER if code in reasons), None)


def settle(budgets: list[Budget], held: int, actual: int, policy: str, *, commit: bool) -> int:
    """Convert a hold of ``held`` into a charge of ``actual`` on every budget; returns what was charged.

    The overage (actual − held) is checked before anything changes, so a refused settlement leaves
    the ledger untouched. Debt is per scope: only the part a scope's own remaining cannot cover.
    """
    base = min(actual, held)
    extra = actual - base
    # What each budget can still absorb once the hold turns into spend.
    available = {b.scope: max(0, b.remaining + held - base) for b in budgets}
    short = [b for b in budgets if available[b.scope] < extra]
    if policy == "REJECT" and commit and extra:
        # A commit under REJECT may not exceed its reservation at all, even when budget remains.
        raise ProtocolError(
            409,
            "BUDGET_EXCEEDED",
            f"actual {actual} exceeds the reserved {held} under overage_policy=REJECT; reserve a buffer "
            "or use ALLOW_IF_AVAILABLE",
        )
    if policy == "REJECT" and short:
        b = short[0]
        raise ProtocolError(
            409,
            "BUDGET_EXCEEDED",
            f"Insufficient remaining budget for scope {b.scope}: {extra} exceeds remaining "
            f"{available[b.scope]} (overage_policy=REJECT)",
        )
    if short and policy == "ALLOW_WITH_OVERDRAFT":
        for b in short:
            if b.debt + extra - available[b.scope] > b.overdraft_limit:
                raise ProtocolError(
                    409,
                    "OVERDRAFT_LIMIT_EXCEEDED",
                    f"scope {b.scope}: debt {b.debt} + overage {extra - available[b.scope]} "
                    f"would exceed overdraft_limit {b.overdraft_limit}",
                )
    capped = min([extra, *available.values()]) if policy == "ALLOW_IF_AVAILABLE" else extra
    for b in budgets:
        b.reserved -= held
        b.spent += base
        if policy == "ALLOW_WITH_OVERDRAFT":
            covered = min(extra, available[b.scope])
            b.spent += covered
            b.debt += extra - covered
        else:
            b.spent += capped
            if capped < extra and b in short:
                b.capped = True
    return base + capped
