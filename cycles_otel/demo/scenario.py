"""The demo's story: who works for ``acme``, what each may spend, and what the (scripted) model says."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Final

from cycles_otel.pricing import usd_to_microcents

TENANT: Final = "acme"
WORKFLOW: Final = "research-pipeline"
RESEARCHER: Final = "researcher"
WRITER: Final = "writer"
MODEL: Final = "gpt-4o"
TASK: Final = "Write a short brief on keeping multi-agent LLM spend under control."
TOOL_NAME: Final = "search_papers"
SEARCH_PRICE: Final = usd_to_microcents("0.00005")
"""What one search of the researcher's tool costs (a paid search API)."""
ESTIMATE_PER_CALL: Final = usd_to_microcents("0.0002")
"""A flat estimate per call, as in the integration guide; context grows, so later calls cost more."""

_TOPICS: Final = (
    "budget reservations for LLM agents",
    "token cost attribution in agent teams",
    "admission control for tool-calling agents",
    "overdraft policies for AI workloads",
    "observability of multi-agent systems",
    "per-agent spend limits",
    "cost-aware model routing",
    "alerting on budget burn rate",
)
_VENUES: Final = ("arXiv", "MLSys", "SoCC", "NeurIPS workshop", "OSDI", "VLDB")
_FINDINGS: Final = (
    "reserving before every call bounds worst-case spend",
    "per-agent scopes make a runaway agent visible within one call",
    "committing actual usage keeps the ledger within a token of the bill",
    "denials are cheaper than post-hoc refunds",
    "burn-rate alerts fire well before a hard stop",
    "tool loops dominate spend in research agents",
)


@dataclass(frozen=True)
class BudgetPlan:
    """Allocations in ``USD_MICROCENTS`` per scope path, outermost first."""

    allocations: dict[str, int]

    @classmethod
    def for_demo(cls, short: bool) -> BudgetPlan:
        # Sized against the fake model's token counts (context grows, so each turn costs more): the
        # researcher (two calls a turn: tool call, then summary) runs dry first, within a handful of
        # turns; the writer keeps headroom, so the stop is always the researcher's.
        researcher, writer = ("0.0050", "0.0100") if short else ("0.0100", "0.0200")
        return cls(
            {
                scope_path(): usd_to_microcents("1.00"),
                scope_path(WORKFLOW): usd_to_microcents("0.50"),
                scope_path(WORKFLOW, RESEARCHER): usd_to_microcents(researcher),
                scope_path(WORKFLOW, WRITER): usd_to_microcents(writer),
            }
        )


def scope_path(workflow: str | None = None, agent: str | None = None, tenant: str = TENANT) -> str:
    """The canonical scope path of a subject (levels it does not name are skipped)."""
    path = f"tenant:{tenant}"
    if workflow:
        path += f"/workflow:{workflow}"
    if agent:
        path += f"/agent:{agent}"
    return path.lower()


@dataclass(frozen=True)
class Reply:
    """One scripted model answer: text, or tool calls ``(name, arguments)``."""

    content: str = ""
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()


def scripted_replies(seed: int, turns: int) -> list[Reply]:
    """The model's answers in call order for ``turns`` round-robin turns (researcher: 2 calls, writer: 1)."""
    rng = random.Random(seed)
    replies: list[Reply] = []
    for turn in range(1, turns + 1):
        topic = rng.choice(_TOPICS)
        findings = rng.sample(_FINDINGS, 2)
        replies.append(Reply(tool_calls=((TOOL_NAME, {"query": topic, "limit": 3}),)))
        replies.append(
            Reply(
                content=(
                    f"Findings on {topic} (round {turn}): {findings[0]}; {findings[1]}. "
                    "Sources are the three papers above; the second has the strongest evaluation."
                )
            )
        )
        replies.append(
            Reply(
                content=(
                    f"Draft, section {turn}: Teams that want predictable LLM bills should note that "
                    f"{findings[0]}, and that {findings[1]}. Next: ask the researcher for numbers."
                )
            )
        )
    return replies


def scripted_turns(short: bool) -> int:
    """Turns to script: more than the budgets allow, so the run always ends on the budget."""
    return 8 if short else 12


def search_papers(query: str, limit: int = 3) -> str:
    """Search the (offline) paper index for a query; returns one paper per line."""
    rng = random.Random(f"{query}/{limit}")  # same query, same answer: the demo stays deterministic
    return "\n".join(
        f"- {query.title()}: part {index + 1} ({rng.choice(_VENUES)} {rng.randint(2021, 2025)})"
        for index in range(max(1, min(limit, 5)))
    )
