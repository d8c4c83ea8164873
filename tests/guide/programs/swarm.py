"""The guide's "Swarm teams with budget governance" section, with its one class renamed."""
# ruff: noqa: E402, F401, F704, I001  (the guide's code as it prints it)

# From the guide's "Single agent" section: its imports and its Cycles client.
from autogen_agentchat.agents import AssistantAgent
from autogen_ext.models.openai import OpenAIChatCompletionClient
from runcycles import CyclesClient, CyclesConfig, BudgetExceededError

# The guide's CyclesBudgetClient class (its "Budget-gated model client" section) is replaced by:
from cycles_otel.autogen import BudgetedChatCompletionClient

cycles_client = CyclesClient(CyclesConfig.from_env())
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
