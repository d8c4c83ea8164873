"""genai-prices as a price source: the reviewed differences from the pinned table, matching, exact costs."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime, time, timezone
from decimal import Decimal
from math import ceil
from pathlib import Path

import pytest

from cycles_otel import pricing
from cycles_otel.pricing import (
    MICROCENTS_PER_USD,
    PRICES_FILE_ENV,
    PRICES_SOURCE_ENV,
    ModelPrice,
    PriceTable,
    UnknownModelError,
)
from cycles_otel.pricing.defaults import DEFAULT_PRICES
from tests.support.ci import require_module

# One fixed day, so a price genai-prices schedules for a later date changes no figure here.
DAY = date(2026, 12, 1)
NOON = datetime.combine(DAY, time(12), tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def needs_genai_prices() -> None:
    """genai-prices, which the ``prices`` extra brings (its tests skip without it, fail under CI)."""
    require_module("genai_prices", "pip install 'cycles-otel[prices]'")


@pytest.fixture(scope="module")
def genai_table(needs_genai_prices: None) -> PriceTable:
    return PriceTable.from_genai_prices(on=DAY)


# --- the pinned table against genai-prices ---------------------------------------------------------
# The genai-prices id of each default model whose key is not itself an id there.
GENAI_IDS = {
    "claude-opus-4": "claude-opus-4-0",
    "claude-sonnet-4": "claude-sonnet-4-0",
    "claude-3-7-sonnet": "claude-3-7-sonnet-latest",
    "claude-3-5-haiku": "claude-3-5-haiku-latest",
}

# Reviewed (model, rate) -> (pinned, genai-prices) in USD per 1M tokens; every other rate of the
# 27 default models is equal. "cached_input" is the rate cached tokens are charged at: where the
# pinned table lists none, that is its input rate. "... above N" is the rate of a call whose input
# exceeds N tokens. A genai-prices release that changes any of these rates fails the test below.
REVIEWED_DIFFERENCES = {
    # Gemini cache reads: the pinned table charges them as input, genai-prices at Google's discount.
    ("gemini-2.5-pro", "cached_input"): ("1.25", "0.125"),
    ("gemini-2.5-flash", "cached_input"): ("0.3", "0.03"),
    ("gemini-2.5-flash-lite", "cached_input"): ("0.1", "0.01"),
    # Long context: genai-prices has the >200K-token tier the pinned table leaves out.
    ("gemini-2.5-pro", "input above 200000"): ("1.25", "2.5"),
    ("gemini-2.5-pro", "output above 200000"): ("10", "15"),
    ("gemini-2.5-pro", "cached_input above 200000"): ("1.25", "0.25"),
    ("claude-sonnet-4-5", "input above 200000"): ("3", "6"),
    ("claude-sonnet-4-5", "output above 200000"): ("15", "22.5"),
    ("claude-sonnet-4-5", "cached_input above 200000"): ("0.3", "0.6"),
}


def rates(price: ModelPrice, input_tokens: int) -> dict[str, Decimal]:
    tier = price.rates_for(input_tokens)
    return {
        "input": tier.input_usd_per_mtok,
        "output": tier.output_usd_per_mtok,
        "cached_input": tier.cached_input_usd_per_mtok,
    }


def differences(pinned: ModelPrice, maintained: ModelPrice) -> dict[str, tuple[str, str]]:
    found = {}
    for above in [None, *sorted({*pinned.tiers, *maintained.tiers})]:
        tokens = 0 if above is None else above + 1
        ours, theirs = rates(pinned, tokens), rates(maintained, tokens)
        for field in ours:
            if ours[field] != theirs[field]:
                name = field if above is None else f"{field} above {above}"
                found[name] = (f"{ours[field].normalize():f}", f"{theirs[field].normalize():f}")
    return found


def test_every_default_model_is_in_genai_prices(genai_table: PriceTable) -> None:
    resolved = {name: genai_table.resolve(name) for name in DEFAULT_PRICES}
    assert resolved == {name: GENAI_IDS.get(name, name) for name in DEFAULT_PRICES}
    assert len(resolved) == 27


def test_pinned_and_genai_prices_differ_exactly_where_reviewed(genai_table: PriceTable) -> None:
    pinned = PriceTable.default()
    found = {
        (name, rate): values
        for name in DEFAULT_PRICES
        for rate, values in differences(pinned[name], genai_table.price_for(name)).items()
    }
    assert found == REVIEWED_DIFFERENCES


# --- the conversion is exact ------------------------------------------------------------------------
USAGES = [
    (1, 1, 0),
    (1_000, 500, 400),
    (128_001, 3, 1),
    (200_000, 10, 0),
    (200_001, 10, 100_000),
    (272_001, 7, 3),
    (1_000_000, 0, 999_999),
]


def test_every_converted_model_costs_what_genai_prices_computes(genai_table: PriceTable) -> None:
    from genai_prices import Usage, data_snapshot

    checked = 0
    seen: set[str] = set()
    for provider in data_snapshot.get_snapshot().providers:
        if provider.id not in pricing.GENAI_PRICES_PROVIDERS:
            continue
        for model in provider.models:
            key = model.id.lower()
            if key not in genai_table or key in seen or genai_table.resolve(model.id) != key:
                continue  # not priced per token, or an id an earlier provider prices
            seen.add(key)
            for inputs, outputs, cached in USAGES:
                usage = Usage(input_tokens=inputs, output_tokens=outputs, cache_read_tokens=cached)
                expected = model.calc_price(usage, provider, genai_request_timestamp=NOON).total_price
                cost = genai_table.cost_microcents(model.id, inputs, outputs, cached)
                assert cost == ceil(expected * MICROCENTS_PER_USD), (provider.id, model.id, usage)
            checked += 1
    assert checked == len(genai_table) > 100


def test_a_long_context_tier_prices_the_whole_call(genai_table: PriceTable) -> None:
    assert genai_table.cost_microcents("claude-sonnet-4-5", 200_000, 1_000) == 200_000 * 300 + 1_000 * 1_500
    assert genai_table.cost_microcents("claude-sonnet-4-5", 200_001, 1_000) == 200_001 * 600 + 1_000 * 2_250


@pytest.mark.usefixtures("needs_genai_prices")
def test_time_of_day_prices_are_taken_at_the_days_peak() -> None:
    from genai_prices import Usage, data_snapshot

    table = PriceTable.from_genai_prices(("deepseek",), on=DAY)
    provider = next(p for p in data_snapshot.get_snapshot().providers if p.id == "deepseek")
    model = provider.find_model("deepseek-chat")
    assert model is not None
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    hourly = {
        model.calc_price(usage, provider, genai_request_timestamp=NOON.replace(hour=hour)).total_price
        for hour in range(24)
    }
    assert len(hourly) == 2  # off-peak hours cost less: a table cannot follow the clock
    assert table.cost_microcents("deepseek-chat", 1_000_000, 1_000_000) == max(hourly) * MICROCENTS_PER_USD


@pytest.mark.usefixtures("needs_genai_prices")
def test_prices_are_those_in_force_on_the_day_asked_for() -> None:
    before = PriceTable.from_genai_prices(on=date(2025, 6, 9)).price_for("o3")  # OpenAI's June 2025 cut
    after = PriceTable.from_genai_prices(on=date(2025, 6, 10)).price_for("o3")
    assert (before.input_usd_per_mtok, before.output_usd_per_mtok) == (Decimal(10), Decimal(40))
    assert (after.input_usd_per_mtok, after.output_usd_per_mtok) == (Decimal(2), Decimal(8))


@pytest.mark.usefixtures("needs_genai_prices")
def test_the_snapshot_genai_prices_uses_is_read_and_finer_rates_round_up() -> None:
    from genai_prices import data_snapshot, types

    model = types.ModelInfo(
        id="Acme-Float",
        match=types.ClauseStartsWith(starts_with="acme-float"),
        prices=types.ModelPrice(input_mtok=Decimal("0.18000000000000002"), output_mtok=Decimal("1")),
    )
    provider = types.Provider(id="acme", name="Acme", api_pattern=r"https://api\.acme\.test", models=[model])
    # The hook genai-prices' UpdatePrices uses to swap in freshly downloaded data.
    data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot([provider], from_auto_update=True))
    try:
        table = PriceTable.from_genai_prices(("acme",), on=DAY)
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert list(table) == ["acme-float"]
    assert table.resolve("ACME-Float-v2") == "acme-float"
    # Finer than a microcent per 1M tokens: rounded up, never under the exact figure.
    assert table["acme-float"].input_usd_per_mtok == Decimal("0.18000001")
    assert table.cost_microcents("acme-float", 1_000_000, 0) == 18_000_001


# --- matching ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("o3-mini-high", "o3-mini"),  # genai-prices' alias, unknown to suffix stripping
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku-latest"),
        ("claude-sonnet-4@20250514", "claude-sonnet-4-0"),
        ("claude-3-5-haiku", "claude-3-5-haiku-latest"),  # Anthropic's, not Vertex AI's entry
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini-pro-latest", "gemini-3.1-pro-preview"),  # genai-prices' rule beats stripping "-latest"
        ("GPT-4.1-2099-01-01", "gpt-4.1"),  # a snapshot newer than the rules: stripped to the model
    ],
)
def test_names_match_by_genai_prices_rules(genai_table: PriceTable, model: str, key: str) -> None:
    assert genai_table.resolve(model) == key


@pytest.mark.parametrize("model", ["acme-llm-7", "tts-1", "dall-e-3", "text-embedding-3-small"])
def test_models_without_per_token_prices_are_unknown(genai_table: PriceTable, model: str) -> None:
    with pytest.raises(UnknownModelError, match=repr(model)):
        genai_table.price_for(model)


def test_overrides_and_fallback_apply_on_top_of_genai_prices(genai_table: PriceTable) -> None:
    negotiated, other = ModelPrice("0.50", "2.00"), ModelPrice("9", "9")
    changed = genai_table.with_overrides({"claude-3-5-haiku": negotiated, "gpt-4o": other})
    # Your own key, even without the snapshot suffix, wins over genai-prices' rules ...
    assert changed.price_for("claude-3-5-haiku-20241022") is negotiated
    assert changed.price_for("gpt-4o-2024-11-20") is other
    # ... but not over an exact genai-prices id: the launch snapshot keeps its own price.
    assert changed.price_for("gpt-4o-2024-05-13") == genai_table["gpt-4o-2024-05-13"]
    assert changed.price_for("o3-mini-high") == genai_table["o3-mini"]  # the matcher came along
    assert genai_table.price_for("claude-3-5-haiku-20241022") != negotiated
    with_fallback = changed.with_fallback(other)
    assert with_fallback.price_for("acme-llm-7") is other
    assert with_fallback.price_for("o3-mini-high") == genai_table["o3-mini"]


def test_from_env_reads_genai_prices_under_the_price_file(
    genai_table: PriceTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"gemini-2.5-pro": {"input": 1, "output": 2}}}), encoding="utf-8")
    monkeypatch.setenv(PRICES_SOURCE_ENV, " Genai-Prices ")
    monkeypatch.setenv(PRICES_FILE_ENV, str(path))
    table = PriceTable.from_env()
    assert table.price_for("models/gemini-2.5-pro") == ModelPrice(1, 2)
    assert table.price_for("o3-mini-high") == genai_table["o3-mini"]
    monkeypatch.setenv(PRICES_SOURCE_ENV, "default")
    assert table.price_for("claude-sonnet-4-5") != PriceTable.from_env().price_for("claude-sonnet-4-5")
    monkeypatch.setenv(PRICES_SOURCE_ENV, "litellm")
    with pytest.raises(ValueError, match=rf"{PRICES_SOURCE_ENV}='litellm': use 'default' .* 'genai-prices'"):
        PriceTable.from_env()


@pytest.mark.parametrize(
    ("providers", "message"),
    [
        (("openai", "acme"), "'acme' is not a genai-prices provider id; use one of .*anthropic"),
        ("openai", "non-empty sequence of genai-prices provider ids"),
        ((), "non-empty sequence"),
    ],
)
def test_bad_providers_are_named(genai_table: PriceTable, providers: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PriceTable.from_genai_prices(providers)  # type: ignore[arg-type]


def test_without_genai_prices_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules is how Python blocks an import: as if the package were not installed.
    monkeypatch.setitem(sys.modules, "genai_prices", None)
    monkeypatch.delitem(sys.modules, "cycles_otel.pricing.genai_source", raising=False)
    monkeypatch.delattr(pricing, "genai_source", raising=False)
    with pytest.raises(ImportError, match=r"needs the genai-prices package .* 'cycles-otel\[prices\]'"):
        PriceTable.from_genai_prices()
    monkeypatch.setenv(PRICES_SOURCE_ENV, "genai-prices")
    with pytest.raises(ImportError, match=r"cycles-otel\[prices\]"):
        PriceTable.from_env()
