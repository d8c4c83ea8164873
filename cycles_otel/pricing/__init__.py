"""LLM price table: USD per 1M tokens in, exact integer ``USD_MICROCENTS`` per call out.

Usage::

    from cycles_otel.pricing import ModelPrice, PriceTable

    table = PriceTable.default().with_overrides({"my-model": ModelPrice("1.00", "2.00")})
    table.cost_microcents("gpt-4o", input_tokens=1_000, output_tokens=500)   # 750_000

    maintained = PriceTable.from_genai_prices()   # pip install 'cycles-otel[prices]'

Units and rounding. 1 USD = 100,000,000 ``USD_MICROCENTS`` (:data:`MICROCENTS_PER_USD`).
A rate is kept as an exact integer number of microcents per 1M tokens ($2.50 per 1M tokens is
250,000,000, i.e. 250 microcents per token), so a rate may have at most 8 decimal places in USD.
The cost of one call is::

    ceil((uncached_input * input_rate + cached_input * cached_rate + output * output_rate) / 1_000_000)

microcents: one rounding per call, always up, so a budget is never under-charged by rounding
and summing any number of calls never drifts (no float anywhere). A :class:`ModelPrice` may have
long-context ``tiers``: once a call's input exceeds a tier's threshold, the tier's rates price
the whole call (``ModelPrice("3", "15", "0.30", tiers={200_000: ModelPrice("6", "22.50", "0.60")})``).

Two sources of prices.

* :meth:`PriceTable.default` (the default): dated public list prices (:data:`PRICES_AS_OF`) for
  the shortest-context, standard (non-batch, non-priority) tier, text tokens, 27 OpenAI,
  Anthropic and Gemini models. They are defaults to override: negotiated rates, long-context
  tiers (Gemini 2.5 Pro and Claude Sonnet above 200K prompt tokens), audio input and prompt-cache
  *writes* (priced here as ordinary input) are not in them. Where no cached-input rate is listed,
  cached tokens are priced at the input rate.
* :meth:`PriceTable.from_genai_prices`: the prices the `genai-prices` package (by pydantic)
  maintains, for the providers in :data:`GENAI_PRICES_PROVIDERS` (``openai``, ``anthropic``,
  ``google``) or those you name, from the data genai-prices currently uses (its bundled release,
  or what its ``UpdatePrices`` fetched). Taken per model: the standard rates of input, output and
  cached-input (cache read) tokens, with their long-context tiers, as in force on ``on=`` (default
  today, UTC); a rate finer than a microcent per 1M tokens is rounded up. Where prices change by
  time of day (DeepSeek's off-peak hours) the day's highest rate is taken. Not taken: batch,
  flex and priority prices, cache writes, audio and image token rates, per-request and
  web-search fees; a model without per-token input and output prices is unknown. A model id several providers
  list is priced by the first provider that lists or matches it.

Matching a model name to a price, first hit wins: the name exactly (case-insensitive; the
Gemini API's ``models/`` prefix dropped); an entry of your own (the defaults, overrides, a price
file) without the name's snapshot suffix (``-2024-08-06``, ``-20241022``, ``@20250514``,
``-latest``); genai-prices' own matching rules (aliases, prefixes: ``o3-mini-high``,
``claude-3-5-haiku-20241022``); a genai-prices entry without the snapshot suffix. Then the
fallback (:meth:`PriceTable.with_fallback`) if set, else :class:`UnknownModelError`.

Configuration (read by :meth:`PriceTable.from_env`, which the budgeted AutoGen client uses when
it is given no ``pricing=``):

* ``CYCLES_OTEL_PRICES_SOURCE``: ``default`` (the dated table) or ``genai-prices``.
* ``CYCLES_OTEL_PRICES_FILE``: a JSON file of overrides applied on top of either source::

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
from cycles_otel.pricing.table import (
    GENAI_PRICES_PROVIDERS,
    PRICE_SOURCES,
    PRICES_SOURCE_ENV,
    PriceTable,
    UnknownModelError,
)

__all__ = [
    "GENAI_PRICES_PROVIDERS",
    "MICROCENTS_PER_USD",
    "PRICES_AS_OF",
    "PRICES_FILE_ENV",
    "PRICES_SOURCE_ENV",
    "PRICE_SOURCES",
    "TOKENS_PER_RATE",
    "ModelPrice",
    "PriceTable",
    "PricingFileError",
    "UnknownModelError",
    "UsdAmount",
    "microcents_to_usd",
    "usd_to_microcents",
]
