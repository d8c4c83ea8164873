"""Cardinality guard: bounds the distinct values of user-controlled metric labels."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

OVERFLOW_VALUE = "other"
DEFAULT_LIMIT = 500
LIMIT_ENV = "CYCLES_OTEL_CARDINALITY_LIMIT"
ALLOW_ENV = "CYCLES_OTEL_CARDINALITY_ALLOW"


class CardinalityGuard:
    """Maps a label value to itself while the label has seen fewer than ``limit`` values.

    Values on the allow-list always pass. Once a label key has ``limit`` distinct values,
    every new value collapses to ``"other"`` and is counted in :attr:`overflowed`.
    Thread-safe; the set of admitted values never shrinks, so a series never flips.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT, allow: Iterable[str] = ()) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(
                f"cardinality limit must be a positive integer, got {limit!r}: "
                f"pass limit=500 or set {LIMIT_ENV} to a whole number >= 1"
            )
        self.limit = limit
        self.allow = frozenset(allow)
        self._seen: dict[str, set[str]] = {}
        self._overflowed: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> CardinalityGuard:
        raw_limit = os.environ.get(LIMIT_ENV, "").strip()
        try:
            limit = int(raw_limit) if raw_limit else DEFAULT_LIMIT
        except ValueError:
            raise ValueError(
                f"{LIMIT_ENV}={raw_limit!r} is not a whole number: set it to e.g. 500"
            ) from None
        allow = [v.strip() for v in os.environ.get(ALLOW_ENV, "").split(",") if v.strip()]
        return cls(limit, allow)

    def bound(self, key: str, value: str) -> str:
        """Return ``value`` if admitted for label ``key``, else ``"other"``."""
        if value in self.allow:
            return value
        seen = self._seen.get(key)
        if seen is not None and value in seen:
            return value
        with self._lock:
            seen = self._seen.setdefault(key, set())
            if value in seen:
                return value
            if len(seen) < self.limit:
                seen.add(value)
                return value
            self._overflowed[key] = self._overflowed.get(key, 0) + 1
            return OVERFLOW_VALUE

    @property
    def overflowed(self) -> dict[str, int]:
        """Values collapsed to ``"other"`` so far, per label key."""
        with self._lock:
            return dict(self._overflowed)
