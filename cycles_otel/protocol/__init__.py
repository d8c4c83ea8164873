"""The protocol layer: every call of runcycles' ``CyclesClient`` / ``AsyncCyclesClient`` traced and measured.

:class:`CyclesInstrumentor` (an OpenTelemetry ``BaseInstrumentor``, entry point ``cycles``) wraps
each protocol method of both clients, whoever calls it (``@cycles``, ``stream_reservation``,
heartbeats, the retry engine, journal replay, hand-written code): a CLIENT span per call
(``cycles.reserve``, ``cycles.commit``, ...), the protocol metrics, W3C ``traceparent`` on the
wire, and the budget gauges fed from the ``balances`` in answers.

Modules: ``instrumentor`` (the wrapping), ``operations`` (each protocol method and the rules for
reading its call and answer), ``call`` (the span and measurements of one call),
``late_settlement`` (retried and replayed commits linked to their reserve span), ``propagation``
(trace context into runcycles' threads and onto the wire).

This layer imports the shared contract (``cycles_otel.semconv``, ``instruments``, ...) and
runcycles, never AutoGen and never the application modules.
"""

from cycles_otel.protocol.instrumentor import CyclesInstrumentor

__all__ = ["CyclesInstrumentor"]
