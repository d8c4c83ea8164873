"""The protocol methods of the runcycles clients, each with the rules for reading its call and its answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cycles_otel import semconv as sc
from cycles_otel.protocol.late_settlement import is_retry_attempt
from cycles_otel.wire import Fields, field, fields_of, text

# A settlement answered with one of these is retried or journaled by runcycles: not (yet) a failure.
RETRIED_STATUSES: Final = frozenset({401, 403, 429})
RECOVERED_ID_KEY: Final = "recovered_reservation_id"


@dataclass
class Answer:
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


@dataclass(frozen=True)
class Settles:
    """How an operation settles a reservation, and what its answer then counts as."""

    outcome: str
    """The outcome of a successful answer (committed, released, recovered)."""
    by_recovered_id: bool = False
    """The reservation settled is named in ``metadata.recovered_reservation_id`` (an event), not the path."""
    fails_on_rejection: bool = False
    """A 4xx that runcycles will not retry is the outcome ``failed`` (a commit that cannot land)."""
    links_to_reserve: bool = False
    """A late settlement, or one sent outside its reservation's trace, links to the reserve span."""
    late_when_retried: bool = False
    """Sent from runcycles' retry engine (background retry, journal replay): a late settlement."""
    ends_hold: bool = False
    """Once answered for good (or the reservation is gone), the reservation holds nothing any more."""
    charges: bool = False
    """A committed answer adds to ``cycles.client.charged``."""

    def target(self, reservation_id: str | None, request: Any) -> str | None:
        """The reservation this call settles."""
        if self.by_recovered_id:
            return text(field(field(request, "metadata"), RECOVERED_ID_KEY))
        return reservation_id

    def is_late(self, target: str | None) -> bool:
        if self.by_recovered_id:  # a recovery event always settles after its reservation expired
            return target is not None
        return self.late_when_retried and is_retry_attempt()

    def outcome_of(self, answer: Answer, target: str | None) -> str | None:
        if answer.ok:
            return self.outcome if target is not None else None
        if self.fails_on_rejection and answer.error_type is not None and 400 <= answer.status < 500:
            return None if answer.status in RETRIED_STATUSES else sc.OUTCOME_FAILED
        return None


@dataclass(frozen=True)
class Operation:
    """One protocol method of the runcycles clients: how to read its arguments, what its answer means."""

    method: str
    span_name: str
    name: str
    takes_id: bool = False
    takes_body: bool = False
    can_deny: bool = False
    """Its answer can be a budget decision (ALLOW / ALLOW_WITH_CAPS / DENY)."""
    holds: bool = False
    """A successful answer opens a hold on budget (a reservation), counted and leased until settled."""
    decides: bool = False
    """Its answer is a decision that holds nothing (``/v1/decide``; a dry-run reserve decides too)."""
    extends_hold: bool = False
    settles: Settles | None = None
    charges_per_event: bool = False
    """Every new event (by idempotency key) adds its charge to ``cycles.client.charged``."""
    reports_over_limit: bool = False
    """Its answer's balances say whether the scopes went over their limit (``cycles.over_limit``)."""

    def reservation_id(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if not self.takes_id:
            return None
        return args[0] if args else kwargs.get("reservation_id")

    def request(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if not self.takes_body:
            return kwargs  # the query parameters of the GET operations
        index = 1 if self.takes_id else 0
        return args[index] if len(args) > index else kwargs.get("request")

    def subject(self, request: Any) -> Fields | None:
        """The subject named by the request: the body's ``subject``, or a GET's query parameters."""
        subject = fields_of(request).get("subject") if self.takes_body else request
        return None if subject is None else fields_of(subject)

    def answer(self, response: Any) -> Answer:
        """Read a ``CyclesResponse``: transport error, HTTP error, denial or success."""
        status = response.status
        body = response.body if isinstance(response.body, Mapping) else None
        answer = Answer(status, body)
        if status < 0:
            exc = getattr(response, "transport_exception", None)
            answer.error_type = type(exc).__name__ if exc is not None else "TransportError"
            return answer
        if answer.ok:
            if self.can_deny and body is not None:
                answer.decision = text(body.get("decision"))
                if answer.decision == sc.DECISION_DENY:
                    answer.reason = text(body.get("reason_code"))
            return answer
        # runcycles' ErrorResponse rejects the trace_id real servers send: read the raw body.
        answer.error_code = text(field(body, "error"))
        if self.can_deny and status == 409 and answer.error_code in sc.DENIAL_CODES:
            answer.decision, answer.reason = sc.DECISION_DENY, answer.error_code
        else:
            answer.error_type = answer.error_code or f"http.{status}"
        return answer


COMMIT: Final = Settles(
    sc.OUTCOME_COMMITTED,
    fails_on_rejection=True,
    links_to_reserve=True,
    late_when_retried=True,
    ends_hold=True,
    charges=True,
)
RELEASE: Final = Settles(sc.OUTCOME_RELEASED, ends_hold=True)
RECOVERY: Final = Settles(sc.OUTCOME_RECOVERED, by_recovered_id=True, links_to_reserve=True)

OPERATIONS: Final = (
    Operation("create_reservation", sc.SPAN_RESERVE, "reserve", takes_body=True, can_deny=True, holds=True),
    Operation(
        "commit_reservation",
        sc.SPAN_COMMIT,
        "commit",
        takes_id=True,
        takes_body=True,
        settles=COMMIT,
        reports_over_limit=True,
    ),
    Operation(
        "release_reservation", sc.SPAN_RELEASE, "release", takes_id=True, takes_body=True, settles=RELEASE
    ),
    Operation(
        "extend_reservation", sc.SPAN_EXTEND, "extend", takes_id=True, takes_body=True, extends_hold=True
    ),
    Operation("decide", sc.SPAN_DECIDE, "decide", takes_body=True, can_deny=True, decides=True),
    Operation(
        "create_event",
        sc.SPAN_EVENT,
        "event",
        takes_body=True,
        can_deny=True,
        settles=RECOVERY,
        charges_per_event=True,
    ),
    Operation("get_balances", sc.SPAN_BALANCES, "balances"),
    Operation("get_reservation", sc.SPAN_GET_RESERVATION, "get_reservation", takes_id=True),
    Operation("list_reservations", sc.SPAN_LIST_RESERVATIONS, "list_reservations"),
)
