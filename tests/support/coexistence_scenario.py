"""An agent's governed calls with another GenAI instrumentation active, and everything they exported.

``tests/coexistence/test_coexistence.py`` awaits :func:`observe` in its own process, and runs this file as a
script in the openai-v2 venv (whose util-genai cannot share the project's venv):
``python coexistence_scenario.py '<settings JSON>'`` prints the observation as one JSON object.

Settings: ``cycles_url``, ``cycles_key`` (tenant ``acme``), ``openai_url`` (a FakeOpenAI),
``instrumentation`` (one of :data:`INSTRUMENTATIONS`), ``stream``, ``calls``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

from autogen_agentchat.agents import AssistantAgent
from autogen_ext.models.openai import OpenAIChatCompletionClient
from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint
from runcycles import AsyncCyclesClient, CyclesConfig  # type: ignore[import-untyped]

import cycles_otel
from cycles_otel.autogen import BudgetedChatCompletionClient
from cycles_otel.testing.telemetry import TelemetryCapture

INSTRUMENTATIONS = ("none", "openai-v2", "openinference", "util-genai", "util-genai-outer")
"""``util-genai``: a util-genai handler on the openai SDK's chat completions, as a util-genai based
instrumentation of it would be; ``util-genai-outer``: one around the governed client's ``create()``."""
METRICS = ("gen_ai.client.operation.duration", "gen_ai.client.token.usage", "cycles.client.cost.usd")
MODEL = "gpt-4o"


async def observe(settings: dict[str, Any]) -> dict[str, Any]:
    """Run ``calls`` agent turns through a governed OpenAI client; return its spans and metric points."""
    telemetry = TelemetryCapture()
    undo = activate(settings["instrumentation"], telemetry, settings["openai_url"])
    try:
        inner = OpenAIChatCompletionClient(
            model=MODEL, base_url=settings["openai_url"], api_key="sk-coexistence-test", max_retries=0
        )
        config = CyclesConfig(
            base_url=settings["cycles_url"],
            api_key=settings["cycles_key"],
            tenant="acme",
            journal_enabled=False,
        )
        client = BudgetedChatCompletionClient(
            inner,
            AsyncCyclesClient(config),
            max_output_tokens=100,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            instrument_protocol=False,  # process-wide: left alone, so other tests' providers stay theirs
        )
        agent = AssistantAgent("writer", model_client=client, model_client_stream=settings["stream"])
        for index in range(settings["calls"]):
            await agent.run(task=f"Question {index}: what does a budget authority do?")
        await client.close()
    finally:
        undo()
    observed = {
        "spans": spans_of(telemetry),
        "points": points_of(telemetry),
        "cycles_otel": cycles_otel.__file__,
    }
    telemetry.shutdown()
    return observed


def spans_of(telemetry: TelemetryCapture) -> list[dict[str, Any]]:
    return [
        {
            "name": span.name,
            "kind": span.kind.name,
            "scope": span.instrumentation_scope.name if span.instrumentation_scope else "",
            "id": format(span.context.span_id, "016x") if span.context else "",
            "parent": format(span.parent.span_id, "016x") if span.parent else None,
            "attributes": {key: _plain(value) for key, value in (span.attributes or {}).items()},
        }
        for span in telemetry.spans()
    ]


def points_of(telemetry: TelemetryCapture) -> list[dict[str, Any]]:
    """Every point of :data:`METRICS`, with the scope that recorded it (histograms: their count and sum)."""
    data = telemetry.metric_reader.get_metrics_data()
    found: list[dict[str, Any]] = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name not in METRICS:
                    continue
                for point in metric.data.data_points:
                    if isinstance(point, HistogramDataPoint):
                        count, value = point.count, point.sum
                    else:
                        assert isinstance(point, NumberDataPoint), point
                        count, value = None, point.value
                    found.append(
                        {
                            "metric": metric.name,
                            "scope": scope.scope.name,
                            "attributes": {k: _plain(v) for k, v in (point.attributes or {}).items()},
                            "count": count,
                            "value": value,
                        }
                    )
    return found


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


# --- the other instrumentations -------------------------------------------------------------------
def activate(name: str, telemetry: TelemetryCapture, openai_url: str) -> Callable[[], None]:
    """Instrument with ``name`` into the capture's providers; return what undoes it."""
    providers: dict[str, Any] = {
        "tracer_provider": telemetry.tracer_provider,
        "meter_provider": telemetry.meter_provider,
    }
    if name == "none":
        return lambda: None
    if name == "openai-v2":
        # Installed in the openai-v2 venv only (see the module docstring).
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor  # type: ignore[import-not-found]

        OpenAIInstrumentor().instrument(**providers)
        undo_openai_v2: Callable[[], None] = OpenAIInstrumentor().uninstrument
        return undo_openai_v2
    if name == "openinference":
        from openinference.instrumentation.autogen_agentchat import AutogenAgentChatInstrumentor

        AutogenAgentChatInstrumentor().instrument(tracer_provider=telemetry.tracer_provider)
        undo_openinference: Callable[[], None] = AutogenAgentChatInstrumentor().uninstrument
        return undo_openinference
    if name == "util-genai":
        return _handler_on_openai(providers, openai_url)
    if name == "util-genai-outer":
        return _handler_around_governed_create(providers)
    raise ValueError(f"instrumentation={name!r}: give one of {', '.join(INSTRUMENTATIONS)}")


def _handler_on_openai(providers: dict[str, Any], openai_url: str) -> Callable[[], None]:
    """A util-genai handler's inference around every openai ``AsyncCompletions.create`` (streams too)."""
    from openai.resources.chat.completions import AsyncCompletions
    from opentelemetry.instrumentation.utils import unwrap
    from opentelemetry.util.genai.handler import TelemetryHandler
    from wrapt import wrap_function_wrapper

    handler = TelemetryHandler(**providers)
    server = urlsplit(openai_url)

    async def traced(wrapped: Any, instance: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        invocation = handler.inference(
            "openai", request_model=kwargs["model"], server_address=server.hostname, server_port=server.port
        )
        try:
            response = await wrapped(*args, **kwargs)
        except BaseException as exc:
            invocation.fail(exc)
            raise
        if kwargs.get("stream"):
            invocation.suspend()  # the caller reads the stream in its own context
            return _read_through(response, invocation)
        _answered(invocation, response)
        invocation.stop()
        return response

    wrap_function_wrapper(AsyncCompletions, "create", traced)
    return lambda: unwrap(AsyncCompletions, "create")


async def _read_through(stream: Any, invocation: Any) -> AsyncIterator[Any]:
    async for chunk in stream:
        _answered(invocation, chunk)
        yield chunk
    invocation.stop()


def _answered(invocation: Any, response: Any) -> None:
    """What an answer (or stream chunk) tells: response model and id, finish reasons, usage."""
    invocation.response_model_name = response.model
    invocation.response_id = response.id
    reasons = [choice.finish_reason for choice in response.choices if choice.finish_reason]
    if reasons:
        invocation.finish_reasons = reasons
    if response.usage is not None:
        invocation.input_tokens = response.usage.prompt_tokens
        invocation.output_tokens = response.usage.completion_tokens


def _handler_around_governed_create(providers: dict[str, Any]) -> Callable[[], None]:
    """A util-genai handler's inference around every governed ``create()``: the governed call is nested."""
    from opentelemetry.instrumentation.utils import unwrap
    from opentelemetry.util.genai.handler import TelemetryHandler
    from wrapt import wrap_function_wrapper

    handler = TelemetryHandler(**providers)

    async def traced(wrapped: Any, instance: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        with handler.inference("openai", request_model=MODEL):
            return await wrapped(*args, **kwargs)

    wrap_function_wrapper(BudgetedChatCompletionClient, "create", traced)
    return lambda: unwrap(BudgetedChatCompletionClient, "create")


if __name__ == "__main__":
    print(json.dumps(asyncio.run(observe(json.loads(sys.argv[1])))))
