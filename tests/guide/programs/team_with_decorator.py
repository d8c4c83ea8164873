"""The guide's two approaches combined, as it suggests: its per-agent team, run by its ``@cycles`` pipeline.

The team is the "Per-agent budget scoping in teams" section's (its run left to the pipeline), the
pipeline the "Guarding entire workflows with the decorator" section's; one class renamed.
"""
# ruff: noqa: E402, F704, F811, I001  (the guide's code as it prints it)

# From the guide's "Single agent" section: its imports and its Cycles client.
from autogen_agentchat.agents import AssistantAgent
from autogen_ext.models.openai import OpenAIChatCompletionClient
from runcycles import CyclesClient, CyclesConfig, BudgetExceededError

# The guide's CyclesBudgetClient class (its "Budget-gated model client" section) is replaced by:
from cycles_otel.autogen import BudgetedChatCompletionClient

cycles_client = CyclesClient(CyclesConfig.from_env())

# The "Per-agent budget scoping in teams" section, up to its run.
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_agentchat.conditions import MaxMessageTermination

inner = OpenAIChatCompletionClient(model="gpt-4o")
researcher_model = BudgetedChatCompletionClient(
    inner=inner,
    cycles_client=cycles_client,
    tenant="acme",
    workflow="research-pipeline",
    agent="researcher",
    estimate_amount=3_000_000,
)
writer_model = BudgetedChatCompletionClient(
    inner=inner,
    cycles_client=cycles_client,
    tenant="acme",
    workflow="research-pipeline",
    agent="writer",
    estimate_amount=2_000_000,
)
researcher = AssistantAgent(
    "researcher",
    model_client=researcher_model,
    system_message="Research topics thoroughly and provide detailed findings.",
)
writer = AssistantAgent(
    "writer",
    model_client=writer_model,
    system_message="Write clear, concise reports from research findings.",
)
team = RoundRobinGroupChat(
    participants=[researcher, writer],
    termination_condition=MaxMessageTermination(max_messages=6),
)

# The "Guarding entire workflows with the decorator" section.
from runcycles import cycles, set_default_client, BudgetExceededError

set_default_client(CyclesClient(CyclesConfig.from_env()))


@cycles(estimate=10_000_000, action_kind="llm.completion", action_name="research-pipeline")
async def run_research_pipeline(topic: str) -> str:
    result = await team.run(task=f"Research and write a report on: {topic}")
    return result.messages[-1].content


try:
    report = await run_research_pipeline("quantum computing")
    print(report)
except BudgetExceededError:
    print("Pipeline budget exhausted.")
