"""AiohttpCyclesClient itself: construction, sessions per event loop, the pool, the wire, trace context."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig  # type: ignore[import-untyped]

from cycles_otel.protocol.transport import AiohttpCyclesClient
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.protocol import SCOPE, TENANT, UNIT, hex_ids, reserve_body, running_authority, settle_body
from tests.support.raw_http import RawHttpServer, json_answer, reply
from tests.support.transports import AsyncClientFactory

OK = json_answer("200 OK")


async def reserve_and_commit(client: Any, amount: int = 100) -> None:
    held = await client.create_reservation(reserve_body(1_000))
    assert held.status == 200, held.body
    committed = await client.commit_reservation(
        held.body["reservation_id"], settle_body(actual={"unit": UNIT, "amount": amount})
    )
    assert committed.status == 200, committed.body


# --- construction --------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", [CyclesClient, AsyncCyclesClient, AiohttpCyclesClient])
async def test_from_client_takes_the_configuration_of_any_runcycles_client(source: type) -> None:
    with running_authority() as (server, config):
        original = source(config)
        client = AiohttpCyclesClient.from_client(original, max_connections=3)
        assert client._config is config
        await reserve_and_commit(client, 250)
        await client.aclose()
        if isinstance(original, CyclesClient):
            original.close()
        else:
            await original.aclose()
        assert server.ledger().scopes[SCOPE].spent == 250


def test_no_httpx_client_is_built() -> None:
    client = AiohttpCyclesClient(CyclesConfig(base_url="http://127.0.0.1:7878", api_key="key"))
    assert not hasattr(client, "_http")
    assert isinstance(client, AsyncCyclesClient)


def config(base_url: str = "http://127.0.0.1:7878") -> CyclesConfig:
    return CyclesConfig(base_url=base_url, api_key="key")


@pytest.mark.parametrize(
    ("build", "error", "names"),
    [
        (lambda: AiohttpCyclesClient({"base_url": "x"}), TypeError, "AiohttpCyclesClient(config)"),
        (lambda: AiohttpCyclesClient(config("localhost:7878")), ValueError, "CyclesConfig.base_url"),
        (lambda: AiohttpCyclesClient(config("ftp://host")), ValueError, "CyclesConfig.base_url"),
        (lambda: AiohttpCyclesClient(config("http://")), ValueError, "CyclesConfig.base_url"),
        (lambda: AiohttpCyclesClient(config(), max_connections=0), ValueError, "max_connections=0"),
        (lambda: AiohttpCyclesClient(config(), max_connections=True), ValueError, "max_connections=True"),
        (lambda: AiohttpCyclesClient(config(), max_connections=2.5), ValueError, "max_connections=2.5"),  # type: ignore[arg-type]
        (lambda: AiohttpCyclesClient(config(), keepalive_seconds=0), ValueError, "keepalive_seconds=0"),
        (lambda: AiohttpCyclesClient(config(), keepalive_seconds=float("inf")), ValueError, "keepalive"),
        (lambda: AiohttpCyclesClient.from_client(config()), TypeError, "from_client(client)"),
    ],
)
def test_bad_arguments_get_an_error_naming_them_and_the_fix(build: Any, error: type, names: str) -> None:
    with pytest.raises(error) as raised:
        build()
    assert names in str(raised.value)
    assert "give" in str(raised.value) or "use" in str(raised.value) or "pass" in str(raised.value)


# --- sessions per event loop ---------------------------------------------------------------------
@pytest.fixture
def unclosed_resources(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """What aiohttp and asyncio complain about once a test's objects are collected."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    complaints: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield complaints
        gc.collect()
    complaints.extend(str(w.message) for w in caught if issubclass(w.category, ResourceWarning))
    complaints.extend(r.getMessage() for r in caplog.records if r.name == "asyncio")


def test_one_client_serves_event_loops_one_after_the_other(unclosed_resources: list[str]) -> None:
    def closed(count: int) -> Callable[[RawHttpServer], bool]:
        return lambda server: server.closed_by_client == count

    with RawHttpServer(reply(OK, keep=True)) as server:
        client = AiohttpCyclesClient(config(server.base_url))
        for run in (1, 2, 3):
            response = asyncio.run(client.create_reservation(reserve_body(10)))
            assert response.status == 200
            # The loop's end closed its session, and with it the connection.
            assert server.wait_until(closed(run))
        assert server.connections == 3
        asyncio.run(client.aclose())
    assert unclosed_resources == []


def test_a_loop_closed_without_shutting_down_is_forgotten() -> None:
    with RawHttpServer(reply(OK, keep=True)) as server:
        client = AiohttpCyclesClient(config(server.base_url))
        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(client.create_reservation(reserve_body(10))).status == 200
        loop.close()  # no shutdown_asyncgens(): the session could not close with its loop
        dead = weakref.ref(loop)
        del loop
        assert asyncio.run(client.create_reservation(reserve_body(10))).status == 200
        gc.collect()
        assert dead() is None  # the client let go of the dead loop and its session
        asyncio.run(client.aclose())


async def test_a_closed_client_refuses_calls_as_runcycles_does(transport: AsyncClientFactory) -> None:
    with running_authority() as (_, cfg):
        client = transport(cfg)
        assert (await client.get_balances(tenant=TENANT)).status == 200
        await client.aclose()
        with pytest.raises(RuntimeError, match=r"Cannot send a request, as the client has been closed\."):
            await client.get_balances(tenant=TENANT)


# --- the pool --------------------------------------------------------------------------------------
async def test_sequential_calls_reuse_one_kept_alive_connection() -> None:
    with RawHttpServer(reply(OK, keep=True)) as server:
        async with AiohttpCyclesClient(config(server.base_url)) as client:
            for _ in range(5):
                assert (await client.get_balances(tenant=TENANT)).status == 200
        assert (server.connections, len(server.requests)) == (1, 5)


async def test_concurrent_calls_share_at_most_max_connections() -> None:
    in_flight, most, counting = 0, 0, threading.Lock()

    def slow(connection: Any, request: bytes) -> bool:
        nonlocal in_flight, most
        with counting:
            in_flight += 1
            most = max(most, in_flight)
        server.wait_until(lambda s: len(s.requests) >= 6, 0.2)  # give the others every chance to arrive
        with counting:
            in_flight -= 1
        connection.sendall(OK)
        return True

    with RawHttpServer(slow) as server:
        async with AiohttpCyclesClient(config(server.base_url), max_connections=2) as client:
            answers = await asyncio.gather(*(client.get_balances(tenant=TENANT) for _ in range(6)))
        assert [a.status for a in answers] == [200] * 6
        assert (server.connections, most) == (2, 2)


# --- the wire --------------------------------------------------------------------------------------
def head_and_body(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    request_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return request_line, headers, body


PROTOCOL_HEADERS = ("x-cycles-api-key", "x-idempotency-key", "content-type", "content-length")


async def sent_by(client_class: type, calls: Any) -> list[bytes]:
    with RawHttpServer(reply(OK, keep=True)) as server:
        client = client_class(config(server.base_url))
        for method, args, kwargs in calls:
            assert (await getattr(client, method)(*args, **kwargs)).status == 200
        await client.aclose()
        return server.requests


async def test_requests_carry_runcycles_bytes() -> None:
    key = str(uuid.uuid4())
    body = {"idempotency_key": key, "note": 'é ∑ "quoted"', "n": [1, 2.5, None, True]}
    query = {"tenant": "a b/c:d+e=f&g%h", "status": "ACTIVE", "flag": True}
    calls = [
        ("create_reservation", (body,), {}),
        ("commit_reservation", ("rsv 1", {"actual": {"unit": UNIT, "amount": 1}}), {}),
        ("list_reservations", (), query),
        ("list_reservations", (), {}),
        ("get_reservation", ("rsv/2",), {}),
    ]
    stock, ours = await sent_by(AsyncCyclesClient, calls), await sent_by(AiohttpCyclesClient, calls)
    assert len(stock) == len(ours) == len(calls)
    for theirs, mine in zip(stock, ours, strict=True):
        (line, headers, content), (my_line, my_headers, my_content) = (
            head_and_body(theirs),
            head_and_body(mine),
        )
        assert my_content == content
        assert {h: my_headers.get(h) for h in PROTOCOL_HEADERS} == {
            h: headers.get(h) for h in PROTOCOL_HEADERS
        }
        method, target, version = line.split(" ")
        my_method, my_target, my_version = my_line.split(" ")
        path, _, query_string = target.partition("?")
        my_path, _, my_query_string = my_target.partition("?")
        assert (my_method, my_path, my_version) == (method, path, version)
        # yarl leaves '/' and ':' unescaped in a query where httpx escapes them: the same parameters.
        assert parse_qsl(my_query_string, keep_blank_values=True) == parse_qsl(
            query_string, keep_blank_values=True
        )
    assert head_and_body(ours[0])[1]["x-idempotency-key"] == key
    assert head_and_body(ours[2])[0].startswith("GET /v1/reservations?tenant=a+b/c:d%2Be%3Df%26g%25h&")


async def test_the_proxy_named_by_the_environment_is_used_as_by_runcycles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    authority_url = "http://127.0.0.2:9"  # never reached through the proxy: the proxy answers
    with RawHttpServer(reply(OK, keep=True)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
        monkeypatch.setenv("NO_PROXY", "localhost")
        for client_class in (AsyncCyclesClient, AiohttpCyclesClient):
            client = client_class(config(authority_url))
            assert (await client.get_balances(tenant=TENANT)).status == 200
            await client.aclose()
        lines = [head_and_body(raw)[0] for raw in proxy.requests]
    assert lines == [f"GET {authority_url}/v1/balances?tenant={TENANT} HTTP/1.1"] * 2
    monkeypatch.setenv("NO_PROXY", "127.0.0.2")
    for client_class in (AsyncCyclesClient, AiohttpCyclesClient):
        client = client_class(config(authority_url))
        refused = await client.get_balances(tenant=TENANT)  # straight to the authority, which is not there
        await client.aclose()
        assert type(refused.transport_exception).__name__ == "ConnectError"


# --- trace context ---------------------------------------------------------------------------------
async def test_the_transport_writes_the_current_trace_context_into_each_request(
    telemetry: TelemetryCapture,
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("test")
    with running_authority() as (server, cfg):
        async with AiohttpCyclesClient(cfg) as client:
            token = otel_context.attach(baggage.set_baggage("team", "research"))
            try:
                with tracer.start_as_current_span("app") as app:
                    assert (await client.get_balances(tenant=TENANT)).status == 200
            finally:
                otel_context.detach(token)
            assert (await client.get_balances(tenant=TENANT)).status == 200  # no span current
        inside, outside = server.requests
    (span,) = telemetry.spans("app")
    assert span.context is not None and app.get_span_context().span_id == span.context.span_id
    _, trace_id, span_id, _ = inside.headers["traceparent"].split("-")
    assert (trace_id, span_id) == hex_ids(span)
    assert inside.headers["baggage"] == "team=research"
    assert "traceparent" not in outside.headers and "baggage" not in outside.headers
