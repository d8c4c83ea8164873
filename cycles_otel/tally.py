"""Counters summed in the process and read at collection: a call adds to a sum, the exporter reads it."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.util.types import AttributeValue


class Labels(dict[str, AttributeValue]):
    """A label set built once and never changed: hashable, its hash computed once.

    Build one per label combination and pass the same object each time: a :class:`Tally` then
    finds its sum with one dictionary lookup, and the SDK's instruments read it as any mapping.
    """

    __slots__ = ("_hash",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hash = hash(frozenset(self.items()))

    def __hash__(self) -> int:  # type: ignore[override]
        return self._hash

    def __setitem__(self, key: str, value: AttributeValue) -> None:
        raise TypeError("Labels are immutable: build a new set")

    def __delitem__(self, key: str) -> None:
        raise TypeError("Labels are immutable: build a new set")


class Tally:
    """A monotonic counter whose sums per label set are kept here and observed at collection.

    ``add()`` costs a locked dictionary update, where an SDK measurement cleans, hashes and stores
    the labels and samples an exemplar. The exported series are the same counter (an
    ``ObservableCounter`` of cumulative sums), without exemplars: for the ledger-like counts that
    use it (decisions, settlements, amounts reserved and charged) the spans carry what an exemplar
    would point at.
    """

    def __init__(self, meter: Meter, name: str, unit: str, description: str) -> None:
        self.name = name
        self._sums: dict[Labels, float] = {}
        self._lock = threading.Lock()
        meter.create_observable_counter(name, callbacks=[self._observe], unit=unit, description=description)

    def add(
        self, amount: float, attributes: Mapping[str, AttributeValue], context: Context | None = None
    ) -> None:
        """Add ``amount`` (>= 0) to the sum of ``attributes``; ``context`` is accepted and unused."""
        if amount < 0:
            return
        labels = attributes if isinstance(attributes, Labels) else Labels(attributes)
        with self._lock:
            self._sums[labels] = self._sums.get(labels, 0) + amount

    def _observe(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            sums = list(self._sums.items())
        return [Observation(total, labels) for labels, total in sums]
