"""``AiohttpCyclesClient``: runcycles' ``AsyncCyclesClient`` speaking the Cycles protocol over aiohttp.

Drop-in wherever runcycles takes an ``AsyncCyclesClient`` (``stream_reservation``, ``@cycles``, the
commit retry engine and journal, heartbeats): the same requests, the same ``CyclesResponse`` for every
answer and failure, the same timeouts, at a fraction of httpx's cost per call. ``CyclesInstrumentor``
traces it like the stock clients; it writes the current trace context (W3C ``traceparent``) into
every request itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import urllib.request
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import aiohttp
import httpx
from opentelemetry import propagate
from pydantic import BaseModel
from runcycles._constants import (  # type: ignore[import-untyped]
    API_KEY_HEADER,
    BALANCES_PATH,
    DECIDE_PATH,
    EVENTS_PATH,
    IDEMPOTENCY_KEY_HEADER,
    RESERVATIONS_PATH,
)
from runcycles.client import (  # type: ignore[import-untyped]
    _RESPONSE_HEADERS,
    AsyncCyclesClient,
    CyclesClient,
    _serialize_body,
    _validate_balance_filters,
)
from runcycles.config import CyclesConfig  # type: ignore[import-untyped]
from runcycles.response import CyclesResponse  # type: ignore[import-untyped]
from typing_extensions import Self

from cycles_otel.protocol.transport_errors import httpx_error

logger = logging.getLogger(__name__)

# runcycles' httpx client: write=5.0, pool=5.0 beside the config's connect and read timeouts, and
# httpx's default pool of 100 connections whose idle ones expire after 5 s.
POOL_TIMEOUT_SECONDS: Final = 5.0
DEFAULT_MAX_CONNECTIONS: Final = 100
DEFAULT_KEEPALIVE_SECONDS: Final = 5.0
CLOSED_MESSAGE: Final = "Cannot send a request, as the client has been closed."  # httpx's words
JSON_HEADERS: Final = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class _Settings:
    api_key: str
    timeout: aiohttp.ClientTimeout
    proxy: str | None
    max_connections: int
    keepalive_seconds: float


@dataclass(frozen=True)
class _LoopPool:
    """One event loop's session, its connection slots, and the generator that closes it with the loop."""

    session: aiohttp.ClientSession
    slots: asyncio.Semaphore
    closer: AsyncGenerator[None, None]

    @classmethod
    async def open(cls, settings: _Settings) -> _LoopPool:
        connector = aiohttp.TCPConnector(
            limit=settings.max_connections,
            keepalive_timeout=settings.keepalive_seconds,
            timeout_ceil_threshold=math.inf,  # no rounding up to whole seconds: httpx's timeouts exactly
        )
        session = aiohttp.ClientSession(
            connector=connector,
            headers={API_KEY_HEADER: settings.api_key},
            timeout=settings.timeout,
            proxy=settings.proxy,
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # httpx keeps cookies from IP-address hosts too
        )
        # aiohttp retries an idempotent request (the GETs) once when a reused connection drops;
        # httpx does not, and a dropped balance query must read the same on both.
        session._retry_connection = False
        closer = _close_with_loop(session)
        await anext(closer)
        return cls(session, asyncio.Semaphore(settings.max_connections), closer)

    async def close(self) -> None:
        await self.closer.aclose()


async def _close_with_loop(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Suspended for as long as its loop lives: ``asyncio.run()`` (any ``loop.shutdown_asyncgens()``)
    closes it as the loop ends, and with it the session, so a client can outlive its event loops."""
    try:
        yield
    finally:
        await session.close()


class AiohttpCyclesClient(AsyncCyclesClient):  # type: ignore[misc]
    """An ``AsyncCyclesClient`` whose requests go over aiohttp: one keep-alive session per event loop.

    Usage::

        client = AiohttpCyclesClient(CyclesConfig(base_url=..., api_key=...))
        async with client.stream_reservation(action=..., estimate=...) as reservation:
            ...

    ``max_connections`` bounds the pool of each event loop (a request waits up to 5 s for a free
    connection, then fails with httpx's ``PoolTimeout``, as runcycles' client does); idle connections
    close after ``keepalive_seconds``. A session opens lazily in the running loop; a client used from
    several loops (two ``asyncio.run()`` calls) has one per loop, each closed when its loop shuts down
    or on :meth:`aclose`.
    """

    def __init__(
        self,
        config: CyclesConfig,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
    ) -> None:
        # AsyncCyclesClient.__init__ is not called: it would build an httpx.AsyncClient (and its pool)
        # that no call of this class uses. runcycles reads nothing of a client but ``_config`` (subject
        # defaults, retry settings, heartbeat timing) and the protocol methods overridden below.
        self._config = _checked_config(config)
        self._base_url = config.base_url.rstrip("/")
        self._settings = _Settings(
            api_key=config.api_key,
            timeout=aiohttp.ClientTimeout(
                # The pool wait is bounded apart (``slots``): ``connect`` covers DNS, TCP and TLS, as httpx's.
                connect=config.connect_timeout,
                sock_read=config.read_timeout,
                ceil_threshold=math.inf,
            ),
            proxy=_environment_proxy(config.base_url),
            max_connections=_positive_int("max_connections", max_connections),
            keepalive_seconds=_positive_seconds("keepalive_seconds", keepalive_seconds),
        )
        self._pools: dict[asyncio.AbstractEventLoop, _LoopPool] = {}
        self._closed = False

    @classmethod
    def from_client(
        cls,
        client: CyclesClient | AsyncCyclesClient,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
    ) -> Self:
        """A client with the configuration of a runcycles ``CyclesClient`` or ``AsyncCyclesClient``."""
        if not isinstance(client, (CyclesClient, AsyncCyclesClient)):
            raise TypeError(
                f"AiohttpCyclesClient.from_client(client): expected a runcycles CyclesClient or "
                f"AsyncCyclesClient, got {type(client).__name__}; pass a CyclesConfig to "
                f"AiohttpCyclesClient(config) instead"
            )
        return cls(client._config, max_connections=max_connections, keepalive_seconds=keepalive_seconds)

    # --- the protocol, as runcycles' AsyncCyclesClient speaks it ---------------------------------------
    async def create_reservation(self, request: BaseModel | dict[str, Any]) -> CyclesResponse:
        return await self._post(RESERVATIONS_PATH, request)

    async def commit_reservation(
        self, reservation_id: str, request: BaseModel | dict[str, Any]
    ) -> CyclesResponse:
        return await self._post(f"{RESERVATIONS_PATH}/{reservation_id}/commit", request)

    async def release_reservation(
        self, reservation_id: str, request: BaseModel | dict[str, Any]
    ) -> CyclesResponse:
        return await self._post(f"{RESERVATIONS_PATH}/{reservation_id}/release", request)

    async def extend_reservation(
        self, reservation_id: str, request: BaseModel | dict[str, Any]
    ) -> CyclesResponse:
        return await self._post(f"{RESERVATIONS_PATH}/{reservation_id}/extend", request)

    async def decide(self, request: BaseModel | dict[str, Any]) -> CyclesResponse:
        return await self._post(DECIDE_PATH, request)

    async def create_event(self, request: BaseModel | dict[str, Any]) -> CyclesResponse:
        return await self._post(EVENTS_PATH, request)

    async def get_balances(self, **query_params: str) -> CyclesResponse:
        _validate_balance_filters(query_params)
        return await self._get(BALANCES_PATH, query_params)

    async def get_reservation(self, reservation_id: str) -> CyclesResponse:
        return await self._get(f"{RESERVATIONS_PATH}/{reservation_id}")

    async def list_reservations(self, **query_params: str) -> CyclesResponse:
        return await self._get(RESERVATIONS_PATH, query_params)

    # --- lifecycle ------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the session of the running loop; sessions of other live loops close in their own loop."""
        self._closed = True
        pools, self._pools = self._pools, {}
        # Another live loop's session: dropping the last reference to its closer hands it to asyncio's
        # async-generator finalizer, which closes that session in its own loop.
        current = pools.get(asyncio.get_running_loop())
        if current is not None:
            await current.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.aclose()

    # --- the wire -------------------------------------------------------------------------------------
    async def _post(self, path: str, body: BaseModel | dict[str, Any]) -> CyclesResponse:
        data = _serialize_body(body)
        # httpx's JSON encoding, byte for byte.
        content = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        headers = dict(JSON_HEADERS)
        if idempotency_key := data.get("idempotency_key"):
            headers[IDEMPOTENCY_KEY_HEADER] = idempotency_key
        return await self._send("POST", self._base_url + path, headers, content)

    async def _get(self, path: str, params: Mapping[str, Any] | None = None) -> CyclesResponse:
        url = self._base_url + path
        if params:
            url += "?" + urlencode(_query_items(params))
        return await self._send("GET", url, {}, None)

    async def _send(
        self, method: str, url: str, headers: dict[str, str], content: bytes | None
    ) -> CyclesResponse:
        pool = self._pools.get(asyncio.get_running_loop()) or await self._open_pool()
        # The instrumented call has made its span current: the global propagator writes its traceparent.
        propagate.inject(headers)
        try:
            await _take_slot(pool.slots)
            try:
                async with pool.session.request(
                    method, url, data=content, headers=headers, allow_redirects=False
                ) as response:
                    return _answer(response, await response.read())
            finally:
                pool.slots.release()
        except httpx.PoolTimeout as exc:
            exc.request = httpx.Request(method, url)
            error: httpx.TransportError = exc
        except aiohttp.ClientError as exc:
            error = httpx_error(exc, method, url)
        logger.error("Transport error on %s %s: %s", method, url, error)
        return CyclesResponse.transport_error(error)

    async def _open_pool(self) -> _LoopPool:
        if self._closed:
            raise RuntimeError(CLOSED_MESSAGE)
        # A loop closed without shutting its async generators down (no asyncio.run) could not close
        # its session: forget it, the garbage collector takes it (and aiohttp says it was left open).
        for loop in list(self._pools):  # a copy: another thread's loop may add its own meanwhile
            if loop.is_closed():
                self._pools.pop(loop, None)
        pool = await _LoopPool.open(self._settings)
        self._pools[asyncio.get_running_loop()] = pool
        return pool


async def _take_slot(slots: asyncio.Semaphore) -> None:
    if not slots.locked():
        await slots.acquire()  # free: returns at once, no timer armed
        return
    try:
        await asyncio.wait_for(slots.acquire(), POOL_TIMEOUT_SECONDS)
    except asyncio.TimeoutError:
        raise httpx.PoolTimeout("") from None


def _answer(response: aiohttp.ClientResponse, content: bytes) -> CyclesResponse:
    """runcycles' ``_handle_response``: the same body, message and kept headers for the same answer."""
    try:
        body = json.loads(content)
    except Exception:
        body = None
    kept: dict[str, str] = {}
    for name in _RESPONSE_HEADERS:
        if values := response.headers.getall(name, ()):
            kept[name] = ", ".join(values)  # httpx joins a repeated header
    status = response.status
    if 200 <= status < 300:
        return CyclesResponse.success(status, body or {}, headers=kept)
    message = None
    if body and isinstance(body, dict):
        message = body.get("message") or body.get("error")
    return CyclesResponse.http_error(
        status, message or response.reason or "Unknown error", body, headers=kept
    )


def _query_items(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Query parameters as httpx writes them: a list or tuple repeats its key."""
    return [
        (key, _query_value(item))
        for key, value in params.items()
        for item in (value if isinstance(value, list | tuple) else (value,))
    ]


def _query_value(value: Any) -> str:
    """A query value as httpx writes it: booleans in lower case, None as empty."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value)


def _environment_proxy(base_url: str) -> str | None:
    """The proxy that ``HTTP(S)_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` name for the authority, read once,
    as httpx reads them when runcycles builds its client."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(base_url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # untyped in typeshed
    if proxy is None or bypass(parts.hostname or "", proxies):
        return None
    return proxy


def _checked_config(config: Any) -> CyclesConfig:
    if not isinstance(config, CyclesConfig):
        raise TypeError(
            f"AiohttpCyclesClient(config): expected a runcycles CyclesConfig, got {type(config).__name__}; "
            f"use AiohttpCyclesClient.from_client(client) to reuse a client's configuration"
        )
    parts = urlsplit(config.base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"CyclesConfig.base_url={config.base_url!r}: give the authority's http:// or https:// URL "
            f"with its host, e.g. 'http://localhost:7878'"
        )
    return config


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"AiohttpCyclesClient({name}={value!r}): give a whole number of at least 1")
    return value


def _positive_seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"AiohttpCyclesClient({name}={value!r}): give a number of seconds above 0")
    return float(value)
