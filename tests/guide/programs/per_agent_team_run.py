"""The guide's "Per-agent budget scoping in teams" section: its run."""
# ruff: noqa: F704, F821  (the guide's code as it prints it: one section)

try:
    result = await team.run(task="Analyze AI safety trends for Q4.")
    print(result.messages[-1].content)
except BudgetExceededError:
    print("Team stopped — budget exhausted.")
