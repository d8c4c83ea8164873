"""The guide's ``CyclesBudgetClient``, re-created as published: the baseline our client is measured against.

Faithful on purpose, defects included: the *synchronous* ``CyclesClient`` is called inside
``async def create()`` (each reserve and commit blocks the event loop), ``create_stream`` is not
governed, and ``except Exception`` misses cancellation. Only type hints were added.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from runcycles import (  # type: ignore[import-untyped]
    Action,
    Amount,
    BudgetExceededError,
    CommitRequest,
    CyclesClient,
    CyclesMetrics,
    CyclesProtocolError,
    ReleaseRequest,
    ReservationCreateRequest,
    Subject,
    Unit,
)

PRICE_PER_INPUT_TOKEN = 250  # GPT-4o: $2.50/1M tokens in microcents
PRICE_PER_OUTPUT_TOKEN = 1_000  # GPT-4o: $10/1M tokens in microcents


class CyclesBudgetClient:
    """Wraps an OpenAIChatCompletionClient with Cycles budget governance.

    Delegates all ChatCompletionClient protocol methods to the inner client,
    overriding create() to add reserve → execute → commit lifecycle.
    """

    def __init__(
        self,
        inner: ChatCompletionClient,
        cycles_client: CyclesClient,
        tenant: str = "acme",
        workflow: str | None = None,
        agent: str | None = None,
        estimate_amount: int = 2_000_000,
    ) -> None:
        self._inner = inner
        self._cycles = cycles_client
        self._subject = Subject(tenant=tenant, workflow=workflow, agent=agent)
        self._estimate_amount = estimate_amount

    async def create(self, messages: Sequence[LLMMessage], **kwargs: Any) -> CreateResult:
        key = str(uuid.uuid4())
        # Reserve budget
        res = self._cycles.create_reservation(
            ReservationCreateRequest(
                idempotency_key=key,
                subject=self._subject,
                action=Action(kind="llm.completion", name="gpt-4o"),
                estimate=Amount(unit=Unit.USD_MICROCENTS, amount=self._estimate_amount),
                ttl_ms=60_000,
            )
        )
        if not res.is_success:
            error = res.get_error_response()
            if error and error.error == "BUDGET_EXCEEDED":
                raise BudgetExceededError(
                    error.message,
                    status=res.status,
                    error_code=error.error,
                    request_id=error.request_id,
                )
            msg = error.message if error else (res.error_message or "Reservation failed")
            raise CyclesProtocolError(
                msg,
                status=res.status,
                error_code=error.error if error else None,
            )
        rid = res.get_body_attribute("reservation_id")
        try:
            # Execute LLM call
            result = await self._inner.create(messages, **kwargs)
            # Commit actual cost
            input_tokens = result.usage.prompt_tokens if result.usage else 0
            output_tokens = result.usage.completion_tokens if result.usage else 0
            actual = input_tokens * PRICE_PER_INPUT_TOKEN + output_tokens * PRICE_PER_OUTPUT_TOKEN
            self._cycles.commit_reservation(
                rid,
                CommitRequest(
                    idempotency_key=f"commit-{key}",
                    actual=Amount(unit=Unit.USD_MICROCENTS, amount=actual),
                    metrics=CyclesMetrics(
                        tokens_input=input_tokens,
                        tokens_output=output_tokens,
                    ),
                ),
            )
            return result
        except BudgetExceededError:
            raise
        except Exception:
            self._cycles.release_reservation(
                rid,
                ReleaseRequest(idempotency_key=f"release-{key}"),
            )
            raise

    def create_stream(
        self, messages: Sequence[LLMMessage], **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        # Streaming calls are delegated without budget governance.
        # For per-stream budget control, use reserveForStream patterns instead.
        return self._inner.create_stream(messages, **kwargs)

    async def close(self) -> None:
        await self._inner.close()

    def actual_usage(self) -> RequestUsage:
        return self._inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self._inner.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return self._inner.count_tokens(messages, tools=tools)

    def remaining_tokens(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
    ) -> int:
        return self._inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._inner.capabilities

    @property
    def model_info(self) -> ModelInfo:
        return self._inner.model_info


__all__ = ["CyclesBudgetClient"]
