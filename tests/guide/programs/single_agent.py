"""The guide's "Single agent" section, the rest: its agent and its run."""
# ruff: noqa: F821  (the guide's code as it prints it: one section)

import asyncio

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
