"""Reset OpenTelemetry's global tracer and meter providers, so a test can set them again."""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.util._once import Once


def reset_global_tracer_provider() -> None:
    # The API sets the global provider once per process; its own test utilities reset it like this.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


def reset_global_meter_provider() -> None:
    """As OpenTelemetry's ``reset_metrics_globals``: the proxy provider too.

    Instruments made on the proxy before a provider was set (any earlier ``get_instruments()``
    without one) would otherwise be bound to the next provider set, ahead of that provider's own.
    """
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()
    metrics._internal._METER_PROVIDER = None
    metrics._internal._PROXY_METER_PROVIDER = _ProxyMeterProvider()


def reset_global_providers() -> None:
    reset_global_tracer_provider()
    reset_global_meter_provider()
