"""``BoundedMap``: the process's small id-keyed memories (settled ids, reserve spans, leases), capped."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_CAPACITY = 10_000


class BoundedMap(Generic[K, V]):
    """A thread-safe map that forgets its least recently written entries beyond ``capacity``."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def put(self, key: K, value: V) -> list[V]:
        """Store ``key``; returns the values evicted to make room (usually none)."""
        with self._lock:
            return self._store(key, value)

    def add_new(self, key: K, value: V) -> tuple[bool, list[V]]:
        """Store ``key`` unless present; returns (added, evicted values)."""
        with self._lock:
            if key in self._items:
                return False, []
            return True, self._store(key, value)

    def replace_if(self, key: K, value: V, allowed: Callable[[V | None], bool]) -> bool:
        """Store ``value`` if ``allowed(current value)``, atomically; returns whether it did."""
        with self._lock:
            if not allowed(self._items.get(key)):
                return False
            self._store(key, value)
            return True

    def _store(self, key: K, value: V) -> list[V]:
        self._items[key] = value
        self._items.move_to_end(key)
        evicted: list[V] = []
        while len(self._items) > self._capacity:
            evicted.append(self._items.popitem(last=False)[1])
        return evicted

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._items.get(key)

    def pop(self, key: K) -> V | None:
        with self._lock:
            return self._items.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def remove_where(self, doomed: Callable[[V], bool]) -> int:
        """Forget every entry whose value is ``doomed``; returns how many are left."""
        with self._lock:
            for key in [key for key, value in self._items.items() if doomed(value)]:
                del self._items[key]
            return len(self._items)
