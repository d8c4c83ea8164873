"""How trace context follows a protocol call: into runcycles' threads, onto the wire, and across time."""

from __future__ import annotations

import contextvars
import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import httpx
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.trace import SpanContext

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_CAPACITY = 10_000


class BoundedMap(Generic[K, V]):
    """A thread-safe map that forgets its least recently written entries beyond ``capacity``."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def put(self, key: K, value: V) -> list[V]:
        """Store ``key``; returns the values evicted to make room (usually none)."""
        with self._lock:
            return self._store(key, value)

    def add_new(self, key: K, value: V) -> tuple[bool, list[V]]:
        """Store ``key`` unless present; returns (added, evicted values)."""
        with self._lock:
            if key in self._items:
                return False, []
            return True, self._store(key, value)

    def replace_if(self, key: K, value: V, allowed: Callable[[V | None], bool]) -> bool:
        """Store ``value`` if ``allowed(current value)``, atomically; returns whether it did."""
        with self._lock:
            if not allowed(self._items.get(key)):
                return False
            self._store(key, value)
            return True

    def _store(self, key: K, value: V) -> list[V]:
        self._items[key] = value
        self._items.move_to_end(key)
        evicted: list[V] = []
        while len(self._items) > self._capacity:
            evicted.append(self._items.popitem(last=False)[1])
        return evicted

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._items.get(key)

    def pop(self, key: K) -> V | None:
        with self._lock:
            return self._items.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def remove_where(self, doomed: Callable[[V], bool]) -> int:
        """Forget every entry whose value is ``doomed``; returns how many are left."""
        with self._lock:
            for key in [key for key, value in self._items.items() if doomed(value)]:
                del self._items[key]
            return len(self._items)


# --- late settlement ---------------------------------------------------------------------------
_retrying: contextvars.ContextVar[bool] = contextvars.ContextVar("cycles_otel_retrying", default=False)


def is_retry_attempt() -> bool:
    """True inside runcycles' commit retry engine (a background retry or a journal replay)."""
    return _retrying.get()


@contextmanager
def retry_attempt() -> Iterator[None]:
    token = _retrying.set(True)
    try:
        yield
    finally:
        _retrying.reset(token)


class SettlementLinks:
    """Reservation id -> the span context of its reserve span, so a late commit can link to it."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._reserve_spans: BoundedMap[str, SpanContext] = BoundedMap(capacity)

    def remember(self, reservation_id: str, span_context: SpanContext) -> None:
        if span_context.is_valid:
            self._reserve_spans.put(reservation_id, span_context)

    def reserve_span(self, reservation_id: str) -> SpanContext | None:
        return self._reserve_spans.get(reservation_id)


# --- threads --------------------------------------------------------------------------------------
class ContextCarryingThread(threading.Thread):
    """A thread that runs in the OpenTelemetry context of the code that created it.

    runcycles' sync client runs creates and extends in fresh threads (a whole-attempt deadline)
    and heartbeats in another; without this their spans would start new traces.
    Only the OTel context travels: runcycles' own context variables keep their behaviour.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._otel_context = otel_context.get_current()

    def run(self) -> None:
        token = otel_context.attach(self._otel_context)
        try:
            super().run()
        finally:
            otel_context.detach(token)


class _ThreadingWithContext(types.ModuleType):
    """Stands in for ``threading`` inside a runcycles module: the same module but for ``Thread``."""

    Thread = ContextCarryingThread

    def __getattr__(self, name: str) -> Any:
        return getattr(threading, name)


_THREADING_PROXY = _ThreadingWithContext("threading")


def carry_context_into_threads(module: types.ModuleType) -> bool:
    """Make threads that ``module`` starts inherit the caller's OTel context; False if not applicable."""
    if getattr(module, "threading", None) is not threading:
        return False
    module.threading = _THREADING_PROXY  # type: ignore[attr-defined]
    return True


def stop_carrying_context(module: types.ModuleType) -> None:
    if getattr(module, "threading", None) is _THREADING_PROXY:
        module.threading = threading  # type: ignore[attr-defined]


# --- the wire -------------------------------------------------------------------------------------
def _inject(request: httpx.Request) -> None:
    # The instrumented call made its span current, so the global propagator writes its traceparent.
    propagate.inject(request.headers)


async def _inject_async(request: httpx.Request) -> None:
    propagate.inject(request.headers)  # as _inject: one frame fewer on every protocol call


class TraceHeaderHooks:
    """Adds a request hook that injects trace headers to each runcycles ``httpx`` client it sees.

    Hooking lazily, on a client's first instrumented call, covers clients created before
    ``instrument()``; :meth:`remove_all` takes the hook off again.
    """

    def __init__(self) -> None:
        self._hooked: weakref.WeakSet[httpx.Client | httpx.AsyncClient] = weakref.WeakSet()
        self._lock = threading.Lock()
        # The client seen last: an app usually has one, so most calls stop at this check.
        self._last: weakref.ref[httpx.Client | httpx.AsyncClient] | None = None

    def ensure(self, http: object) -> None:
        last = self._last
        if last is not None and last() is http:
            return
        if http in self._hooked:
            self._last = weakref.ref(http)  # type: ignore[arg-type]
            return
        if isinstance(http, httpx.AsyncClient):
            hook: Any = _inject_async
        elif isinstance(http, httpx.Client):
            hook = _inject
        else:
            return
        with self._lock:
            hooks = http.event_hooks["request"]
            if hook not in hooks:
                hooks.append(hook)
            self._hooked.add(http)
            self._last = weakref.ref(http)

    def remove_all(self) -> None:
        with self._lock:
            for http in list(self._hooked):
                hooks = http.event_hooks["request"]
                for hook in (_inject, _inject_async):
                    while hook in hooks:
                        hooks.remove(hook)
            self._hooked = weakref.WeakSet()
            self._last = None
