"""The transports a runcycles async client speaks the protocol over (the ``transport`` fixture's values).

``httpx`` is runcycles' own ``AsyncCyclesClient``; ``aiohttp`` is
:class:`~cycles_otel.protocol.transport.AiohttpCyclesClient`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

from runcycles import AsyncCyclesClient, CyclesConfig  # type: ignore[import-untyped]

from cycles_otel.protocol.transport import AiohttpCyclesClient

AsyncClientFactory: TypeAlias = Callable[[CyclesConfig], Any]
ASYNC_CLIENTS: dict[str, AsyncClientFactory] = {"httpx": AsyncCyclesClient, "aiohttp": AiohttpCyclesClient}
TRANSPORTS = tuple(ASYNC_CLIENTS)
