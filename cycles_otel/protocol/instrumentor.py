"""``CyclesInstrumentor``: OpenTelemetry instrumentation of every runcycles protocol call."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from cycles_otel.instruments import get_instruments
from cycles_otel.protocol.call import ProtocolTelemetry
from cycles_otel.protocol.late_settlement import retry_attempt
from cycles_otel.protocol.operations import OPERATIONS, Operation
from cycles_otel.protocol.propagation import (
    TraceHeaderHooks,
    carry_context_into_threads,
    stop_carrying_context,
)
from cycles_otel.semconv import SCHEMA_URL
from cycles_otel.version import __version__

logger = logging.getLogger(__name__)

TRACER_NAME = "cycles_otel"
RETRY_ATTEMPT_METHOD = "_attempt_once"


class CyclesInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Spans, metrics and trace propagation for ``CyclesClient``, ``AsyncCyclesClient`` and aiohttp's.

    ``CyclesInstrumentor().instrument(tracer_provider=None, meter_provider=None)`` wraps every
    protocol method of the runcycles clients and ``AiohttpCyclesClient`` (including clients created
    earlier) until ``uninstrument()``.
    """

    _patches: list[tuple[type, str, Any]]
    _hooks: TraceHeaderHooks | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("runcycles >= 0.5.3",)

    def _instrument(self, **kwargs: Any) -> None:
        from runcycles import lifecycle, retry, streaming  # type: ignore[import-untyped]
        from runcycles.client import AsyncCyclesClient, CyclesClient  # type: ignore[import-untyped]

        from cycles_otel.protocol.transport import AiohttpCyclesClient

        tracer = trace.get_tracer(
            TRACER_NAME, __version__, kwargs.get("tracer_provider"), schema_url=SCHEMA_URL
        )
        telemetry = ProtocolTelemetry(tracer, get_instruments(kwargs.get("meter_provider")))
        hooks = self._hooks = TraceHeaderHooks()
        self._patches = []
        # AiohttpCyclesClient overrides every protocol method without calling AsyncCyclesClient's: each
        # class is wrapped apart, and a call is spanned once, by the class whose method runs.
        for client_class in (CyclesClient, AsyncCyclesClient, AiohttpCyclesClient):
            for op in OPERATIONS:
                original = vars(client_class).get(op.method)
                if original is None:
                    logger.warning("cycles_otel: runcycles %s has no %s", client_class.__name__, op.method)
                    continue
                self._patch(client_class, op.method, _traced(original, op, telemetry, hooks))
        for engine in (retry.CommitRetryEngine, retry.AsyncCommitRetryEngine):
            attempt = vars(engine).get(RETRY_ATTEMPT_METHOD)
            if attempt is not None:
                self._patch(engine, RETRY_ATTEMPT_METHOD, _marked_as_retry(attempt))
        for module in (lifecycle, streaming):
            carry_context_into_threads(module)

    def _uninstrument(self, **kwargs: Any) -> None:
        from runcycles import lifecycle, streaming

        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)
        self._patches = []
        for module in (lifecycle, streaming):
            stop_carrying_context(module)
        if self._hooks is not None:
            self._hooks.remove_all()
            self._hooks = None

    def _patch(self, owner: type, name: str, replacement: Callable[..., Any]) -> None:
        self._patches.append((owner, name, vars(owner)[name]))
        setattr(owner, name, replacement)


def _traced(
    original: Callable[..., Any], op: Operation, telemetry: ProtocolTelemetry, hooks: TraceHeaderHooks
) -> Callable[..., Any]:
    """``original`` inside a protocol span; the caller gets its response or exception unchanged."""

    def hook(client: Any) -> None:
        try:
            hooks.ensure(getattr(client, "_http", None))
        except Exception:
            logger.debug("cycles_otel: could not hook the HTTP client", exc_info=True)

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def traced_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            hook(self)
            call = telemetry.start(op, args, kwargs)
            try:
                response = await original(self, *args, **kwargs)
            except BaseException as exc:
                call.fail(exc)
                raise
            call.finish(response)
            return response

        return traced_async

    @functools.wraps(original)
    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        hook(self)
        call = telemetry.start(op, args, kwargs)
        try:
            response = original(self, *args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        call.finish(response)
        return response

    return traced


def _marked_as_retry(original: Callable[..., Any]) -> Callable[..., Any]:
    """A retry-engine attempt: the settlements it sends are late (see ``cycles.late_settlement``)."""
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def attempt_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            with retry_attempt():
                return await original(self, *args, **kwargs)

        return attempt_async

    @functools.wraps(original)
    def attempt(self: Any, *args: Any, **kwargs: Any) -> Any:
        with retry_attempt():
            return original(self, *args, **kwargs)

    return attempt
