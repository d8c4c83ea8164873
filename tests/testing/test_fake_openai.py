"""FakeOpenAI: the real autogen-ext OpenAIChatCompletionClient and AssistantAgent run against it offline."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage, ToolCallExecutionEvent, ToolCallRequestEvent
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, LLMMessage, SystemMessage, UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient

from cycles_otel.testing.fake_openai import (
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    FakeOpenAI,
    ScriptedReply,
    count_completion_tokens,
)

MESSAGES: list[LLMMessage] = [
    SystemMessage(content="You are terse."),
    UserMessage(content="What is the budget left for tenant acme?", source="user"),
]


@pytest.fixture
def endpoint() -> Iterator[FakeOpenAI]:
    """A fake OpenAI endpoint whose generated replies follow seed 7."""
    with FakeOpenAI(seed=7) as running:
        yield running


@pytest.fixture
async def openai_client(endpoint: FakeOpenAI) -> AsyncIterator[OpenAIChatCompletionClient]:
    model_client = OpenAIChatCompletionClient(model="gpt-4o", base_url=endpoint.base_url, api_key="sk-test")
    yield model_client
    await model_client.close()


def _usage_of(result: CreateResult) -> dict[str, int]:
    return {"prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens}


def _reported(endpoint: FakeOpenAI, index: int = -1) -> dict[str, int]:
    usage = endpoint.requests[index].usage
    assert usage is not None
    return {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"]}


async def _stream(model_client: OpenAIChatCompletionClient, **kwargs: Any) -> tuple[list[str], CreateResult]:
    chunks: list[str] = []
    async for item in model_client.create_stream(MESSAGES, **kwargs):
        if isinstance(item, CreateResult):
            return chunks, item
        chunks.append(item)
    raise AssertionError("create_stream ended without a CreateResult")


async def test_create_returns_the_default_reply_with_the_endpoints_exact_usage(
    endpoint: FakeOpenAI, openai_client: OpenAIChatCompletionClient
) -> None:
    result = await openai_client.create(MESSAGES)

    request = endpoint.requests[-1]
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body["model"] == "gpt-4o" and request.body["stream"] is False
    assert isinstance(result.content, str) and result.content
    assert result.finish_reason == "stop" and result.cached is False
    assert _usage_of(result) == _reported(endpoint)
    # The documented rule, by hand: priming + per-message overhead + words + the user message's name.
    words = sum(len(str(message.content).split()) for message in MESSAGES)
    expected_prompt = REPLY_PRIMING + len(MESSAGES) * MESSAGE_OVERHEAD + words + len(["user"])
    assert result.usage.prompt_tokens == expected_prompt == endpoint.count_prompt_tokens(request.body)
    assert (
        result.usage.completion_tokens
        == count_completion_tokens(result.content)
        == len(result.content.split())
    )


async def test_default_reply_is_deterministic_per_seed_and_prompt(
    openai_client: OpenAIChatCompletionClient,
) -> None:
    first, again = await openai_client.create(MESSAGES), await openai_client.create(MESSAGES)
    other_prompt = await openai_client.create([UserMessage(content="Something else entirely", source="user")])
    with FakeOpenAI(seed=8) as other_seed:
        other_client = OpenAIChatCompletionClient(
            model="gpt-4o", base_url=other_seed.base_url, api_key="sk-test"
        )
        reseeded = await other_client.create(MESSAGES)
        await other_client.close()
    assert first.content == again.content
    assert other_prompt.content != first.content and reseeded.content != first.content


async def test_scripted_replies_are_used_in_order_before_the_default(
    endpoint: FakeOpenAI, openai_client: OpenAIChatCompletionClient
) -> None:
    endpoint.script(["first reply", ScriptedReply(content="second reply here")])
    results = [await openai_client.create(MESSAGES) for _ in range(3)]
    assert [result.content for result in results[:2]] == ["first reply", "second reply here"]
    assert results[2].content not in ("first reply", "second reply here")
    assert endpoint.pending_script == 0
    assert [result.usage.completion_tokens for result in results[:2]] == [2, 3]


@pytest.mark.parametrize("how", ["flag", "client stream_options"])
async def test_stream_with_include_usage_reports_the_endpoints_exact_usage(
    endpoint: FakeOpenAI, how: str
) -> None:
    if how == "flag":
        model_client = OpenAIChatCompletionClient(
            model="gpt-4o", base_url=endpoint.base_url, api_key="sk-test"
        )
        chunks, result = await _stream(model_client, include_usage=True)
    else:
        model_client = OpenAIChatCompletionClient(
            model="gpt-4o",
            base_url=endpoint.base_url,
            api_key="sk-test",
            stream_options={"include_usage": True},
        )
        chunks, result = await _stream(model_client)
    await model_client.close()

    body = endpoint.requests[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert len(chunks) > 1 and "".join(chunks) == result.content
    assert _usage_of(result) == _reported(endpoint)
    assert result.usage.prompt_tokens == endpoint.count_prompt_tokens(body) > 0
    assert result.usage.completion_tokens == len(str(result.content).split()) > 0


async def test_stream_without_include_usage_sends_no_usage(
    endpoint: FakeOpenAI, openai_client: OpenAIChatCompletionClient
) -> None:
    _, result = await _stream(openai_client)
    assert "stream_options" not in endpoint.requests[-1].body
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (0, 0)
    assert result.content


def _sse_events(endpoint: FakeOpenAI, body: dict[str, Any]) -> list[str]:
    with httpx.Client() as http:
        response = http.post(
            f"{endpoint.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer sk-test"}
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    return [line[len("data: ") :] for line in response.text.split("\n\n") if line.startswith("data: ")]


@pytest.mark.parametrize("include_usage", [True, False])
def test_sse_stream_matches_openais_shape(endpoint: FakeOpenAI, include_usage: bool) -> None:
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "stream": True,
        "messages": [{"role": "user", "content": "hi there"}],
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    events = _sse_events(endpoint, body)

    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    with_choices = [chunk for chunk in chunks if chunk["choices"]]
    assert with_choices[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [chunk["choices"][0]["finish_reason"] for chunk in with_choices][-1] == "stop"
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in with_choices)
    if include_usage:
        assert all("usage" in chunk and chunk["usage"] is None for chunk in with_choices)
        final = chunks[-1]
        assert final["choices"] == [] and final["usage"] == endpoint.requests[-1].usage
        assert final["usage"]["completion_tokens"] == len(text.split())
        assert final["usage"]["prompt_tokens"] == endpoint.count_prompt_tokens(body)
    else:
        assert all("usage" not in chunk for chunk in chunks) and chunks == with_choices


@pytest.mark.parametrize("stream", [False, True])
async def test_scripted_tool_calls_reach_the_client_as_function_calls(
    endpoint: FakeOpenAI, openai_client: OpenAIChatCompletionClient, stream: bool
) -> None:
    endpoint.script(
        [
            ScriptedReply(
                tool_calls=[("get_weather", {"city": "Paris"}), ("get_time", {"zone": "Europe/Paris"})]
            )
        ]
    )
    result = (
        (await _stream(openai_client, include_usage=True))[1]
        if stream
        else await openai_client.create(MESSAGES)
    )

    assert result.finish_reason == "function_calls"
    assert isinstance(result.content, list)
    calls = [
        (call.name, json.loads(call.arguments)) for call in result.content if isinstance(call, FunctionCall)
    ]
    assert calls == [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "Europe/Paris"})]
    assert len({call.id for call in result.content if isinstance(call, FunctionCall)}) == 2
    assert _usage_of(result) == _reported(endpoint)
    expected = count_completion_tokens(
        None, [("get_weather", '{"city": "Paris"}'), ("get_time", '{"zone": "Europe/Paris"}')]
    )
    assert result.usage.completion_tokens == expected


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


async def test_tool_call_round_trip_through_a_real_assistant_agent(
    endpoint: FakeOpenAI, openai_client: OpenAIChatCompletionClient
) -> None:
    endpoint.script([ScriptedReply(tool_calls=[("get_weather", {"city": "Paris"})]), "It is sunny in Paris."])
    agent = AssistantAgent(
        "forecaster", model_client=openai_client, tools=[get_weather], reflect_on_tool_use=True
    )

    result = await agent.run(task="Weather in Paris?")

    kinds = [type(message) for message in result.messages]
    assert kinds == [TextMessage, ToolCallRequestEvent, ToolCallExecutionEvent, TextMessage]
    assert result.messages[-1].to_text() == "It is sunny in Paris."
    first, second = (request.body for request in endpoint.requests)
    assert [tool["function"]["name"] for tool in first["tools"]] == ["get_weather"]
    [call] = next(message for message in second["messages"] if message.get("tool_calls"))["tool_calls"]
    [tool_result] = [message for message in second["messages"] if message["role"] == "tool"]
    assert tool_result == {"role": "tool", "tool_call_id": call["id"], "content": "Sunny in Paris"}
    assert endpoint.requests[1].usage is not None
    assert endpoint.requests[1].usage["prompt_tokens"] == endpoint.count_prompt_tokens(second)


@pytest.mark.parametrize("cap_field", ["max_tokens", "max_completion_tokens"])
async def test_token_caps_truncate_the_reply(endpoint: FakeOpenAI, cap_field: str) -> None:
    endpoint.script(["one two three four five six"])
    cap: dict[str, Any] = {cap_field: 4}
    capped = OpenAIChatCompletionClient(model="gpt-4o", base_url=endpoint.base_url, api_key="sk-test", **cap)
    result = await capped.create(MESSAGES)
    await capped.close()
    assert endpoint.requests[-1].body[cap_field] == 4
    assert (result.content, result.finish_reason, result.usage.completion_tokens) == (
        "one two three four",
        "length",
        4,
    )


async def test_failures_follow_openais_error_shape_and_sdk_retries(endpoint: FakeOpenAI) -> None:
    retrying = OpenAIChatCompletionClient(
        model="gpt-4o", base_url=endpoint.base_url, api_key="sk-test", max_retries=2
    )
    endpoint.faults.fail_next(1, status=500)
    assert (await retrying.create(MESSAGES)).content  # the SDK retried past one 500
    assert [request.status for request in endpoint.requests] == [500, 200]
    await retrying.close()

    strict = OpenAIChatCompletionClient(
        model="gpt-4o", base_url=endpoint.base_url, api_key="sk-test", max_retries=0
    )
    endpoint.faults.fail_next(1, status=429, message="slow down")
    with pytest.raises(openai.RateLimitError) as raised:
        await strict.create(MESSAGES)
    assert raised.value.body == {
        "message": "slow down",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert raised.value.response.headers["retry-after-ms"] == "1"
    await strict.close()


async def test_a_cut_stream_surfaces_as_a_connection_error(endpoint: FakeOpenAI) -> None:
    strict = OpenAIChatCompletionClient(
        model="gpt-4o", base_url=endpoint.base_url, api_key="sk-test", max_retries=0
    )
    endpoint.faults.cut_stream_next(1, after_chunks=3)
    with pytest.raises(openai.APIConnectionError):
        await _stream(strict, include_usage=True)
    _, result = await _stream(strict, include_usage=True)  # the next request is healthy again
    assert result.usage.completion_tokens > 0
    await strict.close()


def test_other_paths_auth_and_bad_requests_answer_like_openai(endpoint: FakeOpenAI) -> None:
    auth = {"Authorization": "Bearer sk-test"}
    with httpx.Client(base_url=endpoint.base_url) as http:
        missing = http.post("/embeddings", json={}, headers=auth)
        no_key = http.post(
            "/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
        )
        stray = http.post(
            "/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream_options": {}},
            headers=auth,
        )
        no_messages = http.post("/chat/completions", json={"model": "gpt-4o"}, headers=auth)
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "message": "Invalid URL (POST /v1/embeddings)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    assert no_key.status_code == 401 and "API key" in no_key.json()["error"]["message"]
    assert (stray.status_code, stray.json()["error"]["param"]) == (400, "stream_options")
    assert (no_messages.status_code, no_messages.json()["error"]["param"]) == (400, "messages")
    assert all(response.headers["x-request-id"].startswith("req_") for response in (missing, no_key, stray))


def test_models_list_works_through_the_openai_sdk_and_a_configured_key_is_enforced() -> None:
    with FakeOpenAI(api_key="sk-right") as api:
        sdk = openai.OpenAI(base_url=api.base_url, api_key="sk-right")
        assert "gpt-4o" in [model.id for model in sdk.models.list()]
        wrong = openai.OpenAI(base_url=api.base_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_a_deeply_nested_body_is_a_400_and_the_endpoint_keeps_serving(endpoint: FakeOpenAI) -> None:
    """Python's json raises RecursionError, not ValueError, on 100,000 nested '[': still a 400."""
    auth = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
    with httpx.Client(base_url=endpoint.base_url) as http:
        nested = http.post("/chat/completions", content=b"[" * 100_000, headers=auth)
        assert nested.status_code == 400, nested.text
        assert nested.json()["error"]["message"] == "The request body is not valid JSON."
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
        assert http.post("/chat/completions", json=body, headers=auth).status_code == 200
