"""BudgetedChatCompletionClient.create(): reserve, call, commit, release; typed denials; estimates; caps."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from autogen_core.models import LLMMessage, UserMessage
from autogen_core.tools import FunctionTool
from opentelemetry.trace import StatusCode
from pydantic import BaseModel
from runcycles import BudgetExceededError, Caps, CyclesProtocolError, DebtOutstandingError  # type: ignore[import-untyped]
from runcycles.response import CyclesResponse  # type: ignore[import-untyped]

from cycles_otel.autogen import BudgetedChatCompletionClient, EstimateError, apply_caps
from cycles_otel.protocol.transport import AiohttpCyclesClient
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.budgeted import (
    USD,
    Authority,
    assert_governed,
    budgeted,
    cancel_inside,
    cost,
    replay,
    reply,
    stall,
)
from tests.support.gates import hold
from tests.support.reliability import charged_metric

HELLO = [UserMessage(content="What is budget authority?", source="user")]


async def test_create_reserves_calls_and_commits_the_priced_usage(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(
        authority, instrumented_telemetry, replay(reply("Budgets.", 120, 30)), agent="support-bot"
    )

    result = await client.create(HELLO)

    assert result.content == "Budgets."
    snap = authority.assert_settled()
    assert snap.scopes["tenant:acme"].spent == cost(120, 30) == 120 * 250 + 30 * 1_000
    (reservation,) = snap.reservations
    assert reservation.status == "COMMITTED"
    assert reservation.subject == {"tenant": "acme", "agent": "support-bot"}
    (root,) = instrumented_telemetry.trees()
    assert root.name == "cycles.reservation"
    assert_governed(root)
    attrs = root.span.attributes or {}
    assert attrs["cycles.reservation.id"] == reservation.reservation_id
    assert attrs["cycles.decision"] == "ALLOW"
    assert attrs["cycles.outcome"] == "committed"
    assert attrs["cycles.actual.amount"] == attrs["cycles.charged.amount"] == cost(120, 30)
    assert attrs["cycles.actual.source"] == "usage"
    assert attrs["cycles.estimate.amount"] == reservation.reserved
    assert attrs["cycles.subject.agent"] == "support-bot"
    chat = root.child("chat gpt-4o").span
    assert chat.kind.name == "CLIENT"
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.usage.input_tokens"] == 120
    assert chat.attributes["gen_ai.usage.output_tokens"] == 30
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "openai"
    assert chat.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert "gen_ai.input.messages" not in chat.attributes  # content capture is opt-in
    labels = {"gen_ai__request__model": "gpt-4o", "gen_ai__operation__name": "chat"}
    assert (
        instrumented_telemetry.value("gen_ai.client.token.usage", gen_ai__token__type="input", **labels)
        == 120
    )
    assert (
        instrumented_telemetry.value("gen_ai.client.token.usage", gen_ai__token__type="output", **labels)
        == 30
    )
    assert instrumented_telemetry.count("gen_ai.client.operation.duration", **labels) == 1
    assert instrumented_telemetry.value(
        "cycles.client.cost.usd", gen_ai__request__model="gpt-4o", gen_ai__agent__name="support-bot"
    ) == pytest.approx(cost(120, 30) / USD)


async def test_the_default_estimate_prices_counted_input_plus_the_output_cap(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    inner = replay(reply("ok", 5, 1))
    client = budgeted(authority, instrumented_telemetry, inner, max_output_tokens=400)
    expected = cost(inner.count_tokens(HELLO), 400)

    await client.create(HELLO)

    (reservation,) = authority.ledger().reservations
    assert reservation.reserved == expected
    attrs = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert attrs["cycles.estimate.source"] == "tokenizer"


async def test_constant_and_callable_estimates_override_the_default(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    fixed = budgeted(authority, instrumented_telemetry, replay(reply("a", 1, 1)), estimate_amount=2_000_000)
    seen: list[int] = []

    def per_message(messages: Sequence[LLMMessage], tools: object) -> int:
        seen.append(len(messages))
        return 777_000

    computed = budgeted(
        authority, instrumented_telemetry, replay(reply("b", 1, 1)), estimate_amount=per_message
    )

    await fixed.create(HELLO)
    await computed.create(HELLO)

    assert [r.reserved for r in authority.ledger().reservations] == [2_000_000, 777_000]
    assert seen == [1]
    sources = [
        (s.attributes or {})["cycles.estimate.source"]
        for s in instrumented_telemetry.spans("cycles.reservation")
    ]
    assert sources == ["fixed", "callable"]


async def test_a_broken_tokenizer_falls_back_to_characters_and_says_so(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    inner = replay(reply("a", 1, 1), reply("b", 1, 1))

    def offline(*args: object, **kwargs: object) -> int:
        raise ConnectionError("openaipublic.blob.core.windows.net: Name or service not known")

    inner.count_tokens = offline  # type: ignore[method-assign]
    client = budgeted(authority, instrumented_telemetry, inner)

    await client.create(HELLO)
    await client.create(HELLO)

    sources = [
        (s.attributes or {})["cycles.estimate.source"]
        for s in instrumented_telemetry.spans("cycles.reservation")
    ]
    assert sources == ["characters", "characters"]
    assert all(r.reserved > cost(0, 1_000) for r in authority.ledger().reservations)


async def test_without_an_estimate_or_a_cap_the_guides_default_is_reserved_and_said_so(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(authority, instrumented_telemetry, replay(reply("a", 90, 20)), max_output_tokens=None)

    await client.create(HELLO)

    (reservation,) = authority.assert_settled().reservations
    assert reservation.reserved == 2_000_000
    assert reservation.charged == cost(90, 20)
    attrs = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert attrs["cycles.estimate.source"] == "default"
    assert attrs["cycles.estimate.amount"] == 2_000_000


async def test_under_reject_a_call_with_no_known_cap_fails_before_anything_is_reserved(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    def uncapped_under_reject() -> BudgetedChatCompletionClient:
        return budgeted(
            authority,
            instrumented_telemetry,
            replay(reply("a", 1, 1)),
            max_output_tokens=None,
            overage_policy="REJECT",
        )

    with pytest.raises(EstimateError, match="max_output_tokens") as caught:
        await uncapped_under_reject().create(HELLO)

    assert "REJECT" in str(caught.value)
    assert authority.ledger().reservations == []
    assert instrumented_telemetry.spans("cycles.reserve") == []
    capped = uncapped_under_reject()
    await capped.create(HELLO, extra_create_args={"max_tokens": 50})  # a cap on the request is enough
    (reservation,) = authority.assert_settled().reservations
    assert reservation.reserved == cost(capped.count_tokens(HELLO), 50)


async def test_a_cached_result_commits_zero(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(
        authority, instrumented_telemetry, replay("from the cache")
    )  # replay results are cached=True

    result = await client.create(HELLO)

    assert result.cached
    snap = authority.assert_settled()
    assert [(r.status, r.charged) for r in snap.reservations] == [("COMMITTED", 0)]
    attrs = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert attrs["cycles.outcome"] == "committed"
    assert attrs["cycles.actual.amount"] == 0
    assert instrumented_telemetry.points("gen_ai.client.token.usage") == []


async def test_an_inner_failure_releases_and_reraises_the_same_exception(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    boom = ValueError("model exploded")
    inner = replay()

    async def failing(*args: object, **kwargs: object) -> None:
        raise boom

    inner.create = failing  # type: ignore[method-assign,assignment]
    client = budgeted(authority, instrumented_telemetry, inner)

    with pytest.raises(ValueError) as caught:
        await client.create(HELLO)

    assert caught.value is boom
    snap = authority.assert_settled()
    assert [r.status for r in snap.reservations] == ["RELEASED"]
    root = instrumented_telemetry.span("cycles.reservation")
    assert root.status.status_code.name == "ERROR"
    assert (root.attributes or {})["error.type"] == "ValueError"
    assert (root.attributes or {})["cycles.outcome"] == "released"
    assert instrumented_telemetry.count("gen_ai.client.operation.duration", error__type="ValueError") == 1
    assert [n for n in instrumented_telemetry.span_names() if n.startswith("cycles.")].count(
        "cycles.release"
    ) == 1


@pytest.mark.parametrize("transport_name", ["aiohttp", "httpx"])
@pytest.mark.parametrize("method", ["create", "create_stream"])
async def test_a_call_cancelled_inside_the_model_call_is_released(
    authority: Authority, instrumented_telemetry: TelemetryCapture, method: str, transport_name: str
) -> None:
    inner = replay("never read")
    inner.set_cached_bool_value(False)
    entered = stall(inner, method)
    client = budgeted(authority, instrumented_telemetry, inner, transport=transport_name)
    call = client.create(HELLO) if method == "create" else client.create_stream(HELLO).__anext__()

    await cancel_inside(call, entered)

    snap = authority.assert_settled()
    assert [r.status for r in snap.reservations] == ["RELEASED"]
    assert snap.scopes["tenant:acme"].spent == 0 == charged_metric(instrumented_telemetry)
    root = instrumented_telemetry.span("cycles.reservation")
    assert root.end_time is not None and root.status.status_code is StatusCode.ERROR
    assert (root.attributes or {})["error.type"] == "CancelledError"
    assert (root.attributes or {})["cycles.outcome"] == "released"
    chat = instrumented_telemetry.span("chat gpt-4o")
    assert chat.status.status_code is StatusCode.ERROR
    assert (chat.attributes or {})["error.type"] == "CancelledError"
    assert instrumented_telemetry.value("cycles.client.settlements", cycles__outcome="released") == 1
    await client.close()


async def test_a_denial_raises_the_typed_error_with_code_and_request_id(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    authority.server.set_budget("tenant:acme/agent:writer", 1_000)
    client = budgeted(authority, instrumented_telemetry, replay(reply("never", 1, 1)), agent="writer")

    with pytest.raises(BudgetExceededError) as caught:
        await client.create(HELLO)

    assert caught.value.error_code == "BUDGET_EXCEEDED"
    denied = [r for r in authority.server.requests if r.operation == "reserve"]
    assert caught.value.request_id == (denied[-1].response_body or {})["request_id"]
    assert authority.ledger().reservations == []
    root = instrumented_telemetry.span("cycles.reservation")
    attrs = root.attributes or {}
    assert attrs["cycles.decision"] == "DENY"
    assert attrs["cycles.reason"] == "BUDGET_EXCEEDED"
    assert attrs["error.type"] == "BudgetExceededError"
    assert [e.name for e in root.events][:1] == ["cycles.denied"]
    assert instrumented_telemetry.spans("chat gpt-4o") == []


async def test_other_denials_keep_their_runcycles_type(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    authority.server.faults.fail("reserve", 409, error="DEBT_OUTSTANDING", message="debt first")
    client = budgeted(authority, instrumented_telemetry, replay(reply("never", 1, 1)))

    with pytest.raises(DebtOutstandingError) as caught:
        await client.create(HELLO)

    assert caught.value.error_code == "DEBT_OUTSTANDING"
    assert caught.value.request_id


def test_caps_lower_the_output_cap_and_filter_tools() -> None:
    async def lookup(city: str) -> str:
        return city

    tools = [FunctionTool(lookup, description="a", name=n) for n in ("search", "shell", "email")]

    applied = apply_caps(
        tools, 1_000, caps=Caps(max_tokens=200, tool_denylist=["shell"]), allowlist=["search", "shell"]
    )

    assert applied.output_cap == 200
    assert applied.tools is not None
    assert list(applied.tools) == [tools[0]]  # "search": allowed, and not denied
    assert applied.tools_removed == ("shell", "email")
    assert apply_caps(tools, None, caps=None).tools is tools


async def test_an_allow_with_caps_decision_shapes_the_call_and_the_span(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    cycles_client = AiohttpCyclesClient(authority.server.config(authority.key))  # used as given
    real_reserve = cycles_client.create_reservation

    async def with_caps(request: BaseModel | dict[str, Any]) -> CyclesResponse:
        # The local authority never answers ALLOW_WITH_CAPS: add caps to its real answer.
        response = await real_reserve(request)
        response.body = {
            **response.body,
            "decision": "ALLOW_WITH_CAPS",
            "caps": {"max_tokens": 64, "tool_denylist": ["shell"]},
        }
        return response

    cycles_client.create_reservation = with_caps  # type: ignore[method-assign]

    async def lookup(city: str) -> str:
        return city

    tools = [FunctionTool(lookup, description="d", name=n) for n in ("search", "shell")]
    inner = replay(reply("ok", 3, 2), tools=True)
    client = budgeted(authority, instrumented_telemetry, inner, cycles_client=cycles_client)

    await client.create(HELLO, tools=tools)

    (call,) = inner.create_calls
    assert [t.name for t in call["tools"]] == ["search"]
    attrs = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert attrs["cycles.decision"] == "ALLOW_WITH_CAPS"
    assert attrs["cycles.caps.max_tokens"] == 64
    assert attrs["cycles.caps.tools_removed"] == ("shell",)
    assert (instrumented_telemetry.span("chat gpt-4o").attributes or {})["gen_ai.request.max_tokens"] == 64
    authority.assert_settled()


@pytest.mark.parametrize("given", ["async", "httpx", "sync"])
async def test_calls_wait_for_the_authority_side_by_side_and_the_loop_runs_on(
    authority: Authority, instrumented_telemetry: TelemetryCapture, given: str
) -> None:
    """Each reserve is held inside the authority until all of them are: only a loop that keeps running
    while a call waits (no blocking client, no lock around calls) gets them there together.

    ``given``: the runcycles client the caller passes (a plain async one, the same kept on httpx, or
    the guide's synchronous ``CyclesClient``, which is used asynchronously).
    """
    from runcycles import CyclesClient

    calls = 32
    held = hold(authority.server, "reserve", until=calls)
    options: dict[str, Any] = {
        "async": {},
        "httpx": {"transport": "httpx"},
        "sync": {"cycles_client": CyclesClient(authority.server.config(authority.key))},
    }[given]
    client = budgeted(
        authority, instrumented_telemetry, replay(*[reply(f"r{i}", 10, 5) for i in range(calls)]), **options
    )

    await asyncio.gather(*(client.create(HELLO) for _ in range(calls)))

    assert held.filled and not held.gave_up, f"only {held.arrived} reserves were ever inside at once"
    spans = instrumented_telemetry.spans("cycles.reservation")
    edges = sorted([(s.start_time or 0, 1) for s in spans] + [(s.end_time or 0, -1) for s in spans])
    in_flight = [sum(step for _, step in edges[: i + 1]) for i in range(len(edges))]
    assert max(in_flight) == calls  # every call was under way at once
    snap = authority.assert_settled()
    assert snap.scopes["tenant:acme"].spent == calls * cost(10, 5)
    await client.close()


async def test_with_agent_shares_the_client_and_attributes_the_new_agent(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(
        authority, instrumented_telemetry, replay(reply("a", 2, 2), reply("b", 2, 2)), agent="writer"
    )
    selector = client.with_agent("selector")

    await client.create(HELLO)
    await selector.create(HELLO)

    agents = [r.subject["agent"] for r in authority.ledger().reservations]
    assert agents == ["writer", "selector"]
    assert selector.inner is client.inner


def test_unknown_models_and_units_fail_at_construction(
    authority: Authority, telemetry: TelemetryCapture
) -> None:
    from cycles_otel.pricing import UnknownModelError

    with pytest.raises(UnknownModelError, match="my-model"):
        budgeted(authority, telemetry, replay(), model="my-model", instrument_protocol=False)
    with pytest.raises(ValueError, match="unit="):
        budgeted(authority, telemetry, replay(), unit="CREDITS", instrument_protocol=False)
    with pytest.raises(ValueError, match="model="):
        budgeted(authority, telemetry, replay(), model=None, instrument_protocol=False)


async def test_protocol_errors_other_than_denials_propagate_typed(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    authority.server.set_budget("tenant:acme", 10 * USD, status="FROZEN")
    client = budgeted(authority, instrumented_telemetry, replay(reply("never", 1, 1)))

    with pytest.raises(CyclesProtocolError) as caught:
        await client.create(HELLO)

    assert caught.value.error_code == "BUDGET_FROZEN"


async def test_content_is_captured_when_asked(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(
        authority, instrumented_telemetry, replay(reply("Secret plans.", 3, 2)), capture_content=True
    )

    await client.create(HELLO)

    chat = instrumented_telemetry.span("chat gpt-4o").attributes or {}
    assert "What is budget authority?" in str(chat["gen_ai.input.messages"])
    assert "Secret plans." in str(chat["gen_ai.output.messages"])


async def test_the_inference_span_can_be_left_to_another_instrumentation(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    client = budgeted(authority, instrumented_telemetry, replay(reply("ok", 3, 2)), emit_inference_span=False)

    await client.create(HELLO)

    (root,) = instrumented_telemetry.trees()
    assert root.names() == ["cycles.reserve", "cycles.commit"]
    assert (
        instrumented_telemetry.value("gen_ai.client.token.usage", gen_ai__token__type="input") == 3
    )  # metrics stay


async def test_the_client_instruments_runcycles_when_nobody_has(
    authority: Authority, telemetry: TelemetryCapture
) -> None:
    from cycles_otel.protocol import CyclesInstrumentor

    instrumentor = CyclesInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    try:
        client = budgeted(authority, telemetry, replay(reply("ok", 3, 2)))
        await client.create(HELLO)
    finally:
        instrumentor.uninstrument()

    (root,) = telemetry.trees()
    assert_governed(root)


async def test_an_enclosing_cycles_reservation_keeps_its_context(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    from runcycles import cycles, get_cycles_context

    client = budgeted(authority, instrumented_telemetry, replay(reply("ok", 3, 2)))
    seen: list[object] = []

    @cycles(estimate=1_000_000, action_kind="workflow", action_name="outer", client=authority.client())  # type: ignore[untyped-decorator]
    async def outer() -> None:
        before = get_cycles_context()
        await client.create(HELLO)
        seen.extend([before, get_cycles_context()])

    await outer()

    assert seen[0] is not None and seen[1] is seen[0]
    assert len(authority.assert_settled().reservations) == 2


async def test_a_cancellation_arriving_with_the_reserve_answer_still_cancels(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    """The caller is cancelled in the instant the reserve answer lands (where asyncio.wait_for drops it)."""
    cycles_client = AiohttpCyclesClient(authority.server.config(authority.key))  # used as given
    inner = replay("never sent")
    client = budgeted(authority, instrumented_telemetry, inner, cycles_client=cycles_client)
    answer_reserve = cycles_client.create_reservation
    caller: asyncio.Task[Any] | None = None

    async def reserve_then_cancel_the_caller(*args: Any, **kwargs: Any) -> Any:
        response = await answer_reserve(*args, **kwargs)
        assert caller is not None
        caller.cancel()
        return response

    cycles_client.create_reservation = reserve_then_cancel_the_caller  # type: ignore[method-assign]
    caller = asyncio.ensure_future(client.create(HELLO))
    with pytest.raises(asyncio.CancelledError):
        await caller

    snap = authority.assert_settled()
    assert [r.status for r in snap.reservations] == ["RELEASED"]
    assert (instrumented_telemetry.span("cycles.reservation").attributes or {})[
        "error.type"
    ] == "CancelledError"
    assert instrumented_telemetry.spans("chat gpt-4o") == []  # the model was never asked


@pytest.mark.parametrize("code", ["ACTION_QUOTA_EXCEEDED", "ACTION_KIND_DENIED", "ACTION_KIND_NOT_ALLOWED"])
async def test_the_protocol_extensions_denial_codes_are_denials_with_their_deny_detail(
    authority: Authority, instrumented_telemetry: TelemetryCapture, code: str
) -> None:
    detail = {"blocked_by_scope": "tenant:acme", "suggested_fix": "raise the quota", "budget_remaining": 0}
    authority.server.faults.fail(
        "reserve", 409, error=code, message="not allowed", details={"deny_detail": detail}
    )
    client = budgeted(authority, instrumented_telemetry, replay("never sent"))

    with pytest.raises(CyclesProtocolError) as caught:
        await client.create(HELLO)

    assert caught.value.error_code == code
    assert "blocked_by_scope: tenant:acme" in str(caught.value) and "raise the quota" in str(caught.value)
    assert caught.value.details == {"deny_detail": detail}
    span = instrumented_telemetry.span("cycles.reservation")
    attrs = span.attributes or {}
    assert (attrs["cycles.decision"], attrs["cycles.reason"]) == ("DENY", code)
    assert attrs["cycles.deny.blocked_by_scope"] == "tenant:acme"
    assert attrs["cycles.deny.suggested_fix"] == "raise the quota"
    assert attrs["cycles.deny.budget_remaining"] == 0
    assert [e.name for e in span.events][:1] == ["cycles.denied"]
    assert (
        instrumented_telemetry.value(
            "cycles.client.reservations", cycles__decision="DENY", cycles__reason=code
        )
        == 1
    )
    assert authority.ledger().reservations == []


async def test_tokenizer_characters_never_asks_the_tokenizer(
    authority: Authority, instrumented_telemetry: TelemetryCapture
) -> None:
    inner = replay(reply("a", 1, 1))

    def must_not_count(*args: object, **kwargs: object) -> int:
        raise AssertionError("tokenizer='characters' asked the tokenizer")

    inner.count_tokens = must_not_count  # type: ignore[method-assign]
    client = budgeted(authority, instrumented_telemetry, inner, tokenizer="characters")

    await client.create(HELLO)

    attrs = instrumented_telemetry.span("cycles.reservation").attributes or {}
    assert attrs["cycles.estimate.source"] == "characters"


async def test_a_failing_tokenizer_is_tried_once_and_said_in_one_line_for_a_burst(
    authority: Authority, instrumented_telemetry: TelemetryCapture, caplog: pytest.LogCaptureFixture
) -> None:
    inner = replay(*[reply("a", 1, 1) for _ in range(8)])
    tries: list[int] = []

    def offline(*args: object, **kwargs: object) -> int:
        tries.append(1)
        raise ConnectionError("openaipublic.blob.core.windows.net: Name or service not known\nTraceback ...")

    inner.count_tokens = offline  # type: ignore[method-assign]
    client = budgeted(authority, instrumented_telemetry, inner)

    with caplog.at_level("WARNING", logger="cycles_otel.autogen.estimate"):
        await asyncio.gather(*(client.create(HELLO) for _ in range(8)))

    assert tries == [1]  # calls arriving during the first try count characters instead of trying too
    (record,) = [r for r in caplog.records if r.name == "cycles_otel.autogen.estimate"]
    assert "\n" not in record.getMessage() and "ConnectionError" in record.getMessage()
    sources = {
        (s.attributes or {})["cycles.estimate.source"]
        for s in instrumented_telemetry.spans("cycles.reservation")
    }
    assert sources == {"characters"}
