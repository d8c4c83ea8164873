"""The httpx exception runcycles' own client reports for each aiohttp transport failure."""

from __future__ import annotations

from typing import Final

import aiohttp
import httpx

# What httpx (httpcore over anyio) says for the same failures, so that ``CyclesResponse.error_message``
# reads the same on both transports.
ALL_ATTEMPTS_FAILED: Final = "All connection attempts failed"
SERVER_DISCONNECTED: Final = "Server disconnected without sending a response."


def httpx_error(exc: aiohttp.ClientError, method: str, url: str) -> httpx.TransportError:
    """The httpx exception that runcycles' ``AsyncCyclesClient`` would have wrapped for ``exc``.

    Its class names ``error.type`` on spans and on ``cycles.client.operation.duration``, so a failure
    is labelled alike whichever transport met it. Timeouts, refused and dropped connections and resets
    also keep httpx's message; malformed or truncated answers keep aiohttp's (h11's wording depends on
    the bytes it choked on).
    """
    error = _translate(exc)
    error.request = httpx.Request(method, url)
    error.__cause__ = exc
    return error


def _translate(exc: aiohttp.ClientError) -> httpx.TransportError:
    # Most specific first: aiohttp's timeouts are also connection errors, a DNS failure a connect error.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout("")
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout("")
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return httpx.ProxyError(str(exc))
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return httpx.ConnectError(str(exc.certificate_error))
    if isinstance(exc, aiohttp.ClientConnectorDNSError | aiohttp.ClientConnectorSSLError):
        return httpx.ConnectError(str(exc.os_error))
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(ALL_ATTEMPTS_FAILED)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(SERVER_DISCONNECTED)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(str(exc))
    if isinstance(exc, aiohttp.ClientConnectionResetError):  # the request could not be written
        return httpx.WriteError("")
    if isinstance(exc, aiohttp.ClientOSError):  # reset or broken while the answer was awaited
        return httpx.ReadError("")
    return httpx.TransportError(str(exc))
