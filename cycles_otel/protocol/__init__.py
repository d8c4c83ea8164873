"""The protocol layer: every call of runcycles' ``CyclesClient`` / ``AsyncCyclesClient`` traced and measured.

:class:`CyclesInstrumentor` (an OpenTelemetry ``BaseInstrumentor``, entry point ``cycles``) wraps
each protocol method of both clients, whoever calls it (``@cycles``, ``stream_reservation``,
heartbeats, the retry engine, journal replay, hand-written code): a CLIENT span per call
(``cycles.reserve``, ``cycles.commit``, ...), the protocol metrics, W3C ``traceparent`` on the
wire, and the budget gauges fed from the ``balances`` in answers.

:class:`~cycles_otel.protocol.transport.AiohttpCyclesClient` is runcycles' ``AsyncCyclesClient``
over aiohttp (the same requests and ``CyclesResponse`` answers at a fraction of httpx's cost per
call); the instrumentor traces it too.

Modules: ``instrumentor`` (the wrapping), ``operations`` (each protocol method and the rules for
reading its call and answer), ``call`` (the span and measurements of one call),
``late_settlement`` (retried and replayed commits linked to their reserve span), ``propagation``
(trace context into runcycles' threads and onto the wire), ``transport`` (the aiohttp client) and
``transport_errors`` (its failures as the httpx exceptions runcycles reports).

This layer imports the shared contract (``cycles_otel.semconv``, ``instruments``, ...),
runcycles and aiohttp, never AutoGen and never the application modules.
"""

from cycles_otel.protocol.instrumentor import CyclesInstrumentor

__all__ = ["CyclesInstrumentor"]
