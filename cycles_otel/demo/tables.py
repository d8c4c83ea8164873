"""The demo's closing report: per-agent totals and budgets (ledger next to metrics), as plain text tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cycles_otel.demo.accounting import Reconciliation, usd
from cycles_otel.demo.progress import CallRecord


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned numbers, two spaces between columns."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            f"{cell:<{w}}" if i == 0 else f"{cell:>{w}}"
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


@dataclass(frozen=True)
class AgentTotals:
    agent: str
    calls: int
    input_tokens: int
    output_tokens: int
    charged: int
    denials: int


def agent_totals(records: Sequence[CallRecord], agents: Sequence[str]) -> list[AgentTotals]:
    """Totals per agent, in ``agents`` order (agents seen only in ``records`` come last)."""
    names = list(agents) + sorted({r.agent for r in records} - set(agents))
    totals = []
    for name in names:
        mine = [r for r in records if r.agent == name]
        allowed = [r for r in mine if not r.denied]
        totals.append(
            AgentTotals(
                agent=name,
                calls=len(allowed),
                input_tokens=sum(r.input_tokens for r in allowed),
                output_tokens=sum(r.output_tokens for r in allowed),
                charged=sum(r.charged for r in allowed),
                denials=len(mine) - len(allowed),
            )
        )
    return totals


def agent_table(totals: Sequence[AgentTotals]) -> str:
    rows = [
        [t.agent, str(t.calls), str(t.input_tokens), str(t.output_tokens), usd(t.charged), str(t.denials)]
        for t in totals
    ]
    return format_table(["agent", "calls", "in tok", "out tok", "cost USD", "denials"], rows)


def _mark(ok: bool) -> str:
    return "yes" if ok else "NO"


def budget_table(check: Reconciliation) -> str:
    rows = [
        [
            c.scope,
            usd(c.allocated),
            usd(c.ledger_spent),
            usd(c.ledger_remaining),
            usd(c.metric_remaining),
            _mark(c.agrees),
        ]
        for c in check.scopes
    ]
    table = format_table(["scope", "allocated", "spent", "left (ledger)", "left (metrics)", "agree"], rows)
    lines = [table, ""]
    for a in check.agents:
        capped = (a.priced or 0) - a.span_charged
        lines.append(
            f"{a.agent}: ledger spent {usd(a.ledger_spent)}, charged on its spans {usd(a.span_charged)}  "
            f"agree: {_mark(a.agrees)}"
            + (
                f"  (priced {usd(a.priced)}: {usd(capped)} over what was left was not charged)"
                if capped > 0
                else ""
            )
        )
    if check.tenant_spent is not None or check.metric_charged is not None:
        lines.append(
            f"tenant spent {usd(check.tenant_spent)}, "
            f"cycles_client_charged_total {usd(check.metric_charged)}  "
            f"agree: {_mark(check.tenant_spent == check.metric_charged)}"
        )
    return "\n".join(lines)
