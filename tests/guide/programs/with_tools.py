"""The guide's "With tools" section, on the client of its "Single agent" section, one class renamed."""
# ruff: noqa: E402, F401, F704, F811, I001  (the guide's code as it prints it)

# From the guide's "Single agent" section: its imports and its client.
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

# The "With tools" section.
from autogen_core.tools import FunctionTool
from autogen_agentchat.agents import AssistantAgent


async def get_weather(location: str) -> str:
    """Get current weather for a location."""
    return f"72°F and sunny in {location}"


weather_tool = FunctionTool(get_weather, description="Get current weather")
agent = AssistantAgent(
    "weather_agent",  # the guide: "weather-agent"; AutoGen 0.7.5 takes Python identifiers only
    model_client=model,
    tools=[weather_tool],
    system_message="Use the weather tool to answer questions.",
)
result = await agent.run(task="What's the weather in NYC?")
