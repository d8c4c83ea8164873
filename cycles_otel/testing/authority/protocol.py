"""The protocol surface without sockets: routing, auth, tenancy, idempotency keys, correlation ids, errors."""

from __future__ import annotations

import hmac
import json
import re
import secrets
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cycles_otel.testing.authority.accounting import ProtocolError
from cycles_otel.testing.authority.ledger import Ledger, Outcome
from cycles_otel.testing.authority.listing import list_balances, list_reservations
from cycles_otel.testing.authority.validation import BODY_RULES, InvalidRequest

_RESERVATION = r"/v1/reservations/(?P<rid>[^/]{1,128})"
# (method, path pattern, operation name): the operation names are what faults and recordings use.
ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"/v1/reservations"), "reserve"),
    ("GET", re.compile(r"/v1/reservations"), "list_reservations"),
    ("GET", re.compile(_RESERVATION), "get_reservation"),
    ("POST", re.compile(_RESERVATION + "/commit"), "commit"),
    ("POST", re.compile(_RESERVATION + "/release"), "release"),
    ("POST", re.compile(_RESERVATION + "/extend"), "extend"),
    ("POST", re.compile(r"/v1/decide"), "decide"),
    ("POST", re.compile(r"/v1/events"), "event"),
    ("GET", re.compile(r"/v1/balances"), "balances"),
    # Evidence signing is not implemented: these public endpoints answer as a server with it disabled.
    ("GET", re.compile(r"/v1/evidence/(?P<eid>[^/]+)"), "get_evidence"),
    ("GET", re.compile(r"/v1/\.well-known/cycles-jwks\.json"), "get_evidence_jwks"),
    # Outside the protocol: the reference server's Spring Boot health probe, which clients' live-server
    # tests and orchestrators poll without an API key.
    ("GET", re.compile(r"/actuator/health"), "health"),
)
_PUBLIC = frozenset({"get_evidence", "get_evidence_jwks"})
_EVIDENCE_ID = re.compile(r"^[0-9a-f]{64}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
# Deeper bodies are refused before anything walks them: fingerprinting, storing and echoing metadata all
# recurse, and Python's json recurses too (a body of 100,000 "[" raises RecursionError, not ValueError).
MAX_JSON_DEPTH = 64


def route(method: str, path: str) -> tuple[str, str | None] | None:
    """``(operation, reservation_id)`` for a request line, or ``None`` when nothing serves it."""
    for route_method, pattern, operation in ROUTES:
        match = pattern.fullmatch(path)
        if match and route_method == method:
            groups = match.groupdict()
            return operation, groups.get("rid") or groups.get("eid")
    return None


def allowed_methods(path: str) -> list[str]:
    """The methods some route serves at ``path`` (for a 405's ``Allow`` header)."""
    return sorted({method for method, pattern, _ in ROUTES if pattern.fullmatch(path)})


def trace_id_from(headers: Mapping[str, str]) -> str:
    """The trace id by the spec's precedence: valid ``traceparent``, then ``X-Cycles-Trace-Id``, else new."""
    parent = _TRACEPARENT.fullmatch(headers.get("traceparent", "").strip())
    if parent and parent.group(1) != _ZERO_TRACE and parent.group(2) != _ZERO_SPAN:
        return parent.group(1)
    flat = headers.get("x-cycles-trace-id", "").strip()
    if _TRACE_ID.fullmatch(flat) and flat != _ZERO_TRACE:
        return flat
    while (generated := secrets.token_hex(16)) == _ZERO_TRACE:
        pass
    return generated


def decode_json(raw: bytes) -> Any:
    """A request body as JSON; raises :class:`InvalidRequest` when it is not JSON or nests too deeply."""
    too_deep = InvalidRequest("", f"nests deeper than {MAX_JSON_DEPTH} levels; send a flatter JSON object")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise too_deep from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("", f"is not valid JSON ({exc}); send a JSON object") from exc
    if _depth(value) > MAX_JSON_DEPTH:
        raise too_deep
    return value


def _depth(value: Any) -> int:
    """How many arrays and objects nest in ``value`` (iterative: the point is to not recurse)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, level + 1) for child in children)
    return deepest


@dataclass
class Response:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body, separators=(",", ":")).encode()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lowercased names
    body: bytes


class KeyRing:
    """API keys bound to tenants; lookups compare every key in constant time."""

    def __init__(self) -> None:
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()

    def create(self, tenant: str) -> str:
        key = f"cyc_live_{secrets.token_urlsafe(24)}"
        with self._lock:
            self._keys[key] = tenant.lower()
        return key

    def add(self, key: str, tenant: str) -> None:
        with self._lock:
            self._keys[key] = tenant.lower()

    def tenant_of(self, presented: str) -> str | None:
        with self._lock:
            items = list(self._keys.items())
        found = None
        for key, tenant in items:  # no early exit: timing must not reveal a prefix match
            if hmac.compare_digest(key.encode(), presented.encode()):
                found = tenant
        return found


class Protocol:
    """Turns one HTTP request into one response, against a :class:`Ledger`."""

    def __init__(self, ledger: Ledger, keys: KeyRing) -> None:
        self.ledger = ledger
        self.keys = keys

    def error(
        self,
        request_id: str,
        trace_id: str,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> Response:
        body: dict[str, Any] = {
            "error": code,
            "message": message,
            "request_id": request_id,
            "trace_id": trace_id,
        }
        if details:
            body["details"] = details
        return Response(status, body, {"X-Request-Id": request_id, "X-Cycles-Trace-Id": trace_id})

    def handle(
        self, request: Request, request_id: str | None = None, trace_id: str | None = None
    ) -> Response:
        request_id = request_id or f"req_{uuid.uuid4().hex}"
        trace_id = trace_id or trace_id_from(request.headers)
        try:
            routed = route(request.method, request.path)
            if routed is None:
                allowed = allowed_methods(request.path)
                if allowed:
                    message = f"{request.path} accepts {', '.join(allowed)}"
                    response = self.error(request_id, trace_id, 405, "INVALID_REQUEST", message)
                    response.headers["Allow"] = ", ".join(allowed)
                    return response
                raise ProtocolError(404, "NOT_FOUND", f"no endpoint {request.method} {request.path}")
            if routed[0] == "health":  # Spring's answer while the server serves; no API key, like Spring
                ids = {"X-Request-Id": request_id, "X-Cycles-Trace-Id": trace_id}
                return Response(200, {"status": "UP"}, ids)
            if routed[0] in _PUBLIC:
                self._evidence(routed[1])
            tenant = self._authenticate(request.headers)
            outcome = self._dispatch(routed[0], routed[1], tenant, request)
        except ProtocolError as exc:
            return self.error(request_id, trace_id, exc.status, exc.code, exc.message, exc.details)
        except InvalidRequest as exc:
            return self.error(request_id, trace_id, 400, "INVALID_REQUEST", str(exc), {"field": exc.field})
        headers = {"X-Request-Id": request_id, "X-Cycles-Trace-Id": trace_id, "X-Cycles-Tenant": tenant}
        return Response(outcome.status, outcome.body, headers)

    @staticmethod
    def _evidence(evidence_id: str | None) -> None:
        if evidence_id is not None and not _EVIDENCE_ID.fullmatch(evidence_id):
            raise InvalidRequest("evidence_id", "must be 64 lowercase hex characters")
        raise ProtocolError(
            404, "NOT_FOUND", "this server emits no CyclesEvidence (evidence signing is disabled)"
        )

    def _authenticate(self, headers: Mapping[str, str]) -> str:
        presented = headers.get("x-cycles-api-key")
        if not presented:
            raise ProtocolError(401, "UNAUTHORIZED", "X-Cycles-API-Key header is required")
        tenant = self.keys.tenant_of(presented)
        if tenant is None:
            raise ProtocolError(401, "UNAUTHORIZED", "X-Cycles-API-Key is not a known key")
        return tenant

    def _dispatch(self, operation: str, rid: str | None, tenant: str, request: Request) -> Outcome:
        if operation == "balances":
            return list_balances(self.ledger, tenant, request.query)
        if operation == "list_reservations":
            return list_reservations(self.ledger, tenant, request.query)
        if operation == "get_reservation":
            assert rid is not None
            record = self.ledger.owned(tenant, rid)
            if record.status == "EXPIRED":
                raise ProtocolError(410, "RESERVATION_EXPIRED", f"reservation {rid} expired")
            return Outcome(200, record.to_protocol())
        body = self._body(operation, request)
        subject = body.get("subject")
        if subject is not None and "tenant" in subject and subject["tenant"].lower() != tenant:
            raise ProtocolError(
                403,
                "FORBIDDEN",
                f"subject.tenant {subject['tenant']!r} is not the API key's tenant {tenant!r}",
            )
        key = body["idempotency_key"]
        header_key = request.headers.get("x-idempotency-key")
        if header_key is not None and header_key != key:
            raise InvalidRequest(
                "idempotency_key", "differs from the X-Idempotency-Key header; send the same key"
            )
        fingerprint = json.dumps(body, sort_keys=True, separators=(",", ":"))
        if rid is not None:
            self.ledger.owned(tenant, rid)  # 404 / 403 come before any replay
        endpoint = f"{operation}:{rid or ''}"
        ledger = self.ledger
        actions = {
            "reserve": lambda: (
                ledger.evaluate_only(tenant, body, is_decide=False)
                if body.get("dry_run")
                else ledger.reserve(tenant, body)
            ),
            "decide": lambda: ledger.evaluate_only(tenant, body, is_decide=True),
            "event": lambda: ledger.event(tenant, body),
            "commit": lambda: ledger.commit(tenant, str(rid), body),
            "release": lambda: ledger.release(tenant, str(rid)),
            "extend": lambda: ledger.extend(tenant, str(rid), body),
        }
        return ledger.idempotent(tenant, endpoint, key, fingerprint, actions[operation])

    @staticmethod
    def _body(operation: str, request: Request) -> dict[str, Any]:
        body = decode_json(request.body)
        BODY_RULES[operation].check(body, "")
        if not isinstance(body, dict):  # the rule guarantees it; this narrows the type
            raise InvalidRequest("", "must be a JSON object")
        return body
