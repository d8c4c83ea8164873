"""Governed tool runs: ``BudgetedTool`` (one tool), ``budgeted_tools`` (a list) and ``BudgetedWorkbench``.

Each run reserves on the calling agent's subject (the model client's attribution rules), action
kind ``tool.call`` and action name the tool's name; once the tool returned it commits a fixed or
computed actual, and it releases when the tool raises, fails or is cancelled.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

from autogen_core import CancellationToken, Component, ComponentModel
from autogen_core.tools import BaseTool, TextResultContent, ToolResult, ToolSchema, Workbench
from opentelemetry import context as otel_context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from pydantic import BaseModel, ConfigDict
from runcycles import AsyncCyclesClient, CyclesClient, CyclesProtocolError  # type: ignore[import-untyped]
from typing_extensions import Self

from cycles_otel import semconv as sc
from cycles_otel.autogen.attribution import CallingAgent, calling_agent
from cycles_otel.autogen.authority import Authority
from cycles_otel.autogen.checks import check_base_url, check_providers, check_transport, given
from cycles_otel.autogen.config import MAX_AMOUNT, SUBJECT_FIELDS, ToolSettings, cycles_config_for_load
from cycles_otel.autogen.estimate import SOURCE_CALLABLE, SOURCE_FIXED, Estimate
from cycles_otel.autogen.lifecycle import GovernedCall, Spent
from cycles_otel.autogen.plan import CallPlan, Governor, Priced
from cycles_otel.autogen.reservation import is_denial
from cycles_otel.autogen.settlement import Settlements
from cycles_otel.autogen.team import install_on_first_client, stop_run
from cycles_otel.autogen.telemetry import ClientFacts, ClientTelemetry, instrument_protocol_layer

logger = logging.getLogger(__name__)

R = TypeVar("R")
ToolEstimate = int | Callable[[str, Mapping[str, Any]], int]
"""A fixed amount per run, or ``(tool name, arguments) -> amount``."""
ToolActual = int | Callable[[str, Mapping[str, Any], Any], int] | None
"""What a run that returned cost: fixed, ``(tool name, arguments, result) -> amount``, or the estimate."""
DENIED_PREFIX: Final = "budget denied"
SOURCE_ESTIMATE: Final = "estimate"

# The agent calling a tool, read before AutoGen's execute_tool span starts (it hides invoke_agent).
_caller: contextvars.ContextVar[CallingAgent | None] = contextvars.ContextVar(
    "cycles_otel_tool_caller", default=None
)


class ToolCall(GovernedCall):
    """One governed tool run: what it cost is known once it returned (:meth:`done`)."""

    _spent: Spent | None = None

    def done(self, spent: Spent) -> None:
        self._spent = spent

    def spent(self) -> Spent | None:
        return self._spent


class ToolRunFailed(Exception):
    """A workbench answered with an error result: the tool did not complete, so its run is released."""


class ToolGovernance:
    """What the governed runs of one tool, or of every tool of a workbench, share."""

    def __init__(
        self,
        cycles_client: AsyncCyclesClient | CyclesClient | None,
        estimate_amount: ToolEstimate,
        actual: ToolActual,
        options: Mapping[str, Any],
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        instrument_protocol: bool,
    ) -> None:
        check_providers(None, tracer_provider, meter_provider, instrument_protocol)
        if (
            actual is not None
            and not callable(actual)
            and (isinstance(actual, bool) or not isinstance(actual, int))
        ):
            raise TypeError(
                f"actual={actual!r} ({type(actual).__name__}): give an int amount, a callable "
                "(tool name, arguments, result) -> int, or None to commit the estimate"
            )
        if isinstance(actual, int) and not 0 <= actual <= MAX_AMOUNT:
            raise ValueError(f"actual={actual!r}: give an int >= 0 and <= {MAX_AMOUNT}")
        authority = Authority.of(cycles_client, check_transport(options.get("transport", "aiohttp")))
        config = authority.config
        check_base_url(config.base_url)
        self.estimate_function = estimate_amount if callable(estimate_amount) else None
        defaults = {field: given(options.get(field), getattr(config, field)) for field in SUBJECT_FIELDS}
        defaults["agent"] = options.get("agent")  # a fixed agent, or the calling one
        settings = ToolSettings.validated(
            **{**options, **defaults},
            estimate_amount=None if self.estimate_function is not None else estimate_amount,
        )
        if settings.estimate_amount is None and self.estimate_function is None:
            raise ValueError(
                "estimate_amount=None: give what one run reserves, an int >= 0, or a callable "
                "(tool name, arguments) -> int"
            )
        self.actual = actual
        self.governor = Governor(settings, authority, Settlements(), fallback_agent=config.agent or None)
        self._providers = (tracer_provider, meter_provider)
        self._telemetry: dict[str, ClientTelemetry] = {}
        if instrument_protocol:
            instrument_protocol_layer(tracer_provider, meter_provider)
        install_on_first_client()
        authority.replay()

    @property
    def settings(self) -> ToolSettings:
        return self.governor.settings

    def telemetry(self, name: str) -> ClientTelemetry:
        """The telemetry of ``name``'s runs (its own cost label value: ``gen_ai.tool.name``)."""
        found = self._telemetry.get(name)
        if found is None:
            settings = self.settings
            facts = ClientFacts(name, "", settings.unit, settings.action_kind, sc.GEN_AI_TOOL_NAME)
            found = self._telemetry[name] = ClientTelemetry(
                facts, *self._providers, emit_inference_span=False, capture_content=False
            )
        return found

    async def run(
        self,
        name: str,
        arguments: Mapping[str, Any],
        work: Callable[[], Awaitable[R]],
        denied: Callable[[CyclesProtocolError], R],
        failed: Callable[[R], bool] = lambda result: False,
    ) -> R:
        """``work()`` inside a reservation; on a denial raise, or answer ``denied(error)`` (``on_denied``)."""
        agent = _caller.get() or calling_agent()
        plan = self._plan(name, arguments, agent)
        call = ToolCall(self.governor, plan, self.telemetry(name).start(plan, otel_context.get_current()))
        try:
            await call.reserve()
            result = await work()
            if failed(result):  # answered, but as an error: released like an exception
                call.fail(ToolRunFailed(name))
            else:
                call.done(self._spent(name, arguments, result, plan))
        except BaseException as exc:  # CancelledError included: the reservation must not leak
            call.fail(exc)
            await call.finish()
            if isinstance(exc, CyclesProtocolError) and is_denial(exc) and self._answers_denial(exc, agent):
                return denied(exc)
            raise
        await call.finish(background=self.settings.settle_in_background)
        return result

    def _answers_denial(self, error: CyclesProtocolError, agent: CallingAgent | None) -> bool:
        """Whether a denial is answered as a tool result rather than raised.

        ``on_denied="result"``: always. ``"raise"``: inside an agent's or team's run, AutoGen's
        workbenches hand a raised error to the model anyway (and an error escaping a workbench
        hangs AssistantAgent 0.7.5), so the run is stopped instead, at its next governed model
        call, with this typed error; outside any run, the error is raised.
        """
        return self.settings.on_denied == "result" or stop_run(error, agent)

    def _plan(self, name: str, arguments: Mapping[str, Any], agent: CallingAgent | None) -> CallPlan:
        if self.estimate_function is not None:
            amount = _checked("the estimate_amount callable", self.estimate_function(name, arguments))
            estimate = Estimate(amount, SOURCE_CALLABLE)
        else:
            assert self.settings.estimate_amount is not None
            estimate = Estimate(self.settings.estimate_amount, SOURCE_FIXED)
        return CallPlan.of(self.settings, name, estimate, agent, self.governor.fallback_agent)

    def _spent(self, name: str, arguments: Mapping[str, Any], result: Any, plan: CallPlan) -> Spent:
        unit, actual = self.settings.unit, self.actual
        if actual is None:
            return Spent(Priced.of(plan.estimate.amount, unit), SOURCE_ESTIMATE)
        if isinstance(actual, int):
            return Spent(Priced.of(actual, unit), SOURCE_FIXED)
        try:
            amount = _checked("the actual callable", actual(name, arguments, result))
        except Exception:  # the tool ran and spent: charge the estimate rather than nothing
            logger.warning(
                "cycles_otel: the actual of tool %s failed; committing its estimate", name, exc_info=True
            )
            return Spent(Priced.of(plan.estimate.amount, unit), SOURCE_ESTIMATE)
        return Spent(Priced.of(amount, unit), SOURCE_CALLABLE)

    def dumped(self) -> dict[str, Any]:
        """The settings a component config carries (callables cannot be dumped)."""
        if self.estimate_function is not None or callable(self.actual):
            raise ValueError(
                "a callable estimate_amount or actual cannot be dumped: pass ints to dump this tool"
            )
        return {
            **self.settings.model_dump(),
            "actual": self.actual,
            "base_url": self.governor.authority.config.base_url,
        }


def _checked(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AMOUNT:
        raise ValueError(f"{what} must return an int from 0 to {MAX_AMOUNT}, got {value!r}")
    return value


def denial_text(error: CyclesProtocolError) -> str:
    """What the model reads when a tool run is denied (``on_denied="result"``)."""
    return f"{DENIED_PREFIX}: {error.error_code or type(error).__name__}: {error}. The tool did not run."


# --- one tool ------------------------------------------------------------------------------------
class GovernedToolsConfig(ToolSettings):
    """What a dumped :class:`BudgetedTool` or :class:`BudgetedWorkbench` holds beside what it wraps."""

    model_config = ConfigDict(strict=False, frozen=True, extra="forbid")  # loaded from JSON

    actual: int | None = None
    base_url: str | None = None

    def rebuilt(self, wrapped: str) -> tuple[AsyncCyclesClient, dict[str, Any]]:
        """The Cycles client (key from ``CYCLES_API_KEY``) and the keywords that rebuild the dumped one."""
        options = self.model_dump(exclude={wrapped, "actual", "base_url", "estimate_amount"})
        client = AsyncCyclesClient(cycles_config_for_load(self.base_url))
        return client, {"estimate_amount": self.estimate_amount or 0, "actual": self.actual, **options}


class BudgetedToolConfig(GovernedToolsConfig):
    """Declarative form of :class:`BudgetedTool`: the wrapped tool's own config and the settings."""

    tool: ComponentModel


class BudgetedTool(BaseTool[BaseModel, Any], Component[BudgetedToolConfig]):
    """``tool``, each run reserved, settled and traced through Cycles; same name, description and schema.

    ``BudgetedTool(search, cycles_client, estimate_amount=50_000, actual=lambda name, args, result:
    ...)``. In ``AssistantAgent(tools=[...])`` AutoGen's own workbench hands any error a tool raises
    to the model as the tool's result: to stop the agent (and make ``team.run()`` raise the typed
    error) on a denial, give the agent ``workbench=BudgetedWorkbench(...)`` instead;
    ``on_denied="result"`` answers ``"budget denied: ..."`` for the model to recover from.
    """

    component_type = "tool"
    component_config_schema = BudgetedToolConfig
    component_provider_override = "cycles_otel.autogen.BudgetedTool"

    def __init__(
        self,
        tool: BaseTool[Any, Any],
        cycles_client: AsyncCyclesClient | CyclesClient | None = None,
        *,
        estimate_amount: ToolEstimate,
        actual: ToolActual = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        instrument_protocol: bool = True,
        **options: Any,
    ) -> None:
        if not isinstance(tool, BaseTool):
            raise TypeError(
                f"tool must be an AutoGen BaseTool (e.g. FunctionTool), got {type(tool).__name__}"
            )
        super().__init__(tool.args_type(), tool.return_type(), tool.name, tool.description)
        self._tool = tool
        self._governance = ToolGovernance(
            cycles_client,
            estimate_amount,
            actual,
            options,
            tracer_provider,
            meter_provider,
            instrument_protocol,
        )

    @property
    def tool(self) -> BaseTool[Any, Any]:
        return self._tool

    @property
    def schema(self) -> ToolSchema:
        return self._tool.schema

    def state_type(self) -> type[BaseModel] | None:
        return self._tool.state_type()

    def return_value_as_string(self, value: Any) -> str:
        return value if isinstance(value, str) else self._tool.return_value_as_string(value)

    async def run_json(
        self, args: Mapping[str, Any], cancellation_token: CancellationToken, call_id: str | None = None
    ) -> Any:
        token = _caller.set(calling_agent())  # before AutoGen's execute_tool span hides invoke_agent
        try:
            return await super().run_json(args, cancellation_token, call_id)
        finally:
            _caller.reset(token)

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> Any:
        arguments = args.model_dump()
        return await self._governance.run(
            self.name, arguments, lambda: self._tool.run(args, cancellation_token), denial_text
        )

    async def save_state_json(self) -> Mapping[str, Any]:
        return await self._tool.save_state_json()

    async def load_state_json(self, state: Mapping[str, Any]) -> None:
        await self._tool.load_state_json(state)

    def _to_config(self) -> BudgetedToolConfig:
        return BudgetedToolConfig(tool=self._tool.dump_component(), **self._governance.dumped())

    @classmethod
    def _from_config(cls, config: BudgetedToolConfig) -> Self:
        client, options = config.rebuilt("tool")
        return cls(BaseTool.load_component(config.tool), client, **options)


def budgeted_tools(
    tools: Sequence[BaseTool[Any, Any]],
    cycles_client: AsyncCyclesClient | CyclesClient | None = None,
    **options: Any,
) -> list[BudgetedTool]:
    """Each of ``tools`` as a :class:`BudgetedTool`, all with the same options."""
    return [BudgetedTool(tool, cycles_client, **options) for tool in tools]


# --- a workbench ---------------------------------------------------------------------------------
class BudgetedWorkbenchConfig(GovernedToolsConfig):
    """Declarative form of :class:`BudgetedWorkbench`: the wrapped workbench's own config and the settings."""

    workbench: ComponentModel


class BudgetedWorkbench(Workbench, Component[BudgetedWorkbenchConfig]):
    """Every ``call_tool`` of ``workbench`` (a ``StaticWorkbench``, an MCP workbench, ...) governed.

    ``AssistantAgent(..., workbench=BudgetedWorkbench(StaticWorkbench(tools), cycles_client,
    estimate_amount=...))``. A denial raises the typed runcycles error out of ``call_tool``, which
    stops the agent (and ``team.run()`` raises it), unless ``on_denied="result"``. A call the
    inner workbench answers as an error is released. The tool's own ``execute_tool`` span nests
    inside the ``cycles.reservation`` span.
    """

    component_type = "workbench"
    component_config_schema = BudgetedWorkbenchConfig
    component_provider_override = "cycles_otel.autogen.BudgetedWorkbench"

    def __init__(
        self,
        workbench: Workbench,
        cycles_client: AsyncCyclesClient | CyclesClient | None = None,
        *,
        estimate_amount: ToolEstimate,
        actual: ToolActual = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        instrument_protocol: bool = True,
        **options: Any,
    ) -> None:
        if not isinstance(workbench, Workbench):
            raise TypeError(f"workbench must be an AutoGen Workbench, got {type(workbench).__name__}")
        self._workbench = workbench
        self._governance = ToolGovernance(
            cycles_client,
            estimate_amount,
            actual,
            options,
            tracer_provider,
            meter_provider,
            instrument_protocol,
        )

    async def list_tools(self) -> list[ToolSchema]:
        return await self._workbench.list_tools()

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        def denied(error: CyclesProtocolError) -> ToolResult:
            return ToolResult(
                name=name, result=[TextResultContent(content=denial_text(error))], is_error=True
            )

        return await self._governance.run(
            name,
            dict(arguments or {}),
            lambda: self._workbench.call_tool(name, arguments, cancellation_token, call_id),
            denied,
            failed=lambda result: result.is_error,
        )

    async def start(self) -> None:
        await self._workbench.start()

    async def stop(self) -> None:
        await self._workbench.stop()

    async def reset(self) -> None:
        await self._workbench.reset()

    async def save_state(self) -> Mapping[str, Any]:
        return await self._workbench.save_state()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        await self._workbench.load_state(state)

    def _to_config(self) -> BudgetedWorkbenchConfig:
        return BudgetedWorkbenchConfig(
            workbench=self._workbench.dump_component(), **self._governance.dumped()
        )

    @classmethod
    def _from_config(cls, config: BudgetedWorkbenchConfig) -> Self:
        client, options = config.rebuilt("workbench")
        return cls(Workbench.load_component(config.workbench), client, **options)
