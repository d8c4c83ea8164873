"""The AutoGen layer: BudgetedChatCompletionClient, governed tools, teams, shadow mode, late settlement."""
