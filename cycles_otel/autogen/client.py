"""``BudgetedChatCompletionClient``: any AutoGen model client, every call reserved, settled and traced."""

from __future__ import annotations

import dataclasses
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
from runcycles import AsyncCyclesClient, CyclesClient  # type: ignore[import-untyped]
from typing_extensions import Self

from cycles_otel.autogen.attribution import CallingAgent, calling_agent
from cycles_otel.autogen.authority import Authority
from cycles_otel.autogen.checks import check_base_url, check_providers, check_transport, given
from cycles_otel.autogen.coexistence import Coexistence
from cycles_otel.autogen.config import (
    GUIDE_ESTIMATE,
    BudgetedChatCompletionClientConfig,
    ClientSettings,
    cycles_config_for_load,
    without_secrets,
)
from cycles_otel.autogen.estimate import EstimateAmount, Estimator, Tools
from cycles_otel.autogen.model_call import ModelCall
from cycles_otel.autogen.plan import CostModel, Governance, Governor
from cycles_otel.autogen.settlement import Settlements
from cycles_otel.autogen.team import install_on_first_client, pending_stop, record_failure
from cycles_otel.autogen.telemetry import ClientFacts, ClientTelemetry, instrument_protocol_layer
from cycles_otel.autogen.usage import inner_model, provider_name
from cycles_otel.content import capture_content_enabled
from cycles_otel.pricing import PriceTable

# How long a background commit may wait for calls still awaiting their answers (a quarter of the TTL
# at most): meanwhile the reservation holds its estimate, not the actual cost.
SETTLE_DEFER_MAX_S = 0.5


class BudgetedChatCompletionClient(ChatCompletionClient, Component[BudgetedChatCompletionClientConfig]):
    """Wraps ``inner`` so that every ``create()`` and ``create_stream()`` runs inside a Cycles reservation.

    See :mod:`cycles_otel.autogen` for the manual (arguments, estimates, settlement rules, spans,
    metrics, teams, serialisation).

    A settlement runs in a task of its own: a caller (or stream consumer) cancelled after the model
    has answered still commits, and the span ends with the outcome. By default ``create()``
    returns once the commit has landed. With ``settle_in_background=True`` it returns as soon as
    the commit is in runcycles' journal (so a crash right after loses nothing) and the commit lands
    later: one authority round trip off every call, and in a burst a commit also waits (at most
    0.5 s, or a quarter of ``ttl_ms``) until no ``create()`` of this client awaits its answer.
    ``await client.settled()`` waits for every commit started so far; ``close()`` does so before
    closing anything. A commit that fails never raises into the caller: its ``cycles.reservation``
    span says ``cycles.outcome=failed``, and runcycles retries it from its journal.
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
        settle_in_background: bool = False,
        on_authority_error: Literal["raise", "allow"] = "raise",
        tokenizer: Literal["auto", "characters"] = "auto",
        mode: Literal["enforce", "observe"] = "enforce",
        transport: Literal["aiohttp", "httpx"] = "aiohttp",
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        instrument_protocol: bool = True,
    ) -> None:
        if not isinstance(inner, ChatCompletionClient):
            raise TypeError(f"inner must be an AutoGen ChatCompletionClient, got {type(inner).__name__}")
        check_providers(pricing, tracer_provider, meter_provider, instrument_protocol)
        authority = Authority.of(cycles_client, check_transport(transport))
        config = authority.config
        check_base_url(config.base_url)
        estimate_function = estimate_amount if callable(estimate_amount) else None
        settings = ClientSettings.validated(
            tenant=given(tenant, config.tenant),
            workspace=given(workspace, config.workspace),
            app=given(app, config.app),
            workflow=given(workflow, config.workflow),
            toolset=given(toolset, config.toolset),
            agent=agent,
            action_kind=action_kind,
            model=model or inner_model(inner),
            estimate_amount=None if estimate_function is not None else estimate_amount,
            max_output_tokens=max_output_tokens,
            unit=getattr(unit, "value", unit),
            ttl_ms=ttl_ms,
            overage_policy=getattr(overage_policy, "value", overage_policy),
            tool_allowlist=tool_allowlist,
            tool_denylist=tool_denylist,
            emit_inference_span=emit_inference_span,
            capture_content=capture_content_enabled(os.environ)
            if capture_content is None
            else capture_content,
            settle_in_background=settle_in_background,
            on_authority_error=on_authority_error,
            tokenizer=tokenizer,
            mode=mode,
            transport=transport,
        )
        if settings.model is None:
            raise ValueError(
                f"model=: {type(inner).__name__} does not say which model it calls; pass model='<model id>' "
                "so calls can be priced and named"
            )
        if settings.settle_in_background and not authority.journaled:
            raise ValueError(
                "settle_in_background=True needs runcycles' commit journal, so that a crash right after "
                "create() returns loses nothing: keep journal_enabled=True in the CyclesConfig "
                "(CYCLES_JOURNAL_ENABLED), or settle in the foreground"
            )
        prices = pricing if pricing is not None else PriceTable.from_env()
        if settings.unit == "USD_MICROCENTS":
            prices.price_for(settings.model)  # UnknownModelError now, not at the first call
        self._inner = inner
        self._estimate_function = estimate_function
        # Shared with with_agent() twins: close() waits for their settlements too.
        defer_s = min(SETTLE_DEFER_MAX_S, settings.ttl_ms / 4_000) if settings.settle_in_background else 0.0
        governor = Governor(settings, authority, Settlements(defer_s), fallback_agent=config.agent or None)
        self._governance = Governance(
            governor=governor,
            inner=inner,
            costs=CostModel(prices, settings.model, settings.unit),
            estimator=Estimator(
                inner,
                estimate_function or settings.estimate_amount,
                settings.unit,
                default=GUIDE_ESTIMATE,
                require_cap=settings.overage_policy == "REJECT",
                tokenizer=settings.tokenizer == "auto",
            ),
            provider=provider_name(inner, settings.model),
        )
        self._telemetry = ClientTelemetry(
            ClientFacts(settings.model, self._governance.provider, settings.unit, settings.action_kind),
            tracer_provider,
            meter_provider,
            emit_inference_span=settings.emit_inference_span,
            capture_content=bool(settings.capture_content),
            coexistence=Coexistence(inner),
        )
        self._owns_authority = True
        if instrument_protocol:
            instrument_protocol_layer(tracer_provider, meter_provider)
        install_on_first_client()
        authority.replay()

    @property
    def _settings(self) -> ClientSettings:
        return self._governance.settings

    # --- derived clients -----------------------------------------------------------------------
    def with_agent(self, agent: str) -> BudgetedChatCompletionClient:
        """The same governance attributed to ``agent``: one line for a team's selector or manager.

        ``SelectorGroupChat(..., model_client=client.with_agent("selector"))``. Shares the inner
        client, the Cycles client and the pending settlements; ``agent`` is checked like the
        constructor's.
        """
        governor = self._governance.governor.with_agent(agent)
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin._governance = dataclasses.replace(self._governance, governor=governor)
        twin._owns_authority = False
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
        call = await self._call(
            messages, tools, extra_create_args, calling_agent(), otel_context.get_current()
        )
        try:
            with self._governance.governor.settlements.answering():
                await call.reserve()
                request = call.request(
                    tools, tool_choice, json_output, extra_create_args, cancellation_token, stream=False
                )
                with call.inference():
                    result = await self._inner.create(messages, **request)
            call.stop(result)
        except BaseException as exc:  # CancelledError included: the reservation must not leak
            call.fail(exc)
            await call.finish()
            raise
        await call.finish(background=self._settings.settle_in_background)
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
        call = await self._call(messages, tools, extra_create_args, agent, parent)
        try:
            await call.reserve()
            request = call.request(
                tools, tool_choice, json_output, extra_create_args, cancellation_token, stream=True
            )
            with call.inference():
                chunks = self._inner.create_stream(messages, **request)
            try:
                while True:
                    with call.inference():  # attached per step: never across a yield
                        try:
                            item = await chunks.__anext__()
                        except StopAsyncIteration:
                            break
                    if isinstance(item, CreateResult):
                        call.stop(item)
                    else:
                        call.streamed(item)
                    yield item
            finally:
                close = getattr(chunks, "aclose", None)  # an abandoned inner stream must stop too
                if close is not None:
                    await close()
        except BaseException as exc:  # GeneratorExit (abandoned), CancelledError, errors mid-stream
            call.fail(exc)
            raise
        finally:
            await call.finish()

    async def _call(
        self,
        messages: Sequence[LLMMessage],
        tools: Tools,
        extra_create_args: Mapping[str, Any],
        agent: CallingAgent | None,
        parent: otel_context.Context,
    ) -> ModelCall:
        """Plan the call (errors here reserve nothing), then open its span."""
        stopped = pending_stop(agent)
        if stopped is not None:  # a tool run of this run was denied with on_denied="raise"
            raise stopped
        try:
            plan = await self._governance.plan(messages, tools, extra_create_args, agent)
        except Exception as exc:
            record_failure(exc, agent)
            raise
        telemetry = self._telemetry.start(plan, parent)
        return ModelCall(self._governance, plan, telemetry, messages)

    async def settled(self) -> None:
        """Wait until every commit started so far by this client (and its ``with_agent`` twins) has landed.

        Needed only with ``settle_in_background=True``; a commit that fails is reported by telemetry,
        never raised here.
        """
        await self._governance.governor.settlements.wait()

    async def close(self) -> None:
        await self._governance.governor.settlements.wait()
        await self._inner.close()
        if self._owns_authority:
            await self._governance.governor.authority.aclose()

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
        if self._estimate_function is not None:
            raise ValueError(
                "estimate_amount is a callable and cannot be dumped: pass an int estimate_amount "
                "(or none, for the priced default) to dump this client"
            )
        return BudgetedChatCompletionClientConfig(
            inner=without_secrets(self._inner.dump_component()),
            base_url=self._governance.governor.authority.config.base_url,
            **self._settings.model_dump(),
        )

    @classmethod
    def _from_config(cls, config: BudgetedChatCompletionClientConfig) -> Self:
        settings = config.settings()
        return cls(
            ChatCompletionClient.load_component(config.inner),
            AsyncCyclesClient(cycles_config_for_load(config.base_url)),
            **settings.model_dump(),
        )
