"""The Cycles side of one call: a recording view of the client, typed-error completion, and caps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autogen_core.tools import Tool, ToolSchema
from runcycles import AsyncCyclesClient, CyclesProtocolError  # type: ignore[import-untyped]
from runcycles.response import CyclesResponse  # type: ignore[import-untyped]


class RecordingClient:
    """An ``AsyncCyclesClient`` that keeps the last reserve and commit answers of one reservation.

    ``stream_reservation`` turns a denial into a typed error but drops the response; runcycles'
    ``get_error_response()`` is ``None`` when a server sends ``trace_id`` (its model forbids the
    field), so the request id is only found in the raw answer. Everything else is delegated, so
    the instrumented client methods still produce their protocol spans.
    """

    def __init__(self, client: AsyncCyclesClient) -> None:
        self._client = client
        self.last_reserve: CyclesResponse | None = None
        self.last_commit: CyclesResponse | None = None

    async def create_reservation(self, request: Any) -> CyclesResponse:
        self.last_reserve = await self._client.create_reservation(request)
        return self.last_reserve

    async def commit_reservation(self, reservation_id: str, request: Any) -> CyclesResponse:
        self.last_commit = await self._client.commit_reservation(reservation_id, request)
        return self.last_commit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def complete_error(exc: CyclesProtocolError, response: CyclesResponse | None) -> CyclesProtocolError:
    """Fill ``error_code`` and ``request_id`` of a runcycles error from the raw answer (same object)."""
    if response is None:
        return exc
    body = response.body if isinstance(response.body, dict) else {}
    if exc.request_id is None:
        exc.request_id = response.request_id or _text(body.get("request_id"))
    if exc.error_code is None:
        exc.error_code = _text(body.get("error"))
    if exc.reason_code is None:
        exc.reason_code = exc.error_code
    if exc.details is None and isinstance(body.get("details"), dict):
        exc.details = body["details"]
    return exc


def charged_amount(response: CyclesResponse | None) -> int | None:
    """``charged.amount`` of a successful commit answer (may be below actual under ALLOW_IF_AVAILABLE)."""
    if response is None or not response.is_success or not isinstance(response.body, dict):
        return None
    charged = response.body.get("charged")
    amount = charged.get("amount") if isinstance(charged, dict) else None
    return amount if isinstance(amount, int) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class AppliedCaps:
    """What a call may use after caps: its output cap and its tools, plus what was taken away."""

    output_cap: int | None
    tools: Sequence[Tool | ToolSchema]
    max_tokens: int | None = None
    tools_removed: tuple[str, ...] = ()


def tool_name(tool: Tool | ToolSchema) -> str:
    return tool.name if isinstance(tool, Tool) else str(tool.get("name", ""))


def apply_caps(
    tools: Sequence[Tool | ToolSchema],
    output_cap: int | None,
    *,
    caps: Any = None,
    allowlist: Sequence[str] | None = None,
    denylist: Sequence[str] | None = None,
) -> AppliedCaps:
    """Lower the output cap to ``caps.max_tokens`` and drop tools outside the allow-lists / on the deny-lists.

    ``caps`` is a runcycles ``Caps`` (from an ``ALLOW_WITH_CAPS`` decision) or ``None``; the
    constructor's lists always apply, the server's lists narrow them further.
    """
    max_tokens = getattr(caps, "max_tokens", None) if caps is not None else None
    if max_tokens is not None:
        output_cap = max_tokens if output_cap is None else min(output_cap, max_tokens)
    allows = [set(a) for a in (allowlist, getattr(caps, "tool_allowlist", None)) if a is not None]
    denies = set(denylist or ()) | set(getattr(caps, "tool_denylist", None) or ())
    kept: list[Tool | ToolSchema] = []
    removed: list[str] = []
    for tool in tools:
        name = tool_name(tool)
        if name in denies or any(name not in allow for allow in allows):
            removed.append(name)
        else:
            kept.append(tool)
    return AppliedCaps(output_cap, kept if removed else tools, max_tokens, tuple(removed))
