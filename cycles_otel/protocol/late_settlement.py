"""Late settlements: commits sent by runcycles' retry engine or journal replay, linked to their reserve."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cycles_otel.bounded import DEFAULT_CAPACITY, BoundedMap

_retrying: contextvars.ContextVar[bool] = contextvars.ContextVar("cycles_otel_retrying", default=False)


def is_retry_attempt() -> bool:
    """True inside runcycles' commit retry engine (a background retry or a journal replay)."""
    return _retrying.get()


@contextmanager
def retry_attempt() -> Iterator[None]:
    token = _retrying.set(True)
    try:
        yield
    finally:
        _retrying.reset(token)


class SettlementLinks:
    """Reservation id -> the span context of its reserve span, so a late commit can link to it."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._reserve_spans: BoundedMap[str, SpanContext] = BoundedMap(capacity)

    def remember(self, reservation_id: str, span_context: SpanContext) -> None:
        if span_context.is_valid:
            self._reserve_spans.put(reservation_id, span_context)

    def reserve_span(self, reservation_id: str) -> SpanContext | None:
        return self._reserve_spans.get(reservation_id)


# --- across processes: the span a journaled settlement belongs to, carried in its metadata ---------
TRACEPARENT_KEY = "traceparent"
_propagator = TraceContextTextMapPropagator()


def carried(span_context: SpanContext) -> dict[str, str]:
    """Settlement metadata that names ``span_context`` (a W3C ``traceparent``), so a replay can link to it."""
    carrier: dict[str, str] = {}
    if span_context.is_valid:
        _propagator.inject(carrier, context=trace.set_span_in_context(trace.NonRecordingSpan(span_context)))
    return {TRACEPARENT_KEY: carrier[TRACEPARENT_KEY]} if TRACEPARENT_KEY in carrier else {}


def carried_span(metadata: object) -> SpanContext | None:
    """The span a settlement's metadata names (see :func:`carried`), if any."""
    value = metadata.get(TRACEPARENT_KEY) if isinstance(metadata, dict) else None
    if not isinstance(value, str):
        return None
    found = trace.get_current_span(_propagator.extract({TRACEPARENT_KEY: value})).get_span_context()
    return found if found.is_valid else None
