"""Cardinality guard: bounds the distinct values of user-controlled metric labels."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable

OVERFLOW_VALUE = "other"
DEFAULT_LIMIT = 500
LIMIT_ENV = "CYCLES_OTEL_CARDINALITY_LIMIT"
ALLOW_ENV = "CYCLES_OTEL_CARDINALITY_ALLOW"

_log = logging.getLogger(__name__)


def _check_limit(limit: object, source: str) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(
            f"{source}={limit!r} is not a positive whole number: use e.g. 500 (the default) "
            "to admit that many distinct values per label"
        )
    return limit


class CardinalityGuard:
    """Maps a label value to itself while the label has seen fewer than ``limit`` values.

    Values on the allow-list always pass. Once a label key has ``limit`` distinct values,
    every new value collapses to ``"other"``, is counted in :attr:`overflowed` and reported to
    ``on_overflow(key)`` (wired to ``cycles.otel.label_overflow`` by the instruments).
    Thread-safe; the set of admitted values never shrinks, so a series never flips.
    """

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        allow: Iterable[str] = (),
        on_overflow: Callable[[str], None] | None = None,
    ) -> None:
        self.limit = _check_limit(limit, "cardinality limit")
        self.allow = frozenset(allow)
        self.on_overflow = on_overflow
        self._seen: dict[str, set[str]] = {}
        self._overflowed: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, limit: int | None = None, allow: Iterable[str] = ()) -> CardinalityGuard:
        """A guard from explicit values, falling back to ``CYCLES_OTEL_CARDINALITY_*``.

        An explicit ``limit`` wins over the environment; ``allow`` adds to the environment's list.
        """
        if limit is None:
            raw = os.environ.get(LIMIT_ENV, "").strip()
            try:
                limit = int(raw) if raw else DEFAULT_LIMIT
            except ValueError:
                raise ValueError(
                    f"{LIMIT_ENV}={raw!r} is not a whole number: set it to e.g. 500 or unset it"
                ) from None
            _check_limit(limit, LIMIT_ENV)
        else:
            _check_limit(limit, "cardinality_limit")
        from_env = [v.strip() for v in os.environ.get(ALLOW_ENV, "").split(",") if v.strip()]
        return cls(limit, [*from_env, *allow])

    def bound(self, key: str, value: str) -> str:
        """Return ``value`` if admitted for label ``key``, else ``"other"``."""
        if value in self.allow or value == OVERFLOW_VALUE:
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
        self._report(key)
        return OVERFLOW_VALUE

    def _report(self, key: str) -> None:
        hook = self.on_overflow
        if hook is None:
            return
        try:
            hook(key)
        except Exception:  # telemetry never raises into the caller
            _log.debug("cardinality overflow hook failed", exc_info=True)

    @property
    def overflowed(self) -> dict[str, int]:
        """Values collapsed to ``"other"`` so far, per label key."""
        with self._lock:
            return dict(self._overflowed)
