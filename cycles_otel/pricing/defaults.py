"""The dated default prices: public list prices per 1M tokens, read on :data:`PRICES_AS_OF`."""

from __future__ import annotations

from datetime import date
from typing import Final

PRICES_AS_OF: Final = date(2025, 11, 25)
"""The day the default prices were read from the providers' public price pages."""

# USD per 1M tokens: (input, output, cached input or None), as of PRICES_AS_OF.
DEFAULT_PRICES: Final[dict[str, tuple[str, str, str | None]]] = {
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
