"""The guide's "60-Second Quick Start", exactly as printed."""
# ruff: noqa: I001  (the guide's code as it prints it)

import asyncio
from autogen_agentchat.agents import AssistantAgent
from autogen_ext.models.openai import OpenAIChatCompletionClient
from runcycles import CyclesClient, CyclesConfig, cycles, set_default_client

set_default_client(CyclesClient(CyclesConfig.from_env()))
model_client = OpenAIChatCompletionClient(model="gpt-4o")


@cycles(estimate=2_000_000, action_kind="llm.completion", action_name="gpt-4o")
async def ask(prompt: str) -> str:
    agent = AssistantAgent("assistant", model_client=model_client)
    result = await agent.run(task=prompt)
    await model_client.close()
    return result.messages[-1].content


print(asyncio.run(ask("What is budget authority?")))
