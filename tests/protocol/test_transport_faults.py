"""Under every fault both async transports give the same CyclesResponse, span, metric labels and ledger.

Each case runs once over runcycles' own ``AsyncCyclesClient`` (httpx) and once over
``AiohttpCyclesClient``, each against a fresh authority prepared alike; what differs only by
identity or clock (ids, timestamps) is masked before the field-by-field comparison.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from runcycles import AsyncCyclesClient, CyclesConfig  # type: ignore[import-untyped]

from cycles_otel import semconv as sc
from cycles_otel.protocol import transport as transport_module
from cycles_otel.protocol.transport import AiohttpCyclesClient
from cycles_otel.testing.authority.faults import OPERATIONS, Faults
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.ports import free_port
from tests.support.protocol import TENANT, UNIT, instrumentation, reserve_body, running_authority, settle_body
from tests.support.raw_http import RawHttpServer, json_answer, reply, reset
from tests.support.reliability import FAST_TIMEOUTS, HOLD_SECONDS

pytestmark = pytest.mark.slow

Client = Any
Call = Callable[[], Awaitable[Any]]
IDS = re.compile(r"\b(?:(?:rsv|evt|req)_)?[0-9a-f]{32}\b|\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b")
DISCONNECTED = ("RemoteProtocolError", "Server disconnected without sending a response.")
VOLATILE_HEADERS = frozenset({"x-request-id", "date"})


# --- what is compared ------------------------------------------------------------------------------
def masked(value: Any, key: str = "") -> Any:
    """``value`` with ids and clock readings replaced by their kind."""
    if isinstance(value, dict):
        return {k: masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    if key.endswith(("_ms", "_at")):
        return f"<{type(value).__name__}>"
    if isinstance(value, str):
        return IDS.sub("<id>", value)
    return value


def normalised(response: Any) -> dict[str, Any]:
    """Every field of a ``CyclesResponse``, the transport exception as its class and message."""
    exc = response.transport_exception
    return {
        "status": response.status,
        "body": masked(response.body),
        "error_message": masked(response.error_message),
        "headers": {k: "<volatile>" if k in VOLATILE_HEADERS else v for k, v in response.headers.items()},
        "is_transport_error": response.is_transport_error,
        "exception": None if exc is None else (type(exc).__name__, str(exc)),
    }


def telemetry_of(capture: TelemetryCapture) -> dict[str, Any]:
    """The last span's status and attributes, and the error types on the duration histogram."""
    span = capture.spans()[-1]
    attributes = {
        key: masked(value)
        for key, value in (span.attributes or {}).items()
        if key not in (sc.CYCLES_REQUEST_ID, sc.CYCLES_RESERVATION_ID)
    }
    points = capture.points("cycles.client.operation.duration")
    error_types = sorted(str((p.attributes or {}).get(sc.ERROR_TYPE)) for p in points)
    return {"span": (span.name, span.status.status_code, attributes), "duration_error_types": error_types}


# --- one call of each operation, after whatever it needs -----------------------------------------
async def held(client: Client) -> str:
    response = await client.create_reservation(reserve_body(1_000))
    assert response.status == 200, response.body
    reservation_id: str = response.body["reservation_id"]
    return reservation_id


async def prepare(op: str, client: Client) -> Call:
    """The call of ``op`` to make under the fault, after the calls it depends on."""
    if op in ("commit", "release", "extend", "get_reservation"):
        rid = await held(client)
        actual = {"unit": UNIT, "amount": 700}
        return {
            "commit": lambda: client.commit_reservation(rid, settle_body(actual=actual)),
            "release": lambda: client.release_reservation(rid, settle_body()),
            "extend": lambda: client.extend_reservation(rid, settle_body(extend_by_ms=5_000)),
            "get_reservation": lambda: client.get_reservation(rid),
        }[op]
    return {
        "reserve": lambda: client.create_reservation(reserve_body(1_000)),
        "decide": lambda: client.decide({k: v for k, v in reserve_body(10).items() if k != "ttl_ms"}),
        "event": lambda: client.create_event(
            {
                **settle_body(actual={"unit": UNIT, "amount": 300}),
                "subject": {"tenant": TENANT},
                "action": {"kind": "tool.search", "name": "web"},
            }
        ),
        "balances": lambda: client.get_balances(tenant=TENANT),
        "list_reservations": lambda: client.list_reservations(tenant=TENANT),
    }[op]


# Each fault, how to arm it, and what the faulted answer must be (so agreement is not agreement on nothing).
FAULTS: dict[str, tuple[Callable[[Faults, str], None], Callable[[dict[str, Any]], bool]]] = {
    "fail-500": (lambda f, op: f.fail(op, 500), lambda r: r["status"] == 500),
    "fail-409": (
        lambda f, op: f.fail(op, 409, "BUDGET_EXCEEDED", "over budget"),
        lambda r: (r["status"], r["error_message"]) == (409, "over budget"),
    ),
    "fail-503-after": (lambda f, op: f.fail(op, 503, after=True), lambda r: r["status"] == 503),
    "drop": (lambda f, op: f.drop(op), lambda r: r["exception"] == DISCONNECTED),
    "timeout": (lambda f, op: f.timeout(op, HOLD_SECONDS), lambda r: r["exception"] == ("ReadTimeout", "")),
    "delay": (lambda f, op: f.delay(op, 0.05), lambda r: 200 <= r["status"] < 300),
}


async def outcome(client_class: type, op: str, fault: str) -> dict[str, Any]:
    arm, _ = FAULTS[fault]
    capture = TelemetryCapture()
    try:
        with running_authority() as (server, config), instrumentation(capture):
            client = client_class(dataclasses.replace(config, **FAST_TIMEOUTS))
            try:
                faulted = await prepare(op, client)
                arm(server.faults, op)
                response = await faulted()
            finally:
                await client.aclose()
            ledger = server.ledger()
            seen = [(r.operation, r.status) for r in server.requests]
        return {
            "response": normalised(response),
            "telemetry": telemetry_of(capture),
            "requests": seen,
            "scopes": {scope: dataclasses.asdict(b) for scope, b in ledger.scopes.items()},
            "reservations": sorted((r.status, r.reserved, r.charged) for r in ledger.reservations),
            "events": len(ledger.events),
        }
    finally:
        capture.shutdown()


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("op", OPERATIONS)
async def test_every_operation_answers_every_fault_alike_on_both_transports(op: str, fault: str) -> None:
    over_httpx = await outcome(AsyncCyclesClient, op, fault)
    over_aiohttp = await outcome(AiohttpCyclesClient, op, fault)
    assert FAULTS[fault][1](over_httpx["response"]), over_httpx["response"]
    assert over_aiohttp == over_httpx


# --- failures the authority cannot produce: a raw server, a refusing port, a full backlog ----------
async def raw_outcome(client_class: type, base_url: str, op: str = "reserve") -> tuple[dict[str, Any], Any]:
    config = CyclesConfig(base_url=base_url, api_key="key", connect_timeout=0.3, read_timeout=0.3)
    client = client_class(config)
    try:
        response = await (await prepare(op, client))()
    finally:
        await client.aclose()
    return normalised(response), response


RATE_LIMITED = json_answer(
    "429 Too Many Requests",
    b'{"error":"LIMIT_EXCEEDED"}',
    "X-Request-Id: a\r\nx-request-id: b\r\nRetry-After: 2\r\n"
    "X-RateLimit-Remaining: 0\r\nX-Other: dropped\r\n",
)
CHUNKED = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n'
# Each raw answer, and the fields of runcycles' response to it that pin what the case is about.
RAW_ANSWERS: dict[str, tuple[Callable[..., bool], dict[str, Any]]] = {
    "reset": (reset, {"exception": ("ReadError", "")}),
    "closed-before-answer": (reply(b""), {"exception": DISCONNECTED}),
    "html-502": (
        reply(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 6\r\n\r\n<html>"),
        {"status": 502, "error_message": "Bad Gateway", "body": None},
    ),
    "no-reason": (
        reply(b"HTTP/1.1 418\r\nContent-Length: 0\r\n\r\n"),
        {"status": 418, "error_message": "Unknown error"},
    ),
    "json-list-400": (
        reply(json_answer("400 Bad Request", b"[1,2]")),
        {"status": 400, "body": [1, 2], "error_message": "Bad Request"},
    ),
    "empty-200": (reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), {"status": 200, "body": {}}),
    "204": (reply(b"HTTP/1.1 204 No Content\r\n\r\n"), {"status": 204, "body": {}}),
    "chunked": (reply(CHUNKED), {"status": 200, "body": {"a": 1}}),
    "redirect-not-followed": (
        reply(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"),
        {"status": 302},
    ),
    "repeated-and-kept-headers": (
        reply(RATE_LIMITED),
        {
            "status": 429,
            "error_message": "LIMIT_EXCEEDED",
            "headers": {"x-request-id": "<volatile>", "x-ratelimit-remaining": "0", "retry-after": "2"},
        },
    ),
}


@pytest.mark.parametrize("case", sorted(RAW_ANSWERS))
async def test_raw_answers_and_broken_connections_read_alike(case: str) -> None:
    answer, expected = RAW_ANSWERS[case]
    with RawHttpServer(answer) as server:
        over_httpx, _ = await raw_outcome(AsyncCyclesClient, server.base_url)
        over_aiohttp, response = await raw_outcome(AiohttpCyclesClient, server.base_url)
    assert {k: over_httpx[k] for k in expected} == expected
    assert over_aiohttp == over_httpx
    if case == "repeated-and-kept-headers":
        assert response.headers["x-request-id"] == "a, b"  # httpx joins a repeated header


@pytest.mark.parametrize(
    ("case", "answer"),
    [
        ("truncated-body", reply(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"a":')),
        ("garbled-status-line", reply(b"garbage\r\n\r\n")),
    ],
)
async def test_malformed_answers_fail_with_the_same_exception_class(
    case: str, answer: Callable[..., bool]
) -> None:
    """h11's message names the bytes it choked on; aiohttp's parser words it differently."""
    with RawHttpServer(answer) as server:
        over_httpx, _ = await raw_outcome(AsyncCyclesClient, server.base_url)
        over_aiohttp, _ = await raw_outcome(AiohttpCyclesClient, server.base_url)
    assert over_httpx["exception"][0] == over_aiohttp["exception"][0] == "RemoteProtocolError"
    assert {k: v for k, v in over_aiohttp.items() if k not in ("exception", "error_message")} == {
        k: v for k, v in over_httpx.items() if k not in ("exception", "error_message")
    }


@contextmanager
def refusing_port() -> Iterator[str]:
    yield f"http://127.0.0.1:{free_port()}"


@contextmanager
def full_backlog() -> Iterator[str]:
    """A listener that never accepts, its backlog taken: a new connection's handshake never completes."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (refusing_port, ("ConnectError", "All connection attempts failed")),
        (full_backlog, ("ConnectTimeout", "")),
    ],
    ids=["refused", "connect-timeout"],
)
async def test_connection_failures_read_alike(where: Callable[[], Any], expected: tuple[str, str]) -> None:
    with where() as base_url:
        over_httpx, _ = await raw_outcome(AsyncCyclesClient, base_url)
        over_aiohttp, response = await raw_outcome(AiohttpCyclesClient, base_url)
    assert over_httpx["exception"] == expected
    assert over_aiohttp == over_httpx
    assert response.transport_exception.request.url == f"{base_url}/v1/reservations"


async def test_a_request_waits_for_a_free_connection_then_fails_as_httpx_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport_module, "POOL_TIMEOUT_SECONDS", 0.2)
    arrived, release = threading.Event(), threading.Event()

    def hold(connection: socket.socket, request: bytes) -> bool:
        arrived.set()
        release.wait(5)
        connection.sendall(json_answer("200 OK"))
        return False

    with RawHttpServer(hold) as server:
        config = CyclesConfig(base_url=server.base_url, api_key="key")
        stock = AsyncCyclesClient(config)
        # runcycles offers no pool setting: give its client the same one-connection pool and 0.2 s wait.
        await stock._http.aclose()
        stock._http = httpx.AsyncClient(
            base_url=config.base_url,
            limits=httpx.Limits(max_connections=1),
            timeout=httpx.Timeout(connect=2.0, read=5.0, write=5.0, pool=0.2),
        )
        answers = {}
        for name, client in (("httpx", stock), ("aiohttp", AiohttpCyclesClient(config, max_connections=1))):
            arrived.clear()
            release.clear()
            first = asyncio.create_task(client.create_reservation(reserve_body(1)))
            assert await asyncio.to_thread(arrived.wait, 5)
            waiting = await client.create_reservation(reserve_body(1))  # the one connection is busy
            release.set()
            answers[name] = (normalised(await first), normalised(waiting))
            await client.aclose()
    assert answers["httpx"][1]["exception"] == ("PoolTimeout", "")
    assert answers["httpx"][0]["status"] == 200
    assert answers["aiohttp"] == answers["httpx"]
