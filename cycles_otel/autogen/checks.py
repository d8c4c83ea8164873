"""Checks of constructor arguments the client and the tools share, so bad input fails before money moves."""

from __future__ import annotations

from typing import get_args
from urllib.parse import urlsplit

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from cycles_otel.autogen.config import Transport
from cycles_otel.pricing import PriceTable

TRANSPORTS = get_args(Transport)


def given(value: str | None, configured: str | None) -> str | None:
    """An argument, else the Cycles config's value (an empty environment variable counts as unset)."""
    return value if value is not None else (configured or None)


def check_providers(
    pricing: object, tracer_provider: object, meter_provider: object, instrument_protocol: object
) -> None:
    for name, value, expected, described in (
        ("pricing", pricing, PriceTable, "a cycles_otel.pricing.PriceTable"),
        ("tracer_provider", tracer_provider, TracerProvider, "an opentelemetry.trace.TracerProvider"),
        ("meter_provider", meter_provider, MeterProvider, "an opentelemetry.metrics.MeterProvider"),
    ):
        if value is not None and not isinstance(value, expected):
            raise TypeError(f"{name} must be {described} or None, got {type(value).__name__}")
    if not isinstance(instrument_protocol, bool):
        raise TypeError(
            f"instrument_protocol must be True or False, got {instrument_protocol!r} "
            f"({type(instrument_protocol).__name__})"
        )


def check_base_url(base_url: str) -> None:
    """Raise ``ValueError`` unless the Cycles base URL is an absolute http(s) URL with a valid port."""
    parts = urlsplit(base_url)
    problem = None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "is not an absolute URL"
    else:
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number from 0 to 65535
        except ValueError:
            problem = "has no valid port (a number from 1 to 65535)"
    if problem:
        raise ValueError(
            f"base_url={base_url!r} (CYCLES_BASE_URL) {problem}: write it as http://host:port or https://host"
        )


def check_transport(transport: object) -> Transport:
    """The ``transport`` argument, checked before any client is built for it."""
    if transport not in TRANSPORTS:
        raise ValueError(
            f"transport={transport!r}: give 'aiohttp' (the default) or 'httpx' (runcycles' own async client)"
        )
    return transport  # type: ignore[return-value]
