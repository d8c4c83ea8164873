"""The guide's "With tools" section."""
# ruff: noqa: F704, F821, I001  (the guide's code as it prints it: one section)

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
