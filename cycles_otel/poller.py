"""The documented import path of :class:`BalancePoller` (it lives in ``cycles_otel.app.poller``)."""

from cycles_otel.app.poller import *  # noqa: F403
from cycles_otel.app.poller import __all__ as __all__
