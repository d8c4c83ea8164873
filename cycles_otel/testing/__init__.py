"""Offline test kit: a local Cycles authority, an OTLP receiver, a fake OpenAI endpoint, fixtures."""

from cycles_otel.testing.telemetry import SpanNode, TelemetryCapture

__all__ = ["SpanNode", "TelemetryCapture"]
