"""The price table: model name to :class:`ModelPrice`, with snapshot-id matching, overrides and a fallback."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Final

from cycles_otel.pricing.defaults import DEFAULT_PRICES
from cycles_otel.pricing.model_price import ModelPrice
from cycles_otel.pricing.price_file import PRICES_FILE_ENV, load_price_file

PRICES_SOURCE_ENV: Final = "CYCLES_OTEL_PRICES_SOURCE"
PRICE_SOURCES: Final = ("default", "genai-prices")
GENAI_PRICES_PROVIDERS: Final = ("openai", "anthropic", "google")
"""The genai-prices providers :meth:`PriceTable.from_genai_prices` reads unless told otherwise."""


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


def _spellings(model: str) -> tuple[list[str], list[str]]:
    """``model`` as given (lowercased, with and without "models/"), and without its snapshot suffixes."""
    name = model.strip().lower()
    given = [name]
    if name.startswith("models/"):  # the Gemini API reports "models/gemini-2.5-pro"
        name = name.removeprefix("models/")
        given.append(name)
    unsuffixed = []
    while (stripped := _SNAPSHOT_SUFFIX.sub("", name)) != name and stripped:
        name = stripped
        unsuffixed.append(name)
    return given, unsuffixed


class PriceTable(Mapping[str, ModelPrice]):
    """Immutable model → :class:`ModelPrice` map with snapshot-id normalisation and an optional fallback.

    ``matcher`` maps a model name that is no key, even without its snapshot suffix, to one of the
    table's keys (a table from :meth:`from_genai_prices` matches by genai-prices' rules).
    """

    def __init__(
        self,
        prices: Mapping[str, ModelPrice],
        fallback: ModelPrice | None = None,
        *,
        matcher: Callable[[str], str | None] | None = None,
    ) -> None:
        table: dict[str, ModelPrice] = {}
        for name, price in prices.items():
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"model names must be non-empty strings, got {name!r}")
            if not isinstance(price, ModelPrice):
                raise TypeError(f"price of {name!r} must be a ModelPrice, got {price!r}")
            table[name.strip().lower()] = price
        if fallback is not None and not isinstance(fallback, ModelPrice):
            raise TypeError(f"fallback must be a ModelPrice or None, got {fallback!r}")
        if matcher is not None and not callable(matcher):
            raise TypeError(f"matcher must map a model name to a key or None, got {matcher!r}")
        self._prices = table
        self._fallback = fallback
        self._matcher = matcher
        # The keys that came with the matcher: its rules decide their names before suffix stripping.
        self._matched = frozenset(table) if matcher is not None else frozenset()

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
    def from_genai_prices(
        cls, providers: Sequence[str] = GENAI_PRICES_PROVIDERS, *, on: date | None = None
    ) -> PriceTable:
        """The prices the genai-prices package maintains, as in force ``on`` (default: today, UTC).

        Needs ``pip install 'cycles-otel[prices]'``. What is taken, and how names match: the
        package docstring (``cycles_otel.pricing``).
        """
        from cycles_otel.pricing import genai_source  # optional dependency: imported when asked for

        prices, matcher = genai_source.load(providers, on)
        return cls(prices, matcher=matcher)

    @classmethod
    def from_env(cls) -> PriceTable:
        """The table ``CYCLES_OTEL_PRICES_SOURCE`` names, under the ``CYCLES_OTEL_PRICES_FILE`` overrides."""
        source = os.environ.get(PRICES_SOURCE_ENV, "").strip().lower() or PRICE_SOURCES[0]
        if source not in PRICE_SOURCES:
            raise ValueError(
                f"{PRICES_SOURCE_ENV}={os.environ[PRICES_SOURCE_ENV]!r}: use 'default' (the dated table "
                "in cycles_otel.pricing) or 'genai-prices' (pip install 'cycles-otel[prices]')"
            )
        table = cls.default() if source == "default" else cls.from_genai_prices()
        path = os.environ.get(PRICES_FILE_ENV, "").strip()
        return table.with_overrides(cls.from_file(path)) if path else table

    def with_overrides(self, prices: Mapping[str, ModelPrice]) -> PriceTable:
        """A new table where ``prices`` replace or add entries (a table's fallback and matcher come along)."""
        overlay = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        merged = PriceTable(
            {**self._prices, **overlay._prices},
            overlay.fallback or self.fallback,
            matcher=overlay._matcher or self._matcher,
        )
        merged._matched = (self._matched - overlay.keys()) | overlay._matched
        return merged

    def with_fallback(self, price: ModelPrice | None) -> PriceTable:
        """A new table that prices every unknown model at ``price`` (``None`` removes the fallback)."""
        changed = PriceTable(self._prices, price, matcher=self._matcher)
        changed._matched = self._matched
        return changed

    # --- lookup --------------------------------------------------------------------------------
    def resolve(self, model: str) -> str | None:
        """The key that prices ``model`` (see the package docstring for the order), or ``None``."""
        if not isinstance(model, str):
            raise TypeError(f"model must be a string, got {model!r}")
        given, unsuffixed = _spellings(model)
        keys, matcher = self._prices, self._matcher
        # An exact key, then a key of your own without the snapshot suffix (an override of
        # "claude-3-5-haiku" prices "claude-3-5-haiku-20241022"), then the matcher's rules, which
        # know better than suffix stripping ("gemini-pro-latest" is not "gemini-pro"), last the
        # matcher's keys without the suffix, for snapshots newer than its rules.
        found = itertools.chain(
            (name for name in given if name in keys),
            (name for name in unsuffixed if name in keys and name not in self._matched),
            (key for name in given + unsuffixed if matcher and (key := matcher(name)) in keys),
            (name for name in unsuffixed if name in keys),
        )
        return next(found, None)

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
