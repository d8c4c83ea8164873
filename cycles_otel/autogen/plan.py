"""What every call of one client shares (``Governance``), and the frozen plan of one call (``CallPlan``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autogen_core.models import ChatCompletionClient, LLMMessage
from runcycles import Action, Amount, Subject  # type: ignore[import-untyped]

from cycles_otel.autogen.attribution import CallingAgent
from cycles_otel.autogen.authority import Authority
from cycles_otel.autogen.config import ClientSettings
from cycles_otel.autogen.estimate import Estimate, Estimator, Tools
from cycles_otel.autogen.usage import configured_output_cap
from cycles_otel.pricing import PriceTable, UnknownModelError, microcents_to_usd


@dataclass(frozen=True)
class Priced:
    """Usage priced once: what to commit (in the budget's unit) and what it cost in dollars."""

    input_tokens: int
    output_tokens: int
    amount: int
    usd: float | None


@dataclass(frozen=True)
class CostModel:
    """How one client prices usage: ``USD_MICROCENTS`` from the price table, or ``TOKENS`` counted."""

    pricing: PriceTable
    model: str
    unit: str

    def price(self, input_tokens: int, output_tokens: int, *, free: bool = False) -> Priced:
        """``free``: a cached answer, on the ledger with its tokens, at no cost."""
        try:
            microcents: int | None = self.pricing.cost_microcents(self.model, input_tokens, output_tokens)
        except UnknownModelError:  # a TOKENS budget needs no price; then there is no dollar figure
            microcents = None
        if free:
            return Priced(input_tokens, output_tokens, 0, 0.0)
        amount = input_tokens + output_tokens if self.unit == "TOKENS" else microcents
        assert amount is not None  # USD_MICROCENTS clients check their model's price at construction
        usd = float(microcents_to_usd(microcents)) if microcents is not None else None
        return Priced(input_tokens, output_tokens, amount, usd)


@dataclass(frozen=True)
class Governance:
    """What every call of one client (and its ``with_agent`` twins) shares."""

    settings: ClientSettings
    inner: ChatCompletionClient
    authority: Authority
    costs: CostModel
    estimator: Estimator
    provider: str
    fallback_agent: str | None
    """The Cycles config's agent (``CYCLES_AGENT``), used when no fixed or calling agent is known."""

    @property
    def model(self) -> str:
        assert self.settings.model is not None  # resolved at construction
        return self.settings.model

    async def plan(
        self,
        messages: Sequence[LLMMessage],
        tools: Tools,
        extra_create_args: Mapping[str, Any],
        agent: CallingAgent | None,
    ) -> CallPlan:
        """Attribute and estimate one call; errors here reserve nothing."""
        settings = self.settings
        output_cap = settings.max_output_tokens or configured_output_cap(self.inner, extra_create_args)
        estimate = await self.estimator.estimate(messages, tools, self.model, self.costs.pricing, output_cap)
        agent_name = settings.agent or (agent.name if agent is not None else None) or self.fallback_agent
        subject = settings.subject
        if agent_name:
            subject["agent"] = agent_name
        return CallPlan(
            subject=subject,
            cycles_subject=Subject(**subject),
            action=Action(kind=settings.action_kind, name=self.model),
            estimate=estimate,
            estimate_amount=Amount(unit=settings.unit, amount=estimate.amount),
            agent=agent,
            agent_name=agent_name,
        )


@dataclass(frozen=True)
class CallPlan:
    """Everything decided about one call before anything is reserved."""

    subject: Mapping[str, str]
    cycles_subject: Subject
    action: Action
    estimate: Estimate
    estimate_amount: Amount
    agent: CallingAgent | None
    agent_name: str | None
