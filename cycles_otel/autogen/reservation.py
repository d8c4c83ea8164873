"""The Cycles side of one call: a recording view of the client, typed-error completion, and caps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from autogen_core.tools import Tool, ToolSchema
from runcycles import AsyncCyclesClient, CyclesConfig, CyclesProtocolError  # type: ignore[import-untyped]
from runcycles.response import CyclesResponse  # type: ignore[import-untyped]

from cycles_otel.semconv import DENIAL_CODES, DENY_DETAIL_FIELDS

DENIED_STATUS: Final = 409
# Statuses at which the authority, not the budget, failed the call: "on_authority_error" applies.
AUTHORITY_DOWN_STATUSES: Final = frozenset({-1, 429})


class RecordingClient:
    """An ``AsyncCyclesClient`` view for one reservation: keeps its answers, knows when its commit is on disk.

    ``stream_reservation`` turns a denial into a typed error but drops the response; runcycles'
    ``get_error_response()`` is ``None`` when a server sends ``trace_id`` (its model forbids the
    field), so the request id is only found in the raw answer. runcycles journals a commit right
    before it sends it, so the commit reaching this client means the spend is on disk. ``_config``
    is the one the journal uses (this process's own journal directory). Everything else is
    delegated, so the instrumented client methods still produce their protocol spans.
    """

    def __init__(
        self, client: AsyncCyclesClient, config: CyclesConfig, before_commit: Callable[[], Awaitable[None]]
    ) -> None:
        self._client = client
        self._config = config
        self._before_commit = before_commit
        self.journaled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_reserve: CyclesResponse | None = None
        self.last_commit: CyclesResponse | None = None

    async def create_reservation(self, request: Any) -> CyclesResponse:
        self.last_reserve = await self._client.create_reservation(request)
        return self.last_reserve

    async def commit_reservation(self, reservation_id: str, request: Any) -> CyclesResponse:
        self.mark_journaled()
        await self._before_commit()
        self.last_commit = await self._client.commit_reservation(reservation_id, request)
        return self.last_commit

    def mark_journaled(self) -> None:
        """The commit is on disk (or there is none to wait for): whoever waits on it may go on."""
        if not self.journaled.done():
            self.journaled.set_result(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def is_denial(exc: CyclesProtocolError) -> bool:
    """A budget decision (409 with a denial code), as opposed to the authority failing to answer."""
    return exc.status == DENIED_STATUS and exc.error_code in DENIAL_CODES


def is_authority_down(exc: CyclesProtocolError) -> bool:
    """The authority could not be reached or failed (transport error, 5xx, rate limited)."""
    return exc.status in AUTHORITY_DOWN_STATUSES or exc.status >= 500


def complete_error(exc: CyclesProtocolError, response: CyclesResponse | None) -> CyclesProtocolError:
    """Fill ``error_code``, ``request_id`` and ``details`` of a runcycles error from the raw answer.

    The same object is returned. A ``deny_detail`` (which scope blocked, what would fix it, what is
    left; protocol 0.1.27) is kept in ``details`` and appended to the message.
    """
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
    detail = deny_detail(body)
    if detail:
        exc.details = {**(exc.details or {}), "deny_detail": detail}
        described = "; ".join(f"{key}: {value}" for key, value in detail.items())
        exc.args = (f"{exc.args[0] if exc.args else ''} ({described})", *exc.args[1:])
    return exc


def deny_detail(body: Any) -> dict[str, Any]:
    """The known fields of a denial's ``deny_detail`` object (top level, or inside ``details``)."""
    if not isinstance(body, dict):
        return {}
    found = body.get("deny_detail")
    if not isinstance(found, dict) and isinstance(body.get("details"), dict):
        found = body["details"].get("deny_detail")
    if not isinstance(found, dict):
        return {}
    detail: dict[str, Any] = {}
    for key in DENY_DETAIL_FIELDS:
        value = found.get(key)
        if isinstance(value, dict):  # an Amount: {"unit": ..., "amount": ...}
            value = value.get("amount")
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            detail[key] = value
    return detail


def charged_amount(response: CyclesResponse | None) -> int | None:
    """``charged.amount`` of a successful commit answer (may be below actual under ALLOW_IF_AVAILABLE)."""
    if response is None or not response.is_success or not isinstance(response.body, dict):
        return None
    charged = response.body.get("charged")
    amount = charged.get("amount") if isinstance(charged, dict) else None
    return amount if isinstance(amount, int) and not isinstance(amount, bool) else None


def over_limit(response: CyclesResponse | None) -> bool | None:
    """Whether a commit answer's balances put any scope over its limit (``cycles.over_limit``)."""
    if response is None or not isinstance(response.body, dict):
        return None
    balances = response.body.get("balances")
    flags = (
        [b.get("is_over_limit") for b in balances if isinstance(b, dict)]
        if isinstance(balances, list)
        else []
    )
    known = [flag for flag in flags if isinstance(flag, bool)]
    return any(known) if known else None


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
