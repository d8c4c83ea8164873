"""B5: what ``CyclesInstrumentor`` adds to raw runcycles reserve + commit calls, sync and async clients."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable, Sequence

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig  # type: ignore[import-untyped]

from benchmarks.common import (
    EXPORT_THREAD_PREFIXES,
    Batch,
    BenchResult,
    CpuClock,
    RoundRunner,
    Scale,
    SdkTelemetry,
    commit_request,
    interleave,
    ms,
    per_call,
    protocol_instrumented,
    raw_protocol_call,
    reservation_request,
    timed_calls,
    us,
)
from benchmarks.servers import authority_process

NAME = "b5"
TITLE = "protocol instrumentor"
COMMAND = "python -m benchmarks b5"


def _sync_call(cycles: CyclesClient) -> Callable[[], Awaitable[None]]:
    """The sync client's reserve + commit, called from the benchmark loop (it blocks, as in an app)."""

    async def call() -> None:
        reserved = cycles.create_reservation(reservation_request())
        cycles.commit_reservation(reserved.get_body_attribute("reservation_id"), commit_request())

    return call


def _paired_delta(raw: Sequence[Batch], traced: Sequence[Batch], field: str) -> tuple[float, float]:
    a = [getattr(b, field) for b in raw]
    b = [getattr(b, field) for b in traced]
    return (
        statistics.median(y - x for x, y in zip(a, b, strict=True)),
        statistics.median(y / x for x, y in zip(a, b, strict=True)),
    )


async def _measure(scale: Scale) -> BenchResult:
    rounds, per_round = scale.n(30, 2), scale.n(40, 3)
    result = BenchResult(NAME, TITLE, COMMAND, scale.name)
    sdk = SdkTelemetry.create()
    clock = CpuClock(EXPORT_THREAD_PREFIXES)
    with authority_process() as authority:
        config = CyclesConfig(base_url=authority.base_url, api_key=authority.api_key, journal_enabled=False)
        async_cycles, sync_cycles = AsyncCyclesClient(config), CyclesClient(config)
        calls = {"async": lambda: raw_protocol_call(async_cycles), "sync": _sync_call(sync_cycles)}

        def variant(kind: str, traced: bool) -> RoundRunner:
            async def one_round() -> Batch:
                if not traced:
                    return await timed_calls(calls[kind], per_round, clock)
                with protocol_instrumented(sdk.tracer_provider, sdk.meter_provider):
                    return await timed_calls(
                        calls[kind], per_round, clock, settle=sdk.tracer_provider.force_flush
                    )

            return one_round

        variants = {
            f"{kind}_{'instrumented' if traced else 'raw'}": variant(kind, traced)
            for kind in ("async", "sync")
            for traced in (False, True)
        }
        await interleave(variants, 1)
        batches = await interleave(variants, rounds)
        await async_cycles.aclose()
        sync_cycles.close()
    sdk.shutdown()

    figures = {name: per_call(found) for name, found in batches.items()}
    result.figures = {"rounds": rounds, "calls_per_round": per_round, "per_call": figures, "added": {}}
    for kind in ("async", "sync"):
        raw, traced = batches[f"{kind}_raw"], batches[f"{kind}_instrumented"]
        cpu_delta, cpu_ratio = _paired_delta(raw, traced, "cpu")
        wall_delta, wall_ratio = _paired_delta(raw, traced, "wall")
        result.figures["added"][kind] = {
            "cpu_s": cpu_delta, "cpu_ratio": cpu_ratio, "wall_s": wall_delta, "wall_ratio": wall_ratio,
        }  # fmt: skip
        raw_fig = figures[f"{kind}_raw"]
        result.add(
            f"{kind} client, raw reserve + commit: wall / CPU (median)",
            "—",
            f"{ms(raw_fig['wall']['median'])} / {ms(raw_fig['cpu']['median'])}",
        )
        result.add(
            f"{kind} client, added by the instrumentor: CPU / wall (paired median)",
            "—",
            f"{us(cpu_delta)} (×{cpu_ratio:.2f}) / {us(wall_delta)} (×{wall_ratio:.2f})",
        )
    result.notes.append(
        "authority in its own process; CPU is the calling thread plus the span-export thread; the "
        "instrumented rounds use SDK providers with a batch span processor and an in-memory metric reader."
    )
    return result


def run(scale: Scale) -> BenchResult:
    return asyncio.run(_measure(scale))
