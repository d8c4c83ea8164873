"""B2: 32 concurrent ``create()`` calls with a slow authority and model: the guide's client versus ours."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig  # type: ignore[import-untyped]

from benchmarks.common import (
    MODEL,
    PROMPT,
    Batch,
    BenchResult,
    Scale,
    SdkTelemetry,
    governed,
    interleave,
    ms,
    per_call,
    protocol_instrumented,
    raw_protocol_call,
)
from benchmarks.guide_client import CyclesBudgetClient
from benchmarks.servers import TENANT, authority_process, model_process
from cycles_otel.protocol.transport import AiohttpCyclesClient

NAME = "b2"
TITLE = "32 concurrent calls"
COMMAND = "python -m benchmarks b2"
CONCURRENCY = 32
AUTHORITY_DELAY_S = 0.020  # on reserve and on commit
MODEL_LATENCY_S = 0.010
SPEEDUP_GOAL = 10.0  # guide / ours
FLOOR_GOAL = 1.5  # ours / (model-only burst + 2 authority round trips)
ROUND_TRIPS = 2  # a reservation before the model call and a commit after it
POOL_LIMIT = 16  # a what-if: the default pool, as runcycles' httpx one, holds up to 100 connections


async def _burst(
    call: Callable[[], Awaitable[Any]],
    concurrency: int,
    settle: Callable[[], Awaitable[None]] | None = None,
    settled_walls: list[float] | None = None,
) -> Batch:
    """``concurrency`` calls at once; wall time until every caller has its answer, process CPU per call.

    ``settle`` (background commits) is awaited after the answers: its CPU is charged to the calls,
    its wall time goes to ``settled_walls`` (the burst until the last commit has landed).
    """
    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(call() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    if settle is not None:
        await settle()
        if settled_walls is not None:
            settled_walls.append(time.perf_counter() - started)
    return Batch(wall, (time.process_time() - cpu) / concurrency)


async def _measure(scale: Scale) -> BenchResult:
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    rounds, concurrency = scale.n(8, 1), CONCURRENCY if scale.factor == 1 else 4
    result = BenchResult(NAME, TITLE, COMMAND, scale.name)
    sdk = SdkTelemetry.create()
    delays = {"reserve": AUTHORITY_DELAY_S, "commit": AUTHORITY_DELAY_S}
    with authority_process(delays) as authority, model_process(MODEL_LATENCY_S) as model:
        config = CyclesConfig(base_url=authority.base_url, api_key=authority.api_key, journal_enabled=False)
        inner = OpenAIChatCompletionClient(model=MODEL, base_url=model.base_url, api_key=model.api_key)
        sync_cycles, async_cycles = CyclesClient(config), AsyncCyclesClient(config)
        # What the governed client runs on (it reads only the config of the client it is given).
        transport = AiohttpCyclesClient(config)
        pooled_transport = AiohttpCyclesClient(config, max_connections=POOL_LIMIT)
        guide = CyclesBudgetClient(inner, sync_cycles, tenant=TENANT, agent="bench")
        ours = governed(inner, async_cycles, sdk.tracer_provider, sdk.meter_provider)
        ours_pooled = governed(inner, pooled_transport, sdk.tracer_provider, sdk.meter_provider)
        # Background settlement is durable only with runcycles' commit journal: it gets one (in tmp).
        journal_dir = tempfile.mkdtemp(prefix="cycles-otel-b2-journal-")
        journaled_config = dataclasses.replace(config, journal_enabled=True, journal_dir=journal_dir)
        journaled = AsyncCyclesClient(journaled_config)
        ours_background = governed(
            inner, journaled, sdk.tracer_provider, sdk.meter_provider, settle_in_background=True
        )
        settled_walls: list[float] = []

        async def guide_round() -> Batch:
            return await _burst(lambda: guide.create(PROMPT), concurrency)

        async def ours_round() -> Batch:
            with protocol_instrumented(sdk.tracer_provider, sdk.meter_provider):
                return await _burst(lambda: ours.create(PROMPT), concurrency)

        async def ours_pooled_round() -> Batch:
            with protocol_instrumented(sdk.tracer_provider, sdk.meter_provider):
                return await _burst(lambda: ours_pooled.create(PROMPT), concurrency)

        async def ours_background_round() -> Batch:
            with protocol_instrumented(sdk.tracer_provider, sdk.meter_provider):
                return await _burst(
                    lambda: ours_background.create(PROMPT),
                    concurrency,
                    ours_background.settled,
                    settled_walls,
                )

        async def protocol_round() -> Batch:
            return await _burst(lambda: raw_protocol_call(transport), concurrency)

        async def protocol_httpx_round() -> Batch:
            return await _burst(lambda: raw_protocol_call(async_cycles), concurrency)

        async def model_round() -> Batch:
            return await _burst(lambda: inner.create(PROMPT), concurrency)

        variants = {
            "guide": guide_round,
            "ours": ours_round,
            "ours_pool16": ours_pooled_round,
            "ours_background": ours_background_round,
            "raw_protocol": protocol_round,
            "raw_protocol_httpx": protocol_httpx_round,
            "model_only": model_round,
        }
        await interleave(variants, 1)  # warm-up: connection pools, imports
        settled_walls.clear()
        batches = await interleave(variants, rounds)
        await inner.close()
        await async_cycles.aclose()
        await transport.aclose()
        await pooled_transport.aclose()
        sync_cycles.close()
    sdk.shutdown()

    def paired(of: str, to: str = "guide") -> float:
        return statistics.median(a.wall / b.wall for a, b in zip(batches[to], batches[of], strict=True))

    def floor(model_burst: Batch, round_trips: int = ROUND_TRIPS) -> float:
        """What no wrapper that waits for ``round_trips`` authority answers per call can beat."""
        return model_burst.wall + round_trips * AUTHORITY_DELAY_S

    def over_floor(of: str) -> float:
        return statistics.median(
            a.wall / floor(m) for a, m in zip(batches[of], batches["model_only"], strict=True)
        )

    def ceiling(round_trips: int) -> float:
        return statistics.median(
            g.wall / floor(m, round_trips)
            for g, m in zip(batches["guide"], batches["model_only"], strict=True)
        )

    ratio = paired("ours")
    figures = {name: per_call(found) for name, found in batches.items()}
    background_settled = statistics.median(settled_walls)
    ratios = {
        "ours": ratio,
        "ours_background": paired("ours_background"),
        "ours_background_settled": statistics.median(
            g.wall / w for g, w in zip(batches["guide"], settled_walls, strict=True)
        ),
        "model_only": paired("model_only"),
    }
    over = {"ours": over_floor("ours"), "ours_background": over_floor("ours_background")}
    ceilings = {"inline": ceiling(ROUND_TRIPS), "background": ceiling(ROUND_TRIPS - 1)}
    latency_floor = AUTHORITY_DELAY_S * 2 + MODEL_LATENCY_S
    result.figures = {
        "rounds": rounds,
        "concurrency": concurrency,
        "burst": figures,
        "speedup": ratio,
        "speedups": ratios,
        "over_floor": over,
        "ceilings": ceilings,
        "ours_background_settled_wall_s": background_settled,
        "latency_floor_s": latency_floor,
        "spans_exported": sdk.exporter.exported,
    }
    for name, label in (
        ("guide", "guide's CyclesBudgetClient: burst wall (median) / CPU per call"),
        ("ours", "BudgetedChatCompletionClient, full telemetry: burst wall / CPU per call"),
        (
            "ours_pool16",
            f"the same, Cycles pool capped at {POOL_LIMIT} connections: burst wall / CPU per call",
        ),
        (
            "ours_background",
            "the same, settle_in_background=True: burst wall until every answer / CPU per call "
            "(commits included)",
        ),
        (
            "raw_protocol",
            "reserve + commit alone on the governed client's transport (AiohttpCyclesClient): "
            "burst wall / CPU per call",
        ),
        (
            "raw_protocol_httpx",
            "the same on runcycles' own AsyncCyclesClient (httpx): burst wall / CPU per call",
        ),
        ("model_only", "model client only: burst wall / CPU per call"),
    ):
        fig = figures[name]
        result.add(label, "—", f"{ms(fig['wall']['median'])} / {ms(fig['cpu']['median'])}")
    result.add(
        "settle_in_background=True: burst wall until the last commit has landed", "—", ms(background_settled)
    )
    result.add(
        f"speedup, guide / ours ({concurrency} concurrent, paired median)",
        f">= {SPEEDUP_GOAL:.0f}x",
        f"{ratio:.1f}x",
        ratio >= SPEEDUP_GOAL,
    )
    background = ratios["ours_background"]
    result.add(
        "speedup, guide / ours with settle_in_background=True (until every answer)",
        f">= {SPEEDUP_GOAL:.0f}x",
        f"{background:.1f}x (until the last commit: {ratios['ours_background_settled']:.1f}x)",
        background >= SPEEDUP_GOAL,
    )
    trips = f"{ROUND_TRIPS} authority round trips of {ms(AUTHORITY_DELAY_S)}"
    result.add(
        f"ours / floor, floor = model-only burst + {trips} (paired median)",
        f"<= {FLOOR_GOAL}x",
        f"{over['ours']:.2f}x",
        over["ours"] <= FLOOR_GOAL,
    )
    result.add(
        "ours with settle_in_background=True / floor (until every answer)",
        f"<= {FLOOR_GOAL}x",
        f"{over['ours_background']:.2f}x",
        over["ours_background"] <= FLOOR_GOAL,
    )
    result.add(
        "ceiling for any wrapper that reserves before calling: guide / floor; settling in the background: "
        "guide / (model-only burst + 1 round trip)",
        "—",
        f"{ceilings['inline']:.1f}x; {ceilings['background']:.1f}x",
    )
    result.add("guide / model client alone (no wrapper at all)", "—", f"{ratios['model_only']:.1f}x")
    result.notes.append(
        f"one call waits at least {ms(latency_floor)} (reserve {ms(AUTHORITY_DELAY_S)} + model "
        f"{ms(MODEL_LATENCY_S)} + commit {ms(AUTHORITY_DELAY_S)}); a burst of {concurrency} cannot beat the "
        f"model client's own burst plus the {ROUND_TRIPS} authority waits each call must see (the floor). "
        "The guide's blocking client serialises its waits, so guide / floor is the best speedup any "
        "wrapper that reserves before calling can reach."
    )
    result.notes.append(
        "authority and model endpoint run in their own processes; CPU is this process's (client work only)."
    )
    return result


def run(scale: Scale) -> BenchResult:
    return asyncio.run(_measure(scale))
