"""Typed errors from ``team.run()``: a governed call's runcycles error, not AutoGen's ``RuntimeError`` text.

AutoGen reports an exception raised inside a team as ``RuntimeError("<Type>: <message>...")`` (the
participant's container publishes it serialised; the team raises it again as text). So the
guide's ``except BudgetExceededError`` around ``team.run()`` never matches. Once a
``BudgetedChatCompletionClient`` exists, every AutoGen team's ``run_stream`` (and so ``run``) is
wrapped, process-wide and once, the way an OpenTelemetry instrumentor wraps a library: each run
records the errors the governed calls inside it raise, and when the team fails with one of them,
the run raises that error again - a copy of the same type that is also a ``RuntimeError``, so code
catching AutoGen's error keeps working. Any other error of a team is untouched.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from runcycles import CyclesProtocolError  # type: ignore[import-untyped]

from cycles_otel.autogen.attribution import CallingAgent
from cycles_otel.autogen.reservation import is_denial

BUDGET_STOP_PREFIX: Final = "Budget stop:"
TYPED_TEAM_ERRORS_ENV: Final = "CYCLES_OTEL_TYPED_TEAM_ERRORS"
_STOP_MODE: Final = "_cycles_otel_stop_on_budget"
_WRAPPED: Final = "_cycles_otel_typed_errors"
TeamT = TypeVar("TeamT")


@dataclass
class BudgetRun:
    """One team run: the errors governed calls raised inside it, and the run around it, if nested."""

    parent: BudgetRun | None = None
    failures: list[Exception] = field(default_factory=list)
    stop: Exception | None = None
    """A denial that stops the run at its next governed model call (a tool's, with ``on_denied="raise"``)."""

    def record(self, error: Exception) -> None:
        run: BudgetRun | None = self
        while run is not None:  # a team inside a team's agent fails the outer team too
            run.failures.append(error)
            run = run.parent

    def raised_as(self, error: RuntimeError) -> Exception | None:
        """The recorded error AutoGen's ``RuntimeError("<Type>: <message>...")`` stands for, if any."""
        text = str(error)
        for failure in self.failures:
            if text.startswith(f"{type(failure).__name__}: {failure}"):
                return failure
        return None


# Runtime tasks copy the context of the code that starts the runtime (inside run_stream), so a run
# set here is visible in every governed call of the team. A runtime started earlier by the app did
# not copy it: those calls find the run through the team id, which is every member's agent key.
_current_run: contextvars.ContextVar[BudgetRun | None] = contextvars.ContextVar(
    "cycles_otel_budget_run", default=None
)
_runs_by_team: dict[str, BudgetRun] = {}


def _run_of(agent: CallingAgent | None) -> BudgetRun | None:
    return _current_run.get() or (_runs_by_team.get(agent.key) if agent is not None and agent.key else None)


def record_failure(error: Exception, agent: CallingAgent | None) -> None:
    """Called by the client with each error its governed call raises inside a team run."""
    run = _run_of(agent)
    if run is not None:
        run.record(error)


def stop_run(error: Exception, agent: CallingAgent | None) -> bool:
    """Stop the run ``agent`` belongs to at its next governed model call; False when there is no run."""
    run = _run_of(agent)
    if run is None:
        return False
    while run is not None:  # and every run around it
        if run.stop is None:
            run.stop = error
        run = run.parent
    return True


def pending_stop(agent: CallingAgent | None) -> Exception | None:
    """The denial that stopped the run ``agent`` belongs to, if one did."""
    run = _run_of(agent)
    return run.stop if run is not None else None


def budget_stop_reason(error: Exception) -> str:
    """The ``TaskResult.stop_reason`` of a run stopped by ``error``."""
    code = getattr(error, "error_code", None)
    parts = [f"{BUDGET_STOP_PREFIX} {code or type(error).__name__}"]
    request_id = getattr(error, "request_id", None)
    if request_id:
        parts.append(f"(request {request_id})")
    return " ".join(parts) + f": {error}"


def is_budget_stop(result: Any) -> bool:
    """Whether a ``TaskResult`` ended because the budget authority refused a call."""
    reason = getattr(result, "stop_reason", None)
    return isinstance(reason, str) and reason.startswith(BUDGET_STOP_PREFIX)


# --- the error a team raises ------------------------------------------------------------------
_team_error_types: dict[type[Exception], type[Exception]] = {}
_types_lock = threading.Lock()


def as_team_error(error: Exception, raised: RuntimeError) -> Exception:
    """A copy of ``error`` whose type is both ``type(error)`` and ``RuntimeError``, chained to ``raised``."""
    original = type(error)
    if isinstance(error, RuntimeError):
        return error
    with _types_lock:
        combined = _team_error_types.get(original)
        if combined is None:
            combined = _team_error_types[original] = type(
                original.__name__,
                (original, RuntimeError),
                {"__module__": original.__module__, "__qualname__": original.__qualname__},
            )
    copy = combined.__new__(combined)
    copy.__dict__.update(error.__dict__)
    copy.args = error.args
    copy.__cause__ = raised
    copy.__traceback__ = error.__traceback__
    return copy


async def _run_stream(
    team: Any, original: Callable[..., AsyncGenerator[Any, None]], *args: Any, **kwargs: Any
) -> AsyncGenerator[Any, None]:
    from autogen_agentchat.base import TaskResult
    from autogen_agentchat.messages import ModelClientStreamingChunkEvent

    run = BudgetRun(parent=_current_run.get())
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
        failure = run.raised_as(exc)
        if failure is None:
            raise
        if (
            getattr(team, _STOP_MODE, True) is False
            and isinstance(failure, CyclesProtocolError)
            and is_denial(failure)
        ):
            yield TaskResult(messages=messages, stop_reason=budget_stop_reason(failure))
            return
        raise as_team_error(failure, exc) from exc
    finally:
        if isinstance(team_id, str) and _runs_by_team.get(team_id) is run:
            del _runs_by_team[team_id]
        with contextlib.suppress(ValueError):  # finished from another context, which never saw the run
            _current_run.reset(token)


# --- installing the wrap ----------------------------------------------------------------------
_install_lock = threading.Lock()
_declined = False  # typed_team_errors(False) was called: automatic installs stay off


def typed_team_errors(enabled: bool = True) -> bool:
    """Wrap (or unwrap) every AutoGen team's ``run_stream`` so governed calls' errors come back typed.

    Idempotent and process-wide. ``BudgetedChatCompletionClient`` calls it when it is created;
    ``typed_team_errors(False)`` (or ``CYCLES_OTEL_TYPED_TEAM_ERRORS=false``) opts out for good,
    and teams then raise AutoGen's ``RuntimeError`` unless :func:`stop_on_budget` is applied.
    Returns whether the wrap is installed.
    """
    global _declined
    with _install_lock:
        if not enabled:
            _declined = True
            _unwrap()
            return False
        _declined = False
        return _wrap()


def install_on_first_client() -> None:
    """The automatic install, unless the application opted out."""
    if _declined or os.environ.get(TYPED_TEAM_ERRORS_ENV, "").strip().lower() in {"false", "0", "no", "off"}:
        return
    with _install_lock:
        if not _declined:
            _wrap()


async def _agent_run(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A single agent's ``run()``: a run of its own, so a tool denial can stop its next model call."""
    token = _current_run.set(BudgetRun(parent=_current_run.get()))
    try:
        return await original(*args, **kwargs)
    finally:
        with contextlib.suppress(ValueError):
            _current_run.reset(token)


async def _agent_run_stream(
    original: Callable[..., AsyncGenerator[Any, None]], *args: Any, **kwargs: Any
) -> AsyncGenerator[Any, None]:
    token = _current_run.set(BudgetRun(parent=_current_run.get()))
    try:
        async for item in original(*args, **kwargs):
            yield item
    finally:
        with contextlib.suppress(ValueError):
            _current_run.reset(token)


def _base_chat_agent() -> Any:
    try:
        from autogen_agentchat.agents import BaseChatAgent
    except ImportError:  # pragma: no cover - agentchat not installed
        return None
    return BaseChatAgent


def _base_group_chat() -> Any:
    try:
        from autogen_agentchat.teams import BaseGroupChat
    except ImportError:  # pragma: no cover - agentchat not installed: no teams to wrap
        return None
    return BaseGroupChat


def _wrap() -> bool:
    team, agent = _base_group_chat(), _base_chat_agent()
    if team is None or agent is None:
        return False
    if getattr(team.run_stream, _WRAPPED, False):
        return True
    team_run_stream, agent_run, agent_run_stream = team.run_stream, agent.run, agent.run_stream

    @functools.wraps(team_run_stream)
    def run_stream(self: Any, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        return _run_stream(self, team_run_stream.__get__(self), *args, **kwargs)

    @functools.wraps(agent_run)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _agent_run(agent_run.__get__(self), *args, **kwargs)

    @functools.wraps(agent_run_stream)
    def run_agent_stream(self: Any, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        return _agent_run_stream(agent_run_stream.__get__(self), *args, **kwargs)

    for owner, name, wrapper, original in (
        (team, "run_stream", run_stream, team_run_stream),
        (agent, "run", run, agent_run),
        (agent, "run_stream", run_agent_stream, agent_run_stream),
    ):
        setattr(wrapper, _WRAPPED, original)
        setattr(owner, name, wrapper)
    return True


def _unwrap() -> None:
    for owner in (_base_group_chat(), _base_chat_agent()):
        if owner is None:
            continue
        for name in ("run", "run_stream"):
            original = getattr(getattr(owner, name, None), _WRAPPED, None)
            if original is not None and name in vars(owner):
                setattr(owner, name, original)


def _class_wrapped(team: Any) -> bool:
    return bool(getattr(type(team).run_stream, _WRAPPED, False))


def stop_on_budget(team: TeamT, *, raise_error: bool = True) -> TeamT:
    """Choose how ``team`` ends on a budget denial; returns the same team.

    ``team.run()`` / ``run_stream()`` raise the governed call's runcycles error by default already
    (see :func:`typed_team_errors`). With ``raise_error=False`` a denial ends the run instead with a
    ``TaskResult`` of the messages so far whose ``stop_reason`` starts with ``"Budget stop:"`` (test
    it with :func:`is_budget_stop`); an authority that failed to answer is no budget stop, and still
    raises. Works also when the process-wide wrap was declined.
    """
    object.__setattr__(team, _STOP_MODE, raise_error)
    if not _class_wrapped(team) and "run_stream" not in vars(team):
        original = type(team).run_stream.__get__(team)  # type: ignore[attr-defined]
        object.__setattr__(team, "run_stream", functools.partial(_run_stream, team, original))
    return team
