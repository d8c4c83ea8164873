"""The Cycles authority as one client reaches it: its async client, this process's journal, replay."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from typing import Any

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig  # type: ignore[import-untyped]
from runcycles.retry import AsyncCommitRetryEngine, CommitRetryEngine  # type: ignore[import-untyped]

from cycles_otel.autogen.config import Transport
from cycles_otel.protocol.journal import WorkerJournal, default_base
from cycles_otel.protocol.transport import AiohttpCyclesClient

logger = logging.getLogger(__name__)


def async_client(
    client: AsyncCyclesClient | CyclesClient | None, transport: Transport = "aiohttp"
) -> tuple[AsyncCyclesClient, bool]:
    """The async client to reserve through, and whether it was made here (and so is closed here).

    runcycles' own clients (the guide's synchronous ``CyclesClient``, a plain ``AsyncCyclesClient``,
    or ``None`` for ``CyclesConfig.from_env()``) are read for their config and replaced by
    :class:`~cycles_otel.protocol.transport.AiohttpCyclesClient`, which speaks the protocol exactly
    as they do at a fraction of the cost; ``transport="httpx"`` keeps runcycles' own async client.
    Any other ``AsyncCyclesClient`` (a subclass of one's own, an ``AiohttpCyclesClient``) is used
    as it is.
    """
    if isinstance(client, AsyncCyclesClient) and type(client) is not AsyncCyclesClient:
        return client, False
    if client is not None and not isinstance(client, (AsyncCyclesClient, CyclesClient)):
        raise TypeError(
            f"cycles_client must be a runcycles AsyncCyclesClient, CyclesClient or None (CYCLES_* env), "
            f"got {type(client).__name__}"
        )
    if transport == "httpx":
        if isinstance(client, AsyncCyclesClient):
            return client, False
        return AsyncCyclesClient(client._config if client is not None else CyclesConfig.from_env()), True
    config = client._config if client is not None else CyclesConfig.from_env()
    return AiohttpCyclesClient(config), True


@dataclasses.dataclass
class Authority:
    """Where one client's reservations go, and where their commits are journaled.

    ``config`` is the Cycles client's own, but for its journal directory: a directory of this
    process's own (:class:`~cycles_otel.protocol.journal.WorkerJournal`), so a commit is replayed
    and counted by one process only. Journaled commits left by this process's predecessors are
    replayed as soon as the authority is set up (:meth:`replay`), not at the first call.
    """

    client: AsyncCyclesClient
    config: CyclesConfig
    owns_client: bool
    _events: dict[asyncio.AbstractEventLoop, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def of(
        cls, cycles_client: AsyncCyclesClient | CyclesClient | None, transport: Transport = "aiohttp"
    ) -> Authority:
        client, owned = async_client(cycles_client, transport)
        config: CyclesConfig = client._config
        if config.journal_enabled:
            worker = WorkerJournal.of(default_base(config))
            config = dataclasses.replace(config, journal_dir=str(worker.directory))
        return cls(client, config, owned)

    @property
    def journaled(self) -> bool:
        return bool(self.config.journal_enabled)

    def replay(self) -> None:
        """Replay what earlier processes left journaled (once per process and journal directory)."""
        if not (self.journaled and self.config.retry_enabled):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        try:
            if loop is not None:
                AsyncCommitRetryEngine(self.config).set_client(self.client)
            else:  # no event loop yet: runcycles' thread-based engine replays right away
                CommitRetryEngine(self.config).set_client(CyclesClient(self.config))
        except Exception:
            logger.warning("cycles_otel: could not replay the commit journal", exc_info=True)

    def record_event(self, body: dict[str, Any]) -> None:
        """Record spend with ``POST /v1/events``, journaled first and retried until it lands."""
        loop = asyncio.get_running_loop()
        engine = self._events.get(loop)
        if engine is None:
            self._events = {live: e for live, e in self._events.items() if not live.is_closed()}
            engine = self._events[loop] = AsyncCommitRetryEngine(self.config)
            engine.set_client(self.client)
        engine.schedule_event(f"event-{uuid.uuid4()}", body)

    async def aclose(self) -> None:
        engine = self._events.get(asyncio.get_running_loop())
        if engine is not None:
            await engine.flush()
        if self.owns_client:
            await self.client.aclose()
