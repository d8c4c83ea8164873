"""create_stream(): reserved before the first chunk, settled after the result, and when abandoned."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest
from autogen_core.models import CreateResult, RequestUsage, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient

from cycles_otel.autogen.estimate import text_tokens
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.budgeted import Authority, budgeted, cost, replay, reply
from tests.support.reliability import charged_metric

HELLO = [UserMessage(content="Tell me about budgets.", source="user")]


def streaming(*texts: str) -> ReplayChatCompletionClient:
    inner = replay(*texts)
    inner.set_cached_bool_value(False)  # replay streams are "cached" unless told otherwise
    return inner


async def test_a_stream_without_usage_is_charged_from_counted_tokens_marked_estimated(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    text = "one two three four five six"
    inner = streaming(text)
    client = budgeted(authority, instrumented_telemetry, inner, estimate_amount=None)

    async def no_usage(*args: object, **kwargs: object) -> AsyncGenerator[str | CreateResult, None]:
        yield text  # a stream whose endpoint was not asked for (or sent no) usage chunk
        yield CreateResult(finish_reason="stop", content=text, usage=RequestUsage(0, 0), cached=False)

    inner.create_stream = no_usage  # type: ignore[method-assign]
    expected_input = inner.count_tokens(HELLO)

    async for _ in client.create_stream(HELLO):
        pass

    attrs = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert attrs["cycles.actual.source"] == "estimated"
    assert attrs["cycles.actual.amount"] == cost(expected_input, text_tokens(len(text)))
    spent = authority.assert_settled().scopes["tenant:acme"].spent
    assert charged_metric(instrumented_telemetry) == spent == attrs["cycles.actual.amount"]
    # counted tokens are an estimate: they stay out of the token histogram, the call is still timed
    assert instrumented_telemetry.count("gen_ai.client.token.usage") == 0
    assert instrumented_telemetry.count("gen_ai.client.operation.duration") == 1


async def test_an_abandoned_stream_is_charged_for_what_it_streamed(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    text = "alpha beta gamma delta epsilon zeta"
    client = budgeted(authority, instrumented_telemetry, streaming(text), estimate_amount=None)
    stream = client.create_stream(HELLO)
    first = await stream.__anext__()
    second = await stream.__anext__()
    assert isinstance(first, str) and isinstance(second, str)

    await stream.aclose()

    snap = authority.assert_settled()
    (reservation,) = snap.reservations
    streamed = text_tokens(len(first + second))
    assert reservation.status == "COMMITTED"
    attrs = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert attrs["cycles.actual.source"] == "estimated"
    assert reservation.charged == attrs["cycles.actual.amount"]
    assert reservation.charged == cost(_input_of(instrumented_telemetry), streamed)
    assert "error.type" not in attrs  # the consumer chose to stop: not an error


def _input_of(telemetry: TelemetryCapture) -> int:
    tokens = (telemetry.span("chat gpt-4o").attributes or {})["gen_ai.usage.input_tokens"]
    assert isinstance(tokens, int), tokens
    return tokens


async def test_an_error_mid_stream_settles_and_reraises_the_same_error(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(authority, instrumented_telemetry, streaming("unused"))
    boom = ConnectionResetError("peer went away")

    async def breaks(*args: object, **kwargs: object) -> AsyncGenerator[str | CreateResult, None]:
        yield "partial answer"
        raise boom

    client.inner.create_stream = breaks  # type: ignore[method-assign]

    with pytest.raises(ConnectionResetError) as caught:
        async for _ in client.create_stream(HELLO):
            pass

    assert caught.value is boom
    snap = authority.assert_settled()
    assert [r.status for r in snap.reservations] == ["COMMITTED"]
    root = instrumented_telemetry.span("cycles.reservation")
    assert (root.attributes or {})["error.type"] == "ConnectionResetError"
    assert (root.attributes or {})["cycles.actual.source"] == "estimated"


async def test_a_stream_span_joins_the_callers_trace(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(authority, instrumented_telemetry, replay(reply("ok", 3, 1)))
    tracer = instrumented_telemetry.tracer_provider.get_tracer("test")

    with tracer.start_as_current_span("invoke_agent caller"):
        stream = client.create_stream(HELLO)
    async for _ in stream:  # iterated outside the caller's span: the span still nests under it
        pass

    (root,) = instrumented_telemetry.trees()
    assert root.name == "invoke_agent caller"
    assert root.names() == ["cycles.reservation"]
