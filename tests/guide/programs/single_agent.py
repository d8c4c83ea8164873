"""The guide's "Single agent" section, with its one class renamed."""
# ruff: noqa: I001  (the guide's code as it prints it)

import asyncio
from autogen_agentchat.agents import AssistantAgent
from autogen_ext.models.openai import OpenAIChatCompletionClient
from runcycles import CyclesClient, CyclesConfig, BudgetExceededError

# The guide's CyclesBudgetClient class (its "Budget-gated model client" section) is replaced by:
from cycles_otel.autogen import BudgetedChatCompletionClient

cycles_client = CyclesClient(CyclesConfig.from_env())
inner = OpenAIChatCompletionClient(model="gpt-4o")
model = BudgetedChatCompletionClient(
    inner=inner,
    cycles_client=cycles_client,
    tenant="acme",
    agent="support-bot",
)
# The guide names the agent "support-bot": AutoGen 0.7.5 takes Python identifiers only.
agent = AssistantAgent("support_bot", model_client=model)


async def main():
    try:
        result = await agent.run(task="Explain budget governance for AI agents.")
        print(result.messages[-1].content)
    except BudgetExceededError:
        print("Budget exhausted.")
    finally:
        await model.close()


asyncio.run(main())
