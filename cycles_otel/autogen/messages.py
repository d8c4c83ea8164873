"""AutoGen messages as GenAI message content (``gen_ai.input.messages``, ...), for opt-in capture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autogen_core.models import CreateResult, LLMMessage

_ROLES = {
    "SystemMessage": "system",
    "UserMessage": "user",
    "AssistantMessage": "assistant",
    "FunctionExecutionResultMessage": "tool",
}


def _part(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"type": "text", "content": value}
    if hasattr(value, "arguments") and hasattr(value, "name"):
        return {
            "type": "tool_call",
            "id": getattr(value, "id", None),
            "name": value.name,
            "arguments": value.arguments,
        }
    if hasattr(value, "call_id"):
        return {
            "type": "tool_call_response",
            "id": value.call_id,
            "response": getattr(value, "content", None),
        }
    return {"type": type(value).__name__.lower()}  # images and the like: named, not inlined


def _parts(content: Any) -> list[dict[str, Any]]:
    return [_part(item) for item in content] if isinstance(content, list) else [_part(content)]


def input_messages(messages: Sequence[LLMMessage]) -> list[dict[str, Any]]:
    return [
        {"role": _ROLES.get(type(m).__name__, "user"), "parts": _parts(getattr(m, "content", ""))}
        for m in messages
    ]


def output_messages(result: CreateResult) -> list[dict[str, Any]]:
    return [{"role": "assistant", "parts": _parts(result.content), "finish_reason": result.finish_reason}]
