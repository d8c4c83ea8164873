"""The guide's "Swarm teams with budget governance" section, on the shared model client of its teams."""
# ruff: noqa: E402, F704, F821, I001  (the guide's code as it prints it: one section)

# From the "Per-agent budget scoping in teams" section: the shared model client.
inner = OpenAIChatCompletionClient(model="gpt-4o")

# The "Swarm teams with budget governance" section.
from autogen_agentchat.teams import Swarm
from autogen_agentchat.conditions import MaxMessageTermination

reviewer = AssistantAgent(
    "reviewer",
    model_client=BudgetedChatCompletionClient(
        inner=inner,
        cycles_client=cycles_client,
        tenant="acme",
        agent="reviewer",
    ),
    handoffs=["approver"],
    system_message="Review budgets. Hand off to approver when ready.",
)
approver = AssistantAgent(
    "approver",
    model_client=BudgetedChatCompletionClient(
        inner=inner,
        cycles_client=cycles_client,
        tenant="acme",
        agent="approver",
    ),
    handoffs=["reviewer"],
    system_message="Approve or reject. Hand back to reviewer if issues found.",
)
team = Swarm(
    participants=[reviewer, approver],
    termination_condition=MaxMessageTermination(max_messages=10),
)
result = await team.run(task="Review this budget proposal: ...")
