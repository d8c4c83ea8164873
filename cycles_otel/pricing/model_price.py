"""One model's per-token rates (with optional long-context tiers) and the exact, rounded-up cost of a call."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType

from cycles_otel.pricing.money import TOKENS_PER_RATE, UsdAmount, microcents_to_usd, rate_microcents


class ModelPrice:
    """One model's rates in USD per 1M tokens; cached input defaults to the input rate.

    ``tiers`` maps a prompt size to the rates of a call whose input exceeds it: the highest tier
    the input exceeds prices the *whole* call, as providers bill long context (Claude and Gemini
    above 200K input tokens). A tier's own cached-input rate defaults to the tier's input rate.
    """

    __slots__ = (
        "_tiers",
        "cached_input_microcents_per_mtok",
        "input_microcents_per_mtok",
        "output_microcents_per_mtok",
    )

    def __init__(
        self,
        input_usd_per_mtok: UsdAmount,
        output_usd_per_mtok: UsdAmount,
        cached_input_usd_per_mtok: UsdAmount | None = None,
        *,
        tiers: Mapping[int, ModelPrice] | None = None,
    ) -> None:
        self.input_microcents_per_mtok = rate_microcents(input_usd_per_mtok, "input_usd_per_mtok")
        self.output_microcents_per_mtok = rate_microcents(output_usd_per_mtok, "output_usd_per_mtok")
        self.cached_input_microcents_per_mtok = (
            self.input_microcents_per_mtok
            if cached_input_usd_per_mtok is None
            else rate_microcents(cached_input_usd_per_mtok, "cached_input_usd_per_mtok")
        )
        self._tiers = _checked_tiers(tiers)

    @property
    def input_usd_per_mtok(self) -> Decimal:
        return microcents_to_usd(self.input_microcents_per_mtok)

    @property
    def output_usd_per_mtok(self) -> Decimal:
        return microcents_to_usd(self.output_microcents_per_mtok)

    @property
    def cached_input_usd_per_mtok(self) -> Decimal:
        return microcents_to_usd(self.cached_input_microcents_per_mtok)

    @property
    def tiers(self) -> Mapping[int, ModelPrice]:
        """Input-token threshold → rates of a call whose input exceeds it (empty: one rate for all sizes)."""
        return MappingProxyType(dict(self._tiers))

    def rates_for(self, input_tokens: int) -> ModelPrice:
        """The rates of a call with ``input_tokens`` of input: the highest tier it exceeds, else these."""
        _check_tokens(input_tokens=input_tokens)
        return next((price for above, price in reversed(self._tiers) if input_tokens > above), self)

    def cost_microcents(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> int:
        """Cost of one call, rounded up to a whole microcent (see the package docstring)."""
        _check_tokens(
            input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached_input_tokens
        )
        if cached_input_tokens > input_tokens:
            raise ValueError(
                f"cached_input_tokens ({cached_input_tokens}) is the cached part of input_tokens "
                f"({input_tokens}) and cannot exceed it"
            )
        rates = self.rates_for(input_tokens)
        scaled = (
            (input_tokens - cached_input_tokens) * rates.input_microcents_per_mtok
            + cached_input_tokens * rates.cached_input_microcents_per_mtok
            + output_tokens * rates.output_microcents_per_mtok
        )
        return -(-scaled // TOKENS_PER_RATE)

    def _key(self) -> tuple[int, int, int, tuple[tuple[int, ModelPrice], ...]]:
        return (
            self.input_microcents_per_mtok,
            self.cached_input_microcents_per_mtok,
            self.output_microcents_per_mtok,
            self._tiers,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelPrice) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        rates = (self.input_usd_per_mtok, self.output_usd_per_mtok, self.cached_input_usd_per_mtok)
        shown = "ModelPrice({!r}, {!r}, cached_input_usd_per_mtok={!r}".format(
            *(f"{rate.normalize():f}" for rate in rates)
        )
        return f"{shown}, tiers={dict(self._tiers)!r})" if self._tiers else f"{shown})"


def _checked_tiers(tiers: Mapping[int, ModelPrice] | None) -> tuple[tuple[int, ModelPrice], ...]:
    if tiers is None:
        return ()
    if not isinstance(tiers, Mapping):
        raise TypeError(f"tiers must map input-token thresholds to ModelPrice, got {tiers!r}")
    for above, price in tiers.items():
        if isinstance(above, bool) or not isinstance(above, int) or above < 0:
            raise ValueError(
                f"tiers: threshold {above!r} must be a whole number of input tokens >= 0, such as 200_000"
            )
        if not isinstance(price, ModelPrice):
            raise TypeError(f"tiers[{above}] must be a ModelPrice, got {price!r}")
        if price._tiers:
            raise ValueError(f"tiers[{above}] has tiers of its own: list every threshold in one mapping")
    return tuple(sorted(tiers.items()))


def _check_tokens(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a whole number of tokens >= 0, got {value!r}")
