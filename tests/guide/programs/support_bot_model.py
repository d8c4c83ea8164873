"""The guide's "Single agent" section: its governed model client, one class renamed."""
# ruff: noqa: F821  (the guide's code as it prints it: one section)

inner = OpenAIChatCompletionClient(model="gpt-4o")
model = BudgetedChatCompletionClient(
    inner=inner,
    cycles_client=cycles_client,
    tenant="acme",
    agent="support-bot",
)
