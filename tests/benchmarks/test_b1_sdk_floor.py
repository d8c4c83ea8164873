"""B1's SDK floor makes exactly the spans and per-call measurements of one real governed call, no others.

The counters the library tallies itself (``cycles_otel.tally``) are read at export, not measured per
call, so the floor leaves them out.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint, Sum
from runcycles import AsyncCyclesClient  # type: ignore[import-untyped]

from benchmarks.b1_overhead import SdkFloor
from benchmarks.common import PROMPT, governed, protocol_instrumented, replay_inner
from benchmarks.servers import BUDGET_MICROCENTS, TENANT
from cycles_otel.instruments import get_instruments
from cycles_otel.tally import Tally
from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.telemetry import TelemetryCapture

REPLAYS = 3


def span_shapes(capture: TelemetryCapture) -> Counter[tuple[Any, ...]]:
    """(name, kind, parent name, attributes, events) of every span, counted."""
    spans = capture.spans()
    names = {s.context.span_id: s.name for s in spans if s.context is not None}
    return Counter(
        (
            s.name,
            s.kind,
            names.get(s.parent.span_id) if s.parent is not None else None,
            tuple(sorted(dict(s.attributes or {}).items())),
            tuple(e.name for e in s.events),
        )
        for s in spans
    )


def tallied(capture: TelemetryCapture) -> set[str]:
    """The names of the counters the library tallies itself on this capture's meter provider."""
    return {i.name for i in vars(get_instruments(capture.meter_provider)).values() if isinstance(i, Tally)}


def measured(capture: TelemetryCapture) -> dict[tuple[str, tuple[Any, ...]], tuple[float, int]]:
    """(metric, labels) -> (sum, count) of every counter and histogram point; gauges are left out."""
    found: dict[tuple[str, tuple[Any, ...]], tuple[float, int]] = {}
    data = capture.metric_reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, tuple(sorted(dict(point.attributes or {}).items())))
                    if isinstance(point, HistogramDataPoint):
                        found[key] = (point.sum, point.count)
                    elif isinstance(point, NumberDataPoint) and isinstance(metric.data, Sum):
                        found[key] = (point.value, 0)
    return found


async def test_replay_repeats_the_spans_and_measurements_of_a_governed_call() -> None:
    original = TelemetryCapture()
    with LocalCyclesServer(record_requests=False) as server:
        server.set_budget(f"tenant:{TENANT}", BUDGET_MICROCENTS)
        cycles = AsyncCyclesClient(server.config(server.create_api_key(TENANT)))
        client = governed(replay_inner(1), cycles, original.tracer_provider, original.meter_provider)
        with protocol_instrumented(original.tracer_provider, original.meter_provider):
            await client.create(PROMPT)
        await cycles.aclose()
    floor = SdkFloor.capture(original)
    replayed = TelemetryCapture()
    replay = floor.bind(replayed.tracer_provider, replayed.meter_provider)
    for _ in range(REPLAYS):
        replay()

    once = span_shapes(original)
    assert {name for name, *_ in once} >= {"cycles.reservation", "cycles.reserve", "cycles.commit"}
    assert span_shapes(replayed) == Counter({shape: n * REPLAYS for shape, n in once.items()})

    read_at_export = tallied(original)
    # a governed call adds to the tallied reservation, settlement and amount counters
    assert {metric for metric, _ in measured(original)} & read_at_export >= {
        "cycles.client.reservations",
        "cycles.client.settlements",
        "cycles.client.reserved",
        "cycles.client.charged",
    }
    before = {key: value for key, value in measured(original).items() if key[0] not in read_at_export}
    after = measured(replayed)
    assert before and set(after) == set(before)
    for key, (total, count) in before.items():
        assert after[key][0] == pytest.approx(total * REPLAYS), key
        assert after[key][1] == count * REPLAYS, key
    assert floor.measurement_count == sum(count or 1 for _, count in before.values())
    original.shutdown()
    replayed.shutdown()
