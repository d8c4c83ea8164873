"""``BalancePoller``: polls ``GET /v1/balances`` for a few subjects and feeds the budget gauges."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import threading
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from opentelemetry.metrics import MeterProvider

from cycles_otel.instruments import get_instruments
from cycles_otel.semconv import ERROR_TYPE, SUBJECT_FIELDS

_log = logging.getLogger(__name__)

PAGE_LIMIT = 200  # the protocol's maximum page size: fewest round trips
MAX_PAGES = 1_000  # a cursor that never ends must not pin the poller
INVALID_RESPONSE = "invalid_response"


class CyclesResponse(Protocol):
    """What the poller reads of a runcycles ``CyclesResponse`` (only the instrumentor imports runcycles)."""

    status: int
    body: dict[str, Any] | None
    error_message: str | None
    transport_exception: Exception | None

    @property
    def is_success(self) -> bool: ...
    @property
    def is_transport_error(self) -> bool: ...
    @property
    def retry_after_ms_header(self) -> int | None: ...


# One poll: yields the query of each page it needs, receives that page's response, returns a count.
PollPlan = Generator[dict[str, str], CyclesResponse, int]


@dataclass(frozen=True)
class PollError:
    """Why the last poll of a subject failed."""

    subject: Mapping[str, str]
    error_type: str  # transport exception class, HTTP status code, or "invalid_response"
    message: str
    transport: bool = False
    retry_after: float | None = None


def _check_subjects(subjects: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    fix = 'pass e.g. subjects=[{"tenant": "acme"}]'
    if isinstance(subjects, Mapping) or not isinstance(subjects, Sequence) or not subjects:
        raise ValueError(f"subjects must be a non-empty list of subject filters: {fix}")
    checked = []
    for subject in subjects:
        if not isinstance(subject, Mapping) or not subject:
            raise ValueError(f"subject {subject!r} is not a non-empty mapping: {fix}")
        for key, value in subject.items():
            if key not in SUBJECT_FIELDS or not isinstance(value, str) or not value:
                raise ValueError(
                    f"subject {dict(subject)!r}: {key!r}={value!r} is not a subject filter; "
                    f"use non-empty string values for keys among {', '.join(SUBJECT_FIELDS)}"
                )
        checked.append(dict(subject))
    return checked


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name}={value!r}: use a positive, finite number of seconds")
    return float(value)


def _levels(scope: str) -> dict[str, str]:
    levels = {}
    for segment in scope.split("/"):
        level, _, value = segment.partition(":")
        levels[level] = value.lower()
    return levels


def _covers(subject: Mapping[str, str], scope: str) -> bool:
    """Whether ``scope`` is one the authority would list for ``subject``."""
    levels = _levels(scope)
    return all(levels.get(level) == value.lower() for level, value in subject.items())


def _failure(subject: Mapping[str, str], response: CyclesResponse) -> PollError | None:
    if response.is_transport_error:
        exc = response.transport_exception
        kind = type(exc).__name__ if exc is not None else "TransportError"
        return PollError(subject, kind, response.error_message or kind, transport=True)
    if not response.is_success:
        retry_ms = response.retry_after_ms_header
        return PollError(
            subject,
            str(response.status),
            response.error_message or f"HTTP {response.status}",
            retry_after=retry_ms / 1000 if retry_ms is not None else None,
        )
    body = response.body
    if not isinstance(body, Mapping) or not isinstance(body.get("balances"), list):
        return PollError(subject, INVALID_RESPONSE, "the answer has no balances list")
    return None


class BalancePoller:
    """Keeps ``cycles_budget_*`` current by polling the authority every ``interval`` seconds.

    Each poll lists every balance of every subject (following ``next_cursor``), records it,
    and forgets scopes of those subjects the authority no longer lists. When polls fail it
    backs off exponentially (up to ``max_backoff``, at least any ``Retry-After`` up to that cap),
    counts ``cycles.exporter.poll_errors`` and never raises; what it records goes stale after
    ``stale_after`` seconds (default ``3 * interval``): the gauges disappear while their updated
    timestamp stays. Staleness belongs to the readings, so pollers of different intervals on one
    meter provider each judge only their own.

    Run it with ``async with poller:`` or ``start()``/``stop()`` (a task in the running loop for
    an ``AsyncCyclesClient``, a daemon thread for a ``CyclesClient``), :meth:`run` in a thread of
    your own, or call :meth:`poll_once` / :meth:`poll_once_sync` yourself.
    """

    def __init__(
        self,
        client: Any,
        subjects: Sequence[Mapping[str, str]],
        interval: float = 15.0,
        *,
        meter_provider: MeterProvider | None = None,
        stale_after: float | None = None,
        max_backoff: float = 300.0,
    ) -> None:
        if not callable(getattr(client, "get_balances", None)):
            raise TypeError(f"client must be a runcycles CyclesClient or AsyncCyclesClient, got {client!r}")
        self.client = client
        self.is_async = inspect.iscoroutinefunction(client.get_balances)
        self.subjects = _check_subjects(subjects)
        self.interval = _positive("interval", interval)
        self.stale_after = _positive("stale_after", 3 * self.interval if stale_after is None else stale_after)
        self.max_backoff = max(_positive("max_backoff", max_backoff), self.interval)
        self._instruments = get_instruments(meter_provider)
        self.failures = 0  # consecutive polls with at least one error
        self.last_error: PollError | None = None
        self._retry_after: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    # --- one poll ---------------------------------------------------------------------------
    def _plan(self) -> PollPlan:
        recorded, errors = 0, []
        for subject in self.subjects:
            seen: set[str] = set()
            cursor: str | None = None
            for _ in range(MAX_PAGES):
                query = {**subject, "limit": str(PAGE_LIMIT)} | ({"cursor": cursor} if cursor else {})
                response = yield query
                error = _failure(subject, response)
                if error is not None:
                    errors.append(error)
                    break
                assert response.body is not None
                balances = [b for b in response.body["balances"] if isinstance(b, Mapping)]
                recorded += self._instruments.board.update_from_balances(balances, self.stale_after)
                seen |= {str(b.get("scope_path") or b.get("scope")) for b in balances}
                cursor = response.body.get("next_cursor")
                if not response.body.get("has_more") or not isinstance(cursor, str) or not cursor:
                    self._forget_unlisted(subject, seen)
                    break
        self._finish(errors)
        return recorded

    def _forget_unlisted(self, subject: Mapping[str, str], listed: set[str]) -> None:
        """After a complete listing, scopes of ``subject`` it no longer names are gone."""
        self._instruments.board.forget(lambda r: r.scope in listed or not _covers(subject, r.scope))

    def _finish(self, errors: list[PollError]) -> None:
        for error in errors:
            self._instruments.poll_errors.add(1, {ERROR_TYPE: error.error_type})
            _log.warning(
                "Cycles balance poll for %s failed (%s): %s", error.subject, error.error_type, error.message
            )
        self.failures = self.failures + 1 if errors else 0
        self.last_error = errors[-1] if errors else None
        retry_after = [e.retry_after for e in errors if e.retry_after is not None]
        self._retry_after = max(retry_after) if retry_after else None

    def _internal_error(self, exc: BaseException) -> int:
        _log.warning("Cycles balance poll failed", exc_info=exc)
        self._finish([PollError({}, type(exc).__name__, str(exc))])
        return 0

    async def poll_once(self) -> int:
        """Poll every subject once through an ``AsyncCyclesClient``; the number of balances recorded."""
        if not self.is_async:
            raise TypeError(
                "poll_once() needs an AsyncCyclesClient; call poll_once_sync() for a CyclesClient"
            )
        plan = self._plan()
        try:
            query = next(plan)
            while True:
                query = plan.send(await self.client.get_balances(**query))
        except StopIteration as done:
            return int(done.value)
        except Exception as exc:  # never raise into the app
            return self._internal_error(exc)

    def poll_once_sync(self) -> int:
        """Poll every subject once through a ``CyclesClient``; the number of balances recorded."""
        if self.is_async:
            raise TypeError(
                "poll_once_sync() needs a CyclesClient; await poll_once() for an AsyncCyclesClient"
            )
        plan = self._plan()
        try:
            query = next(plan)
            while True:
                query = plan.send(self.client.get_balances(**query))
        except StopIteration as done:
            return int(done.value)
        except Exception as exc:  # never raise into the app
            return self._internal_error(exc)

    def next_delay(self) -> float:
        """Seconds until the next poll: the interval, doubled per consecutive failure, capped.

        A ``Retry-After`` longer than the back-off wins, up to ``max_backoff``: an answer must not
        be able to park the poller for days (or past what a timer can wait).
        """
        if not self.failures:
            return self.interval
        delay = min(self.max_backoff, self.interval * 2.0 ** min(self.failures, 32))
        return max(delay, min(self._retry_after or 0.0, self.max_backoff))

    # --- running in the background --------------------------------------------------------------
    def start(self, delay: float = 0.0) -> BalancePoller:
        """Poll in the background, first after ``delay`` seconds: a task of the running loop, or a
        daemon thread for a sync client."""
        if self._task is not None or self._thread is not None:
            return self
        self._stop.clear()
        if self.is_async:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "BalancePoller with an AsyncCyclesClient runs in an event loop: call start() inside "
                    "one or use 'async with poller'; for a thread, pass a CyclesClient"
                ) from None
            self._task = loop.create_task(self._run_async(delay), name="cycles-balance-poller")
        else:
            self._thread = threading.Thread(
                target=self.run, args=(delay,), name="cycles-balance-poller", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop polling (the thread finishes its current request first)."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    async def _run_async(self, delay: float) -> None:
        await asyncio.sleep(delay)
        while not self._stop.is_set():
            await self.poll_once()
            await asyncio.sleep(self.next_delay())

    def run(self, delay: float = 0.0) -> None:
        """Poll through a ``CyclesClient`` in the calling thread, first after ``delay`` seconds,
        until :meth:`stop`; whatever stops polling otherwise raises here."""
        if self.is_async:
            raise TypeError(
                "run() needs a CyclesClient; use start() or 'async with' for an AsyncCyclesClient"
            )
        self._stop.wait(delay)
        while not self._stop.is_set():
            self.poll_once_sync()
            self._stop.wait(self.next_delay())

    async def __aenter__(self) -> BalancePoller:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task = self._task
        self.stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def __enter__(self) -> BalancePoller:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["BalancePoller", "PollError"]
