"""USD amounts and rates as exact integer ``USD_MICROCENTS`` (1 USD = 100,000,000)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Final, TypeAlias

MICROCENTS_PER_USD: Final = 100_000_000
TOKENS_PER_RATE: Final = 1_000_000

UsdAmount: TypeAlias = Decimal | str | int | float


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


def rate_microcents(value: UsdAmount, name: str) -> int:
    """Microcents per 1M tokens for a USD-per-1M-tokens price; ``name`` is the field errors name."""
    usd = _to_decimal(value, name)
    if usd < 0:
        raise ValueError(f"{name} must be >= 0 USD per 1M tokens, got {_shown(value)}")
    try:
        return usd_to_microcents(usd)
    except ValueError:
        raise ValueError(
            f"{name}={_shown(value)} is finer than 1 microcent per 1M tokens: use at most 8 decimal places"
        ) from None
