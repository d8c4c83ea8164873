"""Telemetry of governed calls: ``cycles.reservation`` and ``chat {model}`` spans, GenAI and cost metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from autogen_core.models import CreateResult, LLMMessage
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue
from runcycles import CyclesProtocolError  # type: ignore[import-untyped]

from cycles_otel import semconv as sc
from cycles_otel.autogen.coexistence import ALONE, Coexistence, InferenceShare
from cycles_otel.autogen.messages import input_messages, output_messages
from cycles_otel.autogen.plan import CallPlan, Priced
from cycles_otel.autogen.reservation import deny_detail
from cycles_otel.failsafe import never_raises
from cycles_otel.instruments import get_instruments
from cycles_otel.protocol import CyclesInstrumentor
from cycles_otel.version import __version__

TRACER_NAME: Final = "cycles_otel.autogen"


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
class ClientFacts:
    """What every call of one client (or tool) reports the same way."""

    model: str
    """The model asked for; for a tool, the tool's name."""
    provider: str
    unit: str
    action_kind: str
    name_key: str = sc.GEN_AI_REQUEST_MODEL
    """The attribute and cost label that name what is called: the model, or ``gen_ai.tool.name``."""


class ClientTelemetry:
    """Tracer and instruments of one client; :meth:`start` begins the telemetry of one call."""

    def __init__(
        self,
        facts: ClientFacts,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        *,
        emit_inference_span: bool,
        capture_content: bool,
        coexistence: Coexistence | None = None,
    ) -> None:
        self.facts = facts
        self.coexistence = coexistence or Coexistence(None)
        self.tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider, schema_url=sc.SCHEMA_URL)
        self.instruments = get_instruments(meter_provider)
        self.emit_inference_span = emit_inference_span
        self.capture_content = capture_content
        self._genai_labels: GenAiLabels | None = None
        self._cost_labels: dict[str, Mapping[str, AttributeValue]] = {}

    def _bounded_name(self) -> str:
        return self.instruments.guard.bound(self.facts.name_key, self.facts.model)

    @property
    def genai_labels(self) -> GenAiLabels:
        """The GenAI metric labels; a model collapsed to ``other`` is asked (and counted) each call."""
        labels = self._genai_labels
        if labels is None or labels.call[sc.GEN_AI_REQUEST_MODEL] != self.facts.model:
            labels = self._genai_labels = GenAiLabels.of(self.facts.provider, self._bounded_name())
        return labels

    def cost_labels(self, agent: str) -> Mapping[str, AttributeValue]:
        """The cost counter's labels for ``agent``, built once per agent the guard admits."""
        found = self._cost_labels.get(agent)
        if found is not None:
            return found
        bounded_agent = self.instruments.guard.bound(sc.GEN_AI_AGENT_NAME, agent)
        bounded_name = self._bounded_name()
        found = {self.facts.name_key: bounded_name, sc.GEN_AI_AGENT_NAME: bounded_agent}
        # An admitted pair stays admitted; a collapsed value is asked (and counted) again each call.
        if bounded_agent == agent and bounded_name == self.facts.model:
            self._cost_labels[agent] = found
        return found

    def start(self, plan: CallPlan, parent: Context | None) -> CallTelemetry:
        return CallTelemetry(self, plan, parent)


class CallTelemetry:
    """Spans and metrics of one governed call. Every step is guarded: telemetry never fails the call."""

    _share: InferenceShare = ALONE  # until start_inference: what of the inference is ours

    def __init__(self, owner: ClientTelemetry, plan: CallPlan, parent: Context | None) -> None:
        self._owner = owner
        self._plan = plan
        self._inference: Span | None = None
        self._inference_start = 0.0
        self.span: Span = INVALID_SPAN
        self._begin(parent)

    @never_raises
    def _begin(self, parent: Context | None) -> None:
        facts, plan = self._owner.facts, self._plan
        attributes: dict[str, AttributeValue] = {
            sc.CYCLES_ACTION_KIND: facts.action_kind,
            sc.CYCLES_ACTION_NAME: facts.model,
            sc.CYCLES_UNIT: facts.unit,
            sc.CYCLES_ESTIMATE_AMOUNT: plan.estimate.amount,
            sc.CYCLES_ESTIMATE_SOURCE: plan.estimate.source,
            facts.name_key: facts.model,
            **{sc.CYCLES_SUBJECT_PREFIX + k: v for k, v in plan.subject.items()},
            **self._agent_attributes(),
        }
        self.span = self._owner.tracer.start_span(
            sc.SPAN_RESERVATION, context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        )

    def _agent_attributes(self) -> dict[str, AttributeValue]:
        found: dict[str, AttributeValue] = {}
        if self._plan.agent_name:
            found[sc.GEN_AI_AGENT_NAME] = self._plan.agent_name
        if self._plan.agent is not None and self._plan.agent.id:
            found[sc.GEN_AI_AGENT_ID] = self._plan.agent.id
        return found

    # --- reservation ---------------------------------------------------------------------------
    @never_raises
    def reserved(self, reservation_id: str, decision: str) -> None:
        if self.span.is_recording():  # span-only work: skipped when the call is not traced
            self.span.set_attributes({sc.CYCLES_RESERVATION_ID: reservation_id, sc.CYCLES_DECISION: decision})

    @never_raises
    def capped(self, max_tokens: int | None, tools_removed: Sequence[str]) -> None:
        if not self.span.is_recording() or (max_tokens is None and not tools_removed):
            return
        attributes: dict[str, AttributeValue] = {}
        if max_tokens is not None:
            attributes[sc.CYCLES_CAPS_MAX_TOKENS] = max_tokens
        if tools_removed:
            attributes[sc.CYCLES_CAPS_TOOLS_REMOVED] = list(tools_removed)
        self.span.set_attributes(attributes)

    @never_raises
    def denied(self, exc: CyclesProtocolError) -> None:
        """A budget decision: DENY with its reason (never for an authority that failed to answer)."""
        attributes: dict[str, AttributeValue] = {sc.CYCLES_DECISION: sc.DECISION_DENY}
        event: dict[str, AttributeValue] = {}
        if exc.error_code:
            attributes[sc.CYCLES_REASON] = event[sc.CYCLES_REASON] = exc.error_code
        if exc.request_id:
            attributes[sc.CYCLES_REQUEST_ID] = exc.request_id
        detail = deny_detail(exc.details or {})
        for key, value in detail.items():
            attributes[sc.CYCLES_DENY_PREFIX + key] = event[sc.CYCLES_DENY_PREFIX + key] = value
        self.span.set_attributes(attributes)
        self.span.add_event(sc.EVENT_DENIED, event)

    @never_raises
    def ungoverned(self, exc: CyclesProtocolError) -> None:
        """The authority was unavailable and the call runs anyway (``on_authority_error="allow"``)."""
        error_type = _error_type(exc)
        self.span.set_attribute(sc.CYCLES_GOVERNED, False)
        self.span.add_event(sc.EVENT_AUTHORITY_UNAVAILABLE, {sc.ERROR_TYPE: error_type})
        self._owner.instruments.ungoverned.add(1, {sc.ERROR_TYPE: error_type}, context=self._context())

    @never_raises
    def observed(self, decision: str | None, reason: str | None, exc: BaseException | None) -> None:
        """Shadow mode: what the authority would have decided (``/v1/decide``); nothing was held."""
        attributes: dict[str, AttributeValue] = {sc.CYCLES_MODE: sc.MODE_OBSERVE}
        if decision:
            attributes[sc.CYCLES_DECISION] = decision
        if reason:
            attributes[sc.CYCLES_REASON] = reason
        self.span.set_attributes(attributes)
        if exc is not None:
            self.span.add_event(sc.EVENT_AUTHORITY_UNAVAILABLE, {sc.ERROR_TYPE: _error_type(exc)})

    @never_raises
    def settled(
        self,
        outcome: str,
        priced: Priced | None = None,
        charged: int | None = None,
        actual_source: str | None = None,
        over_limit: bool | None = None,
    ) -> None:
        if self.span.is_recording():
            attributes: dict[str, AttributeValue] = {sc.CYCLES_OUTCOME: outcome}
            if priced is not None:
                attributes[sc.CYCLES_ACTUAL_AMOUNT] = priced.amount
                if priced.usd is not None:
                    attributes[sc.CYCLES_COST_USD] = priced.usd
            if charged is not None:
                attributes[sc.CYCLES_CHARGED_AMOUNT] = charged
            if over_limit is not None:
                attributes[sc.CYCLES_OVER_LIMIT] = over_limit
            if actual_source is not None:
                attributes[sc.CYCLES_ACTUAL_SOURCE] = actual_source
            self.span.set_attributes(attributes)
        if priced is not None and priced.usd:
            self._owner.instruments.cost_usd.add(
                priced.usd, self._owner.cost_labels(self._plan.agent_name or ""), context=self._context()
            )

    @never_raises
    def failed(self, exc: BaseException) -> None:
        _mark_error(self.span, exc)

    @never_raises
    def end(self) -> None:
        self.span.end()

    def _context(self, span: Span | None = None) -> Context:
        """A context with ``span`` (default: the reservation span) current: exemplars point at it."""
        return trace.set_span_in_context(span or self.span)

    # --- inference -----------------------------------------------------------------------------
    def current(self) -> SpanInContext:
        """Make the reservation span current for a stretch without ``yield``s."""
        return SpanInContext(self.span)

    def inference(self) -> SpanInContext:
        return SpanInContext(self._inference or self.span, self._share.context_values)

    @never_raises
    def start_inference(self, messages: Sequence[LLMMessage], max_tokens: int | None) -> None:
        self._inference_start = time.perf_counter()
        self._share = self._owner.coexistence.share(span=self._owner.emit_inference_span)
        if not self._share.span:  # another instrumentation emits it (see coexistence)
            return
        facts = self._owner.facts
        attributes: dict[str, AttributeValue] = {
            sc.GEN_AI_OPERATION_NAME: sc.GEN_AI_OPERATION_CHAT,
            sc.GEN_AI_PROVIDER_NAME: facts.provider,
            sc.GEN_AI_REQUEST_MODEL: facts.model,
            **self._agent_attributes(),
        }
        if max_tokens is not None:
            attributes[sc.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
        self._inference = self._owner.tracer.start_span(
            f"{sc.GEN_AI_OPERATION_CHAT} {facts.model}",
            context=self._context(),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        if self._owner.capture_content and self._inference.is_recording():
            self._inference.set_attribute(sc.GEN_AI_INPUT_MESSAGES, json.dumps(input_messages(messages)))

    @never_raises
    def inference_done(
        self,
        result: CreateResult | None,
        priced: Priced | None,
        usage_source: str,
        exc: BaseException | None = None,
    ) -> None:
        """The inference ended: with a result, with streamed output only, or failed.

        Token counts reach ``gen_ai.client.token.usage`` only when the model reported them: an
        estimate (a stream without a usage chunk) is on the span, marked ``cycles.actual.source``,
        never in the histogram of reported usage.
        """
        if not self._inference_start:  # never reached the model, or reported already
            return
        duration = time.perf_counter() - self._inference_start
        self._inference_start = 0.0
        span, self._inference = self._inference, None
        context = self._context(span)
        instruments, labels = self._owner.instruments, self._owner.genai_labels
        call_labels: Mapping[str, AttributeValue] = labels.call
        if exc is not None:
            call_labels = {**call_labels, sc.ERROR_TYPE: type(exc).__qualname__}
        share = self._share
        if share.duration:
            instruments.genai_duration.record(duration, call_labels, context=context)
        cached = result is not None and result.cached
        reported = priced if usage_source == sc.ACTUAL_SOURCE_USAGE and not cached else None
        share.publish(result, reported)
        if share.tokens and reported is not None:
            instruments.token_usage.record(reported.input_tokens, labels.input_tokens, context=context)
            instruments.token_usage.record(reported.output_tokens, labels.output_tokens, context=context)
        if span is None:
            return
        if span.is_recording():
            attributes = share.collected_attributes()  # ours, set below, win
            if priced is not None:
                attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] = priced.input_tokens
                attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = priced.output_tokens
            if result is not None:
                attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [result.finish_reason]
                if self._owner.capture_content:
                    attributes[sc.GEN_AI_OUTPUT_MESSAGES] = json.dumps(output_messages(result))
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

    __slots__ = ("_span", "_token", "_values")

    def __init__(self, span: Span, values: tuple[tuple[str, object], ...] = ()) -> None:
        self._span = span
        self._values = values  # more context values (util-genai's nested-inference key)
        self._token: object | None = None

    def __enter__(self) -> None:
        context = trace.set_span_in_context(self._span)
        for key, value in self._values:
            context = otel_context.set_value(key, value, context)
        self._token = otel_context.attach(context)

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None


def _error_type(exc: BaseException) -> str:
    return type(exc).__qualname__


def _mark_error(span: Span, exc: BaseException) -> None:
    span.set_attribute(sc.ERROR_TYPE, _error_type(exc))
    span.set_status(Status(StatusCode.ERROR, str(exc) or _error_type(exc)))
    if span.is_recording():
        span.record_exception(exc)


def instrument_protocol_layer(
    tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None
) -> None:
    """Instrument runcycles (once, process-wide) so reserve/commit/release spans nest in ours."""
    instrumentor = CyclesInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
