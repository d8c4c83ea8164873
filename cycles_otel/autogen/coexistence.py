"""Other GenAI instrumentations on a governed call: which one emits its inference span and metrics.

Exactly one instrumentation should emit a call's inference span, ``gen_ai.client.operation.duration``
and ``gen_ai.client.token.usage``. Before each inner call :meth:`Coexistence.share` looks where the
others would act, the way ``opentelemetry-util-genai`` (1.3b0 on) lets a nested inference step back:

* a util-genai inference is already active in the caller's context: ours is the nested one, so it
  emits nothing and publishes what the model did into that inference's data;
* a known instrumentation wraps the method the inner call goes through (openai-v2 on the openai SDK,
  OpenInference on AutoGen's OpenAI client): ours leaves to it what it emits for this call;
* otherwise ours emits, and puts util-genai's nested-inference key in the inner call's context, so
  any util-genai handler inside steps back and publishes to us (response model and id, server).

Nothing here imports those packages: they are looked up in ``sys.modules``, so a process that never
loaded them pays a dictionary lookup per call.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from autogen_core.models import ChatCompletionClient, CreateResult
from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.util.types import AttributeValue

from cycles_otel import semconv as sc
from cycles_otel.autogen.plan import Priced
from cycles_otel.autogen.usage import is_openai_family

GENAI_INVOCATION_MODULE: Final = "opentelemetry.util.genai.invocation"
"""Where util-genai exports ``CLIENT_INFERENCE_CONTEXT_KEY`` and ``InferenceData`` (from 1.3b0)."""
OPENAI_CHAT_MODULE: Final = "openai.resources.chat.completions"
"""The openai SDK's chat completions, which OpenAI-family AutoGen clients call."""

# InferenceData fields a suppressed util-genai inference publishes, and our span's keys for them.
_PUBLISHED: Final = (
    ("response_model", sc.GEN_AI_RESPONSE_MODEL),
    ("response_id", sc.GEN_AI_RESPONSE_ID),
    ("server_address", sc.SERVER_ADDRESS),
    ("server_port", sc.SERVER_PORT),
)


@dataclass(frozen=True)
class Emitted:
    """What another instrumentation emits for one call."""

    span: bool
    duration: bool
    tokens: bool


def _openai_v2(context: Context) -> Emitted:
    """opentelemetry-instrumentation-openai-v2 (2.4b0) on ``AsyncCompletions.create``: a span and both
    metrics for every call, streams included. With util-genai 1.0b0 on (2.4b0 runs on 1.0b0 and
    1.1b0 only) it always takes its util-genai handler path, which reads no suppression key."""
    return Emitted(span=True, duration=True, tokens=True)


def _openinference_autogen(context: Context) -> Emitted:
    """openinference-instrumentation-autogen-agentchat on the client's ``create`` and ``create_stream``
    (wrapped together): an LLM span with OpenInference attributes, no metrics, and nothing at all
    when instrumentation is suppressed (the only key it reads)."""
    suppressed = bool(otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY, context))
    return Emitted(span=not suppressed, duration=False, tokens=False)


KNOWN: Final[Mapping[str, Callable[[Context], Emitted]]] = {
    "opentelemetry.instrumentation.openai_v2": _openai_v2,
    "openinference.instrumentation.autogen_agentchat": _openinference_autogen,
}
"""The package each known instrumentation defines its wrappers in, and what it emits for a call."""


@dataclass(frozen=True)
class InferenceShare:
    """Which part of one call's inference telemetry is ours, and what is exchanged with util-genai."""

    span: bool = True
    duration: bool = True
    tokens: bool = True
    context_values: tuple[tuple[str, object], ...] = ()
    """Set in the inner call's context: util-genai's nested-inference key, when ours emits the span."""
    collected: Any = None
    """The ``InferenceData`` a util-genai inference suppressed inside this call publishes into."""
    outer: Any = None
    """The ``InferenceData`` of the util-genai inference this call runs inside (ours then emits nothing)."""

    def collected_attributes(self) -> dict[str, AttributeValue]:
        """What a suppressed util-genai inference inside this call reported, as span attributes."""
        data = self.collected
        if data is None:
            return {}
        extra = getattr(data, "attributes", None)
        found: dict[str, AttributeValue] = dict(extra) if isinstance(extra, Mapping) else {}
        for field, key in _PUBLISHED:
            value = getattr(data, field, None)
            if value is not None:
                found[key] = value
        return found

    def publish(self, result: CreateResult | None, reported: Priced | None) -> None:
        """Tell the enclosing util-genai inference what the model did, as a nested one would.

        Its own values win when it merges them; ``reported`` is usage the model reported, if any.
        """
        outer = self.outer
        if outer is None:
            return
        if reported is not None:
            outer.usage_input_tokens = reported.input_tokens
            outer.usage_output_tokens = reported.output_tokens
        if result is not None:
            outer.response_finish_reasons = [result.finish_reason]


ALONE: Final = InferenceShare()
"""No other instrumentation on the call: ours emits everything."""


class Coexistence:
    """Where other instrumentations would wrap one inner client's model call."""

    def __init__(self, inner: ChatCompletionClient | None) -> None:
        cls = type(inner) if inner is not None else None
        self._create_owner = _owner(cls, "create")
        self._openai = inner is not None and is_openai_family(inner)

    def share(self, *, span: bool) -> InferenceShare:
        """Who emits what for the call about to start in the current context (``span``: ours may)."""
        context = otel_context.get_current()
        nesting = _genai_nesting()
        if nesting is not None:
            outer = otel_context.get_value(nesting[0], context)
            if isinstance(outer, nesting[1]):
                return InferenceShare(span=False, duration=False, tokens=False, outer=outer)
        duration = tokens = True
        for emitted_by in self._wrappers():
            emitted = emitted_by(context)
            span, duration, tokens = (
                span and not emitted.span,
                duration and not emitted.duration,
                tokens and not emitted.tokens,
            )
        if span and nesting is not None:
            key, data_type = nesting
            collected = data_type()
            return InferenceShare(
                duration=duration, tokens=tokens, context_values=((key, collected),), collected=collected
            )
        if span and duration and tokens:
            return ALONE
        return InferenceShare(span, duration, tokens)

    def _wrappers(self) -> Iterator[Callable[[Context], Emitted]]:
        """What each known instrumentation wrapping the path of the inner call emits."""
        if self._create_owner is not None:
            yield from _known(vars(self._create_owner).get("create"))
        if self._openai:
            chat = getattr(sys.modules.get(OPENAI_CHAT_MODULE), "AsyncCompletions", None)
            if chat is not None:
                yield from _known(vars(chat).get("create"))


def _owner(cls: type | None, name: str) -> type | None:
    """The class whose ``name`` a call on an instance of ``cls`` runs (where a wrapper would sit)."""
    if cls is None:
        return None
    return next((base for base in cls.__mro__ if name in vars(base)), None)


def _known(function: object) -> Iterator[Callable[[Context], Emitted]]:
    wrapper = getattr(function, "_self_wrapper", None)  # wrapt's FunctionWrapper keeps the wrapper here
    module = getattr(wrapper, "__module__", None)
    if wrapper is None or not isinstance(module, str):
        return
    for package, emitted_by in KNOWN.items():
        if module == package or module.startswith(package + "."):
            yield emitted_by


def _genai_nesting() -> tuple[str, type] | None:
    """util-genai's nested-inference key and data class, when a release that has them is loaded."""
    module = sys.modules.get(GENAI_INVOCATION_MODULE)
    key = getattr(module, "CLIENT_INFERENCE_CONTEXT_KEY", None)
    data_type = getattr(module, "InferenceData", None)
    if isinstance(key, str) and isinstance(data_type, type):
        return key, data_type
    return None
