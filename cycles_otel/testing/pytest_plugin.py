"""pytest fixtures for testing budget-governed agents offline.

Loaded automatically (entry point ``pytest11``: ``cycles_otel``) once ``cycles-otel[testing]`` is installed;
``-p no:cycles_otel`` turns it off. Every fixture is function-scoped and runs on 127.0.0.1 only:

- ``otlp_receiver``: a started :class:`~cycles_otel.testing.otlp_receiver.OtlpReceiver`.
- ``fake_openai``: a started :class:`~cycles_otel.testing.fake_openai.FakeOpenAI` (seed 0, no latency).
- ``cycles_server``: a started :class:`~cycles_otel.testing.authority.LocalCyclesServer`.
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
