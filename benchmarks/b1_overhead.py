"""B1: what governance and its telemetry cost per LLM call, against the local authority on loopback."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence

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

NAME = "b1"
TITLE = "overhead per governed call"
COMMAND = "python -m benchmarks b1"
CPU_GOAL_S = 100e-6
WALL_GOAL_RATIO = 1.05


def paired(first: Sequence[Batch], second: Sequence[Batch], field: str) -> tuple[float, float]:
    """Median over rounds of ``second - first`` and ``second / first``: adjacent rounds share the noise."""
    a = [getattr(batch, field) for batch in first]
    b = [getattr(batch, field) for batch in second]
    return (
        statistics.median(y - x for x, y in zip(a, b, strict=True)),
        statistics.median(y / x for x, y in zip(a, b, strict=True)),
    )


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

        variants = {
            "inner": inner_round,
            "governed_off": off_round,
            "governed_client_telemetry": client_round,
            "governed_full": full_round,
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
    result.add(
        "telemetry CPU per call (full − off, paired median)",
        "<= 100 µs",
        us(cpu_delta),
        cpu_delta <= CPU_GOAL_S,
    )
    result.add(
        "of which: AutoGen layer (cycles.reservation + chat spans, GenAI/cost metrics) / protocol layer "
        "(CyclesInstrumentor)",
        "—",
        f"{us(client_cpu)} / {us(protocol_cpu)}",
    )
    result.add(
        "telemetry wall time (full / off, paired median)",
        "<= 1.05",
        f"{wall_ratio:.3f}",
        wall_ratio <= WALL_GOAL_RATIO,
    )
    result.notes.append(
        "CPU is the calling thread plus the span-export thread (per-thread clocks), so the in-process "
        "authority's handler threads are not counted; span export is flushed inside each measured round."
    )
    return result


def run(scale: Scale) -> BenchResult:
    return asyncio.run(_measure(scale))
