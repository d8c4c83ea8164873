"""Typed adapter over genai-prices: its per-token prices as :class:`ModelPrice` entries, and its matching."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timezone
from decimal import ROUND_CEILING, Decimal
from functools import lru_cache
from typing import Final, TypeAlias

from cycles_otel.pricing.model_price import ModelPrice
from cycles_otel.pricing.money import microcents_to_usd

try:
    from genai_prices import data_snapshot
    from genai_prices import types as genai
except ImportError as exc:  # an optional dependency: say which extra brings it
    raise ImportError(
        "PriceTable.from_genai_prices() needs the genai-prices package (Python 3.11+): "
        "pip install 'cycles-otel[prices]'",
        name=exc.name,
    ) from exc

Matcher: TypeAlias = Callable[[str], str | None]

# genai-prices keeps exact decimals; a rate finer than one microcent per 1M tokens is rounded up.
_MICROCENT: Final = Decimal("0.00000001")


def load(providers: Sequence[str], on: date | None) -> tuple[dict[str, ModelPrice], Matcher]:
    """The token-priced models of ``providers`` (first provider wins an id) and a matcher to their keys."""
    chosen = _providers(providers)
    day = on or datetime.now(timezone.utc).date()
    prices: dict[str, ModelPrice] = {}
    seen: set[str] = set()
    for index, provider in enumerate(chosen):
        for model in provider.models:
            key = model.id.lower()
            # An id an earlier provider lists or matches is that provider's: Vertex AI's
            # "claude-3-5-haiku" must not shadow Anthropic's own price for that name.
            if key in seen or any(earlier.find_model(key) for earlier in chosen[:index]):
                continue
            seen.add(key)
            price = _model_price(model, day)
            if price is not None:
                prices[key] = price

    @lru_cache(maxsize=1024)
    def match(name: str) -> str | None:
        # genai-prices' own rules (prefixes, regexes, aliases) name the model; the first provider
        # listing a match decides, the same order that decided which provider's price a key holds.
        for provider in chosen:
            model = provider.find_model(name)
            if model is not None:
                key = model.id.lower()
                return key if key in prices else None
        return None

    return prices, match


def _providers(ids: Sequence[str]) -> list[genai.Provider]:
    available = {provider.id: provider for provider in data_snapshot.get_snapshot().providers}
    if isinstance(ids, str) or not ids:
        raise ValueError(
            f"providers must be a non-empty sequence of genai-prices provider ids such as "
            f"('openai', 'anthropic'), got {ids!r}"
        )
    for provider_id in ids:
        if provider_id not in available:
            raise ValueError(
                f"providers: {provider_id!r} is not a genai-prices provider id; use one of "
                f"{', '.join(sorted(available))}"
            )
    return [available[provider_id] for provider_id in dict.fromkeys(ids)]


def _model_price(model: genai.ModelInfo, day: date) -> ModelPrice | None:
    """The model's standard prices on ``day``; ``None`` when it is not priced per input and output token."""
    prices = [_converted(model.get_prices(moment)) for moment in _moments(model, day)]
    if any(price is None for price in prices):
        return None
    return _peak([price for price in prices if price is not None])


def _moments(model: genai.ModelInfo, day: date) -> list[datetime]:
    """Midnight and each edge of a time-of-day price (DeepSeek's off-peak hours): every price of the day."""
    edges = {time(0)}
    if isinstance(model.prices, list):
        for conditional in model.prices:
            if isinstance(conditional.constraint, genai.TimeOfDateConstraint):
                edges |= {conditional.constraint.start_time, conditional.constraint.end_time}
    return [_utc(day, edge) for edge in sorted(edges, key=lambda edge: _utc(day, edge))]


def _utc(day: date, moment: time) -> datetime:
    at = datetime.combine(day, moment)
    return at.replace(tzinfo=timezone.utc) if moment.tzinfo is None else at.astimezone(timezone.utc)


def _converted(price: genai.ModelPrice) -> ModelPrice | None:
    input_rate, output_rate, cached_rate = price.input_mtok, price.output_mtok, price.cache_read_mtok
    if input_rate is None or output_rate is None:
        return None

    def rates(above: int | None, tiers: dict[int, ModelPrice] | None = None) -> ModelPrice:
        cached = None if cached_rate is None else _rate(cached_rate, above)
        return ModelPrice(_rate(input_rate, above), _rate(output_rate, above), cached, tiers=tiers)

    fields = (input_rate, output_rate, cached_rate)
    tiered = [field for field in fields if isinstance(field, genai.TieredPrices)]
    thresholds = {tier.start for field in tiered for tier in field.tiers}
    return rates(None, {above: rates(above) for above in sorted(thresholds)})


def _rate(field: Decimal | genai.TieredPrices, above: int | None) -> Decimal:
    """USD per 1M tokens of one genai-prices field for a call whose input exceeds ``above`` tokens."""
    rate = field if isinstance(field, Decimal) else field.base
    if isinstance(field, genai.TieredPrices) and above is not None:
        passed = [tier for tier in field.tiers if tier.start <= above]
        if passed:
            rate = max(passed, key=lambda tier: tier.start).price
    return rate.quantize(_MICROCENT, rounding=ROUND_CEILING)


def _peak(prices: list[ModelPrice]) -> ModelPrice:
    """One price no lower than any of ``prices`` at any prompt size: a table cannot follow the clock."""
    if len(set(prices)) == 1:
        return prices[0]
    thresholds = sorted({above for price in prices for above in price.tiers})

    def highest(input_tokens: int) -> tuple[Decimal, Decimal, Decimal]:
        rates = [price.rates_for(input_tokens) for price in prices]
        return (
            microcents_to_usd(max(rate.input_microcents_per_mtok for rate in rates)),
            microcents_to_usd(max(rate.output_microcents_per_mtok for rate in rates)),
            microcents_to_usd(max(rate.cached_input_microcents_per_mtok for rate in rates)),
        )

    return ModelPrice(*highest(0), tiers={above: ModelPrice(*highest(above + 1)) for above in thresholds})
