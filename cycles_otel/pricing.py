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
and summing any number of calls never drifts (no float anywhere).

The defaults (:data:`PRICES_AS_OF`) are public list prices for the shortest-context, standard
(non-batch, non-priority) tier, text tokens. They are defaults to override: negotiated rates,
long-context tiers (Gemini 2.5 Pro and Claude Sonnet above 200K prompt tokens), audio input and
prompt-cache *writes* (priced here as ordinary input) are not modelled. Where no cached-input rate
is listed, cached tokens are priced at the input rate.

Configuration: ``CYCLES_OTEL_PRICES_FILE`` names a JSON file read by :meth:`PriceTable.from_env`::

    {"models": {"my-model": {"input": 2.5, "output": 10, "cached_input": 1.25}},
     "fallback": {"input": 5, "output": 15}}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, TypeAlias

MICROCENTS_PER_USD: Final = 100_000_000
TOKENS_PER_RATE: Final = 1_000_000
PRICES_FILE_ENV: Final = "CYCLES_OTEL_PRICES_FILE"
PRICES_AS_OF: Final = date(2025, 11, 25)
"""The day the default prices were read from the providers' public price pages."""

UsdAmount: TypeAlias = Decimal | str | int | float


class UnknownModelError(ValueError):
    """No price is known for a model and the table has no fallback."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"no price for model {model!r}: add one with "
            f"PriceTable.default().with_overrides({{{model!r}: ModelPrice(input, output)}}), "
            f'list it under "models" in the JSON file named by {PRICES_FILE_ENV}, '
            "or set a price for unknown models with .with_fallback(ModelPrice(input, output))"
        )


class PricingFileError(ValueError):
    """A price file is unreadable or malformed; the message names the file, entry, field and fix."""

    def __init__(self, path: Path, problem: str, model: str | None = None, field: str | None = None) -> None:
        self.path = path
        self.model = model
        self.field = field
        where = f"{path}"
        if model is not None:
            where += f": model {model!r}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


def _shown(value: object) -> str:
    return str(value) if isinstance(value, Decimal) else repr(value)


def _to_decimal(value: UsdAmount, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, str, int, float)):
        raise TypeError(f"{name} must be a number of USD (Decimal, str, int or float), got {value!r}")
    try:
        # str() first: a float's shortest repr is what the caller wrote (0.1, not 0.1000000000000000055).
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{name} must be a number of USD such as '2.50', got {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"{name} must be a finite number of USD, got {_shown(value)}")
    return amount


def usd_to_microcents(amount: UsdAmount) -> int:
    """Exact ``USD_MICROCENTS`` for a USD amount; raises if it is not a whole number of microcents."""
    scaled = Fraction(_to_decimal(amount, "amount")) * MICROCENTS_PER_USD  # exact, unlike Decimal's context
    if scaled.denominator != 1:
        raise ValueError(
            f"{_shown(amount)} USD is not a whole number of microcents: use at most 8 decimal places"
        )
    return int(scaled)


def microcents_to_usd(amount: int) -> Decimal:
    """Exact USD value of ``amount`` ``USD_MICROCENTS``."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"amount must be an int number of USD_MICROCENTS, got {amount!r}")
    return Decimal(amount).scaleb(-8)


def _rate(value: UsdAmount, name: str) -> int:
    """Microcents per 1M tokens for a USD-per-1M-tokens price."""
    usd = _to_decimal(value, name)
    if usd < 0:
        raise ValueError(f"{name} must be >= 0 USD per 1M tokens, got {_shown(value)}")
    try:
        return usd_to_microcents(usd)
    except ValueError:
        raise ValueError(
            f"{name}={_shown(value)} is finer than 1 microcent per 1M tokens: use at most 8 decimal places"
        ) from None


class ModelPrice:
    """One model's rates in USD per 1M tokens; cached input defaults to the input rate."""

    __slots__ = (
        "cached_input_microcents_per_mtok",
        "input_microcents_per_mtok",
        "output_microcents_per_mtok",
    )

    def __init__(
        self,
        input_usd_per_mtok: UsdAmount,
        output_usd_per_mtok: UsdAmount,
        cached_input_usd_per_mtok: UsdAmount | None = None,
    ) -> None:
        self.input_microcents_per_mtok = _rate(input_usd_per_mtok, "input_usd_per_mtok")
        self.output_microcents_per_mtok = _rate(output_usd_per_mtok, "output_usd_per_mtok")
        self.cached_input_microcents_per_mtok = (
            self.input_microcents_per_mtok
            if cached_input_usd_per_mtok is None
            else _rate(cached_input_usd_per_mtok, "cached_input_usd_per_mtok")
        )

    @property
    def input_usd_per_mtok(self) -> Decimal:
        return microcents_to_usd(self.input_microcents_per_mtok)

    @property
    def output_usd_per_mtok(self) -> Decimal:
        return microcents_to_usd(self.output_microcents_per_mtok)

    @property
    def cached_input_usd_per_mtok(self) -> Decimal:
        return microcents_to_usd(self.cached_input_microcents_per_mtok)

    def cost_microcents(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> int:
        """Cost of one call, rounded up to a whole microcent (see the module docstring)."""
        _check_tokens(
            input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached_input_tokens
        )
        if cached_input_tokens > input_tokens:
            raise ValueError(
                f"cached_input_tokens ({cached_input_tokens}) is the cached part of input_tokens "
                f"({input_tokens}) and cannot exceed it"
            )
        scaled = (
            (input_tokens - cached_input_tokens) * self.input_microcents_per_mtok
            + cached_input_tokens * self.cached_input_microcents_per_mtok
            + output_tokens * self.output_microcents_per_mtok
        )
        return -(-scaled // TOKENS_PER_RATE)

    def _key(self) -> tuple[int, int, int]:
        return (
            self.input_microcents_per_mtok,
            self.cached_input_microcents_per_mtok,
            self.output_microcents_per_mtok,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelPrice) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        rates = (self.input_usd_per_mtok, self.output_usd_per_mtok, self.cached_input_usd_per_mtok)
        return "ModelPrice({!r}, {!r}, cached_input_usd_per_mtok={!r})".format(
            *(f"{rate.normalize():f}" for rate in rates)
        )


def _check_tokens(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a whole number of tokens >= 0, got {value!r}")


# Suffixes that name a dated snapshot of a model priced like the model: gpt-4o-2024-08-06,
# claude-3-5-sonnet-20241022, claude-sonnet-4@20250514 (Vertex AI), claude-3-5-haiku-latest.
# Previews and variants (-preview-05-20, -audio, -pro) are left alone: they are often priced differently.
_SNAPSHOT_SUFFIX: Final = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|[-@]\d{8}|-latest)$")


def _candidates(model: str) -> Iterator[str]:
    name = model.strip().lower()
    yield name
    if name.startswith("models/"):  # the Gemini API reports "models/gemini-2.5-pro"
        name = name.removeprefix("models/")
        yield name
    while (stripped := _SNAPSHOT_SUFFIX.sub("", name)) != name and stripped:
        name = stripped
        yield name


class PriceTable(Mapping[str, ModelPrice]):
    """Immutable model → :class:`ModelPrice` map with snapshot-id normalisation and an optional fallback."""

    def __init__(self, prices: Mapping[str, ModelPrice], fallback: ModelPrice | None = None) -> None:
        table: dict[str, ModelPrice] = {}
        for name, price in prices.items():
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"model names must be non-empty strings, got {name!r}")
            if not isinstance(price, ModelPrice):
                raise TypeError(f"price of {name!r} must be a ModelPrice, got {price!r}")
            table[name.strip().lower()] = price
        if fallback is not None and not isinstance(fallback, ModelPrice):
            raise TypeError(f"fallback must be a ModelPrice or None, got {fallback!r}")
        self._prices = table
        self._fallback = fallback

    @property
    def fallback(self) -> ModelPrice | None:
        """The price of every model the table does not know, if set."""
        return self._fallback

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def default(cls) -> PriceTable:
        """The dated public list prices (:data:`PRICES_AS_OF`); override what you pay differently."""
        return cls({name: ModelPrice(*rates) for name, rates in _DEFAULT_PRICES.items()})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PriceTable:
        """Exactly the prices in a JSON file ``{"models": {name: {"input", "output", "cached_input"?}}}``."""
        models, fallback = _load_price_file(Path(path))
        return cls(models, fallback)

    @classmethod
    def from_env(cls) -> PriceTable:
        """The defaults, overlaid with the file named by ``CYCLES_OTEL_PRICES_FILE`` when it is set."""
        path = os.environ.get(PRICES_FILE_ENV, "").strip()
        table = cls.default()
        return table.with_overrides(cls.from_file(path)) if path else table

    def with_overrides(self, prices: Mapping[str, ModelPrice]) -> PriceTable:
        """A new table where ``prices`` replace or add entries (a table's fallback comes along)."""
        fallback = prices.fallback if isinstance(prices, PriceTable) and prices.fallback else self.fallback
        return PriceTable({**self._prices, **prices}, fallback)

    def with_fallback(self, price: ModelPrice | None) -> PriceTable:
        """A new table that prices every unknown model at ``price`` (``None`` removes the fallback)."""
        return PriceTable(self._prices, price)

    # --- lookup --------------------------------------------------------------------------------
    def resolve(self, model: str) -> str | None:
        """The table key that prices ``model`` (exact, then without snapshot suffixes), or ``None``."""
        if not isinstance(model, str):
            raise TypeError(f"model must be a string, got {model!r}")
        return next((name for name in _candidates(model) if name in self._prices), None)

    def price_for(self, model: str) -> ModelPrice:
        """The price of ``model``; the fallback for unknown models, else :class:`UnknownModelError`."""
        key = self.resolve(model)
        if key is not None:
            return self._prices[key]
        if self.fallback is not None:
            return self.fallback
        raise UnknownModelError(model)

    def cost_microcents(
        self, model: str, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0
    ) -> int:
        """Cost of one call in ``USD_MICROCENTS``; ``cached_input_tokens`` is the cached part of the input."""
        return self.price_for(model).cost_microcents(input_tokens, output_tokens, cached_input_tokens)

    def max_cost_microcents(self, model: str, input_tokens: int, max_output_tokens: int) -> int:
        """Worst-case cost, for a reservation estimate: no input cached, every allowed output token used."""
        return self.price_for(model).cost_microcents(input_tokens, max_output_tokens)

    # --- Mapping -------------------------------------------------------------------------------
    def __getitem__(self, model: str) -> ModelPrice:
        return self._prices[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} models, fallback={self.fallback!r})"


# USD per 1M tokens: (input, output, cached input or None), as of PRICES_AS_OF.
_DEFAULT_PRICES: Final[dict[str, tuple[str, str, str | None]]] = {
    # OpenAI
    "gpt-4o": ("2.50", "10.00", "1.25"),
    "gpt-4o-2024-05-13": ("5.00", "15.00", None),  # the first snapshot kept its launch price
    "gpt-4o-mini": ("0.15", "0.60", "0.075"),
    "gpt-4.1": ("2.00", "8.00", "0.50"),
    "gpt-4.1-mini": ("0.40", "1.60", "0.10"),
    "gpt-4.1-nano": ("0.10", "0.40", "0.025"),
    "o3": ("2.00", "8.00", "0.50"),
    "o3-mini": ("1.10", "4.40", "0.55"),
    "o4-mini": ("1.10", "4.40", "0.275"),
    "gpt-5": ("1.25", "10.00", "0.125"),
    "gpt-5-mini": ("0.25", "2.00", "0.025"),
    "gpt-5-nano": ("0.05", "0.40", "0.005"),
    # Anthropic (cached input = prompt-cache reads)
    "claude-opus-4-5": ("5.00", "25.00", "0.50"),
    "claude-opus-4-1": ("15.00", "75.00", "1.50"),
    "claude-opus-4": ("15.00", "75.00", "1.50"),
    "claude-opus-4-0": ("15.00", "75.00", "1.50"),
    "claude-sonnet-4-5": ("3.00", "15.00", "0.30"),
    "claude-sonnet-4": ("3.00", "15.00", "0.30"),
    "claude-sonnet-4-0": ("3.00", "15.00", "0.30"),
    "claude-3-7-sonnet": ("3.00", "15.00", "0.30"),
    "claude-3-5-sonnet": ("3.00", "15.00", "0.30"),
    "claude-haiku-4-5": ("1.00", "5.00", "0.10"),
    "claude-3-5-haiku": ("0.80", "4.00", "0.08"),
    "claude-3-haiku": ("0.25", "1.25", "0.03"),
    # Google Gemini (prompts up to 200K tokens; cached input left at the input rate)
    "gemini-2.5-pro": ("1.25", "10.00", None),
    "gemini-2.5-flash": ("0.30", "2.50", None),
    "gemini-2.5-flash-lite": ("0.10", "0.40", None),
}

_FILE_FORMAT: Final = '{"models": {"<model>": {"input": 2.5, "output": 10, "cached_input": 1.25}}}'
_TOP_LEVEL_KEYS: Final = frozenset({"models", "fallback"})
_PRICE_FIELDS: Final = ("input", "output", "cached_input")


def _load_price_file(path: Path) -> tuple[dict[str, ModelPrice], ModelPrice | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PricingFileError(
            path, f"cannot read the price file ({exc}): check the path (or {PRICES_FILE_ENV})"
        ) from None
    try:
        # Decimal, not float: "0.075" must stay exactly 0.075.
        data = json.loads(text, parse_float=Decimal, parse_constant=Decimal)
    except json.JSONDecodeError as exc:
        raise PricingFileError(
            path,
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"fix the syntax, the expected shape is {_FILE_FORMAT}",
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise PricingFileError(path, f'needs a top-level "models" object: {_FILE_FORMAT}', field="models")
    unknown = sorted(set(data) - _TOP_LEVEL_KEYS)
    if unknown:
        raise PricingFileError(
            path,
            f'unknown top-level key {unknown[0]!r}: only "models" and "fallback" are read',
            field=unknown[0],
        )
    models = {name: _price_entry(path, name, entry) for name, entry in data["models"].items()}
    if not all(name.strip() for name in models):
        raise PricingFileError(path, "a model name is empty: name each entry after its model id", model="")
    fallback = data.get("fallback")
    return models, None if fallback is None else _price_entry(path, None, fallback)


def _price_entry(path: Path, model: str | None, entry: Any) -> ModelPrice:
    label = "fallback" if model is None else model
    if not isinstance(entry, dict):
        raise PricingFileError(
            path, f'must be an object like {{"input": 2.5, "output": 10}}, got {entry!r}', model=label
        )
    for field in entry:
        if field not in _PRICE_FIELDS:
            raise PricingFileError(
                path, "unknown field: use input, output and (optional) cached_input", model=label, field=field
            )
    for field in _PRICE_FIELDS[:2]:
        if field not in entry:
            raise PricingFileError(
                path, f'missing: add "{field}": <USD per 1M {field} tokens>', model=label, field=field
            )
    for field in _PRICE_FIELDS:
        value = entry.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
            raise PricingFileError(
                path,
                f"must be a number of USD per 1M tokens such as 2.5, got {value!r}",
                model=label,
                field=field,
            )
        try:
            _rate(value, field)
        except ValueError as exc:
            raise PricingFileError(path, f"{exc}; fix the value", model=label, field=field) from None
    return ModelPrice(entry["input"], entry["output"], entry.get("cached_input"))
