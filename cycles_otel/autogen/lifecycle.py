"""``GovernedCall``: one governed call (a model call or a tool run) from reserve to settlement."""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Final

from runcycles import CyclesProtocolError, get_cycles_context  # type: ignore[import-untyped]
from runcycles.context import _set_context  # type: ignore[import-untyped]
from runcycles.streaming import AsyncStreamReservation  # type: ignore[import-untyped]

from cycles_otel import semconv as sc
from cycles_otel.autogen.plan import CallPlan, Governor, Priced
from cycles_otel.autogen.reservation import (
    RecordingClient,
    charged_amount,
    complete_error,
    is_authority_down,
    is_denial,
    over_limit,
)
from cycles_otel.autogen.team import record_failure
from cycles_otel.autogen.telemetry import CallTelemetry
from cycles_otel.protocol.late_settlement import carried

ALLOW_ON_AUTHORITY_ERROR: Final = "allow"
OBSERVE: Final = "observe"


@dataclass(frozen=True)
class Spent:
    """What a call consumed, priced, and how that is known (``usage``, ``estimated``, ``fixed``, ...)."""

    priced: Priced
    source: str


class GovernedCall:
    """One governed call: ``reserve()``, the work, then ``finish()`` exactly once.

    Between them the caller reports ``fail(exc)`` when the work did not end normally, and
    subclasses say what the work consumed (:meth:`spent`). ``finish()`` settles by one rule, in a
    task of its own (see :class:`~cycles_otel.autogen.settlement.Settlements`):

    * something was consumed: commit what it cost;
    * nothing was: release the reservation;
    * the authority was down and ``on_authority_error="allow"``: no reservation exists, the spend
      is recorded with ``POST /v1/events`` (journaled, retried until it lands);
    * ``mode="observe"``: the authority was only asked (``/v1/decide``); nothing is held or charged.

    The span ends, with its outcome, when the settlement has landed or failed.
    """

    def __init__(self, governor: Governor[Any], plan: CallPlan, telemetry: CallTelemetry) -> None:
        self._governor = governor
        self._plan = plan
        self.telemetry = telemetry
        settings, authority = governor.settings, governor.authority
        self._recorder = RecordingClient(
            authority.client, authority.config, governor.settlements.before_commit
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
        self._reserving: asyncio.Future[Any] | None = None
        self._ungoverned = False
        self._observed = False
        self.failure: BaseException | None = None
        self._settling: asyncio.Task[None] | None = None

    @property
    def observing(self) -> bool:
        return bool(self._governor.settings.mode == OBSERVE)

    # --- reserve ---------------------------------------------------------------------------------
    async def reserve(self) -> None:
        """Reserve the estimate; a denial raises runcycles' typed error with code and request id filled.

        The reserve runs in a task of its own: a caller cancelled while it is on the wire leaves it
        running, and :meth:`finish` releases what it reserved once it answers. In ``observe`` mode
        the authority is asked instead, and nothing it says stops the call.
        """
        if self.observing:
            await self._observe()
            return
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
        self.telemetry.reserved(self._reservation.reservation_id, self.decision or "")
        # A cancellation that lands as the answer arrives must not let the work run.
        if task is not None and task.cancelling() > cancels_before:
            raise asyncio.CancelledError

    @property
    def decision(self) -> str | None:
        return self._answered_decision() if self._reserved else None

    @property
    def caps(self) -> Any:
        return self._reservation.caps if self.decision == sc.DECISION_ALLOW_WITH_CAPS else None

    async def _enter(self) -> Any:
        await self._reservation.__aenter__()
        return get_cycles_context()

    def _fails_open(self, exc: CyclesProtocolError) -> bool:
        return self._governor.settings.on_authority_error == ALLOW_ON_AUTHORITY_ERROR and is_authority_down(
            exc
        )

    async def _observe(self) -> None:
        """Shadow mode: what the authority would decide, recorded; never raised, nothing held."""
        self._observed = True
        plan = self._plan
        request = {
            "idempotency_key": f"observe-{uuid.uuid4()}",
            "subject": dict(plan.subject),
            "action": plan.action.model_dump(exclude_none=True),
            "estimate": plan.estimate_amount.model_dump(exclude_none=True),
        }
        with self.telemetry.current():
            try:
                response = await self._governor.authority.client.decide(request)
            except Exception as exc:  # the authority's trouble never stops an observed call
                self.telemetry.observed(None, None, exc)
                return
        body = response.body if response.is_success and isinstance(response.body, dict) else None
        decision = body.get("decision") if body is not None else None
        reason = body.get("reason_code") if body is not None else None
        self.telemetry.observed(
            decision if isinstance(decision, str) else None,
            reason if isinstance(reason, str) else None,
            None if body is not None else RuntimeError(response.error_message or f"http {response.status}"),
        )

    async def _reserved_after_all(self) -> bool:
        """Whether a reserve the caller stopped waiting for went through (so it must be released)."""
        reserving = self._reserving
        if self._reserved or reserving is None:
            return self._reserved
        await asyncio.wait([reserving])
        if reserving.cancelled() or reserving.exception() is not None:
            return False
        self.telemetry.reserved(self._reservation.reservation_id, self._answered_decision())
        return True

    def _answered_decision(self) -> str:
        return str(getattr(self._reservation.decision, "value", self._reservation.decision))

    # --- what the work did -----------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """The work did not end normally (``GeneratorExit``: its stream was abandoned, which is no error)."""
        if self.failure is not None:
            return
        self.failure = exc
        if not isinstance(exc, GeneratorExit):
            self.telemetry.failed(exc)

    def spent(self) -> Spent | None:
        """What the work consumed, priced; ``None`` when it consumed nothing (the reservation is released)."""
        raise NotImplementedError

    # --- settle ----------------------------------------------------------------------------------
    async def finish(self, *, background: bool = False) -> None:
        """Settle (once) in a task of its own; wait until it has landed, or with ``background``
        only until the commit is journaled. A cancelled wait leaves the settlement running."""
        if self._settling is None:
            _set_context(self._outer_context)  # the caller's: an enclosing @cycles run keeps its own
            self._settling = self._governor.settlements.run(self._settle())
        waited: asyncio.Future[None] = self._recorder.journaled if background else self._settling
        await asyncio.shield(waited)

    async def _settle(self) -> None:
        try:
            spent = self.spent()
            if self._observed:
                self.telemetry.settled(sc.RESERVATION_OBSERVED, spent.priced if spent else None)
            elif self._ungoverned:
                self._record_ungoverned_spend(spent)
            elif not await self._reserved_after_all():
                pass  # nothing was held: a denial, or an error before the reserve answered
            elif spent is not None:
                await self._commit(spent)
            else:
                await self._release()
        except BaseException as exc:  # the span says so; Settlements logs it, nobody else must hear of it
            self.telemetry.failed(exc)
            raise
        finally:
            self._recorder.mark_journaled()
            self.telemetry.end()

    async def _commit(self, spent: Spent) -> None:
        priced = spent.priced
        usage = self._reservation.usage
        usage.tokens_input, usage.tokens_output = priced.input_tokens, priced.output_tokens
        usage.model_version = self._plan.action.name
        usage.actual_cost = priced.amount
        with self.telemetry.current():
            await self._reservation.__aexit__(None, None, None)
        failed = self._reservation.settlement_error is not None
        commit = self._recorder.last_commit
        self.telemetry.settled(
            sc.OUTCOME_FAILED if failed else sc.OUTCOME_COMMITTED,
            priced,
            charged_amount(commit),
            spent.source,
            over_limit(commit),
        )

    async def _release(self) -> None:
        exc = self.failure or asyncio.CancelledError()
        with self.telemetry.current():
            await self._reservation.__aexit__(type(exc), exc, exc.__traceback__ or sys.exc_info()[2])
        self.telemetry.settled(sc.OUTCOME_RELEASED)

    def _record_ungoverned_spend(self, spent: Spent | None) -> None:
        if spent is None:
            return  # no reservation and nothing consumed: nothing was held, nothing was spent
        priced, plan = spent.priced, self._plan
        body: dict[str, Any] = {
            "idempotency_key": f"ungoverned-{uuid.uuid4()}",
            "subject": dict(plan.subject),
            "action": plan.action.model_dump(exclude_none=True),
            "actual": {"unit": self._governor.settings.unit, "amount": priced.amount},
            "metadata": {**self._metadata, "governance": "authority_unavailable"},
        }
        if priced.input_tokens or priced.output_tokens:
            body["metrics"] = {"tokens_input": priced.input_tokens, "tokens_output": priced.output_tokens}
        self._governor.authority.record_event(body)
        self.telemetry.settled(sc.RESERVATION_RECORDED, priced, None, spent.source, None)
