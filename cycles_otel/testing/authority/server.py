"""``LocalCyclesServer``: the local Cycles authority over HTTP/1.1 keep-alive, on a background thread."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from cycles_otel.testing.authority.faults import Faults
from cycles_otel.testing.authority.ledger import Ledger
from cycles_otel.testing.authority.protocol import (
    KeyRing,
    Protocol,
    Request,
    Response,
    decode_json,
    route,
    trace_id_from,
)
from cycles_otel.testing.authority.records import Clock, LedgerSnapshot
from cycles_otel.testing.authority.validation import InvalidRequest
from cycles_otel.testing.loopback import BackgroundService, LoopbackHTTPServer, drain_unread_body

if TYPE_CHECKING:
    from runcycles import CyclesConfig  # type: ignore[import-untyped]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received and what it answered (``status`` is None when it answered nothing)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    operation: str | None
    body: Any
    status: int | None
    response_body: dict[str, Any] | None
    response_headers: dict[str, str]


class _HTTPServer(LoopbackHTTPServer):
    def __init__(self, address: tuple[str, int], authority: LocalCyclesServer) -> None:
        self.authority = authority
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one segment: split writes meet the client's delayed ACK (~40 ms each).
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: _HTTPServer
    _unread_body = 0  # bytes of a refused request's body still on the wire

    def log_message(self, format: str, *args: Any) -> None:
        """One log line per request would drown test output and benchmarks."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def __getattr__(self, name: str) -> Callable[[], None]:
        # http.server looks up do_<METHOD>; any other method (TRACE, QUERY, ...) gets a protocol
        # answer (405 with Allow, or 404) instead of an HTML 501.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _serve(self) -> None:
        authority = self.server.authority
        url = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        request_id, trace_id = f"req_{uuid.uuid4().hex}", trace_id_from(headers)
        routed = route(self.command, url.path)
        operation = routed[0] if routed else None
        request = Request(self.command, url.path, parse_qs(url.query, keep_blank_values=True), headers, b"")
        response = self._read_body(request, request_id, trace_id)
        if response is None:
            response = authority._answer(request, operation, request_id, trace_id)
        # Recorded before answering, so a client that got its answer also finds the record.
        authority._record(request, operation, response)
        if response is not None:
            self._write(response)
            if self._unread_body:
                drain_unread_body(self.connection, self._unread_body)
        else:  # a dropped or timed-out call: close without a status line
            self.close_connection = True

    def _read_body(self, request: Request, request_id: str, trace_id: str) -> Response | None:
        protocol, limit = self.server.authority.protocol, self.server.authority.max_body_bytes
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            self.close_connection = True
            return protocol.error(
                request_id,
                trace_id,
                400,
                "INVALID_REQUEST",
                "chunked request bodies are not supported; send Content-Length",
            )
        length_text = request.headers.get("content-length", "0")
        if not length_text.isdigit():
            self.close_connection = True
            return protocol.error(
                request_id, trace_id, 400, "INVALID_REQUEST", "Content-Length must be an integer"
            )
        length = int(length_text)
        if length > limit:
            self.close_connection = True  # the unread body would corrupt the next request on this connection
            self._unread_body = length
            return protocol.error(
                request_id,
                trace_id,
                400,
                "INVALID_REQUEST",
                f"request body has {length} bytes; the limit is {limit} bytes",
            )
        request.body = self.rfile.read(length)
        return None

    def _write(self, response: Response) -> None:
        payload = b"" if self.command == "HEAD" else response.encode()  # HEAD answers carry no body
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()


class LocalCyclesServer(BackgroundService["_HTTPServer"]):
    """A local Cycles-protocol authority for tests, demos and benchmarks.

    Usage::

        with LocalCyclesServer() as server:
            key = server.create_api_key(tenant="acme")
            server.set_budget("tenant:acme", 5 * 100_000_000)
            client = CyclesClient(server.config(key))
            ...
            assert server.ledger().scopes["tenant:acme"].remaining == ...

    Time: ``server.clock.advance(seconds)`` moves server time forward, so TTL, grace and expiry
    need no sleeping; ``server.expire_now(reservation_id)`` expires a single reservation.
    Faults: ``server.faults`` (see :class:`~cycles_otel.testing.authority.faults.Faults`).
    """

    thread_name = "cycles-authority"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = 1_048_576,
        default_grace_period_ms: int = 5_000,
        max_extensions: int = 10,
        record_requests: bool = True,
    ) -> None:
        self.host, self.port, self.max_body_bytes = host, port, max_body_bytes
        self.record_requests = record_requests  # long runs (benchmarks, the CLI) switch recording off
        self.clock = Clock()
        self._ledger = Ledger(
            self.clock, default_grace_period_ms=default_grace_period_ms, max_extensions=max_extensions
        )
        self._keys = KeyRing()
        self.protocol = Protocol(self._ledger, self._keys)
        self.faults = Faults()
        self._requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()

    # ---- lifecycle ----

    def _make_server(self) -> _HTTPServer:
        httpd = _HTTPServer((self.host, self.port), self)
        self.port = httpd.server_address[1]
        return httpd

    @property
    def base_url(self) -> str:
        self._running()
        return f"http://{self.host}:{self.port}"

    # ---- operator plane ----

    def create_api_key(self, tenant: str = "acme", key: str | None = None) -> str:
        """A new API key bound to ``tenant`` (or register ``key`` itself)."""
        if key is not None:
            self._keys.add(key, tenant)
            return key
        return self._keys.create(tenant)

    def set_budget(
        self,
        scope: str,
        allocated: int,
        unit: str = "USD_MICROCENTS",
        *,
        overdraft_limit: int = 0,
        overage_policy: str = "REJECT",
        status: str = "ACTIVE",
    ) -> None:
        """Create or reconfigure the budget at a scope path such as ``tenant:acme/workflow:research``.

        ``overage_policy`` applies to requests that name none; ``status`` FROZEN or CLOSED denies new
        reservations with BUDGET_FROZEN / BUDGET_CLOSED. One unit per scope.
        """
        self._ledger.set_budget(scope, allocated, unit, overdraft_limit, overage_policy, status)

    def fund(self, scope: str, amount: int, unit: str = "USD_MICROCENTS") -> None:
        """Add ``amount`` to a budget's allocation (repaying debt first, and clearing an over-limit mark)."""
        self._ledger.fund(scope, amount, unit)

    def close_tenant(self, tenant: str) -> None:
        """Mark a tenant CLOSED: mutations answer 409 TENANT_CLOSED, decide/dry_run answer DENY."""
        self._ledger.close_tenant(tenant)

    def expire_now(self, reservation_id: str) -> None:
        self._ledger.expire_now(reservation_id)

    def ledger(self) -> LedgerSnapshot:
        """A consistent snapshot of budgets, reservations and events."""
        return self._ledger.snapshot()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._requests_lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    def config(self, api_key: str, **options: Any) -> CyclesConfig:
        """A runcycles ``CyclesConfig`` for this server: subject defaults (tenant defaults to the key's
        tenant), the commit journal off, and fast retries. Any ``CyclesConfig`` field may be overridden."""
        from runcycles import CyclesConfig

        defaults: dict[str, Any] = {
            "tenant": self._keys.tenant_of(api_key),
            "journal_enabled": False,
            "retry_initial_delay": 0.05,
            "retry_max_delay": 0.5,
            "retry_max_attempts": 3,
            "retry_flush_timeout": 0.0,
        }
        return CyclesConfig(base_url=self.base_url, api_key=api_key, **{**defaults, **options})

    # ---- request path (called by the handler threads) ----

    def _answer(
        self, request: Request, operation: str | None, request_id: str, trace_id: str
    ) -> Response | None:
        delay, fault = self.faults.take(operation) if operation else (0.0, None)
        stopping = self._http.stopping if self._http else threading.Event()
        if delay:
            stopping.wait(delay)
        if fault is not None and fault.kind in ("drop", "timeout"):
            stopping.wait(fault.seconds)
            return None
        if fault is not None and not fault.after:
            return self.protocol.error(
                request_id, trace_id, fault.status, fault.error, fault.message, fault.details
            )
        try:
            response = self.protocol.handle(request, request_id, trace_id)
        except Exception as exc:  # a bug here must surface as a protocol 500, not a dead connection
            response = self.protocol.error(
                request_id, trace_id, 500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"
            )
        if fault is not None:
            return self.protocol.error(
                request_id, trace_id, fault.status, fault.error, fault.message, fault.details
            )
        return response

    def _record(self, request: Request, operation: str | None, response: Response | None) -> None:
        if not self.record_requests:
            return
        try:
            body = decode_json(request.body) if request.body else None
        except InvalidRequest:
            body = request.body.decode(errors="replace")
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query="&".join(f"{k}={v}" for k, values in request.query.items() for v in values),
            headers=request.headers,
            operation=operation,
            body=body,
            status=None if response is None else response.status,
            response_body=None if response is None else response.body,
            response_headers={} if response is None else dict(response.headers),
        )
        with self._requests_lock:
            self._requests.append(record)
