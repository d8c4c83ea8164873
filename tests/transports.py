"""The transports a runcycles async client speaks the protocol over, as a parametrised ``transport`` fixture.

Import the fixture by name into a test module (``from tests.transports import transport``, listed in
that module's ``__all__``); it gives the client class to build, ids ``httpx`` (runcycles' own
``AsyncCyclesClient``) and ``aiohttp`` (:class:`~cycles_otel.protocol.transport.AiohttpCyclesClient`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import pytest
from runcycles import AsyncCyclesClient, CyclesConfig  # type: ignore[import-untyped]

from cycles_otel.protocol.transport import AiohttpCyclesClient

AsyncClientFactory: TypeAlias = Callable[[CyclesConfig], Any]
ASYNC_CLIENTS: dict[str, AsyncClientFactory] = {"httpx": AsyncCyclesClient, "aiohttp": AiohttpCyclesClient}
TRANSPORTS = tuple(ASYNC_CLIENTS)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> AsyncClientFactory:
    """The async client class of one transport: ``transport(config)`` builds a client."""
    return ASYNC_CLIENTS[request.param]
