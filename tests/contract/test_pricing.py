"""The price table: exact integer microcents, overrides, price files, model-id normalisation."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from fractions import Fraction
from math import ceil
from pathlib import Path

import pytest

from cycles_otel import pricing
from cycles_otel.pricing import (
    MICROCENTS_PER_USD,
    PRICES_FILE_ENV,
    ModelPrice,
    PriceTable,
    PricingFileError,
    UnknownModelError,
    microcents_to_usd,
    usd_to_microcents,
)


@pytest.fixture
def table() -> PriceTable:
    return PriceTable.default()


def write_prices(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


# --- exact figures --------------------------------------------------------------------------------
def test_gpt_4o_prices_at_250_and_1000_microcents_per_token(table: PriceTable) -> None:
    assert MICROCENTS_PER_USD == 100_000_000
    assert table.cost_microcents("gpt-4o", input_tokens=1, output_tokens=0) == 250
    assert table.cost_microcents("gpt-4o", input_tokens=0, output_tokens=1) == 1_000
    assert table.cost_microcents("gpt-4o", input_tokens=1_000, output_tokens=500) == 750_000
    one_million_each = table.cost_microcents("gpt-4o", 1_000_000, 1_000_000)
    assert microcents_to_usd(one_million_each) == Decimal("12.50")
    price = table.price_for("gpt-4o")
    assert (price.input_usd_per_mtok, price.output_usd_per_mtok) == (Decimal("2.50"), Decimal("10.00"))
    assert price.input_microcents_per_mtok == 250_000_000


def test_cached_input_is_the_discounted_part_of_input(table: PriceTable) -> None:
    uncached = table.cost_microcents("gpt-4o", input_tokens=1_000, output_tokens=0)
    cached = table.cost_microcents("gpt-4o", input_tokens=1_000, output_tokens=0, cached_input_tokens=400)
    assert uncached == 250_000
    assert cached == 600 * 250 + 400 * 125
    assert cached < uncached


def test_cached_rate_defaults_to_the_input_rate() -> None:
    price = ModelPrice("3", "15")
    assert price.cached_input_microcents_per_mtok == price.input_microcents_per_mtok
    assert price.cost_microcents(100, 0, cached_input_tokens=100) == price.cost_microcents(100, 0)


def test_each_call_rounds_up_once_to_a_whole_microcent() -> None:
    price = ModelPrice("0.15", "0.60", "0.075")  # 7.5 microcents per cached token
    assert price.cost_microcents(1, 0, cached_input_tokens=1) == 8
    assert price.cost_microcents(3, 0, cached_input_tokens=3) == 23  # 22.5, rounded once, not 3 x 8
    assert price.cost_microcents(2, 0, cached_input_tokens=2) == 15
    assert price.cost_microcents(0, 0) == 0


@pytest.mark.slow
def test_one_million_calls_sum_exactly(table: PriceTable) -> None:
    price = ModelPrice("0.15", "0.60", "0.075")
    tiny = table.with_overrides({"tiny": price})
    periods, period = 1_000, 1_000
    total = 0
    for i in range(periods * period):
        n = i % period
        total += tiny.cost_microcents("tiny", n, (n * 7) % period, n // 3)
    # Independent reference: exact rationals in USD, each call rounded up to a microcent.
    per_period = sum(
        ceil(
            (
                (n - n // 3) * Fraction("0.15")
                + (n // 3) * Fraction("0.075")
                + ((n * 7) % period) * Fraction("0.60")
            )
            / 1_000_000
            * MICROCENTS_PER_USD
        )
        for n in range(period)
    )
    assert total == per_period * periods
    assert microcents_to_usd(total) == Decimal(per_period * periods) / MICROCENTS_PER_USD


def test_max_cost_bounds_every_actual_cost(table: PriceTable) -> None:
    bound = table.max_cost_microcents("claude-sonnet-4-5", input_tokens=2_000, max_output_tokens=512)
    assert bound == table.cost_microcents("claude-sonnet-4-5", 2_000, 512)
    for output, cached in [(0, 0), (512, 0), (512, 2_000), (100, 1_000)]:
        assert table.cost_microcents("claude-sonnet-4-5", 2_000, output, cached) <= bound


# --- long-context tiers ---------------------------------------------------------------------------
LONG_CONTEXT = ModelPrice("3", "15", "0.30", tiers={200_000: ModelPrice("6", "22.50", "0.60")})


def test_a_tier_prices_the_whole_call_once_the_input_exceeds_its_threshold() -> None:
    assert LONG_CONTEXT.cost_microcents(200_000, 1_000) == 200_000 * 300 + 1_000 * 1_500
    assert LONG_CONTEXT.rates_for(200_000) is LONG_CONTEXT
    # One token more and every token, cached and output included, is at the tier's rates.
    assert LONG_CONTEXT.cost_microcents(200_001, 1_000, cached_input_tokens=100_000) == (
        100_001 * 600 + 100_000 * 60 + 1_000 * 2_250
    )
    assert LONG_CONTEXT.rates_for(200_001) == ModelPrice("6", "22.50", "0.60")
    table = PriceTable({"long": LONG_CONTEXT})
    assert table.max_cost_microcents("long", 300_000, 10) == 300_000 * 600 + 10 * 2_250


def test_the_highest_tier_exceeded_applies_and_a_tier_caches_at_its_own_input_rate() -> None:
    price = ModelPrice("1", "2", tiers={128_000: ModelPrice("4", "8"), 32_000: ModelPrice("2", "4")})
    assert list(price.tiers) == [32_000, 128_000]
    assert [price.rates_for(n).input_usd_per_mtok for n in (32_000, 32_001, 128_000, 128_001)] == [
        Decimal(1),
        Decimal(2),
        Decimal(2),
        Decimal(4),
    ]
    assert price.cost_microcents(128_001, 0, cached_input_tokens=128_001) == price.cost_microcents(128_001, 0)


def test_tiers_are_part_of_a_prices_identity_and_repr() -> None:
    same = ModelPrice("3", "15", "0.3", tiers={200_000: ModelPrice("6", "22.5", "0.6")})
    assert same == LONG_CONTEXT and hash(same) == hash(LONG_CONTEXT)
    assert ModelPrice("3", "15", "0.30") != LONG_CONTEXT
    assert repr(LONG_CONTEXT) == (
        "ModelPrice('3', '15', cached_input_usd_per_mtok='0.3', "
        "tiers={200000: ModelPrice('6', '22.5', cached_input_usd_per_mtok='0.6')})"
    )
    assert repr(ModelPrice("3", "15")) == "ModelPrice('3', '15', cached_input_usd_per_mtok='3')"
    with pytest.raises(TypeError):
        LONG_CONTEXT.tiers[1] = ModelPrice(1, 1)  # type: ignore[index]


@pytest.mark.parametrize(
    ("tiers", "error", "message"),
    [
        ({-1: ModelPrice(1, 1)}, ValueError, "threshold -1 must be a whole number of input tokens"),
        ({True: ModelPrice(1, 1)}, ValueError, "threshold True must be"),
        ({"200k": ModelPrice(1, 1)}, ValueError, "threshold '200k' must be"),
        ({10: (1, 2)}, TypeError, r"tiers\[10\] must be a ModelPrice"),
        ({10: LONG_CONTEXT}, ValueError, "has tiers of its own"),
        ([(10, ModelPrice(1, 1))], TypeError, "tiers must map input-token thresholds"),
    ],
)
def test_bad_tiers_are_rejected(tiers: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ModelPrice(1, 2, tiers=tiers)  # type: ignore[arg-type]


# --- conversions and validation -----------------------------------------------------------------------
def test_usd_and_microcents_convert_exactly() -> None:
    assert usd_to_microcents("2.50") == 250_000_000
    assert usd_to_microcents(Decimal("0.00000001")) == 1
    assert usd_to_microcents(0.1) == 10_000_000  # a float goes through its shortest repr
    assert microcents_to_usd(1) == Decimal("0.00000001")
    assert usd_to_microcents(microcents_to_usd(123_456_789)) == 123_456_789
    with pytest.raises(ValueError, match="8 decimal places"):
        usd_to_microcents("0.000000001")
    with pytest.raises(ValueError, match="8 decimal places"):  # beyond Decimal's 28-digit context
        usd_to_microcents("1.0000000000000000000000000000001")
    with pytest.raises(TypeError, match="int number of USD_MICROCENTS"):
        microcents_to_usd(1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-1", "2"), "input_usd_per_mtok must be >= 0"),
        (("1", "-0.5"), "output_usd_per_mtok must be >= 0"),
        (("1", "2", "-1"), "cached_input_usd_per_mtok must be >= 0"),
        ((float("nan"), "2"), "must be a finite number"),
        (("1", "inf"), "must be a finite number"),
        (("abc", "2"), "must be a number of USD such as '2.50'"),
        (("0.000000001", "1"), "at most 8 decimal places"),
    ],
)
def test_model_price_rejects_bad_rates(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelPrice(*args)


def test_model_price_accepts_decimal_str_int_and_float_exactly() -> None:
    expected = ModelPrice(Decimal("0.1"), Decimal("2"))
    assert ModelPrice("0.1", 2) == ModelPrice(0.1, 2.0) == expected
    assert expected.input_microcents_per_mtok == 10_000_000
    with pytest.raises(TypeError, match="must be a number of USD"):
        ModelPrice(True, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_tokens": -1, "output_tokens": 0}, "input_tokens must be a whole number of tokens >= 0"),
        ({"input_tokens": 1, "output_tokens": 2.0}, "output_tokens must be a whole number"),
        ({"input_tokens": True, "output_tokens": 0}, "input_tokens must be a whole number"),
        ({"input_tokens": 1, "output_tokens": 0, "cached_input_tokens": None}, "cached_input_tokens must be"),
        ({"input_tokens": 1, "output_tokens": 0, "cached_input_tokens": 2}, "cannot exceed it"),
    ],
)
def test_bad_token_counts_are_rejected(table: PriceTable, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        table.cost_microcents("gpt-4o", **kwargs)  # type: ignore[arg-type]


def test_max_cost_rejects_bad_token_counts(table: PriceTable) -> None:
    with pytest.raises(ValueError, match="output_tokens must be a whole number"):
        table.max_cost_microcents("gpt-4o", 10, -5)


# --- lookup -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("o3-2025-04-16", "o3"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-sonnet-4@20250514", "claude-sonnet-4"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("GPT-4o", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # an exact entry wins over normalisation
    ],
)
def test_dated_model_ids_resolve_to_their_model(table: PriceTable, model: str, key: str) -> None:
    assert table.resolve(model) == key
    assert table.price_for(model) == table[key]


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o-audio-preview-2024-12-17",
        "ft:gpt-4o-2024-08-06:acme::x1",
        "o3-pro",
        "gemini-2.5-flash-preview-05-20",
    ],
)
def test_variants_priced_differently_are_not_normalised_away(table: PriceTable, model: str) -> None:
    with pytest.raises(UnknownModelError):
        table.price_for(model)


def test_a_matcher_names_the_key_for_names_the_table_does_not_have() -> None:
    acme = ModelPrice("1", "2")
    table = PriceTable({"acme-large": acme}, matcher=lambda name: "acme-large" if "acme" in name else "gone")
    assert table.resolve("ACME-Large") == "acme-large"
    assert table.price_for("eu.acme-large-v2") is acme
    assert table.with_fallback(None).price_for("acme-x") is acme  # the matcher comes along
    with pytest.raises(UnknownModelError):
        table.price_for("other")  # a key the table lacks ("gone") is no match
    with pytest.raises(TypeError, match="matcher must map a model name"):
        PriceTable({}, matcher="acme")  # type: ignore[arg-type]


def test_unknown_model_error_names_the_model_and_the_fixes(table: PriceTable) -> None:
    with pytest.raises(UnknownModelError) as caught:
        table.cost_microcents("acme-llm-7", 10, 10)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.model == "acme-llm-7"
    for fix in ("'acme-llm-7'", "with_overrides", PRICES_FILE_ENV, "with_fallback"):
        assert fix in str(error)


def test_fallback_prices_unknown_models_only(table: PriceTable) -> None:
    fallback = ModelPrice("20", "80")
    with_fallback = table.with_fallback(fallback)
    assert with_fallback.price_for("acme-llm-7") is fallback
    assert with_fallback.cost_microcents("acme-llm-7", 1, 1) == 2_000 + 8_000
    assert with_fallback.price_for("gpt-4o") == table["gpt-4o"]
    with pytest.raises(UnknownModelError):
        with_fallback.with_fallback(None).price_for("acme-llm-7")


def test_overrides_add_and_replace_without_touching_the_original(table: PriceTable) -> None:
    negotiated = ModelPrice("2.00", "8.00", "1.00")
    custom = ModelPrice("1.0", "2.0")
    changed = table.with_overrides({"gpt-4o": negotiated, "My-Model": custom})
    assert changed.price_for("gpt-4o-2024-08-06") is negotiated
    assert changed.price_for("my-model") is custom
    assert table.price_for("gpt-4o") != negotiated
    assert "my-model" not in table
    assert len(changed) == len(table) + 1
    with pytest.raises(TypeError, match="must be a ModelPrice"):
        table.with_overrides({"x": (1, 2)})  # type: ignore[dict-item]


def test_defaults_are_dated_and_documented_as_overridable(table: PriceTable) -> None:
    assert isinstance(pricing.PRICES_AS_OF, date)
    assert "defaults to override" in (pricing.__doc__ or "")
    assert len(table) > 0
    for name, price in table.items():
        assert price.cached_input_microcents_per_mtok <= price.input_microcents_per_mtok, name
        assert table.resolve(name) == name


# --- price files --------------------------------------------------------------------------------------
def test_price_file_loads_exact_rates_and_fallback(tmp_path: Path) -> None:
    path = write_prices(
        tmp_path,
        '{"models": {"acme-llm-7": {"input": 0.075, "output": 10, "cached_input": 0.01}},'
        ' "fallback": {"input": 5, "output": 15}}',
    )
    loaded = PriceTable.from_file(path)
    assert list(loaded) == ["acme-llm-7"]
    assert loaded["acme-llm-7"] == ModelPrice("0.075", "10", "0.01")
    assert loaded["acme-llm-7"].input_microcents_per_mtok == 7_500_000
    assert loaded.fallback == ModelPrice("5", "15")


@pytest.mark.parametrize(
    ("content", "model", "field", "words"),
    [
        ('{"models": {"m": {"input": 1,, }}}', None, None, ["not valid JSON", "line 1", '"models"']),
        ({"models": {"m": {"input": -2.5, "output": 10}}}, "m", "input", [">= 0", "fix the value"]),
        (
            {"models": {"m": {"input": 2.5}}},
            "m",
            "output",
            ["missing", '"output": <USD per 1M output tokens>'],
        ),
        ({"models": {"m": {"input": "abc", "output": 1}}}, "m", "input", ["must be a number", "such as 2.5"]),
        ({"models": {"m": {"input": 1, "output": True}}}, "m", "output", ["must be a number"]),
        ({"models": {"m": {"input": 1, "ouptut": 1}}}, "m", "ouptut", ["unknown field", "cached_input"]),
        ({"models": {"m": [1, 2]}}, "m", None, ["must be an object"]),
        ({"prices": {}}, None, "models", ['top-level "models"']),
        ({"models": {}, "modles": {}}, None, "modles", ["unknown top-level key"]),
        ({"models": {}, "fallback": {"input": 1}}, "fallback", "output", ["missing"]),
        ('{"models": {"m": {"input": NaN, "output": 1}}}', "m", "input", ["finite"]),
    ],
)
def test_bad_price_files_say_where_and_how_to_fix(
    tmp_path: Path, content: object, model: str | None, field: str | None, words: list[str]
) -> None:
    path = write_prices(tmp_path, content)
    with pytest.raises(PricingFileError) as caught:
        PriceTable.from_file(path)
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.path, error.model, error.field) == (path, model, field)
    message = str(error)
    assert str(path) in message
    for expected in [
        *(words),
        *([f"model {model!r}"] if model else []),
        *([f"field {field!r}"] if field else []),
    ]:
        assert expected in message


def test_missing_price_file_is_a_pricing_file_error(tmp_path: Path) -> None:
    with pytest.raises(PricingFileError, match="cannot read the price file"):
        PriceTable.from_file(tmp_path / "absent.json")


def test_from_env_overlays_the_file_on_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRICES_FILE_ENV, raising=False)
    defaults = PriceTable.from_env()
    assert dict(defaults) == dict(PriceTable.default())
    path = write_prices(
        tmp_path, {"models": {"gpt-4o": {"input": 1, "output": 2}, "acme": {"input": 3, "output": 4}}}
    )
    monkeypatch.setenv(PRICES_FILE_ENV, str(path))
    configured = PriceTable.from_env()
    assert configured.price_for("gpt-4o-2024-08-06") == ModelPrice(1, 2)
    assert configured.price_for("acme") == ModelPrice(3, 4)
    assert configured.price_for("claude-haiku-4-5") == defaults.price_for("claude-haiku-4-5")
