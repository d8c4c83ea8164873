"""In-memory tracer and meter providers, and readers of what they exported, for assertions."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

DataPoint = NumberDataPoint | HistogramDataPoint


@dataclass
class SpanNode:
    """A finished span and its finished children, in start order."""

    span: ReadableSpan
    children: list[SpanNode] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.span.name

    def names(self) -> list[str]:
        return [child.name for child in self.children]

    def child(self, name: str) -> SpanNode:
        found = [c for c in self.children if c.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected one child {name!r} under {self.name!r}, got {self.names()}")
        return found[0]

    def render(self, indent: int = 0) -> str:
        lines = ["  " * indent + self.name]
        lines.extend(child.render(indent + 1) for child in self.children)
        return "\n".join(lines)


class TelemetryCapture:
    """SDK providers that keep every span and metric point in memory."""

    def __init__(self) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_exporter))
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])

    # --- spans ------------------------------------------------------------------------------
    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = list(self.span_exporter.get_finished_spans())
        return [s for s in found if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        found = self.spans(name)
        if len(found) != 1:
            raise AssertionError(f"expected one span {name!r}, got {len(found)}: {self.span_names()}")
        return found[0]

    def span_names(self) -> list[str]:
        return [s.name for s in self.spans()]

    def trees(self) -> list[SpanNode]:
        """Every finished span arranged under its finished parent; roots first by start time."""
        spans = sorted(self.spans(), key=lambda s: s.start_time or 0)
        nodes = {s.context.span_id: SpanNode(s) for s in spans if s.context is not None}
        roots: list[SpanNode] = []
        for s in spans:
            assert s.context is not None
            node = nodes[s.context.span_id]
            parent = nodes.get(s.parent.span_id) if s.parent is not None else None
            (parent.children if parent is not None else roots).append(node)
        return roots

    def clear(self) -> None:
        self.span_exporter.clear()

    # --- metrics ----------------------------------------------------------------------------
    def points(self, name: str) -> list[DataPoint]:
        """Every data point of metric ``name`` (the OTel name, e.g. ``cycles.client.charged``)."""
        data = self.metric_reader.get_metrics_data()
        found: list[DataPoint] = []
        if data is None:
            return found
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)  # type: ignore[arg-type]
        return found

    def value(self, name: str, **attributes: Any) -> float:
        """Sum of counter/gauge values (or histogram sums) whose attributes include ``attributes``."""
        total = 0.0
        for point in _matching(self.points(name), attributes):
            total += point.sum if isinstance(point, HistogramDataPoint) else point.value
        return total

    def count(self, name: str, **attributes: Any) -> int:
        """Number of recordings in histogram ``name`` whose attributes include ``attributes``."""
        return sum(
            p.count for p in _matching(self.points(name), attributes) if isinstance(p, HistogramDataPoint)
        )

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _matching(points: list[DataPoint], wanted: Mapping[str, Any]) -> Iterator[DataPoint]:
    for point in points:
        attrs = dict(point.attributes or {})
        if all(attrs.get(_otel_key(k)) == v for k, v in wanted.items()):
            yield point


def _otel_key(keyword: str) -> str:
    """Keyword arguments spell attribute dots as double underscores: ``cycles__unit``."""
    return keyword.replace("__", ".")
