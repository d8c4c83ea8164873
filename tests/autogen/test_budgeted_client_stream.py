"""create_stream(): reserved before the first chunk, settled after the result, and when abandoned."""

from __future__ import annotations

import pytest
from autogen_core.models import CreateResult, UserMessage

from cycles_otel.autogen.estimate import text_tokens
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.budgeted import Authority, budgeted, cancel_inside, cost, replay, reply, stall

HELLO = [UserMessage(content="Tell me about budgets.", source="user")]


def streaming(*texts: str) -> object:
    inner = replay(*texts)
    inner.set_cached_bool_value(False)  # replay streams are "cached" unless told otherwise
    return inner


async def test_a_stream_is_reserved_before_the_first_chunk_and_committed_after_the_result(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    inner = replay(reply("Budgets are limits.", 80, 12))
    client = budgeted(authority, instrumented_telemetry, inner)
    seen_active: list[int] = []

    items = []
    async for item in client.create_stream(HELLO):
        seen_active.append(authority.ledger().count(status="ACTIVE"))
        items.append(item)

    assert isinstance(items[-1], CreateResult)
    assert seen_active == [1]  # reserved while streaming
    snap = authority.assert_settled()
    assert [(r.status, r.charged) for r in snap.reservations] == [("COMMITTED", cost(80, 12))]
    (root,) = instrumented_telemetry.trees()
    assert root.names() == ["cycles.reserve", "chat gpt-4o", "cycles.commit"]
    assert (root.span.attributes or {})["cycles.actual.source"] == "usage"


async def test_a_stream_without_usage_is_charged_from_counted_tokens_marked_estimated(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    text = "one two three four five six"
    inner = streaming(text)
    client = budgeted(authority, instrumented_telemetry, inner, estimate_amount=None)

    async def no_usage(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        yield text
        yield CreateResult(
            finish_reason="stop",
            content=text,
            usage={"prompt_tokens": 0, "completion_tokens": 0},
            cached=False,
        )  # type: ignore[arg-type]

    inner.create_stream = no_usage  # type: ignore[method-assign,assignment]
    expected_input = inner.count_tokens(HELLO)

    async for _ in client.create_stream(HELLO):
        pass

    attrs = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert attrs["cycles.actual.source"] == "estimated"
    assert attrs["cycles.actual.amount"] == cost(expected_input, text_tokens(len(text)))
    authority.assert_settled()


async def test_an_abandoned_stream_is_charged_for_what_it_streamed(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    text = "alpha beta gamma delta epsilon zeta"
    client = budgeted(authority, instrumented_telemetry, streaming(text), estimate_amount=None)
    stream = client.create_stream(HELLO)
    first = await stream.__anext__()
    second = await stream.__anext__()

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
    return (telemetry.span("chat gpt-4o").attributes or {})["gen_ai.usage.input_tokens"]  # type: ignore[return-value]


async def test_a_stream_abandoned_before_any_output_is_released(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(authority, instrumented_telemetry, streaming("never read"))
    entered = stall(client.inner, "create_stream")

    await cancel_inside(client.create_stream(HELLO).__anext__(), entered)

    snap = authority.assert_settled()
    assert [r.status for r in snap.reservations] == ["RELEASED"]
    attrs = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert attrs["error.type"] == "CancelledError"
    assert attrs["cycles.outcome"] == "released"


async def test_an_error_mid_stream_settles_and_reraises_the_same_error(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(authority, instrumented_telemetry, streaming("unused"))
    boom = ConnectionResetError("peer went away")

    async def breaks(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        yield "partial answer"
        raise boom

    client.inner.create_stream = breaks  # type: ignore[method-assign,assignment]

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
