"""The documented import path of :func:`configure_telemetry` (it lives in ``cycles_otel.app.configure``)."""

from cycles_otel.app.configure import *  # noqa: F403
from cycles_otel.app.configure import __all__ as __all__
