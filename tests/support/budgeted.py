"""AutoGen-layer helpers: the authority as tenant acme, a budgeted client over a scripted model."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseTextChatMessage
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient
from runcycles import AsyncCyclesClient  # type: ignore[import-untyped]

from cycles_otel.autogen import BudgetedChatCompletionClient
from cycles_otel.pricing import PriceTable
from cycles_otel.testing.authority import LedgerSnapshot, LocalCyclesServer
from cycles_otel.testing.telemetry import SpanNode, TelemetryCapture

USD = 100_000_000
TOOL_MODEL_INFO = ModelInfo(
    vision=False, function_calling=True, json_output=False, family=ModelFamily.GPT_4O, structured_output=False
)
PRICES = PriceTable.default()


def reply(text: str, prompt_tokens: int, completion_tokens: int, **fields: Any) -> CreateResult:
    """A scripted, uncached model answer with explicit usage."""
    return CreateResult(
        finish_reason=fields.pop("finish_reason", "stop"),
        content=fields.pop("content", text),
        usage=RequestUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        cached=False,
        **fields,
    )


def cost(prompt_tokens: int, completion_tokens: int, model: str = "gpt-4o") -> int:
    return PRICES.cost_microcents(model, prompt_tokens, completion_tokens)


@dataclass
class Authority:
    """A running local authority with one tenant key."""

    server: LocalCyclesServer
    key: str

    def client(self, **config: Any) -> AsyncCyclesClient:
        return AsyncCyclesClient(self.server.config(self.key, **config))

    def ledger(self) -> LedgerSnapshot:
        return self.server.ledger()

    def spent(self, scope: str) -> int:
        return self.ledger().scopes[scope].spent

    def assert_settled(self) -> LedgerSnapshot:
        """No reservation is left ACTIVE, and every scope's spent is the sum of its charges."""
        snap = self.ledger()
        assert snap.count(status="ACTIVE") == 0, [(r.reservation_id, r.status) for r in snap.reservations]
        for scope, balance in snap.scopes.items():
            charged = sum(
                r.charged or 0
                for r in snap.reservations
                if scope in r.affected_scopes and r.status == "COMMITTED"
            )
            charged += sum(e.charged for e in snap.events if scope in _event_scopes(e.scope_path))
            assert balance.spent == charged, (scope, balance.spent, charged)
        return snap


def _event_scopes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def budgeted(
    authority: Authority,
    telemetry: TelemetryCapture,
    inner: Any,
    **options: Any,
) -> BudgetedChatCompletionClient:
    options.setdefault("model", "gpt-4o")
    options.setdefault("max_output_tokens", 1_000)
    # Background settlement needs the commit journal: the test's own (conftest points it at tmp).
    journal = {"journal_enabled": True, "journal_dir": os.environ["CYCLES_JOURNAL_DIR"]}
    return BudgetedChatCompletionClient(
        inner,
        options.pop("cycles_client", None)
        or authority.client(**(journal if options.get("settle_in_background") is True else {})),
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        **options,
    )


def replay(*results: CreateResult | str, tools: bool = False) -> ReplayChatCompletionClient:
    return ReplayChatCompletionClient(list(results), model_info=TOOL_MODEL_INFO if tools else None)


def final_text(result: TaskResult) -> str:
    """The text of a run's last message (a reply or a tool call summary)."""
    last = result.messages[-1]
    assert isinstance(last, BaseTextChatMessage), f"the run ended with a {type(last).__name__}"
    return last.content


def reservation_nodes(telemetry: TelemetryCapture) -> list[SpanNode]:
    """Every ``cycles.reservation`` node, wherever it sits in the trace forest."""
    found: list[SpanNode] = []

    def walk(nodes: Sequence[SpanNode]) -> None:
        for node in nodes:
            if node.name == "cycles.reservation":
                found.append(node)
            walk(node.children)

    walk(telemetry.trees())
    return found


def assert_governed(node: SpanNode, model: str = "gpt-4o") -> None:
    """One governed call: reserve, the inference span, then commit, all inside the reservation."""
    assert node.names() == ["cycles.reserve", f"chat {model}", "cycles.commit"], node.render()


def stall(inner: Any, method: str = "create") -> asyncio.Event:
    """Make ``inner.<method>`` wait (almost) forever; the event is set once a call is inside it."""
    entered = asyncio.Event()

    async def hangs(*args: object, **kwargs: object) -> None:
        entered.set()
        await asyncio.sleep(30)

    async def hangs_streaming(*args: object, **kwargs: object) -> AsyncIterator[str]:
        await hangs()
        yield "never"

    setattr(inner, method, hangs_streaming if method == "create_stream" else hangs)
    return entered


async def cancel_inside(call: Awaitable[Any], entered: asyncio.Event) -> None:
    """Run ``call``, cancel it once the model call is entered, and expect the cancellation back."""
    task = asyncio.ensure_future(call)
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
