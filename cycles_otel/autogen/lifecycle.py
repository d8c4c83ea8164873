"""``GovernedCall``: one model call from reserve to settlement, and all of its telemetry."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from autogen_core.models import CreateResult, LLMMessage
from runcycles import CyclesProtocolError, get_cycles_context  # type: ignore[import-untyped]
from runcycles.context import _set_context  # type: ignore[import-untyped]
from runcycles.streaming import AsyncStreamReservation  # type: ignore[import-untyped]

from cycles_otel import semconv as sc
from cycles_otel.autogen.estimate import Tools, character_token_count, text_tokens
from cycles_otel.autogen.plan import CallPlan, Governance, Priced
from cycles_otel.autogen.reservation import (
    RecordingClient,
    apply_caps,
    charged_amount,
    complete_error,
    is_authority_down,
    is_denial,
    over_limit,
)
from cycles_otel.autogen.settlement import Settlements
from cycles_otel.autogen.team import record_failure
from cycles_otel.autogen.telemetry import CallTelemetry, SpanInContext
from cycles_otel.autogen.usage import stream_usage_kwargs, with_output_cap
from cycles_otel.protocol.late_settlement import carried

ALLOW_ON_AUTHORITY_ERROR: Final = "allow"


class GovernedCall:
    """One governed model call: ``reserve()``, the inner call, then ``finish()`` exactly once.

    Between them the caller reports what the model did: ``stop(result)`` for a final
    ``CreateResult``, ``streamed(text)`` for each streamed chunk, ``fail(exc)`` when the call did
    not end normally. ``finish()`` settles by one rule for ``create()`` and ``create_stream()``
    alike, in a task of its own (see :class:`~cycles_otel.autogen.settlement.Settlements`):

    * output was produced (a result, or streamed text): commit what it cost - the reported usage,
      else the estimated input plus the streamed text's tokens, marked ``estimated``;
    * nothing was produced: release the reservation;
    * the authority was down and ``on_authority_error="allow"``: no reservation exists, the spend
      is recorded with ``POST /v1/events`` (journaled, retried until it lands).

    The span ends, with its outcome, when the settlement has landed or failed.
    """

    def __init__(
        self,
        governance: Governance,
        plan: CallPlan,
        telemetry: CallTelemetry,
        messages: Sequence[LLMMessage],
        settlements: Settlements,
    ) -> None:
        self._g = governance
        self._plan = plan
        self.telemetry = telemetry
        self._messages = messages
        self._settlements = settlements
        settings = governance.settings
        self._recorder = RecordingClient(
            governance.authority.client, governance.authority.config, settlements.before_commit
        )
        # The journaled commit carries this call's span, so a replay in a later process links to it.
        self._metadata = carried(telemetry.span.get_span_context())
        self._reservation = AsyncStreamReservation(
            self._recorder,
            subject=plan.cycles_subject,
            action=plan.action,
            estimate=plan.estimate_amount,
            ttl_ms=settings.ttl_ms,
            overage_policy=settings.overage_policy,
            metadata=self._metadata or None,
        )
        self._outer_context = get_cycles_context()  # an enclosing @cycles run keeps its context
        self._reserved = False
        self._ungoverned = False
        self._result: CreateResult | None = None
        self._streamed: list[str] = []
        self._failure: BaseException | None = None
        self._settling: asyncio.Task[None] | None = None
        self._reserving: asyncio.Future[Any] | None = None

    # --- reserve ---------------------------------------------------------------------------------
    async def reserve(self) -> None:
        """Reserve the estimate; a denial raises runcycles' typed error with code and request id filled.

        The reserve runs in a task of its own: a caller cancelled while it is on the wire leaves it
        running, and :meth:`finish` releases what it reserved once it answers.
        """
        task = asyncio.current_task()
        cancels_before = task.cancelling() if task is not None else 0
        with self.telemetry.current():  # the task copies this context: protocol spans nest in ours
            self._reserving = asyncio.ensure_future(self._enter())
        try:
            context = await asyncio.shield(self._reserving)
        except CyclesProtocolError as exc:
            complete_error(exc, self._recorder.last_reserve)
            if is_denial(exc):
                self.telemetry.denied(exc)
            elif self._fails_open(exc):
                self._ungoverned = True
                self.telemetry.ungoverned(exc)
                return
            record_failure(exc, self._plan.agent)
            raise
        self._reserved = True
        _set_context(context)  # runcycles' context names this reservation (as in stream_reservation)
        self.telemetry.reserved(self._reservation.reservation_id, _decision(self._reservation))
        # A cancellation that lands as the answer arrives must not let the model run.
        if task is not None and task.cancelling() > cancels_before:
            raise asyncio.CancelledError

    async def _enter(self) -> Any:
        await self._reservation.__aenter__()
        return get_cycles_context()

    async def _reserved_after_all(self) -> bool:
        """Whether a reserve the caller stopped waiting for went through (so it must be released)."""
        reserving = self._reserving
        if self._reserved or reserving is None:
            return self._reserved
        await asyncio.wait([reserving])
        return not reserving.cancelled() and reserving.exception() is None

    def _fails_open(self, exc: CyclesProtocolError) -> bool:
        return self._g.settings.on_authority_error == ALLOW_ON_AUTHORITY_ERROR and is_authority_down(exc)

    def request(
        self, tools: Tools, extra_create_args: Mapping[str, Any], *, stream: bool
    ) -> tuple[Tools, Mapping[str, Any], dict[str, Any]]:
        """The tools, ``extra_create_args`` and extra keywords of the inner call, after caps."""
        settings, inner = self._g.settings, self._g.inner
        decision = _decision(self._reservation) if self._reserved else None
        applied = apply_caps(
            tools,
            self._plan.estimate.output_cap,
            caps=self._reservation.caps if decision == sc.DECISION_ALLOW_WITH_CAPS else None,
            allowlist=settings.tool_allowlist,
            denylist=settings.tool_denylist,
        )
        self.telemetry.capped(applied.max_tokens, applied.tools_removed)
        extra = extra_create_args
        if applied.output_cap is not None:
            extra = with_output_cap(inner, extra, applied.output_cap)
        self.telemetry.start_inference(self._messages, applied.output_cap)
        return applied.tools, extra, stream_usage_kwargs(inner, extra) if stream else {}

    def inference(self) -> SpanInContext:
        """The inference span current for a stretch without ``yield``: the inner client's spans nest in it."""
        return self.telemetry.inference()

    # --- what the model did ----------------------------------------------------------------------
    def stop(self, result: CreateResult) -> None:
        """The model's final answer."""
        self._result = result
        priced, source = self._priced()
        self.telemetry.inference_done(result, priced, source)

    def streamed(self, text: str) -> None:
        self._streamed.append(text)

    def fail(self, exc: BaseException) -> None:
        """The call did not end normally (``GeneratorExit``: its stream was abandoned, which is no error)."""
        if self._failure is not None:
            return
        self._failure = exc
        abandoned = isinstance(exc, GeneratorExit)
        if not abandoned:
            self.telemetry.failed(exc)
        if self._result is None:
            priced, source = self._priced()
            self.telemetry.inference_done(
                None, priced if self._streamed else None, source, None if abandoned else exc
            )

    def _priced(self) -> tuple[Priced, str]:
        """What this call's output cost, priced once: the reported usage, else an estimate of it."""
        result = self._result
        if result is not None:
            usage = result.usage
            if result.cached or usage.prompt_tokens or usage.completion_tokens:
                priced = self._g.costs.price(usage.prompt_tokens, usage.completion_tokens, free=result.cached)
                return priced, sc.ACTUAL_SOURCE_USAGE
            output = text_tokens(len(_text_of(result.content)))
        else:
            output = text_tokens(len("".join(self._streamed)))
        input_tokens = self._plan.estimate.input_tokens
        if input_tokens is None:
            input_tokens = character_token_count(self._messages)
        return self._g.costs.price(input_tokens, output), sc.ACTUAL_SOURCE_ESTIMATED

    @property
    def produced_output(self) -> bool:
        return self._result is not None or bool(self._streamed)

    # --- settle ----------------------------------------------------------------------------------
    async def finish(self, *, background: bool = False) -> None:
        """Settle (once) in a task of its own; wait until it has landed, or with ``background``
        only until the commit is journaled. A cancelled wait leaves the settlement running."""
        if self._settling is None:
            _set_context(self._outer_context)  # the caller's: an enclosing @cycles run keeps its own
            self._settling = self._settlements.run(self._settle())
        waited: asyncio.Future[None] = self._recorder.journaled if background else self._settling
        await asyncio.shield(waited)

    async def _settle(self) -> None:
        try:
            if self._ungoverned:
                self._record_ungoverned_spend()
            elif not await self._reserved_after_all():
                pass  # nothing was held: a denial, or an error before the reserve answered
            elif self.produced_output:
                await self._commit()
            else:
                await self._release()
        except BaseException as exc:  # the span says so; Settlements logs it, nobody else must hear of it
            self.telemetry.failed(exc)
            raise
        finally:
            self._recorder.mark_journaled()
            self.telemetry.end()

    async def _commit(self) -> None:
        priced, source = self._priced()
        usage = self._reservation.usage
        usage.tokens_input, usage.tokens_output = priced.input_tokens, priced.output_tokens
        usage.model_version = self._g.model
        usage.actual_cost = priced.amount
        with self.telemetry.current():
            await self._reservation.__aexit__(None, None, None)
        failed = self._reservation.settlement_error is not None
        commit = self._recorder.last_commit
        self.telemetry.settled(
            sc.OUTCOME_FAILED if failed else sc.OUTCOME_COMMITTED,
            priced,
            charged_amount(commit),
            source,
            over_limit(commit),
        )

    async def _release(self) -> None:
        exc = self._failure or asyncio.CancelledError()
        with self.telemetry.current():
            await self._reservation.__aexit__(type(exc), exc, exc.__traceback__ or sys.exc_info()[2])
        self.telemetry.settled(sc.OUTCOME_RELEASED)

    def _record_ungoverned_spend(self) -> None:
        if not self.produced_output:
            return  # no reservation and no output: nothing was held, nothing was spent
        priced, source = self._priced()
        body: dict[str, Any] = {
            "idempotency_key": f"ungoverned-{uuid.uuid4()}",
            "subject": dict(self._plan.subject),
            "action": self._plan.action.model_dump(exclude_none=True),
            "actual": {"unit": self._g.settings.unit, "amount": priced.amount},
            "metrics": {"tokens_input": priced.input_tokens, "tokens_output": priced.output_tokens},
            "metadata": {**self._metadata, "governance": "authority_unavailable"},
        }
        self._g.authority.record_event(body)
        self.telemetry.settled(sc.RESERVATION_RECORDED, priced, None, source, None)


def _decision(reservation: AsyncStreamReservation) -> str:
    return str(getattr(reservation.decision, "value", reservation.decision))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text_of(getattr(item, "arguments", item)) for item in content)
    return str(content)
