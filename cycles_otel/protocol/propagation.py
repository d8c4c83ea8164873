"""How trace context follows a protocol call: into runcycles' threads and onto the wire."""

from __future__ import annotations

import threading
import types
import weakref
from typing import Any

import httpx
from opentelemetry import context as otel_context
from opentelemetry import propagate


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
