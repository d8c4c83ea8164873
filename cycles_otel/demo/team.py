"""The AutoGen side: a researcher with a real tool and a writer on one governed model client."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient
from runcycles import AsyncCyclesClient, CyclesConfig, CyclesProtocolError  # type: ignore[import-untyped]

from cycles_otel.autogen import BudgetedChatCompletionClient, BudgetedTool
from cycles_otel.demo import scenario


class _ExpectedBudgetStop(logging.Filter):
    """Drops AutoGen's tracebacks of the budget stop the demo expects (it reports that stop itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        expected = isinstance(error, CyclesProtocolError) or (
            isinstance(error, ValueError)
            and "GroupChatError" in str(error)  # AutoGen's echo of the same stop
        )
        return not expected


@dataclass(frozen=True)
class TeamOutcome:
    """How the team run ended: ``error`` is the typed runcycles error of a budget stop."""

    stop_reason: str
    error: CyclesProtocolError | None = None

    @property
    def budget_stop(self) -> bool:
        return self.error is not None

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else type(self.error).__name__

    @property
    def error_code(self) -> str | None:
        return None if self.error is None else self.error.error_code


async def run_team(
    *,
    model_base_url: str | None,
    model_api_key: str,
    cycles_config: CyclesConfig,
    tenant: str,
    estimate_amount: int,
    max_messages: int,
) -> TeamOutcome:
    """Run the research team until a budget stop (or ``max_messages``) and say which it was."""
    inner = (
        OpenAIChatCompletionClient(model=scenario.MODEL, api_key=model_api_key, base_url=model_base_url)
        if model_base_url
        else OpenAIChatCompletionClient(model=scenario.MODEL, api_key=model_api_key)  # OpenAI itself
    )
    # One governed client for the whole team: with agent=None each call is charged to the AutoGen
    # agent that makes it, so researcher and writer draw on their own budgets.
    governed = BudgetedChatCompletionClient(
        inner,
        AsyncCyclesClient(cycles_config),
        tenant=tenant,
        workflow=scenario.WORKFLOW,
        estimate_amount=estimate_amount,
    )
    # The search tool costs money too: each search is reserved and charged to the agent running it.
    search = BudgetedTool(
        FunctionTool(scenario.search_papers, description="Search recent papers on a topic."),
        AsyncCyclesClient(cycles_config),
        tenant=tenant,
        workflow=scenario.WORKFLOW,
        estimate_amount=scenario.SEARCH_PRICE,
        actual=scenario.SEARCH_PRICE,
        on_denied="raise",
    )
    researcher = AssistantAgent(
        scenario.RESEARCHER,
        model_client=governed,
        tools=[search],
        reflect_on_tool_use=True,
        system_message="You research topics: search papers with your tool, then summarise the findings.",
    )
    writer = AssistantAgent(
        scenario.WRITER,
        model_client=governed,
        system_message="You turn the researcher's findings into a short, clear brief.",
    )
    team = RoundRobinGroupChat(
        [researcher, writer], termination_condition=MaxMessageTermination(max_messages)
    )
    quiet, runtime_logger = _ExpectedBudgetStop(), logging.getLogger("autogen_core")
    runtime_logger.addFilter(quiet)
    try:
        result = await team.run(task=scenario.TASK)
    except CyclesProtocolError as exc:  # team.run() raises the governed call's typed error
        return TeamOutcome(stop_reason=f"{type(exc).__name__} ({exc.error_code}): {exc}", error=exc)
    finally:
        runtime_logger.removeFilter(quiet)
        await governed.close()
    return TeamOutcome(stop_reason=result.stop_reason or "the team ended without a stop reason")
