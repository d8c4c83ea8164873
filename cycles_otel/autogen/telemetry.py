"""Telemetry of governed calls: ``cycles.reservation`` and ``chat {model}`` spans, GenAI and cost metrics."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autogen_core.models import CreateResult, LLMMessage
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from cycles_otel import semconv as sc
from cycles_otel.cardinality import CardinalityGuard
from cycles_otel.failsafe import never_raises
from cycles_otel.instruments import get_instruments
from cycles_otel.version import __version__

logger = logging.getLogger(__name__)

TRACER_NAME = "cycles_otel.autogen"


@dataclass(frozen=True)
class GenAiLabels:
    """Label sets of the GenAI metrics of one model: the call's, and its input / output token ones."""

    call: Mapping[str, AttributeValue]
    input_tokens: Mapping[str, AttributeValue]
    output_tokens: Mapping[str, AttributeValue]

    @classmethod
    def of(cls, provider: str, bounded_model: str) -> GenAiLabels:
        call: dict[str, AttributeValue] = {
            sc.GEN_AI_OPERATION_NAME: sc.GEN_AI_OPERATION_CHAT,
            sc.GEN_AI_PROVIDER_NAME: provider,
            sc.GEN_AI_REQUEST_MODEL: bounded_model,
        }
        return cls(
            call,
            {**call, sc.GEN_AI_TOKEN_TYPE: sc.GEN_AI_TOKEN_INPUT},
            {**call, sc.GEN_AI_TOKEN_TYPE: sc.GEN_AI_TOKEN_OUTPUT},
        )


@dataclass(frozen=True)
class CallFacts:
    """What is known about a call before anything is reserved."""

    model: str
    provider: str
    subject: Mapping[str, str]
    action_kind: str
    unit: str
    estimate: int
    estimate_source: str
    agent_name: str | None
    agent_id: str | None


class ClientTelemetry:
    """Tracer and instruments of one client; :meth:`start` begins the telemetry of one call."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        *,
        emit_inference_span: bool,
        capture_content: bool,
    ) -> None:
        self.tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider, schema_url=sc.SCHEMA_URL)
        self.instruments = get_instruments(meter_provider)
        self.emit_inference_span = emit_inference_span
        self.capture_content = capture_content
        self._genai_labels: dict[tuple[CardinalityGuard, str, str], GenAiLabels] = {}
        self._cost_labels: dict[tuple[CardinalityGuard, str, str], Mapping[str, AttributeValue]] = {}

    def genai_labels(self, provider: str, model: str) -> GenAiLabels:
        """The GenAI metric labels of ``model``, built once per guard that admits the model."""
        guard = self.instruments.guard
        found = self._genai_labels.get((guard, provider, model))
        if found is not None:
            return found
        bounded = guard.bound(sc.GEN_AI_REQUEST_MODEL, model)
        found = GenAiLabels.of(provider, bounded)
        # An admitted value stays admitted; a collapsed one is asked again (and counted) each call.
        if bounded == model:
            self._genai_labels[(guard, provider, model)] = found
        return found

    def cost_labels(self, model: str, agent: str) -> Mapping[str, AttributeValue]:
        """The cost counter's labels for ``model`` and ``agent``, built once per guard that admits both."""
        guard = self.instruments.guard
        found = self._cost_labels.get((guard, model, agent))
        if found is not None:
            return found
        bounded_model = guard.bound(sc.GEN_AI_REQUEST_MODEL, model)
        bounded_agent = guard.bound(sc.GEN_AI_AGENT_NAME, agent)
        found = {sc.GEN_AI_REQUEST_MODEL: bounded_model, sc.GEN_AI_AGENT_NAME: bounded_agent}
        # An admitted pair stays admitted; a collapsed value is asked (and counted) again each call.
        if bounded_model == model and bounded_agent == agent:
            self._cost_labels[(guard, model, agent)] = found
        return found

    def start(self, facts: CallFacts, parent: Context | None) -> CallTelemetry:
        return CallTelemetry(self, facts, parent)


class CallTelemetry:
    """Spans and metrics of one governed call. Every method is safe to call in any order."""

    def __init__(self, owner: ClientTelemetry, facts: CallFacts, parent: Context | None) -> None:
        self._owner = owner
        self._facts = facts
        self._inference: Span | None = None
        self._inference_start = 0.0
        attributes: dict[str, AttributeValue] = {
            sc.CYCLES_ACTION_KIND: facts.action_kind,
            sc.CYCLES_ACTION_NAME: facts.model,
            sc.CYCLES_UNIT: facts.unit,
            sc.CYCLES_ESTIMATE_AMOUNT: facts.estimate,
            sc.CYCLES_ESTIMATE_SOURCE: facts.estimate_source,
            sc.GEN_AI_REQUEST_MODEL: facts.model,
            **{sc.CYCLES_SUBJECT_PREFIX + k: v for k, v in facts.subject.items()},
            **self._agent_attributes(),
        }
        self.span = owner.tracer.start_span(
            sc.SPAN_RESERVATION, context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        )

    def _agent_attributes(self) -> dict[str, AttributeValue]:
        found: dict[str, AttributeValue] = {}
        if self._facts.agent_name:
            found[sc.GEN_AI_AGENT_NAME] = self._facts.agent_name
        if self._facts.agent_id:
            found[sc.GEN_AI_AGENT_ID] = self._facts.agent_id
        return found

    # --- reservation ---------------------------------------------------------------------------
    @never_raises
    def reserved(
        self, reservation_id: str, decision: str, max_tokens: int | None, tools_removed: Sequence[str]
    ) -> None:
        if not self.span.is_recording():  # span-only work: skipped when the call is not traced
            return
        attributes: dict[str, AttributeValue] = {
            sc.CYCLES_RESERVATION_ID: reservation_id,
            sc.CYCLES_DECISION: decision,
        }
        if max_tokens is not None:
            attributes[sc.CYCLES_CAPS_MAX_TOKENS] = max_tokens
        if tools_removed:
            attributes[sc.CYCLES_CAPS_TOOLS_REMOVED] = list(tools_removed)
        self.span.set_attributes(attributes)

    @never_raises
    def denied(self, error_code: str | None, request_id: str | None) -> None:
        self.span.set_attribute(sc.CYCLES_DECISION, sc.DECISION_DENY)
        attributes: dict[str, AttributeValue] = {}
        if error_code:
            self.span.set_attribute(sc.CYCLES_REASON, error_code)
            attributes[sc.CYCLES_REASON] = error_code
        if request_id:
            self.span.set_attribute(sc.CYCLES_REQUEST_ID, request_id)
        self.span.add_event(sc.EVENT_DENIED, attributes)

    @never_raises
    def settled(
        self,
        outcome: str,
        actual: int | None,
        charged: int | None,
        actual_source: str | None,
        cost_usd: float | None,
    ) -> None:
        if self.span.is_recording():
            self._annotate_settlement(outcome, actual, charged, actual_source, cost_usd)
        if cost_usd is not None and cost_usd > 0:
            self._owner.instruments.cost_usd.add(
                cost_usd, self._owner.cost_labels(self._facts.model, self._facts.agent_name or "")
            )

    def _annotate_settlement(
        self,
        outcome: str,
        actual: int | None,
        charged: int | None,
        actual_source: str | None,
        cost_usd: float | None,
    ) -> None:
        attributes: dict[str, AttributeValue] = {sc.CYCLES_OUTCOME: outcome}
        if actual is not None:
            attributes[sc.CYCLES_ACTUAL_AMOUNT] = actual
        if charged is not None:
            attributes[sc.CYCLES_CHARGED_AMOUNT] = charged
            if actual is not None and charged < actual:
                attributes[sc.CYCLES_OVER_LIMIT] = True
        if actual_source is not None:
            attributes[sc.CYCLES_ACTUAL_SOURCE] = actual_source
        if cost_usd is not None:
            attributes[sc.CYCLES_COST_USD] = cost_usd
        self.span.set_attributes(attributes)

    @never_raises
    def failed(self, exc: BaseException) -> None:
        _mark_error(self.span, exc)

    @never_raises
    def end(self) -> None:
        self.span.end()

    # --- inference -----------------------------------------------------------------------------
    def current(self, span: Span | None = None) -> SpanInContext:
        """Make the reservation (or inference) span current for a stretch without ``yield``s."""
        return SpanInContext(span or self.span)

    def inference(self) -> SpanInContext:
        return SpanInContext(self._inference or self.span)

    @never_raises
    def start_inference(self, messages: Sequence[LLMMessage], max_tokens: int | None) -> None:
        self._inference_start = time.perf_counter()
        if not self._owner.emit_inference_span:
            return
        attributes: dict[str, AttributeValue] = {
            sc.GEN_AI_OPERATION_NAME: sc.GEN_AI_OPERATION_CHAT,
            sc.GEN_AI_PROVIDER_NAME: self._facts.provider,
            sc.GEN_AI_REQUEST_MODEL: self._facts.model,
            **self._agent_attributes(),
        }
        if max_tokens is not None:
            attributes[sc.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
        self._inference = self._owner.tracer.start_span(
            f"{sc.GEN_AI_OPERATION_CHAT} {self._facts.model}",
            context=trace.set_span_in_context(self.span),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        if self._owner.capture_content and self._inference.is_recording():
            self._inference.set_attribute(sc.GEN_AI_INPUT_MESSAGES, json.dumps(_input_messages(messages)))

    @never_raises
    def inference_done(
        self,
        result: CreateResult | None,
        input_tokens: int,
        output_tokens: int,
        exc: BaseException | None = None,
    ) -> None:
        """The inference ended: with a result, with streamed-only output (tokens, no result), or failed."""
        if not self._inference_start:  # the call never reached the model: no GenAI operation to report
            return
        instruments = self._owner.instruments
        labels = self._owner.genai_labels(self._facts.provider, self._facts.model)
        duration = time.perf_counter() - self._inference_start
        self._inference_start = 0.0
        call_labels, input_labels, output_labels = labels.call, labels.input_tokens, labels.output_tokens
        if exc is not None:
            error = {sc.ERROR_TYPE: type(exc).__qualname__}
            call_labels, input_labels, output_labels = (
                {**call_labels, **error},
                {**input_labels, **error},
                {**output_labels, **error},
            )
        instruments.genai_duration.record(duration, call_labels)
        if (result is None or not result.cached) and (input_tokens or output_tokens):
            instruments.token_usage.record(input_tokens, input_labels)
            instruments.token_usage.record(output_tokens, output_labels)
        span, self._inference = self._inference, None
        if span is None:
            return
        if span.is_recording():
            attributes: dict[str, AttributeValue] = {}
            if result is not None or input_tokens or output_tokens:
                attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
                attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
            if result is not None:
                attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [result.finish_reason]
                if self._owner.capture_content:
                    attributes[sc.GEN_AI_OUTPUT_MESSAGES] = json.dumps(_output_messages(result))
            span.set_attributes(attributes)
            if exc is not None:
                _mark_error(span, exc)
        span.end()


class SpanInContext:
    """``with SpanInContext(span):`` makes ``span`` current, nothing more (never ends it).

    What ``trace.use_span(span, end_on_exit=False, record_exception=False,
    set_status_on_exception=False)`` does, without its two generator-based context managers:
    exceptions are recorded once, by ``failed()`` / ``inference_done()``, with our ``error.type``.
    """

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token: object | None = None

    def __enter__(self) -> None:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None


def _mark_error(span: Span, exc: BaseException) -> None:
    span.set_attribute(sc.ERROR_TYPE, type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__qualname__))
    if span.is_recording():
        span.record_exception(exc)


_ROLES = {
    "SystemMessage": "system",
    "UserMessage": "user",
    "AssistantMessage": "assistant",
    "FunctionExecutionResultMessage": "tool",
}


def _part(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"type": "text", "content": value}
    if hasattr(value, "arguments") and hasattr(value, "name"):
        return {
            "type": "tool_call",
            "id": getattr(value, "id", None),
            "name": value.name,
            "arguments": value.arguments,
        }
    if hasattr(value, "call_id"):
        return {
            "type": "tool_call_response",
            "id": value.call_id,
            "response": getattr(value, "content", None),
        }
    return {"type": type(value).__name__.lower()}  # images and the like: named, not inlined


def _parts(content: Any) -> list[dict[str, Any]]:
    return [_part(item) for item in content] if isinstance(content, list) else [_part(content)]


def _input_messages(messages: Sequence[LLMMessage]) -> list[dict[str, Any]]:
    return [
        {"role": _ROLES.get(type(m).__name__, "user"), "parts": _parts(getattr(m, "content", ""))}
        for m in messages
    ]


def _output_messages(result: CreateResult) -> list[dict[str, Any]]:
    return [{"role": "assistant", "parts": _parts(result.content), "finish_reason": result.finish_reason}]
