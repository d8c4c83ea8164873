"""One model's per-token rates and the exact, rounded-up cost of a call at those rates."""

from __future__ import annotations

from decimal import Decimal

from cycles_otel.pricing.money import TOKENS_PER_RATE, UsdAmount, microcents_to_usd, rate_microcents


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
        self.input_microcents_per_mtok = rate_microcents(input_usd_per_mtok, "input_usd_per_mtok")
        self.output_microcents_per_mtok = rate_microcents(output_usd_per_mtok, "output_usd_per_mtok")
        self.cached_input_microcents_per_mtok = (
            self.input_microcents_per_mtok
            if cached_input_usd_per_mtok is None
            else rate_microcents(cached_input_usd_per_mtok, "cached_input_usd_per_mtok")
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
