"""``ModelCall``: a governed call to the inner model client, its request shaped by caps, its usage priced."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autogen_core import CancellationToken
from autogen_core.models import CreateResult, LLMMessage

from cycles_otel import semconv as sc
from cycles_otel.autogen.estimate import Tools, character_token_count, text_tokens
from cycles_otel.autogen.lifecycle import GovernedCall, Spent
from cycles_otel.autogen.plan import CallPlan, Governance
from cycles_otel.autogen.reservation import apply_caps
from cycles_otel.autogen.telemetry import CallTelemetry, SpanInContext
from cycles_otel.autogen.usage import stream_usage_kwargs, with_output_cap


class ModelCall(GovernedCall):
    """One governed ``create()`` or ``create_stream()``.

    The caller reports what the model did: ``stop(result)`` for the final ``CreateResult``,
    ``streamed(text)`` for each streamed chunk. What is committed: the reported usage, else (a
    stream without a usage chunk, or cut off) the estimated input plus the streamed text's tokens,
    marked ``estimated``; with no output at all, the reservation is released.
    """

    def __init__(
        self,
        governance: Governance,
        plan: CallPlan,
        telemetry: CallTelemetry,
        messages: Sequence[LLMMessage],
    ) -> None:
        super().__init__(governance.governor, plan, telemetry)
        self._g = governance
        self._messages = messages
        self._result: CreateResult | None = None
        self._streamed: list[str] = []
        self._spent: Spent | None = None  # priced once, when the output is final

    def request(
        self,
        tools: Tools,
        tool_choice: Any,
        json_output: Any,
        extra_create_args: Mapping[str, Any],
        cancellation_token: CancellationToken | None,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        """The keyword arguments of the inner ``create()`` / ``create_stream()``, after caps."""
        settings, inner = self._g.settings, self._g.inner
        applied = apply_caps(
            tools,
            self._plan.estimate.output_cap,
            caps=self.caps,
            allowlist=settings.tool_allowlist,
            denylist=settings.tool_denylist,
        )
        self.telemetry.capped(applied.max_tokens, applied.tools_removed)
        extra = extra_create_args
        if applied.output_cap is not None:
            extra = with_output_cap(inner, extra, applied.output_cap)
        self.telemetry.start_inference(self._messages, applied.output_cap)
        return {
            "tools": applied.tools,
            "tool_choice": tool_choice,
            "json_output": json_output,
            "extra_create_args": extra,
            "cancellation_token": cancellation_token,
            **(stream_usage_kwargs(inner, extra) if stream else {}),
        }

    def inference(self) -> SpanInContext:
        """The inference span current for a stretch without ``yield``: the inner client's spans nest in it."""
        return self.telemetry.inference()

    def stop(self, result: CreateResult) -> None:
        """The model's final answer."""
        self._result = result
        self._spent = None
        spent = self.spent()
        assert spent is not None
        self.telemetry.inference_done(result, spent.priced, spent.source)

    def streamed(self, text: str) -> None:
        self._streamed.append(text)
        self._spent = None

    def fail(self, exc: BaseException) -> None:
        if self.failure is not None:
            return
        super().fail(exc)
        if self._result is None:
            spent = self.spent()
            error = None if isinstance(exc, GeneratorExit) else exc
            self.telemetry.inference_done(
                None, spent.priced if spent else None, spent.source if spent else "", error
            )

    def spent(self) -> Spent | None:
        """What the model's output cost, priced once: the reported usage, else an estimate of it."""
        if self._spent is None:
            self._spent = self._price()
        return self._spent

    def _price(self) -> Spent | None:
        result, costs = self._result, self._g.costs
        if result is not None:
            usage = result.usage
            if result.cached or usage.prompt_tokens or usage.completion_tokens:
                priced = costs.price(usage.prompt_tokens, usage.completion_tokens, free=result.cached)
                return Spent(priced, sc.ACTUAL_SOURCE_USAGE)
            output = text_tokens(len(_text_of(result.content)))
        elif self._streamed:
            output = text_tokens(len("".join(self._streamed)))
        else:
            return None
        input_tokens = self._plan.estimate.input_tokens
        if input_tokens is None:
            input_tokens = character_token_count(self._messages)
        return Spent(costs.price(input_tokens, output), sc.ACTUAL_SOURCE_ESTIMATED)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text_of(getattr(item, "arguments", item)) for item in content)
    return str(content)
