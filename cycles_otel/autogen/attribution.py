"""Which AutoGen agent is calling the model: the runtime's message-handler context, team suffix removed."""

from __future__ import annotations

from dataclasses import dataclass

from autogen_core import MessageHandlerContext
from opentelemetry import trace

from cycles_otel.semconv import GEN_AI_AGENT_ID, GEN_AI_AGENT_NAME, GEN_AI_OPERATION_NAME

INVOKE_AGENT = "invoke_agent"


@dataclass(frozen=True)
class CallingAgent:
    """The agent whose message handler is running: ``name`` is what the user called it."""

    name: str
    """``alice`` for a team member registered as type ``alice_<team id>``."""
    id: str
    """The full AutoGen agent id, ``type/key``."""
    key: str
    """The agent key; for team members it is the team id."""


def calling_agent() -> CallingAgent | None:
    """The agent handling this message, else the one a recorded ``invoke_agent`` span names, else None."""
    try:
        agent_id = MessageHandlerContext.agent_id()
    except RuntimeError:  # direct agent.run() or plain code: no handler context
        return _invoking_agent()
    return CallingAgent(name=agent_name(agent_id.type, agent_id.key), id=str(agent_id), key=agent_id.key)


def _invoking_agent() -> CallingAgent | None:
    """A single agent's ``run()`` has no handler context, but AutoGen's ``invoke_agent`` span names it.

    Only readable when that span is recorded by an SDK provider (its attributes are not in the API).
    """
    attributes = getattr(trace.get_current_span(), "attributes", None)
    if not attributes or attributes.get(GEN_AI_OPERATION_NAME) != INVOKE_AGENT:
        return None
    name = attributes.get(GEN_AI_AGENT_NAME)
    agent_id = attributes.get(GEN_AI_AGENT_ID)
    if not isinstance(name, str) or not name:
        return None
    return CallingAgent(name=name, id=agent_id if isinstance(agent_id, str) else name, key="")


def agent_name(agent_type: str, key: str) -> str:
    """Teams register each participant as ``<name>_<team id>`` with the team id as key; undo that."""
    suffix = f"_{key}"
    if key and agent_type.endswith(suffix) and len(agent_type) > len(suffix):
        return agent_type[: -len(suffix)]
    return agent_type
