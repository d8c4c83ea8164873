"""B1: what governance and its telemetry cost per LLM call, against the local authority on loopback."""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint, Sum
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue
from runcycles import AsyncCyclesClient  # type: ignore[import-untyped]

from benchmarks.common import (
    EXPORT_THREAD_PREFIXES,
    PROMPT,
    Batch,
    BenchResult,
    CpuClock,
    Scale,
    SdkTelemetry,
    governed,
    interleave,
    ms,
    noop_providers,
    per_call,
    protocol_instrumented,
    replay_inner,
    timed_calls,
    us,
)
from benchmarks.servers import BUDGET_MICROCENTS, TENANT
from cycles_otel.testing.telemetry import TelemetryCapture

NAME = "b1"
TITLE = "overhead per governed call"
COMMAND = "python -m benchmarks b1"


def paired(first: Sequence[Batch], second: Sequence[Batch], field: str) -> tuple[float, float]:
    """Median over rounds of ``second - first`` and ``second / first``: adjacent rounds share the noise."""
    a = [getattr(batch, field) for batch in first]
    b = [getattr(batch, field) for batch in second]
    return (
        statistics.median(y - x for x, y in zip(a, b, strict=True)),
        statistics.median(y / x for x, y in zip(a, b, strict=True)),
    )


# ---- the SDK floor: the same spans and measurements, made with no cycles-otel code ---------------


@dataclass(frozen=True)
class _SpanShape:
    name: str
    kind: SpanKind
    attributes: Mapping[str, AttributeValue]
    parent: int | None  # index of the parent shape, None for a root
    events: tuple[tuple[str, Mapping[str, AttributeValue]], ...]


@dataclass(frozen=True)
class _MeasurementShape:
    metric: str
    unit: str
    histogram_bounds: tuple[float, ...] | None  # None: a counter
    value: float
    labels: Mapping[str, AttributeValue]
    span: int | None  # the span current when it was made (its exemplar's), None: no sampled span


class SdkFloor:
    """The spans and metric measurements of one governed call, replayed straight on SDK providers.

    Captured from a real call (span names, kinds, parents, every attribute and event; every counter
    add and histogram record with its labels and the span that was current), so the floor follows
    the contract as it changes. Replaying costs what the OTel SDK alone charges for this contract:
    spans started with their final attributes, measurements with their final label sets.
    """

    def __init__(
        self,
        spans: Sequence[_SpanShape],
        order: Sequence[tuple[bool, int]],
        measurements: Sequence[_MeasurementShape],
    ) -> None:
        self.spans, self.order, self.measurements = tuple(spans), tuple(order), tuple(measurements)

    @classmethod
    def capture(cls, capture: TelemetryCapture) -> SdkFloor:
        """The shape of what ``capture`` holds (exactly one governed call)."""
        finished = sorted(capture.spans(), key=lambda s: s.start_time or 0)
        index = {s.context.span_id: i for i, s in enumerate(finished) if s.context is not None}
        shapes = [
            _SpanShape(
                s.name,
                s.kind,
                dict(s.attributes or {}),
                index.get(s.parent.span_id) if s.parent is not None else None,
                tuple((e.name, dict(e.attributes or {})) for e in s.events),
            )
            for s in finished
        ]
        moments = [(s.start_time or 0, True, i) for i, s in enumerate(finished)]
        moments += [(s.end_time or 0, False, i) for i, s in enumerate(finished)]
        order = [(starts, i) for _, starts, i in sorted(moments, key=lambda m: (m[0], not m[1]))]
        return cls(shapes, order, list(_measurements(capture, index)))

    @property
    def measurement_count(self) -> int:
        return len(self.measurements)

    def bind(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Callable[[], None]:
        """One replay of the call on these providers (instruments created once, here)."""
        tracer = tracer_provider.get_tracer("benchmarks.sdk_floor")
        meter = meter_provider.get_meter("benchmarks.sdk_floor")
        instruments: dict[str, Any] = {}
        for m in self.measurements:
            if m.metric in instruments:
                continue
            if m.histogram_bounds is None:
                instruments[m.metric] = meter.create_counter(m.metric, m.unit)
            else:
                instruments[m.metric] = meter.create_histogram(
                    m.metric, m.unit, explicit_bucket_boundaries_advisory=m.histogram_bounds
                )
        spans, order = self.spans, self.order
        measurements = [(instruments[m.metric], m) for m in self.measurements]

        def replay() -> None:
            live: list[Span | None] = [None] * len(spans)
            contexts: list[Context | None] = [None] * len(spans)
            for starts, i in order:
                if not starts:
                    started = live[i]
                    assert started is not None  # ``order`` ends a span only after it started
                    started.end()
                    continue
                shape = spans[i]
                parent = contexts[shape.parent] if shape.parent is not None else None
                span = live[i] = tracer.start_span(
                    shape.name, context=parent, kind=shape.kind, attributes=shape.attributes
                )
                contexts[i] = trace.set_span_in_context(span)
                for name, attributes in shape.events:
                    span.add_event(name, attributes)
            for instrument, m in measurements:
                context = contexts[m.span] if m.span is not None else None
                if m.histogram_bounds is None:
                    instrument.add(m.value, m.labels, context=context)
                else:
                    instrument.record(m.value, m.labels, context=context)

        return replay


def _measurements(capture: TelemetryCapture, span_index: Mapping[int, int]) -> Iterator[_MeasurementShape]:
    """Every synchronous measurement in ``capture``; observable gauges and the counters the library
    tallies itself (``cycles_otel.tally``) are read at export, not measured per call."""
    from cycles_otel.instruments import get_instruments
    from cycles_otel.tally import Tally

    tallied = {i.name for i in vars(get_instruments(capture.meter_provider)).values() if isinstance(i, Tally)}
    data = capture.metric_reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else []:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name in tallied:
                    continue
                points = metric.data
                for point in points.data_points:
                    exemplar = point.exemplars[0] if point.exemplars else None
                    span = span_index.get(exemplar.span_id) if exemplar and exemplar.span_id else None
                    labels, unit = dict(point.attributes or {}), metric.unit or ""
                    if isinstance(point, HistogramDataPoint):  # one record per count (same value each)
                        bounds, value = tuple(point.explicit_bounds), point.sum / point.count
                        for _ in range(point.count):
                            yield _MeasurementShape(metric.name, unit, bounds, value, labels, span)
                    elif (
                        isinstance(point, NumberDataPoint) and isinstance(points, Sum) and points.is_monotonic
                    ):
                        # One add per label set: a governed call adds to each counter series once.
                        yield _MeasurementShape(metric.name, unit, None, point.value, labels, span)


async def floor_batch(
    call: Callable[[], Awaitable[Any]],
    replay: Callable[[], None],
    count: int,
    clock: CpuClock,
    tracer_provider: TracerProvider,
) -> Batch:
    """Per-replay CPU and wall time of ``replay``, each made after one ``call`` (not counted)."""
    gc.collect()
    wall = cpu = 0.0
    export_before = clock.read()
    for _ in range(count):
        await call()
        started, cpu_started = time.perf_counter(), time.thread_time()
        replay()
        cpu += time.thread_time() - cpu_started
        wall += time.perf_counter() - started
    flush_started = time.thread_time()
    tracer_provider.force_flush()
    cpu += time.thread_time() - flush_started
    me = threading.get_ident()
    # The export threads' CPU over the round: the replays' spans and nothing else (the calls make none).
    export_after = {ident: value for ident, value in clock.read().items() if ident != me}
    cpu += CpuClock.spent(export_before, export_after)
    return Batch(wall / count, cpu / count)


async def capture_floor(cycles: Any) -> SdkFloor:
    """The SDK floor of one fully instrumented governed call, captured in memory."""
    capture = TelemetryCapture()
    try:
        client = governed(replay_inner(1), cycles, capture.tracer_provider, capture.meter_provider)
        with protocol_instrumented(capture.tracer_provider, capture.meter_provider):
            await client.create(PROMPT)
        return SdkFloor.capture(capture)
    finally:
        capture.shutdown()


async def _measure(scale: Scale) -> BenchResult:
    from cycles_otel.testing.authority import LocalCyclesServer

    rounds, per_round = scale.n(30, 2), scale.n(40, 3)
    total = (rounds + 1) * per_round  # + one warm-up round
    result = BenchResult(NAME, TITLE, COMMAND, scale.name)
    sdk = SdkTelemetry.create()
    clock = CpuClock(EXPORT_THREAD_PREFIXES)
    with LocalCyclesServer(record_requests=False) as server:
        server.set_budget(f"tenant:{TENANT}", BUDGET_MICROCENTS)
        cycles = AsyncCyclesClient(server.config(server.create_api_key(TENANT)))
        inner = replay_inner(total)
        off = governed(replay_inner(total), cycles, *noop_providers())
        full = governed(replay_inner(total), cycles, sdk.tracer_provider, sdk.meter_provider)
        client_only = governed(replay_inner(total), cycles, sdk.tracer_provider, sdk.meter_provider)
        off_then_floor = governed(replay_inner(total), cycles, *noop_providers())
        floor = await capture_floor(cycles)
        replay_floor = floor.bind(sdk.tracer_provider, sdk.meter_provider)

        async def inner_round() -> Batch:
            return await timed_calls(lambda: inner.create(PROMPT), per_round, clock)

        async def off_round() -> Batch:
            return await timed_calls(lambda: off.create(PROMPT), per_round, clock)

        async def client_round() -> Batch:  # the AutoGen layer's telemetry alone, protocol layer off
            return await timed_calls(
                lambda: client_only.create(PROMPT), per_round, clock, settle=sdk.tracer_provider.force_flush
            )

        async def full_round() -> Batch:
            with protocol_instrumented(sdk.tracer_provider, sdk.meter_provider):
                return await timed_calls(
                    lambda: full.create(PROMPT), per_round, clock, settle=sdk.tracer_provider.force_flush
                )

        async def floor_round() -> Batch:  # the SDK alone, making this contract's telemetry
            return await floor_batch(
                lambda: off_then_floor.create(PROMPT), replay_floor, per_round, clock, sdk.tracer_provider
            )

        variants = {
            "inner": inner_round,
            "governed_off": off_round,
            "governed_client_telemetry": client_round,
            "governed_full": full_round,
            "sdk_floor": floor_round,
        }
        await interleave(variants, 1)  # warm-up: connections, imports, caches
        batches = await interleave(variants, rounds)
        await cycles.aclose()
        spent = server.ledger().scopes[f"tenant:{TENANT}"].spent
    metrics = sdk.reader.get_metrics_data()
    sdk.shutdown()

    cpu_delta, _ = paired(batches["governed_off"], batches["governed_full"], "cpu")
    _, wall_ratio = paired(batches["governed_off"], batches["governed_full"], "wall")
    client_cpu, _ = paired(batches["governed_off"], batches["governed_client_telemetry"], "cpu")
    protocol_cpu, _ = paired(batches["governed_client_telemetry"], batches["governed_full"], "cpu")
    floor_batches = batches.pop("sdk_floor")  # not a variant of the governed client
    floor_cpu = statistics.median(b.cpu for b in floor_batches)
    own_cpu = statistics.median(  # full − off − floor, round by round
        full.cpu - off.cpu - bare.cpu
        for off, full, bare in zip(
            batches["governed_off"], batches["governed_full"], floor_batches, strict=True
        )
    )
    figures = {name: per_call(found) for name, found in batches.items()}
    metric_names = sorted(
        {
            m.name
            for rm in (metrics.resource_metrics if metrics else [])
            for sm in rm.scope_metrics
            for m in sm.metrics
        }
    )
    result.figures = {
        "rounds": rounds,
        "calls_per_round": per_round,
        "per_call": figures,
        "telemetry_cpu_s": cpu_delta,
        "telemetry_wall_ratio": wall_ratio,
        "client_layer_cpu_s": client_cpu,
        "protocol_layer_cpu_s": protocol_cpu,
        "sdk_floor_cpu_s": floor_cpu,
        "sdk_floor_per_call": per_call(floor_batches),
        "own_code_cpu_s": own_cpu,
        "sdk_floor_shape": {
            "spans": [
                {"name": sp.name, "attributes": len(sp.attributes), "events": len(sp.events)}
                for sp in floor.spans
            ],
            "measurements": [m.metric for m in floor.measurements],
        },
        "spans_exported": sdk.exporter.exported,
        "metrics_recorded": metric_names,
        "ledger_spent_microcents": spent,
    }
    off_fig, full_fig, inner_fig = figures["governed_off"], figures["governed_full"], figures["inner"]
    result.add(
        "inner client alone: wall / CPU per call (median)",
        "—",
        f"{us(inner_fig['wall']['median'])} / {us(inner_fig['cpu']['median'])}",
    )
    result.add(
        "governed, telemetry off: wall (median, p90) / CPU per call",
        "—",
        f"{ms(off_fig['wall']['median'])}, {ms(off_fig['wall']['p90'])} / {ms(off_fig['cpu']['median'])}",
    )
    result.add(
        "governed, full telemetry: wall (median, p90) / CPU per call",
        "—",
        f"{ms(full_fig['wall']['median'])}, {ms(full_fig['wall']['p90'])} / {ms(full_fig['cpu']['median'])}",
    )
    # The goals live in B6, in instructions: CPU seconds on a shared machine move too much to judge by.
    result.add("telemetry CPU per call (full − off, paired median)", "—", us(cpu_delta))
    result.add(
        "of which: AutoGen layer (cycles.reservation + chat spans, GenAI/cost metrics) / protocol layer "
        "(CyclesInstrumentor)",
        "—",
        f"{us(client_cpu)} / {us(protocol_cpu)}",
    )
    result.add(
        f"of which: OTel SDK floor for this contract ({len(floor.spans)} spans, "
        f"{floor.measurement_count} measurements, no cycles-otel code) / cycles-otel's own code "
        "(full − off − floor, paired median)",
        "—",
        f"{us(floor_cpu)} / {us(own_cpu)}",
    )
    result.add("telemetry wall time (full / off, paired median)", "—", f"{wall_ratio:.3f}")
    result.notes.append(
        "CPU is the calling thread plus the span-export thread (per-thread clocks), so the in-process "
        "authority's handler threads are not counted; span export is flushed inside each measured round."
    )
    result.notes.append(
        "SDK floor: the spans (names, kinds, parents, attributes, events) and the counter adds and "
        "histogram records (labels, exemplar span) of one governed call, captured from a real call and "
        "replayed on the same providers in its own interleaved rounds, each replay right after a call of a "
        "telemetry-off client (so caches are as cold as inside a real call) and timed alone: its calling-"
        "thread CPU plus the span-export thread's."
    )
    return result


def run(scale: Scale) -> BenchResult:
    return asyncio.run(_measure(scale))
