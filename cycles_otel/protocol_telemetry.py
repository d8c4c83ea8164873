"""Span and metrics of one Cycles protocol call, read from its request and its ``CyclesResponse``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from cycles_otel import semconv as sc
from cycles_otel.instruments import Instruments
from cycles_otel.leases import DEFAULT_GRACE_MS, DEFAULT_TTL_MS
from cycles_otel.propagation import BoundedMap, SettlementLinks, is_retry_attempt
from cycles_otel.wire import whole

logger = logging.getLogger(__name__)

RESERVATION_GONE_CODES: Final = frozenset({"RESERVATION_FINALIZED", "RESERVATION_EXPIRED", "NOT_FOUND"})
# A settlement answered with one of these is retried or journaled by runcycles: not (yet) a failure.
RETRIED_STATUSES: Final = frozenset({401, 403, 429})
RECOVERED_ID_KEY: Final = "recovered_reservation_id"
# Once committed or released, a reservation's later answers (replays, retries) count no more.
FINAL_OUTCOMES: Final = (sc.OUTCOME_COMMITTED, sc.OUTCOME_RELEASED)
UNKNOWN: Final = "unknown"
SUBJECT_ATTRIBUTES: Final = tuple((name, sc.CYCLES_SUBJECT_PREFIX + name) for name in sc.SUBJECT_FIELDS)
REQUEST_AMOUNTS: Final = (("estimate", sc.CYCLES_ESTIMATE_AMOUNT), ("actual", sc.CYCLES_ACTUAL_AMOUNT))
RESPONSE_AMOUNTS: Final = (("charged", sc.CYCLES_CHARGED_AMOUNT), ("released", sc.CYCLES_RELEASED_AMOUNT))


@dataclass(frozen=True)
class Operation:
    """One protocol method of the runcycles clients and how to read its arguments."""

    method: str
    span_name: str
    name: str
    takes_id: bool = False
    takes_body: bool = False
    can_deny: bool = False

    def reservation_id(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if not self.takes_id:
            return None
        return args[0] if args else kwargs.get("reservation_id")

    def request(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if not self.takes_body:
            return kwargs  # the query parameters of the GET operations
        index = 1 if self.takes_id else 0
        return args[index] if len(args) > index else kwargs.get("request")


OPERATIONS: Final = (
    Operation("create_reservation", sc.SPAN_RESERVE, "reserve", takes_body=True, can_deny=True),
    Operation("commit_reservation", sc.SPAN_COMMIT, "commit", takes_id=True, takes_body=True),
    Operation("release_reservation", sc.SPAN_RELEASE, "release", takes_id=True, takes_body=True),
    Operation("extend_reservation", sc.SPAN_EXTEND, "extend", takes_id=True, takes_body=True),
    Operation("decide", sc.SPAN_DECIDE, "decide", takes_body=True, can_deny=True),
    Operation("create_event", sc.SPAN_EVENT, "event", takes_body=True, can_deny=True),
    Operation("get_balances", sc.SPAN_BALANCES, "balances"),
    Operation("get_reservation", sc.SPAN_GET_RESERVATION, "get_reservation", takes_id=True),
    Operation("list_reservations", sc.SPAN_LIST_RESERVATIONS, "list_reservations"),
)


# --- reading pydantic models and dicts alike ------------------------------------------------------
class _ByAttribute:
    """``get`` for an object that is neither a mapping nor a pydantic model."""

    __slots__ = ("_obj",)

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def get(self, name: str) -> Any:
        return getattr(self._obj, name, None)


Fields = Mapping[str, Any] | _ByAttribute
NO_FIELDS: Final[Mapping[str, Any]] = MappingProxyType({})


def fields_of(obj: Any) -> Fields:
    """``obj``'s fields, read with ``.get(name)`` (None when absent), whatever ``obj`` is.

    A pydantic model's declared fields all sit in its ``__dict__`` (runcycles' models forbid extra
    ones); reading that avoids pydantic's ``__getattr__``, which raises (slowly) for a missing field.
    """
    if type(obj) is dict:  # bodies and most requests: skip the (slower) ABC check
        return obj
    if obj is None:
        return NO_FIELDS
    if getattr(obj, "__pydantic_fields__", None) is not None:
        extra = getattr(obj, "__pydantic_extra__", None)
        return {**obj.__dict__, **extra} if extra else obj.__dict__
    if isinstance(obj, Mapping):
        return obj
    return _ByAttribute(obj)


def field(obj: Any, name: str) -> Any:
    return fields_of(obj).get(name)


def text(value: Any) -> str | None:
    if type(value) is str:
        return value or None
    if value is None:  # most optional fields are absent
        return None
    if isinstance(value, Enum):
        value = value.value
    return value if isinstance(value, str) and value else None


def amount_of(obj: Any) -> tuple[int | None, str | None]:
    """(amount, unit) of a protocol ``Amount``, as a model or a dict."""
    amount = fields_of(obj)
    return whole(amount.get("amount")), text(amount.get("unit"))


def _never_raises(step: Callable[..., None]) -> Callable[..., None]:
    """Telemetry must not change the call it observes: a failing step is logged and skipped."""

    def guarded(*args: Any) -> None:
        try:
            step(*args)
        except Exception:
            logger.debug("cycles_otel: telemetry step %s failed", step.__name__, exc_info=True)

    guarded.__name__ = step.__name__
    return guarded


@dataclass
class _Result:
    """What a response means: an error, a decision, or a plain success."""

    status: int
    body: Mapping[str, Any] | None
    error_type: str | None = None
    error_code: str | None = None
    decision: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def classify(op: Operation, response: Any) -> _Result:
    status = response.status
    body = response.body if isinstance(response.body, Mapping) else None
    result = _Result(status, body)
    if status < 0:
        exc = getattr(response, "transport_exception", None)
        result.error_type = type(exc).__name__ if exc is not None else "TransportError"
        return result
    if result.ok:
        result.decision = text(body.get("decision")) if op.can_deny and body is not None else None
        if result.decision == sc.DECISION_DENY and body is not None:
            result.reason = text(body.get("reason_code"))
        return result
    # runcycles' ErrorResponse rejects the trace_id real servers send: read the raw body.
    result.error_code = text(field(body, "error"))
    if op.can_deny and status == 409 and result.error_code in sc.DENIAL_CODES:
        result.decision, result.reason = sc.DECISION_DENY, result.error_code
    else:
        result.error_type = result.error_code or f"http.{status}"
    return result


class ProtocolTelemetry:
    """Tracer, instruments and the little state (active ids, reserve spans) shared by all calls."""

    def __init__(self, tracer: Tracer, instruments: Instruments) -> None:
        self.tracer = tracer
        self.instruments = instruments
        self.links = SettlementLinks()
        self._active = instruments.active  # what cycles.client.active_reservations counts
        self._settled: BoundedMap[str, str] = BoundedMap()
        self._events_charged: BoundedMap[str, bool] = BoundedMap()
        self.duration_labels = {op.name: {sc.LABEL_OPERATION: op.name} for op in OPERATIONS}

    def start(self, op: Operation, args: Sequence[Any], kwargs: Mapping[str, Any]) -> ProtocolCall:
        return ProtocolCall(self, op, args, kwargs)

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

    __slots__ = ("_op", "_request", "_reservation_id", "_started", "_t", "_token", "span")

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
        self._begin(args, kwargs)

    @_never_raises
    def _begin(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        op = self._op
        self._request = op.request(args, kwargs)
        rid = op.reservation_id(args, kwargs)
        self._reservation_id = rid if isinstance(rid, str) else None
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
        op = self._op
        if op.name == "commit":
            rid, late = self._reservation_id, is_retry_attempt()
        elif op.name == "event":
            rid = self._recovered_id()
            late = rid is not None
        else:
            return False, []
        reserve_span = self._t.links.reserve_span(rid) if rid else None
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
        subject = request.get("subject") if self._op.takes_body else self._request
        if subject is not None:
            subject_fields = fields_of(subject)
            for subject_field, attr in SUBJECT_ATTRIBUTES:
                if (value := subject_fields.get(subject_field)) is not None and (value := text(value)):
                    attrs[attr] = value
        if (action := request.get("action")) is not None:
            action_fields = fields_of(action)
            if kind := text(action_fields.get("kind")):
                attrs[sc.CYCLES_ACTION_KIND] = kind
            if action_name := text(action_fields.get("name")):
                attrs[sc.CYCLES_ACTION_NAME] = action_name
        for key, attr in REQUEST_AMOUNTS:
            if (found := request.get(key)) is None:
                continue
            amount, unit = amount_of(found)
            if amount is not None:
                attrs[attr] = amount
            if unit:
                attrs[sc.CYCLES_UNIT] = unit
        if request.get("dry_run") is True:
            attrs[sc.CYCLES_DRY_RUN] = True
        if late:
            attrs[sc.CYCLES_LATE_SETTLEMENT] = True
        span.set_attributes(attrs)

    # --- the end of the call --------------------------------------------------------------------
    def finish(self, response: Any) -> None:
        self._detach()
        result: _Result | None = None
        try:
            result = classify(self._op, response)
        except Exception:
            logger.debug("cycles_otel: unreadable response", exc_info=True)
        self._record_duration(result.error_type if result is not None else None)
        if result is not None:
            outcome = self._outcome(result)
            balances = _balances(result.body)
            self._record_metrics(result, outcome, balances)
            if self.span.is_recording():
                self._annotate_response(result, response, outcome, balances)
        self._end()

    def fail(self, exc: BaseException) -> None:
        self._detach()
        error_type = type(exc).__qualname__
        self._record_duration(error_type)
        self._mark_failed(error_type, str(exc), exc)
        self._end()

    @_never_raises
    def _detach(self) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None

    @_never_raises
    def _end(self) -> None:
        self.span.end()

    @_never_raises
    def _record_duration(self, error_type: str | None) -> None:
        labels = self._t.duration_labels[self._op.name]
        if error_type is not None:
            labels = {**labels, sc.ERROR_TYPE: self._t.bounded(sc.ERROR_TYPE, error_type)}
        self._t.instruments.operation_duration.record(time.perf_counter() - self._started, labels)

    @_never_raises
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

    @_never_raises
    def _annotate_response(
        self, result: _Result, response: Any, outcome: str | None, balances: list[Mapping[str, Any]]
    ) -> None:
        span, body = self.span, result.body or NO_FIELDS
        attrs: dict[str, AttributeValue] = {}
        if result.status > 0:
            attrs[sc.HTTP_RESPONSE_STATUS_CODE] = result.status
        if request_id := text((getattr(response, "headers", None) or {}).get("x-request-id")):
            attrs[sc.CYCLES_REQUEST_ID] = request_id
        if rid := text(body.get("reservation_id")):
            attrs[sc.CYCLES_RESERVATION_ID] = rid
        if result.decision:
            attrs[sc.CYCLES_DECISION] = result.decision
        if result.reason:
            attrs[sc.CYCLES_REASON] = result.reason
        if scope := text(body.get("scope_path")):
            attrs[sc.CYCLES_SCOPE] = scope
        affected = body.get("affected_scopes")
        if isinstance(affected, list) and all(isinstance(s, str) for s in affected):
            attrs[sc.CYCLES_AFFECTED_SCOPES] = affected
        for key, attr in RESPONSE_AMOUNTS:
            if (found := body.get(key)) is None:
                continue
            amount, unit = amount_of(found)
            if amount is not None:
                attrs[attr] = amount
            if unit:
                attrs[sc.CYCLES_UNIT] = unit
        if outcome:
            attrs[sc.CYCLES_OUTCOME] = outcome
        if self._op.name == "commit":
            over = [b.get("is_over_limit") for b in balances]
            if any(isinstance(o, bool) for o in over):
                attrs[sc.CYCLES_OVER_LIMIT] = any(o is True for o in over)
        span.set_attributes(attrs)
        if result.decision == sc.DECISION_DENY:
            event: dict[str, AttributeValue] = {sc.CYCLES_REASON: result.reason or UNKNOWN}
            if scope:
                event[sc.CYCLES_SCOPE] = scope
            span.add_event(sc.EVENT_DENIED, event)
        elif result.error_type is not None:
            self._mark_failed(result.error_type, getattr(response, "error_message", None))

    def _outcome(self, result: _Result) -> str | None:
        """The settlement outcome this answer stands for, if it settles anything."""
        name = self._op.name
        if name == "commit":
            if result.ok:
                return sc.OUTCOME_COMMITTED
            if result.error_type is not None and 400 <= result.status < 500:
                return None if result.status in RETRIED_STATUSES else sc.OUTCOME_FAILED
        elif name == "release" and result.ok:
            return sc.OUTCOME_RELEASED
        elif name == "event" and result.ok and self._recovered_id() is not None:
            return sc.OUTCOME_RECOVERED
        return None

    def _recovered_id(self) -> str | None:
        return text(field(field(self._request, "metadata"), RECOVERED_ID_KEY))

    # --- metrics ----------------------------------------------------------------------------------
    @_never_raises
    def _record_metrics(
        self, result: _Result, outcome: str | None, balances: list[Mapping[str, Any]]
    ) -> None:
        t, instruments, name = self._t, self._t.instruments, self._op.name
        if result.ok and balances:
            instruments.board.update_from_balances(balances)
        if name == "reserve":
            self._record_reserve(result)
            return
        rid = self._reservation_id if name != "event" else self._recovered_id()
        if outcome is not None and t.settle_once(rid, outcome):
            instruments.settlements.add(1, {sc.LABEL_OUTCOME: outcome})
            if outcome == sc.OUTCOME_COMMITTED:
                self._record_charged(result)
        if name == "event" and result.ok and t.event_once(text(field(self._request, "idempotency_key"))):
            self._record_charged(result)
        if rid is not None and name in ("commit", "release") and _reservation_gone(result):
            t.reservation_closed(rid)
        elif rid is not None and name == "extend" and result.ok:
            t.reservation_extended(rid, result.body)

    def _record_reserve(self, result: _Result) -> None:
        request, instruments = fields_of(self._request), self._t.instruments
        if result.decision is None or request.get("dry_run") is True:
            return
        action = fields_of(request.get("action"))
        kind = text(action.get("kind")) or UNKNOWN
        name = text(action.get("name")) or UNKNOWN
        labels: dict[str, AttributeValue] = {
            sc.LABEL_DECISION: result.decision,
            sc.LABEL_ACTION_KIND: self._t.bounded(sc.LABEL_ACTION_KIND, kind),
            sc.LABEL_ACTION_NAME: self._t.bounded(sc.LABEL_ACTION_NAME, name),
        }
        if result.decision == sc.DECISION_DENY:
            labels[sc.LABEL_REASON] = result.reason or UNKNOWN
            instruments.reservations.add(1, labels)
            return
        instruments.reservations.add(1, labels)
        body = result.body or NO_FIELDS
        amount, unit = amount_of(body.get("reserved"))
        if amount is None:
            amount, unit = amount_of(request.get("estimate"))
        if amount is not None and unit:
            instruments.reserved.add(amount, {sc.LABEL_UNIT: unit})
        if rid := text(body.get("reservation_id")):
            self._t.reservation_opened(rid, self.span, self._request, result.body)

    def _record_charged(self, result: _Result) -> None:
        amount, unit = amount_of((result.body or NO_FIELDS).get("charged"))
        if amount is None:
            amount, unit = amount_of(fields_of(self._request).get("actual"))
        if amount is not None and unit:
            self._t.instruments.charged.add(amount, {sc.LABEL_UNIT: unit})


def _balances(body: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    balances = body.get("balances") if body is not None else None
    if not isinstance(balances, list):
        return []
    return [b for b in balances if type(b) is dict or isinstance(b, Mapping)]  # dict first: no ABC check


def _reservation_gone(result: _Result) -> bool:
    """The reservation holds nothing any more: settled, expired or unknown to the authority."""
    return result.ok or result.status in (404, 410) or result.error_code in RESERVATION_GONE_CODES
