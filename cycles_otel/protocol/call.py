"""Span and metrics of one Cycles protocol call, read from its request and its ``CyclesResponse``."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from cycles_otel import semconv as sc
from cycles_otel.bounded import BoundedMap
from cycles_otel.failsafe import never_raises
from cycles_otel.instruments import Instruments
from cycles_otel.leases import DEFAULT_GRACE_MS, DEFAULT_TTL_MS
from cycles_otel.protocol.late_settlement import SettlementLinks, carried_span
from cycles_otel.protocol.operations import OPERATIONS, Answer, Operation
from cycles_otel.tally import Labels
from cycles_otel.wire import NO_FIELDS, amount_of, field, fields_of, text, whole

logger = logging.getLogger(__name__)

RESERVATION_GONE_CODES: Final = frozenset({"RESERVATION_FINALIZED", "RESERVATION_EXPIRED", "NOT_FOUND"})
# Once committed or released, a reservation's later answers (replays, retries) count no more.
FINAL_OUTCOMES: Final = (sc.OUTCOME_COMMITTED, sc.OUTCOME_RELEASED)
UNKNOWN: Final = "unknown"
LABEL_CACHE_SIZE: Final = 4_096  # label sets kept per kind: beyond it they are built per call
SUBJECT_ATTRIBUTES: Final = tuple((name, sc.CYCLES_SUBJECT_PREFIX + name) for name in sc.SUBJECT_FIELDS)
REQUEST_AMOUNTS: Final = (("estimate", sc.CYCLES_ESTIMATE_AMOUNT), ("actual", sc.CYCLES_ACTUAL_AMOUNT))
RESPONSE_AMOUNTS: Final = (("charged", sc.CYCLES_CHARGED_AMOUNT), ("released", sc.CYCLES_RELEASED_AMOUNT))


class ProtocolTelemetry:
    """Tracer, instruments and the little state (active ids, reserve spans) shared by all calls."""

    def __init__(self, tracer: Tracer, instruments: Instruments) -> None:
        self.tracer = tracer
        self.instruments = instruments
        self.links = SettlementLinks()
        self._active = instruments.active  # what cycles.client.active_reservations counts
        self._settled: BoundedMap[str, str] = BoundedMap()
        self._events_charged: BoundedMap[str, bool] = BoundedMap()
        self.duration_labels = {op.name: Labels({sc.LABEL_OPERATION: op.name}) for op in OPERATIONS}
        # Label sets built once per combination (Tally sums are found by them in one lookup).
        self._outcome_labels = {o: Labels({sc.LABEL_OUTCOME: o}) for o in sc.SETTLEMENT_OUTCOMES}
        self._unit_labels: dict[str, Labels] = {}
        self._decision_labels: dict[tuple[str, str | None, str, str], Labels] = {}

    def start(self, op: Operation, args: Sequence[Any], kwargs: Mapping[str, Any]) -> ProtocolCall:
        return ProtocolCall(self, op, args, kwargs)

    def outcome_labels(self, outcome: str) -> Labels:
        return self._outcome_labels.get(outcome) or Labels({sc.LABEL_OUTCOME: outcome})

    def unit_labels(self, unit: str) -> Labels:
        found = self._unit_labels.get(unit)
        if found is None:
            found = Labels({sc.LABEL_UNIT: unit})
            if len(self._unit_labels) < LABEL_CACHE_SIZE:
                self._unit_labels[unit] = found
        return found

    def decision_labels(self, decision: str, reason: str | None, kind: str, name: str) -> Labels:
        """The labels of a decision; the action's kind and name pass the guard (asked again if collapsed)."""
        key = (decision, reason, kind, name)
        found = self._decision_labels.get(key)
        if found is not None:
            return found
        bounded_kind = self.bounded(sc.LABEL_ACTION_KIND, kind)
        bounded_name = self.bounded(sc.LABEL_ACTION_NAME, name)
        labels: dict[str, AttributeValue] = {
            sc.LABEL_DECISION: decision,
            sc.LABEL_ACTION_KIND: bounded_kind,
            sc.LABEL_ACTION_NAME: bounded_name,
        }
        if decision == sc.DECISION_DENY:
            labels[sc.LABEL_REASON] = reason or UNKNOWN
        found = Labels(labels)
        if bounded_kind == kind and bounded_name == name and len(self._decision_labels) < LABEL_CACHE_SIZE:
            self._decision_labels[key] = found
        return found

    def bounded(self, key: str, value: str) -> str:
        # The guard counts every collapse itself (Instruments wires it to label_overflow).
        return self.instruments.guard.bound(key, value)

    # --- reservation bookkeeping (ids never reach metric labels) -----------------------------
    def reservation_opened(self, reservation_id: str, span: Span, request: Any, body: Any) -> None:
        remaining = whole(field(body, "remaining_ttl_ms"))
        if remaining is None:  # an older authority: the requested TTL is the latest expiry can fall on
            remaining = whole(field(request, "ttl_ms")) or DEFAULT_TTL_MS
        grace = whole(field(request, "grace_period_ms"))
        self._active.opened(
            reservation_id,
            remaining,
            DEFAULT_GRACE_MS if grace is None else grace,
            whole(field(body, "expires_at_ms")),
        )
        self.links.remember(reservation_id, span.get_span_context())

    def reservation_extended(self, reservation_id: str, body: Any) -> None:
        self._active.extended(
            reservation_id, whole(field(body, "remaining_ttl_ms")), whole(field(body, "expires_at_ms"))
        )

    def reservation_closed(self, reservation_id: str) -> None:
        self._active.closed(reservation_id)

    def settle_once(self, reservation_id: str | None, outcome: str) -> bool:
        """Whether ``outcome`` is news for this reservation (a repeated answer counts once)."""
        if reservation_id is None:
            return True
        return self._settled.replace_if(
            reservation_id, outcome, lambda previous: previous not in (outcome, *FINAL_OUTCOMES)
        )

    def event_once(self, idempotency_key: str | None) -> bool:
        if idempotency_key is None:
            return True
        added, _ = self._events_charged.add_new(idempotency_key, True)
        return added


class ProtocolCall:
    """One protocol call: span started and made current in ``__init__``, ended by ``finish``/``fail``."""

    __slots__ = ("_op", "_request", "_reservation_id", "_started", "_t", "_target", "_token", "span")

    def __init__(
        self, telemetry: ProtocolTelemetry, op: Operation, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        self._t = telemetry
        self._op = op
        self._started = time.perf_counter()
        self._token: object | None = None
        self.span: Span = INVALID_SPAN
        self._request: Any = None
        self._reservation_id: str | None = None
        self._target: str | None = None  # the reservation this call settles, if it settles one
        self._begin(args, kwargs)

    @never_raises
    def _begin(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        op = self._op
        self._request = op.request(args, kwargs)
        rid = op.reservation_id(args, kwargs)
        self._reservation_id = rid if isinstance(rid, str) else None
        if op.settles is not None:
            self._target = op.settles.target(self._reservation_id, self._request)
        late, links = self._late_settlement()
        try:
            self.span = self._t.tracer.start_span(
                op.span_name, kind=SpanKind.CLIENT, links=links, attributes={sc.CYCLES_OPERATION: op.name}
            )
        except Exception:
            # A broken span processor: keep going without a span, metrics still count.
            logger.debug("cycles_otel: could not start span %s", op.span_name, exc_info=True)
        if self.span is not INVALID_SPAN:
            self._token = otel_context.attach(trace.set_span_in_context(self.span))
        if self.span.is_recording():
            self._annotate_request(late)

    def _late_settlement(self) -> tuple[bool, list[Link]]:
        """Whether this settles outside the call that reserved, and the link to that reserve span.

        Late: sent by runcycles' retry engine (background retry, journal replay), a recovery event,
        or a commit made under some other trace than its reservation's. A late settlement, and any
        settlement outside its reservation's trace (say, made without a parent span), links to it.
        """
        settles, target = self._op.settles, self._target
        if settles is None or target is None or not settles.links_to_reserve:
            return False, []
        late = settles.is_late(target)
        reserve_span = self._t.links.reserve_span(target) or carried_span(field(self._request, "metadata"))
        if reserve_span is None:
            return late, []
        current = trace.get_current_span().get_span_context()
        if current.trace_id == reserve_span.trace_id and not late:
            return False, []
        return late or current.is_valid, [Link(reserve_span)]

    def _annotate_request(self, late: bool) -> None:
        span, request = self.span, fields_of(self._request)
        attrs: dict[str, AttributeValue] = {}
        if self._reservation_id:
            attrs[sc.CYCLES_RESERVATION_ID] = self._reservation_id
        # Most parts exist on one operation only (a commit has no subject): absent ones are skipped whole.
        if (subject := self._op.subject(self._request)) is not None:
            for subject_field, attr in SUBJECT_ATTRIBUTES:
                if (value := text(subject.get(subject_field))) is not None:
                    attrs[attr] = value
        if (action := request.get("action")) is not None:
            action_fields = fields_of(action)
            if kind := text(action_fields.get("kind")):
                attrs[sc.CYCLES_ACTION_KIND] = kind
            if action_name := text(action_fields.get("name")):
                attrs[sc.CYCLES_ACTION_NAME] = action_name
        _put_amounts(attrs, request, REQUEST_AMOUNTS)
        if request.get("dry_run") is True:
            attrs[sc.CYCLES_DRY_RUN] = True
        if late:
            attrs[sc.CYCLES_LATE_SETTLEMENT] = True
        span.set_attributes(attrs)

    # --- the end of the call --------------------------------------------------------------------
    def finish(self, response: Any) -> None:
        # Measured while this call's span is still current, so exemplars point at it.
        answer: Answer | None = None
        try:
            answer = self._op.answer(response)
        except Exception:
            logger.debug("cycles_otel: unreadable response", exc_info=True)
        self._record_duration(answer.error_type if answer is not None else None)
        if answer is not None:
            settles = self._op.settles
            outcome = settles.outcome_of(answer, self._target) if settles is not None else None
            balances = _balances(answer.body)
            self._record_metrics(answer, outcome, balances)
            if self.span.is_recording():
                self._annotate_response(answer, response, outcome, balances)
        self._detach()
        self._end()

    def fail(self, exc: BaseException) -> None:
        error_type = type(exc).__qualname__
        self._record_duration(error_type)
        self._mark_failed(error_type, str(exc), exc)
        self._detach()
        self._end()

    @never_raises
    def _detach(self) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None

    @never_raises
    def _end(self) -> None:
        self.span.end()

    @never_raises
    def _record_duration(self, error_type: str | None) -> None:
        labels: Mapping[str, AttributeValue] = self._t.duration_labels[self._op.name]
        if error_type is not None:
            labels = {**labels, sc.ERROR_TYPE: self._t.bounded(sc.ERROR_TYPE, error_type)}
        self._t.instruments.operation_duration.record(time.perf_counter() - self._started, labels)

    @never_raises
    def _mark_failed(
        self, error_type: str, description: str | None, exc: BaseException | None = None
    ) -> None:
        span = self.span
        if not span.is_recording():
            return
        span.set_attribute(sc.ERROR_TYPE, error_type)
        if exc is not None:
            span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, description))

    @never_raises
    def _annotate_response(
        self, answer: Answer, response: Any, outcome: str | None, balances: list[Mapping[str, Any]]
    ) -> None:
        span, body = self.span, answer.body or NO_FIELDS
        attrs: dict[str, AttributeValue] = {}
        if answer.status > 0:
            attrs[sc.HTTP_RESPONSE_STATUS_CODE] = answer.status
        if request_id := text((getattr(response, "headers", None) or {}).get("x-request-id")):
            attrs[sc.CYCLES_REQUEST_ID] = request_id
        if rid := text(body.get("reservation_id")):
            attrs[sc.CYCLES_RESERVATION_ID] = rid
        if answer.decision:
            attrs[sc.CYCLES_DECISION] = answer.decision
        if answer.reason:
            attrs[sc.CYCLES_REASON] = answer.reason
        if scope := text(body.get("scope_path")):
            attrs[sc.CYCLES_SCOPE] = scope
        affected = body.get("affected_scopes")
        if isinstance(affected, list) and all(isinstance(s, str) for s in affected):
            attrs[sc.CYCLES_AFFECTED_SCOPES] = affected
        _put_amounts(attrs, body, RESPONSE_AMOUNTS)
        if outcome:
            attrs[sc.CYCLES_OUTCOME] = outcome
        if self._op.reports_over_limit:
            over = [b.get("is_over_limit") for b in balances]
            if any(isinstance(o, bool) for o in over):
                attrs[sc.CYCLES_OVER_LIMIT] = any(o is True for o in over)
        span.set_attributes(attrs)
        if answer.decision == sc.DECISION_DENY:
            event: dict[str, AttributeValue] = {sc.CYCLES_REASON: answer.reason or UNKNOWN}
            if scope:
                event[sc.CYCLES_SCOPE] = scope
            span.add_event(sc.EVENT_DENIED, event)
        elif answer.error_type is not None:
            self._mark_failed(answer.error_type, getattr(response, "error_message", None))

    # --- metrics ----------------------------------------------------------------------------------
    @never_raises
    def _record_metrics(self, answer: Answer, outcome: str | None, balances: list[Mapping[str, Any]]) -> None:
        t, op, instruments = self._t, self._op, self._t.instruments
        if answer.ok and balances:
            instruments.board.update_from_balances(balances)
        if op.holds:
            self._record_hold(answer)
        elif op.decides:
            self._record_decision(answer)
        target = self._target
        if outcome is not None and op.settles is not None and t.settle_once(target, outcome):
            instruments.settlements.add(1, t.outcome_labels(outcome))
            if op.settles.charges and outcome == sc.OUTCOME_COMMITTED:
                self._record_charged(answer)
        if op.charges_per_event and answer.ok and t.event_once(text(field(self._request, "idempotency_key"))):
            self._record_charged(answer)
        if (
            op.settles is not None
            and op.settles.ends_hold
            and target is not None
            and _reservation_gone(answer)
        ):
            t.reservation_closed(target)
        elif op.extends_hold and answer.ok and self._reservation_id is not None:
            t.reservation_extended(self._reservation_id, answer.body)

    def _decision_labels(self, answer: Answer) -> Labels:
        assert answer.decision is not None
        action = fields_of(fields_of(self._request).get("action"))
        kind, name = text(action.get("kind")) or UNKNOWN, text(action.get("name")) or UNKNOWN
        return self._t.decision_labels(answer.decision, answer.reason, kind, name)

    def _record_decision(self, answer: Answer) -> None:
        """A decision that held nothing: what the authority would have decided (shadow mode, preflight)."""
        if answer.decision is not None:
            self._t.instruments.decisions.add(1, self._decision_labels(answer))

    def _record_hold(self, answer: Answer) -> None:
        request, instruments = fields_of(self._request), self._t.instruments
        if request.get("dry_run") is True:
            self._record_decision(answer)
            return
        if answer.decision is None:
            return
        instruments.reservations.add(1, self._decision_labels(answer))
        if answer.decision == sc.DECISION_DENY:
            return
        body = answer.body or NO_FIELDS
        amount, unit = amount_of(body.get("reserved"))
        if amount is None:
            amount, unit = amount_of(request.get("estimate"))
        if amount is not None and unit:
            instruments.reserved.add(amount, self._t.unit_labels(unit))
        if rid := text(body.get("reservation_id")):
            self._t.reservation_opened(rid, self.span, self._request, answer.body)

    def _record_charged(self, answer: Answer) -> None:
        amount, unit = amount_of((answer.body or NO_FIELDS).get("charged"))
        if amount is None:
            amount, unit = amount_of(fields_of(self._request).get("actual"))
        if amount is not None and unit:
            self._t.instruments.charged.add(amount, self._t.unit_labels(unit))


def _put_amounts(attrs: dict[str, AttributeValue], source: Any, amounts: tuple[tuple[str, str], ...]) -> None:
    """The ``Amount`` fields of a request or answer as span attributes (amount, and the unit once)."""
    for key, attr in amounts:
        if (found := source.get(key)) is None:
            continue
        amount, unit = amount_of(found)
        if amount is not None:
            attrs[attr] = amount
        if unit:
            attrs[sc.CYCLES_UNIT] = unit


def _balances(body: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    balances = body.get("balances") if body is not None else None
    if not isinstance(balances, list):
        return []
    return [b for b in balances if type(b) is dict or isinstance(b, Mapping)]  # dict first: no ABC check


def _reservation_gone(answer: Answer) -> bool:
    """The reservation holds nothing any more: settled, expired or unknown to the authority."""
    return answer.ok or answer.status in (404, 410) or answer.error_code in RESERVATION_GONE_CODES
