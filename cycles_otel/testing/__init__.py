"""Offline test kit: a local Cycles authority, an OTLP receiver, a fake OpenAI endpoint, fixtures.

Everything binds 127.0.0.1 on free ports and needs no network. Names load lazily, so the pytest
plugin (``cycles_otel.testing.pytest_plugin``) costs nothing until a fixture is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LocalCyclesServer": "cycles_otel.testing.authority",
    "OtlpReceiver": "cycles_otel.testing.otlp_receiver",
    "ReceivedSpan": "cycles_otel.testing.otlp_receiver",
    "ReceivedMetricPoint": "cycles_otel.testing.otlp_receiver",
    "ReceivedLog": "cycles_otel.testing.otlp_receiver",
    "FakeOpenAI": "cycles_otel.testing.fake_openai",
    "ScriptedReply": "cycles_otel.testing.fake_openai",
    "OpenAIRequest": "cycles_otel.testing.fake_openai",
    "count_prompt_tokens": "cycles_otel.testing.fake_openai",
    "SpanNode": "cycles_otel.testing.telemetry",
    "TelemetryCapture": "cycles_otel.testing.telemetry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cycles_otel.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
