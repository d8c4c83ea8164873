"""The guide's model client called directly: ``create()`` and ``create_stream()``.

The guide shows no direct call; these are the two methods its ``CyclesBudgetClient`` defines (its
``create_stream`` passes streams through ungoverned).
"""
# ruff: noqa: F704, F821  (the guide's code as it prints it: one section)

from autogen_core.models import UserMessage

messages = [UserMessage(content="What is budget authority?", source="user")]
result = await model.create(messages)
chunks = [chunk async for chunk in model.create_stream(messages)]
await model.close()
