"""Telemetry never changes the call it observes: a telemetry step that fails is logged and skipped."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

logger = logging.getLogger("cycles_otel")

P = ParamSpec("P")
R = TypeVar("R")

_reported: set[str] = set()
_reported_lock = threading.Lock()


def never_raises(step: Callable[P, R]) -> Callable[P, R | None]:
    """``step``, except that an ``Exception`` it raises is logged and ``None`` returned instead.

    A broken span processor or exporter would otherwise fail every governed call: the first failure
    of each step is logged as a warning with its traceback, later ones at debug level only.
    ``BaseException`` (cancellation, exit) still propagates.
    """
    name = step.__qualname__

    @functools.wraps(step)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return step(*args, **kwargs)
        except Exception:
            with _reported_lock:
                first = name not in _reported
                _reported.add(name)
            logger.log(
                logging.WARNING if first else logging.DEBUG,
                "cycles_otel: telemetry step %s failed; the call goes on without it",
                name,
                exc_info=True,
            )
            return None

    return guarded
