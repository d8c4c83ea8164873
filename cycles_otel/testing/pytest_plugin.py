"""pytest fixtures for testing budget-governed agents offline.

Loaded automatically (entry point ``pytest11``: ``cycles_otel``) once ``cycles-otel[testing]`` is installed;
``-p no:cycles_otel`` turns it off. Every fixture is function-scoped, synchronous (so async tests under
pytest-asyncio, which the extra brings, or any other runner use them alike) and runs on 127.0.0.1 only:

- ``cycles_server``: a started :class:`~cycles_otel.testing.authority.LocalCyclesServer`.
- ``fake_openai``: a started :class:`~cycles_otel.testing.fake_openai.FakeOpenAI` (seed 0, no latency).
- ``otlp_receiver``: a started :class:`~cycles_otel.testing.otlp_receiver.OtlpReceiver`.
- ``telemetry``: a :class:`~cycles_otel.testing.telemetry.TelemetryCapture` (in-memory tracer and meter
  providers), shut down after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

# The entry point loads this plugin into every pytest run where cycles-otel is installed: each fixture imports
# what it serves only when a test asks for it, so runs that use none pay nothing for gRPC or the authority.
if TYPE_CHECKING:
    from cycles_otel.testing.authority import LocalCyclesServer
    from cycles_otel.testing.fake_openai import FakeOpenAI
    from cycles_otel.testing.otlp_receiver import OtlpReceiver
    from cycles_otel.testing.telemetry import TelemetryCapture


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """An OTLP receiver: point exporters at ``.grpc_endpoint`` or ``.http_endpoint``; read ``.spans()``."""
    from cycles_otel.testing.otlp_receiver import OtlpReceiver

    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible endpoint: ``OpenAIChatCompletionClient(base_url=fake_openai.base_url, ...)``."""
    from cycles_otel.testing.fake_openai import FakeOpenAI

    with FakeOpenAI() as api:
        yield api


@pytest.fixture
def cycles_server() -> Iterator[LocalCyclesServer]:
    """A local Cycles authority: ``create_api_key``, ``set_budget``, then ``config(key)`` for runcycles."""
    from cycles_otel.testing.authority import LocalCyclesServer

    with LocalCyclesServer() as server:
        yield server


@pytest.fixture
def telemetry() -> Iterator[TelemetryCapture]:
    """In-memory SDK providers: give ``.tracer_provider`` and ``.meter_provider``, read ``.span(name)``."""
    from cycles_otel.testing.telemetry import TelemetryCapture

    capture = TelemetryCapture()
    yield capture
    capture.shutdown()
