"""The guide's "Guarding entire workflows with the decorator" section."""
# ruff: noqa: F704, F821, I001  (the guide's code as it prints it: one section)

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
