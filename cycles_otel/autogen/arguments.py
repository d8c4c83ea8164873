"""Checks of the client's constructor arguments, so bad input fails before any money moves."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

# The protocol's portable charset and length for subject values (Subject in the official spec).
SUBJECT_CHARSET = re.compile(r"[a-zA-Z0-9._-]+")
SUBJECT_MAX_LENGTH = 128


def check_subject(subject: dict[str, str]) -> None:
    """Raise ``ValueError`` naming the first subject field outside the protocol's charset or length."""
    for field, value in subject.items():
        if isinstance(value, str) and len(value) > SUBJECT_MAX_LENGTH:
            raise ValueError(
                f"{field}={value[:32]!r}... is {len(value)} characters: subject values are "
                f"at most {SUBJECT_MAX_LENGTH} characters in the Cycles protocol; shorten the {field}"
            )
        if not isinstance(value, str) or not SUBJECT_CHARSET.fullmatch(value):
            raise ValueError(
                f"{field}={value!r}: subject values use only a-zA-Z0-9._- "
                f"(the Cycles protocol's portable charset); rename the {field}"
            )


def tool_names(name: str, value: Sequence[str] | None) -> list[str] | None:
    """``value`` as a list of tool names; a bare string is a ``TypeError`` (it is not a list of names)."""
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"{name} must be a list of tool names, e.g. {name}=[{value!r}], got {value!r}")
    return list(value)


def check_flag(name: str, value: object) -> bool:
    """``value`` if it is a bool; anything else (``"false"`` is truthy) is a ``TypeError`` naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def check_base_url(base_url: str) -> None:
    """Raise ``ValueError`` unless the Cycles base URL is an absolute http(s) URL."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"base_url={base_url!r} (CYCLES_BASE_URL) is not an absolute URL: "
            "write it as http://host:port or https://host"
        )
