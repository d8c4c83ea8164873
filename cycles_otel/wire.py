"""Values read off the wire: a protocol integer is a JSON number that Python parsed as ``int``."""

from __future__ import annotations

from typing import Any


def whole(value: Any) -> int | None:
    """``value`` if it is an integer (JSON booleans, which Python counts as ints, are not), else None."""
    return None if isinstance(value, bool) or not isinstance(value, int) else value
