"""The settlements of one client: each in a task of its own, so a cancelled caller never cuts one short."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)


class Settlements:
    """The commits and releases of one client (and its ``with_agent`` twins) that are still running.

    A settlement runs in its own task, never in the caller's: cancelling the caller (or the
    consumer of a stream) once the model has answered leaves the commit running, so it lands and
    is counted. runcycles writes a commit to its journal before sending it and retries it when it
    fails: a commit cut off by the process stopping is replayed by the next process.

    With background settlement (``defer_s > 0``) a commit is nobody's answer: it lets the calls of
    this client that still wait for theirs go first, for at most ``defer_s``. All share one event
    loop, and each commit's CPU spent ahead of them would delay their answers.
    """

    def __init__(self, defer_s: float = 0.0) -> None:
        self.defer_s = defer_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._answering = 0
        self._quiet: list[asyncio.Future[None]] = []  # deferred commits waiting for no call to be answering

    @contextmanager
    def answering(self) -> Iterator[None]:
        """A call waits for its answer meanwhile (from its reserve to the model's reply)."""
        self._answering += 1
        try:
            yield
        finally:
            self._answering -= 1
            if not self._answering:
                quiet, self._quiet = self._quiet, []
                for waiter in quiet:
                    if not waiter.done():
                        waiter.set_result(None)

    async def before_commit(self) -> None:
        """Wait (at most ``defer_s``) until no call of this client awaits its answer."""
        if self.defer_s <= 0 or not self._answering:
            return
        quiet = asyncio.get_running_loop().create_future()
        self._quiet.append(quiet)
        await asyncio.wait([quiet], timeout=self.defer_s)

    def run(self, settlement: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``settlement`` in a task (it copies the caller's context: the span tree stays the same)."""
        task = asyncio.get_running_loop().create_task(settlement)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved here: never "unretrieved"
            logger.warning("cycles_otel: a settlement failed", exc_info=task.exception())

    async def wait(self) -> None:
        """Wait until every settlement started so far (and any started meanwhile) has landed or failed.

        Only tasks of the running loop are awaited: a loop that has stopped already ended its own.
        """
        loop = asyncio.get_running_loop()
        while True:
            running = [task for task in self._tasks if task.get_loop() is loop and not task.done()]
            if not running:
                return
            await asyncio.wait(running)  # never cancels them, even if this wait is cancelled
