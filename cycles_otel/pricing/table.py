"""The price table: model name to :class:`ModelPrice`, with snapshot-id matching, overrides and a fallback."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

from cycles_otel.pricing.defaults import DEFAULT_PRICES
from cycles_otel.pricing.model_price import ModelPrice
from cycles_otel.pricing.price_file import PRICES_FILE_ENV, load_price_file


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
        return cls({name: ModelPrice(*rates) for name, rates in DEFAULT_PRICES.items()})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PriceTable:
        """Exactly the prices in a JSON file ``{"models": {name: {"input", "output", "cached_input"?}}}``."""
        models, fallback = load_price_file(Path(path))
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
