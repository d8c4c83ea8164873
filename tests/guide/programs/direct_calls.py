"""The guide's client of its "Single agent" section called directly: ``create()`` and ``create_stream()``.

The guide shows no direct call; these are the two methods its ``CyclesBudgetClient`` defines (its
``create_stream`` passes streams through ungoverned).
"""
# ruff: noqa: E402, F401, F704, I001  (the guide's code as it prints it)

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

from autogen_core.models import UserMessage

messages = [UserMessage(content="What is budget authority?", source="user")]
result = await model.create(messages)
chunks = [chunk async for chunk in model.create_stream(messages)]
await model.close()
