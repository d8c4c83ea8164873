"""Team stop on budget denial: the typed error back from ``team.run()``, or a ``TaskResult`` that says why."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from runcycles import CyclesProtocolError  # type: ignore[import-untyped]

from cycles_otel.autogen.attribution import CallingAgent

BUDGET_STOP_PREFIX: Final = "Budget stop:"
_WRAPPED_MARK: Final = "_cycles_otel_stop_on_budget"
TeamT = TypeVar("TeamT")


@dataclass
class BudgetRun:
    """One team run: the first Cycles error a governed call raised inside it."""

    denial: CyclesProtocolError | None = None

    def record(self, error: CyclesProtocolError) -> None:
        if self.denial is None:
            self.denial = error


# Runtime tasks copy the context of the code that starts the runtime (inside run_stream), so a run
# set here is visible in every governed call of the team. A runtime started earlier by the app did
# not copy it: those calls find the run through the team id, which is every member's agent key.
_current_run: contextvars.ContextVar[BudgetRun | None] = contextvars.ContextVar(
    "cycles_otel_budget_run", default=None
)
_runs_by_team: dict[str, BudgetRun] = {}


def record_denial(error: CyclesProtocolError, agent: CallingAgent | None) -> None:
    """Called by the client when a reservation fails inside a run wrapped by :func:`stop_on_budget`."""
    run = _current_run.get() or (_runs_by_team.get(agent.key) if agent is not None else None)
    if run is not None:
        run.record(error)


def budget_stop_reason(error: CyclesProtocolError) -> str:
    """The ``TaskResult.stop_reason`` of a run stopped by ``error``."""
    parts = [f"{BUDGET_STOP_PREFIX} {error.error_code or type(error).__name__}"]
    if error.request_id:
        parts.append(f"(request {error.request_id})")
    return " ".join(parts) + f": {error}"


def is_budget_stop(result: Any) -> bool:
    """Whether a ``TaskResult`` ended because the budget authority refused a call."""
    reason = getattr(result, "stop_reason", None)
    return isinstance(reason, str) and reason.startswith(BUDGET_STOP_PREFIX)


def stop_on_budget(team: TeamT, *, raise_error: bool = True) -> TeamT:
    """Make ``team`` end cleanly on a budget denial; returns the same team.

    AutoGen reports an error inside a team as ``RuntimeError("<Type>: <message>")``. After this
    one line, ``team.run()`` / ``team.run_stream()`` raise the original runcycles error instead
    (``BudgetExceededError``, ``DebtOutstandingError``, ...; chained to the ``RuntimeError``) — or,
    with ``raise_error=False``, end with a ``TaskResult`` of the messages so far whose
    ``stop_reason`` starts with ``"Budget stop:"`` (test it with :func:`is_budget_stop`).
    """
    if getattr(team, _WRAPPED_MARK, None) is not None:
        object.__setattr__(team, _WRAPPED_MARK, raise_error)
        return team
    from autogen_agentchat.base import TaskResult
    from autogen_agentchat.messages import ModelClientStreamingChunkEvent

    original: Callable[..., AsyncGenerator[Any, None]] = team.run_stream  # type: ignore[attr-defined]

    async def run_stream(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        run = BudgetRun()
        token = _current_run.set(run)
        team_id = getattr(team, "_team_id", None)
        if isinstance(team_id, str):
            _runs_by_team[team_id] = run
        messages: list[Any] = []
        try:
            async for item in original(*args, **kwargs):
                if not isinstance(item, (TaskResult, ModelClientStreamingChunkEvent)):
                    messages.append(item)
                yield item
        except RuntimeError as exc:
            denial = run.denial
            if denial is None or not str(exc).startswith(f"{type(denial).__name__}:"):
                raise
            if getattr(team, _WRAPPED_MARK):
                raise denial from exc
            yield TaskResult(messages=messages, stop_reason=budget_stop_reason(denial))
        finally:
            if isinstance(team_id, str) and _runs_by_team.get(team_id) is run:
                del _runs_by_team[team_id]
            with contextlib.suppress(ValueError):  # finished from another context, which never saw the run
                _current_run.reset(token)

    object.__setattr__(team, "run_stream", run_stream)
    object.__setattr__(team, _WRAPPED_MARK, raise_error)
    return team
