"""What governed calls share (``Governor``, ``Governance``), how they are priced, and one call's plan."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from autogen_core.models import ChatCompletionClient, LLMMessage
from runcycles import Action, Amount, Subject  # type: ignore[import-untyped]

from cycles_otel.autogen.attribution import CallingAgent
from cycles_otel.autogen.authority import Authority
from cycles_otel.autogen.config import ClientSettings, GovernanceSettings
from cycles_otel.autogen.estimate import Estimate, Estimator, Tools
from cycles_otel.autogen.settlement import Settlements
from cycles_otel.autogen.usage import configured_output_cap
from cycles_otel.pricing import MICROCENTS_PER_USD, ModelPrice, PriceTable, UnknownModelError

SettingsT = TypeVar("SettingsT", bound=GovernanceSettings)


@dataclass(frozen=True)
class Priced:
    """Usage priced once: what to commit (in the budget's unit), what it cost in dollars, its tokens."""

    amount: int
    usd: float | None
    input_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def of(cls, amount: int, unit: str) -> Priced:
        """A fixed amount (a tool run): in dollars too when the budget counts money."""
        return cls(amount, amount / MICROCENTS_PER_USD if unit == "USD_MICROCENTS" else None)


@dataclass(frozen=True)
class CostModel:
    """How one client prices usage: ``USD_MICROCENTS`` from the price table, or ``TOKENS`` counted."""

    pricing: PriceTable
    model: str
    unit: str

    @functools.cached_property
    def _price(self) -> ModelPrice | None:
        """The model's price, looked up once (None: a TOKENS budget for a model the table does not know)."""
        try:
            return self.pricing.price_for(self.model)
        except UnknownModelError:
            return None

    def price(self, input_tokens: int, output_tokens: int, *, free: bool = False) -> Priced:
        """``free``: a cached answer, on the ledger with its tokens, at no cost."""
        if free:
            return Priced(0, 0.0, input_tokens, output_tokens)
        price = self._price
        microcents = price.cost_microcents(input_tokens, output_tokens) if price is not None else None
        amount = input_tokens + output_tokens if self.unit == "TOKENS" else microcents
        assert amount is not None  # USD_MICROCENTS clients check their model's price at construction
        usd = microcents / MICROCENTS_PER_USD if microcents is not None else None
        return Priced(amount, usd, input_tokens, output_tokens)


@dataclass(frozen=True)
class Governor(Generic[SettingsT]):
    """What the governed calls of one client (or tool) share: settings, authority, pending settlements."""

    settings: SettingsT
    authority: Authority
    settlements: Settlements
    fallback_agent: str | None
    """The Cycles config's agent (``CYCLES_AGENT``), used when no fixed or calling agent is known."""

    def with_agent(self, agent: str) -> Governor[SettingsT]:
        """The same governor, its calls attributed to ``agent`` (checked like the constructor's)."""
        settings = type(self.settings).validated(**{**self.settings.model_dump(), "agent": agent})
        return dataclasses.replace(self, settings=settings)


@dataclass(frozen=True)
class Governance:
    """What every model call of one client (and its ``with_agent`` twins) shares."""

    governor: Governor[ClientSettings]
    inner: ChatCompletionClient
    costs: CostModel
    estimator: Estimator
    provider: str

    @property
    def settings(self) -> ClientSettings:
        return self.governor.settings

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
        return CallPlan.of(settings, self.model, estimate, agent, self.governor.fallback_agent)


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

    @classmethod
    def of(
        cls,
        settings: GovernanceSettings,
        action_name: str,
        estimate: Estimate,
        agent: CallingAgent | None,
        fallback_agent: str | None,
    ) -> CallPlan:
        """The plan of a call by ``agent`` (the fixed agent, else the caller, else ``fallback_agent``)."""
        agent_name = settings.agent or (agent.name if agent is not None else None) or fallback_agent
        subject = settings.subject
        if agent_name:
            subject["agent"] = agent_name
        return cls(
            subject=subject,
            cycles_subject=_subject(tuple(subject.items())),
            action=_action(settings.action_kind, action_name),
            estimate=estimate,
            estimate_amount=_amount(settings.unit, estimate.amount),
            agent=agent,
            agent_name=agent_name,
        )


# The protocol models of a call, built once per value (they are only read): pydantic validates each.
@functools.lru_cache(maxsize=4_096)
def _subject(fields: tuple[tuple[str, str], ...]) -> Subject:
    return Subject(**dict(fields))


@functools.lru_cache(maxsize=1_024)
def _action(kind: str, name: str) -> Action:
    return Action(kind=kind, name=name)


@functools.lru_cache(maxsize=1_024)
def _amount(unit: str, amount: int) -> Amount:
    return Amount(unit=unit, amount=amount)
