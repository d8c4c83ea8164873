"""``BudgetedChatCompletionClient``: any AutoGen model client, every call reserved, settled and traced."""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken, Component
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from opentelemetry import context as otel_context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from pydantic import BaseModel
from runcycles import (  # type: ignore[import-untyped]
    AsyncCyclesClient,
    CyclesClient,
    CyclesConfig,
    Subject,
)
from typing_extensions import Self

from cycles_otel.autogen.arguments import check_base_url, check_flag, check_subject, tool_names
from cycles_otel.autogen.attribution import CallingAgent, calling_agent
from cycles_otel.autogen.call import Governance, GovernedCall, Settlements
from cycles_otel.autogen.config import (
    BudgetedChatCompletionClientConfig,
    cycles_config_for_load,
    without_secrets,
)
from cycles_otel.autogen.estimate import EstimateAmount, Estimator, Tools
from cycles_otel.autogen.telemetry import CallFacts, ClientTelemetry
from cycles_otel.autogen.usage import configured_output_cap, inner_model, provider_name
from cycles_otel.content import capture_content_enabled
from cycles_otel.pricing import PriceTable
from cycles_otel.protocol import CyclesInstrumentor

SUPPORTED_UNITS = ("USD_MICROCENTS", "TOKENS")
# How long a background commit may wait for calls still awaiting their answers (a quarter of the TTL
# at most): meanwhile the reservation holds its estimate, not the actual cost.
SETTLE_DEFER_MAX_S = 0.5


class BudgetedChatCompletionClient(ChatCompletionClient, Component[BudgetedChatCompletionClientConfig]):
    """Wraps ``inner`` so that every ``create()`` and ``create_stream()`` runs inside a Cycles reservation.

    See :mod:`cycles_otel.autogen` for the manual (arguments, estimates, settlement rules, spans,
    metrics, teams, serialisation).

    ``create()`` commits in a task of its own, so a caller cancelled after the model has answered
    still commits. By default ``create()`` waits for that commit. With
    ``settle_in_background=True`` it returns the ``CreateResult`` as soon as the inner client
    answers and the commit lands later: one authority round trip off every call's latency, and in
    a burst a commit also waits (at most 0.5 s, or a quarter of ``ttl_ms``) until no ``create()``
    of this client awaits its answer. ``await client.settled()`` waits for every commit started so
    far; ``close()`` does so before closing anything. A background commit that fails never raises
    into the caller: its ``cycles.reservation`` span, which ends only once the commit has landed,
    says ``cycles.outcome=failed``, and runcycles retries it (journaled first, when its journal is
    on). Settle before the event loop stops (``close()`` or ``settled()``): a commit still running
    then survives only in runcycles' journal. ``create_stream()`` always commits before its
    generator ends.
    """

    component_type = "model"
    component_config_schema = BudgetedChatCompletionClientConfig
    component_provider_override = "cycles_otel.autogen.BudgetedChatCompletionClient"

    def __init__(
        self,
        inner: ChatCompletionClient,
        cycles_client: AsyncCyclesClient | CyclesClient | None = None,
        tenant: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        estimate_amount: EstimateAmount = None,
        *,
        workspace: str | None = None,
        app: str | None = None,
        toolset: str | None = None,
        action_kind: str = "llm.completion",
        model: str | None = None,
        pricing: PriceTable | None = None,
        unit: str = "USD_MICROCENTS",
        ttl_ms: int = 60_000,
        overage_policy: str = "ALLOW_IF_AVAILABLE",
        tool_allowlist: Sequence[str] | None = None,
        tool_denylist: Sequence[str] | None = None,
        max_output_tokens: int | None = None,
        emit_inference_span: bool = True,
        capture_content: bool | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        instrument_protocol: bool = True,
        settle_in_background: bool = False,
    ) -> None:
        if not isinstance(inner, ChatCompletionClient):
            raise TypeError(f"inner must be an AutoGen ChatCompletionClient, got {type(inner).__name__}")
        unit = getattr(unit, "value", unit)
        if unit not in SUPPORTED_UNITS:
            raise ValueError(f"unit={unit!r}: model calls are priced in one of {', '.join(SUPPORTED_UNITS)}")
        if max_output_tokens is not None and (isinstance(max_output_tokens, bool) or max_output_tokens < 1):
            raise ValueError(f"max_output_tokens must be a positive int, got {max_output_tokens!r}")
        self._settle_in_background = check_flag("settle_in_background", settle_in_background)
        self._settle_defer_s = min(SETTLE_DEFER_MAX_S, ttl_ms / 4_000) if settle_in_background else 0.0
        self._settlements = Settlements()  # shared with with_agent() twins: close() waits for theirs too
        self._inner = inner
        self._cycles, self._owns_cycles = _async_client(cycles_client)
        config: CyclesConfig = self._cycles._config
        self._subject = {
            field: value
            for field, value in (
                ("tenant", tenant or config.tenant),
                ("workspace", workspace or config.workspace),
                ("app", app or config.app),
                ("workflow", workflow or config.workflow),
                ("toolset", toolset or config.toolset),
            )
            if value
        }
        check_subject(self._subject if agent is None else {**self._subject, "agent": agent})
        check_base_url(config.base_url)
        self._agent = agent
        self._configured_agent = config.agent
        resolved_model = model or inner_model(inner)
        if not resolved_model:
            raise ValueError(
                f"model=: {type(inner).__name__} does not say which model it calls; pass model='<model id>' "
                "so calls can be priced and named"
            )
        self._model = resolved_model
        self._pricing = pricing or PriceTable.from_env()
        if unit == "USD_MICROCENTS":
            self._pricing.price_for(resolved_model)  # UnknownModelError now, not at the first call
        self._estimator = Estimator(inner, estimate_amount, unit)
        self._max_output_tokens = max_output_tokens
        self._governance = Governance(
            inner=inner,
            cycles=self._cycles,
            pricing=self._pricing,
            model=resolved_model,
            unit=unit,
            action_kind=action_kind,
            ttl_ms=ttl_ms,
            overage_policy=overage_policy,
            tool_allowlist=tool_names("tool_allowlist", tool_allowlist),
            tool_denylist=tool_names("tool_denylist", tool_denylist),
        )
        if capture_content is None:
            capture_content = capture_content_enabled(os.environ)
        self._emit_inference_span = emit_inference_span
        self._capture_content = capture_content
        self._providers = (tracer_provider, meter_provider)
        self._telemetry = ClientTelemetry(
            tracer_provider,
            meter_provider,
            emit_inference_span=emit_inference_span,
            capture_content=capture_content,
        )
        self._provider_name = provider_name(inner, resolved_model)
        self._instrument_protocol = instrument_protocol
        if instrument_protocol:
            _ensure_protocol_spans(tracer_provider, meter_provider)
        self._estimate_amount = estimate_amount

    # --- derived clients -----------------------------------------------------------------------
    def with_agent(self, agent: str) -> BudgetedChatCompletionClient:
        """The same governance attributed to ``agent``: one line for a team's selector or manager.

        ``SelectorGroupChat(..., model_client=client.with_agent("selector"))``. Shares the inner
        client and the Cycles client.
        """
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin._agent = agent
        twin._owns_cycles = False
        return twin

    # --- ChatCompletionClient ------------------------------------------------------------------
    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        call = await self._start(
            messages, tools, extra_create_args, calling_agent(), otel_context.get_current()
        )
        try:
            with self._settlements.answering():
                await call.reserve()
                call_tools, call_args, _ = call.shape(tools, extra_create_args, stream=False)
                with call.telemetry.inference():
                    result = await self._inner.create(
                        messages,
                        tools=call_tools,
                        tool_choice=tool_choice,
                        json_output=json_output,
                        extra_create_args=call_args,
                        cancellation_token=cancellation_token,
                    )
            call.finish(result)
        except BaseException as exc:  # CancelledError included: the reservation must not leak
            try:
                await call.abort(exc)
            finally:
                call.end()
            raise
        settling = self._settlements.start(call, self._settle_defer_s)  # the task owns the call and span now
        if not self._settle_in_background:
            await asyncio.shield(settling)  # a cancelled caller leaves the commit running
        return result

    def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        # Captured now: the generator body runs later, in whatever context iterates it.
        parent, agent = otel_context.get_current(), calling_agent()
        return self._stream(
            messages, tools, tool_choice, json_output, extra_create_args, cancellation_token, agent, parent
        )

    async def _stream(
        self,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        tool_choice: Tool | Literal["auto", "required", "none"],
        json_output: bool | type[BaseModel] | None,
        extra_create_args: Mapping[str, Any],
        cancellation_token: CancellationToken | None,
        agent: CallingAgent | None,
        parent: otel_context.Context,
    ) -> AsyncGenerator[str | CreateResult, None]:
        call = await self._start(messages, tools, extra_create_args, agent, parent)
        streamed: list[str] = []
        try:
            await call.reserve()
            call_tools, call_args, usage_kwargs = call.shape(tools, extra_create_args, stream=True)
            with call.telemetry.inference():
                chunks = self._inner.create_stream(
                    messages,
                    tools=call_tools,
                    tool_choice=tool_choice,
                    json_output=json_output,
                    extra_create_args=call_args,
                    cancellation_token=cancellation_token,
                    **usage_kwargs,
                )
            try:
                while True:
                    with call.telemetry.inference():  # attached per step: never across a yield
                        try:
                            item = await chunks.__anext__()
                        except StopAsyncIteration:
                            break
                    if isinstance(item, CreateResult):
                        call.finish(item)
                    else:
                        streamed.append(item)
                    yield item
            finally:
                close = getattr(chunks, "aclose", None)  # an abandoned inner stream must stop too
                if close is not None:
                    await close()
            await call.commit()
        except BaseException as exc:  # GeneratorExit (abandoned), CancelledError, errors mid-stream
            await call.abort(exc, "".join(streamed))
            raise
        finally:
            call.end()

    async def _start(
        self,
        messages: Sequence[LLMMessage],
        tools: Tools,
        extra_create_args: Mapping[str, Any],
        agent: CallingAgent | None,
        parent: otel_context.Context,
    ) -> GovernedCall:
        """Attribute and estimate the call (errors here reserve nothing), then open its span."""
        output_cap = self._max_output_tokens or configured_output_cap(self._inner, extra_create_args)
        estimate = await self._estimator.estimate(messages, tools, self._model, self._pricing, output_cap)
        agent_name = self._agent or (agent.name if agent is not None else None) or self._configured_agent
        subject = dict(self._subject)
        if agent_name:
            subject["agent"] = agent_name
        facts = CallFacts(
            model=self._model,
            provider=self._provider_name,
            subject=subject,
            action_kind=self._governance.action_kind,
            unit=self._governance.unit,
            estimate=estimate.amount,
            estimate_source=estimate.source,
            agent_name=agent_name,
            agent_id=agent.id if agent is not None else None,
        )
        cycles_subject = Subject(**subject)  # validated before a span exists that would have to be ended
        telemetry = self._telemetry.start(facts, parent)
        return GovernedCall(self._governance, cycles_subject, estimate, agent, telemetry, messages)

    async def settled(self) -> None:
        """Wait until every commit started so far by this client (and its ``with_agent`` twins) has landed.

        Needed only with ``settle_in_background=True``; a commit that fails is reported by telemetry,
        never raised here.
        """
        await self._settlements.wait()

    async def close(self) -> None:
        await self._settlements.wait()
        await self._inner.close()
        if self._owns_cycles:
            await self._cycles.aclose()

    def actual_usage(self) -> RequestUsage:
        return self._inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self._inner.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return self._inner.count_tokens(messages, tools=tools)

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        return self._inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:
        warnings.warn("capabilities is deprecated, use model_info instead", DeprecationWarning, stacklevel=2)
        return self._inner.capabilities

    @property
    def model_info(self) -> ModelInfo:
        return self._inner.model_info

    @property
    def inner(self) -> ChatCompletionClient:
        return self._inner

    # --- Component -----------------------------------------------------------------------------
    def _to_config(self) -> BudgetedChatCompletionClientConfig:
        if callable(self._estimate_amount):
            raise ValueError(
                "estimate_amount is a callable and cannot be dumped: pass an int estimate_amount "
                "(or none, for the priced default) to dump this client"
            )
        g = self._governance
        return BudgetedChatCompletionClientConfig(
            inner=without_secrets(self._inner.dump_component()),
            base_url=self._cycles._config.base_url,
            agent=self._agent,
            action_kind=g.action_kind,
            model=g.model,
            estimate_amount=self._estimate_amount,
            max_output_tokens=self._max_output_tokens,
            unit=g.unit,
            ttl_ms=g.ttl_ms,
            overage_policy=g.overage_policy,
            tool_allowlist=list(g.tool_allowlist) if g.tool_allowlist is not None else None,
            tool_denylist=list(g.tool_denylist) if g.tool_denylist is not None else None,
            emit_inference_span=self._emit_inference_span,
            capture_content=self._capture_content,
            settle_in_background=self._settle_in_background,
            **self._subject,
        )

    @classmethod
    def _from_config(cls, config: BudgetedChatCompletionClientConfig) -> Self:
        return cls(
            ChatCompletionClient.load_component(config.inner),
            AsyncCyclesClient(cycles_config_for_load(config.base_url)),
            tenant=config.tenant,
            workflow=config.workflow,
            agent=config.agent,
            estimate_amount=config.estimate_amount,
            workspace=config.workspace,
            app=config.app,
            toolset=config.toolset,
            action_kind=config.action_kind,
            model=config.model,
            unit=config.unit,
            ttl_ms=config.ttl_ms,
            overage_policy=config.overage_policy,
            tool_allowlist=config.tool_allowlist,
            tool_denylist=config.tool_denylist,
            max_output_tokens=config.max_output_tokens,
            emit_inference_span=config.emit_inference_span,
            capture_content=config.capture_content,
            settle_in_background=config.settle_in_background,
        )


def _async_client(client: AsyncCyclesClient | CyclesClient | None) -> tuple[AsyncCyclesClient, bool]:
    """The async client to use, and whether we created it (and so close it)."""
    if isinstance(client, AsyncCyclesClient):
        return client, False
    if isinstance(client, CyclesClient):  # the guide's synchronous client: same config, async transport
        return AsyncCyclesClient(client._config), True
    if client is None:
        return AsyncCyclesClient(CyclesConfig.from_env()), True
    raise TypeError(
        f"cycles_client must be a runcycles AsyncCyclesClient, CyclesClient or None (CYCLES_* env), "
        f"got {type(client).__name__}"
    )


def _ensure_protocol_spans(
    tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None
) -> None:
    """Instrument runcycles (once, process-wide) so reserve/commit/release spans nest in ours."""
    instrumentor = CyclesInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
