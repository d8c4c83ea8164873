"""The real OpenAIChatCompletionClient against FakeOpenAI: exact usage, streams, offline tokenizer, config."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import ComponentModel
from autogen_core.models import ChatCompletionClient, CreateResult, UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient

from cycles_otel.autogen import BudgetedChatCompletionClient
from cycles_otel.autogen import estimate as estimate_module
from cycles_otel.testing.fake_openai import FakeOpenAI
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.budgeted import Authority, budgeted, cost, final_text
from tests.support.waiting import PATIENCE_S

HELLO = [UserMessage(content="What is budget authority?", source="user")]
SECRET = "sk-test-never-dump-me"


def openai(api: FakeOpenAI, **options: Any) -> OpenAIChatCompletionClient:
    return OpenAIChatCompletionClient(model="gpt-4o", base_url=api.base_url, api_key=SECRET, **options)


def answered_usage(api: FakeOpenAI) -> list[tuple[int, int]]:
    return [(r.usage["prompt_tokens"], r.usage["completion_tokens"]) for r in api.requests if r.usage]


async def test_create_charges_exactly_the_endpoints_usage(
    authority: Authority, instrumented_telemetry: TelemetryCapture, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(["Budget authority decides who may spend."])
    client = budgeted(authority, instrumented_telemetry, openai(fake_openai), max_output_tokens=200)

    result = await client.create(HELLO)

    ((prompt, completion),) = answered_usage(fake_openai)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (prompt, completion)
    assert authority.assert_settled().scopes["tenant:acme"].spent == cost(prompt, completion)
    assert fake_openai.requests[0].body["max_tokens"] == 200  # the estimate's cap is enforced
    chat = instrumented_telemetry.span("chat gpt-4o").attributes or {}
    assert (chat["gen_ai.usage.input_tokens"], chat["gen_ai.usage.output_tokens"]) == (prompt, completion)


@pytest.mark.parametrize("transport_name", ["aiohttp", "httpx"])
async def test_a_stream_is_reserved_before_its_first_chunk_and_charged_its_exact_usage_after_it(
    authority: Authority,
    instrumented_telemetry: TelemetryCapture,
    fake_openai: FakeOpenAI,
    transport_name: str,
) -> None:
    fake_openai.script(["Streams are governed too, chunk by chunk."])
    client = budgeted(authority, instrumented_telemetry, openai(fake_openai), transport=transport_name)
    held_while_streaming: list[int] = []

    chunks = []
    async for item in client.create_stream(HELLO):
        held_while_streaming.append(authority.ledger().count(status="ACTIVE"))
        chunks.append(item)

    assert isinstance(chunks[-1], CreateResult) and len(chunks) > 2
    assert set(held_while_streaming) == {1}  # reserved before the first chunk, settled after the last
    assert fake_openai.requests[0].body["stream_options"] == {"include_usage": True}
    ((prompt, completion),) = answered_usage(fake_openai)
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (prompt, completion)
    snap = authority.assert_settled()
    assert [(r.status, r.charged) for r in snap.reservations] == [("COMMITTED", cost(prompt, completion))]
    (root,) = instrumented_telemetry.trees()
    assert root.names() == ["cycles.reserve", "chat gpt-4o", "cycles.commit"]
    assert (root.span.attributes or {})["cycles.actual.source"] == "usage"
    await client.close()


async def test_a_streaming_assistant_agent_is_governed_with_real_usage(
    authority: Authority, instrumented_telemetry: TelemetryCapture, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(["Every streamed call is reserved first."])
    client = budgeted(authority, instrumented_telemetry, openai(fake_openai), agent="support_bot")
    agent = AssistantAgent("support_bot", model_client=client, model_client_stream=True)

    result = await agent.run(task="Explain budget governance.")

    assert final_text(result) == "Every streamed call is reserved first."
    ((prompt, completion),) = answered_usage(fake_openai)
    snap = authority.assert_settled()
    assert [(r.status, r.charged) for r in snap.reservations] == [("COMMITTED", cost(prompt, completion))]
    assert snap.reservations[0].subject["agent"] == "support_bot"


async def test_offline_the_tokenizer_is_replaced_by_a_character_count(
    authority: Authority,
    instrumented_telemetry: TelemetryCapture,
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inner = openai(fake_openai)
    hung: list[bool] = []
    unreachable = threading.Event()  # set once the test is done: the download never comes back before

    def downloading(*args: object, **kwargs: object) -> int:
        hung.append(True)
        unreachable.wait(PATIENCE_S)  # tiktoken fetching its BPE file from an unreachable host
        return 0

    monkeypatch.setattr(inner, "count_tokens", downloading)
    monkeypatch.setattr(estimate_module, "TOKENIZER_TIMEOUT_S", 0.2)
    fake_openai.script(["one", "two"])
    client = budgeted(authority, instrumented_telemetry, inner)

    await client.create(HELLO)
    await client.create(HELLO)

    assert hung == [True]  # tried once, then never again
    sources = [
        (s.attributes or {})["cycles.estimate.source"]
        for s in instrumented_telemetry.spans("cycles.reservation")
    ]
    assert sources == ["characters", "characters"]
    authority.assert_settled()
    unreachable.set()


def _dumped_text(component: ComponentModel) -> str:
    return json.dumps(component.model_dump(mode="json"))


async def test_dump_and_load_round_trip_without_secrets(
    authority: Authority,
    instrumented_telemetry: TelemetryCapture,
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = budgeted(
        authority,
        instrumented_telemetry,
        openai(fake_openai),
        tenant="acme",
        workflow="research",
        estimate_amount=3_000_000,
    )
    agent = AssistantAgent("researcher", model_client=client)
    team = RoundRobinGroupChat([agent], termination_condition=MaxMessageTermination(2))

    dumped = {
        "client": client.dump_component(),
        "agent": agent.dump_component(),
        "team": team.dump_component(),
    }

    for name, component in dumped.items():
        text = _dumped_text(component)
        assert SECRET not in text and authority.key not in text, name
        assert "cycles_otel.autogen.BudgetedChatCompletionClient" in text, name
    assert dumped["client"].config["base_url"] == authority.server.base_url
    assert dumped["client"].config["workflow"] == "research"

    monkeypatch.setenv("CYCLES_API_KEY", authority.key)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    loaded = ChatCompletionClient.load_component(dumped["client"])
    assert isinstance(loaded, BudgetedChatCompletionClient)
    assert loaded.dump_component() == dumped["client"]
    loaded_agent = AssistantAgent.load_component(dumped["agent"])
    loaded_team = RoundRobinGroupChat.load_component(dumped["team"])
    assert isinstance(loaded_agent._model_client, BudgetedChatCompletionClient)

    fake_openai.script(["Loaded and governed."])
    result = await loaded_team.run(task="Go.")
    assert final_text(result) == "Loaded and governed."
    snap = authority.assert_settled()
    assert [(r.subject["workflow"], r.reserved) for r in snap.reservations] == [("research", 3_000_000)]


def test_loading_without_the_cycles_key_names_the_variable(
    authority: Authority,
    telemetry: TelemetryCapture,
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dumped = budgeted(authority, telemetry, openai(fake_openai), instrument_protocol=False).dump_component()
    monkeypatch.delenv("CYCLES_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    with pytest.raises(ValueError, match="CYCLES_API_KEY"):
        ChatCompletionClient.load_component(dumped)
