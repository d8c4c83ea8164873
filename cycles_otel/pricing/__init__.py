"""LLM price table: USD per 1M tokens in, exact integer ``USD_MICROCENTS`` per call out.

Usage::

    from cycles_otel.pricing import ModelPrice, PriceTable

    table = PriceTable.default().with_overrides({"my-model": ModelPrice("1.00", "2.00")})
    table.cost_microcents("gpt-4o", input_tokens=1_000, output_tokens=500)   # 750_000

Units and rounding. 1 USD = 100,000,000 ``USD_MICROCENTS`` (:data:`MICROCENTS_PER_USD`).
A rate is kept as an exact integer number of microcents per 1M tokens ($2.50 per 1M tokens is
250,000,000, i.e. 250 microcents per token), so a rate may have at most 8 decimal places in USD.
The cost of one call is::

    ceil((uncached_input * input_rate + cached_input * cached_rate + output * output_rate) / 1_000_000)

microcents: one rounding per call, always up, so a budget is never under-charged by rounding
and summing any number of calls never drifts (no float anywhere). A :class:`ModelPrice` may have
long-context ``tiers``: once a call's input exceeds a tier's threshold, the tier's rates price
the whole call (``ModelPrice("3", "15", "0.30", tiers={200_000: ModelPrice("6", "22.50", "0.60")})``).

The defaults (:data:`PRICES_AS_OF`) are public list prices for the shortest-context, standard
(non-batch, non-priority) tier, text tokens. They are defaults to override: negotiated rates,
long-context tiers (Gemini 2.5 Pro and Claude Sonnet above 200K prompt tokens), audio input and
prompt-cache *writes* (priced here as ordinary input) are not in them. Where no cached-input rate
is listed, cached tokens are priced at the input rate.

Configuration: ``CYCLES_OTEL_PRICES_FILE`` names a JSON file read by :meth:`PriceTable.from_env`::

    {"models": {"my-model": {"input": 2.5, "output": 10, "cached_input": 1.25}},
     "fallback": {"input": 5, "output": 15}}
"""

from cycles_otel.pricing.defaults import PRICES_AS_OF
from cycles_otel.pricing.model_price import ModelPrice
from cycles_otel.pricing.money import (
    MICROCENTS_PER_USD,
    TOKENS_PER_RATE,
    UsdAmount,
    microcents_to_usd,
    usd_to_microcents,
)
from cycles_otel.pricing.price_file import PRICES_FILE_ENV, PricingFileError
from cycles_otel.pricing.table import PriceTable, UnknownModelError

__all__ = [
    "MICROCENTS_PER_USD",
    "PRICES_AS_OF",
    "PRICES_FILE_ENV",
    "TOKENS_PER_RATE",
    "ModelPrice",
    "PriceTable",
    "PricingFileError",
    "UnknownModelError",
    "UsdAmount",
    "microcents_to_usd",
    "usd_to_microcents",
]
