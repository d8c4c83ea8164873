"""One variant's ``create()`` calls in a process of their own, counted by callgrind: warm-up first, uncounted.

``valgrind --tool=callgrind --instr-atstart=no python -m benchmarks.callgrind_probe VARIANT --marks LIB
--model URL --calls N --warmup W`` (``benchmarks/callgrind.py`` builds that command). Governed variants
reach the authority through ``CYCLES_BASE_URL`` / ``CYCLES_API_KEY``: the client builds its own Cycles
client, whatever transport the library picks. Prints one JSON line: what the calls exported and the
package versions they ran on.

Runs in the openai-v2 venv too (``openai_v2``): cycles-otel is imported only by the governed
variants, so that row measures the official instrumentation alone.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol

from autogen_core.models import ChatCompletionClient, CreateResult

from benchmarks.common import (
    MODEL,
    PROMPT,
    SdkTelemetry,
    commit_request,
    governed,
    noop_providers,
    reservation_request,
)

VARIANTS = (
    "bare",
    "wire_floor",
    "runcycles_floor",
    "governed_off",
    "governed_full",
    "governed_journaled",
    "sdk_floor",
    "openai_v2",
)
DUMP_LABEL = "measured"
VERSIONS_OF = ("openai", "autogen-core", "autogen-ext", "opentelemetry-api", "opentelemetry-sdk")
YARDSTICK_VERSIONS_OF = ("opentelemetry-instrumentation-openai-v2", "opentelemetry-util-genai")


class Caller(Protocol):
    """What a probe calls: a model client's ``create`` and ``close``."""

    async def create(self, messages: Any) -> CreateResult: ...

    async def close(self) -> None: ...


@dataclass
class Probe:
    """A client to call, and the SDK providers behind it (None: nothing is exported)."""

    client: Caller
    sdk: SdkTelemetry | None

    def flush(self) -> None:
        """Export every ended span now: spans of the warm-up before counting, the measured ones inside."""
        if self.sdk is not None:
            self.sdk.tracer_provider.force_flush()

    @property
    def exported(self) -> int:
        return self.sdk.exporter.exported if self.sdk is not None else 0


def build(variant: str, model_url: str) -> Probe:
    """The client of ``variant``: bare, governed without or with telemetry, or officially instrumented."""
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    inner = OpenAIChatCompletionClient(model=MODEL, base_url=model_url, api_key="sk-bench")
    if variant == "bare":
        return Probe(inner, None)
    if variant == "governed_off":
        return Probe(governed(inner, None, *noop_providers()), None)
    if variant in ("wire_floor", "runcycles_floor"):
        return Probe(_ReservedClient(inner, lifecycle=variant == "runcycles_floor"), None)
    sdk = SdkTelemetry.create()
    if variant in ("governed_full", "governed_journaled"):  # journaled: its env turns the journal on
        return Probe(
            governed(inner, None, sdk.tracer_provider, sdk.meter_provider, instrument_protocol=True), sdk
        )
    if variant == "sdk_floor":
        return Probe(_FloorClient(inner, _floor_replay(sdk)), sdk)
    if variant == "openai_v2":
        # Installed in the yardstick venv only.
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor  # type: ignore[import-not-found]

        OpenAIInstrumentor().instrument(
            tracer_provider=sdk.tracer_provider, meter_provider=sdk.meter_provider
        )
        return Probe(inner, sdk)
    raise ValueError(f"variant={variant!r}: choose one of {', '.join(VARIANTS)}")


class _FloorClient:
    """The bare client, and after each call the OTel SDK alone making a governed call's telemetry."""

    def __init__(self, inner: ChatCompletionClient, replay: Callable[[], None]) -> None:
        self._inner, self._replay = inner, replay

    async def create(self, messages: Any) -> CreateResult:
        result = await self._inner.create(messages)
        self._replay()
        return result

    async def close(self) -> None:
        await self._inner.close()


class _ReservedClient:
    """The bare client with a reserve before and a commit after, on the transport governed calls use.

    ``lifecycle``: inside runcycles' own ``AsyncStreamReservation`` (its request building, response
    checks, heartbeat task and commit retry engine), as a hand-written integration would; otherwise
    the two protocol calls alone. Either way none of cycles-otel's lifecycle runs: with the bare row
    they split what governance costs into the wire, runcycles, and ours.
    """

    def __init__(self, inner: ChatCompletionClient, *, lifecycle: bool) -> None:
        from runcycles import CyclesConfig  # type: ignore[import-untyped]

        from cycles_otel.protocol.transport import AiohttpCyclesClient

        self._inner, self._lifecycle = inner, lifecycle
        self._cycles = AiohttpCyclesClient(CyclesConfig.from_env())

    async def create(self, messages: Any) -> CreateResult:
        if not self._lifecycle:
            reserved = await self._cycles.create_reservation(reservation_request())
            result = await self._inner.create(messages)
            await self._cycles.commit_reservation(
                reserved.get_body_attribute("reservation_id"), commit_request()
            )
            return result
        from runcycles.streaming import AsyncStreamReservation  # type: ignore[import-untyped]

        request = reservation_request()
        async with AsyncStreamReservation(
            self._cycles, subject=request.subject, action=request.action, estimate=request.estimate
        ) as reservation:
            result = await self._inner.create(messages)
            reservation.usage.set_actual_cost(commit_request().actual.amount)
        return result

    async def close(self) -> None:
        await self._cycles.aclose()
        await self._inner.close()


def _floor_replay(sdk: SdkTelemetry) -> Callable[[], None]:
    """One governed call's spans and measurements, captured once, replayable on ``sdk`` (see B1)."""
    from runcycles import AsyncCyclesClient, CyclesConfig

    from benchmarks.b1_overhead import capture_floor

    async def captured() -> Callable[[], None]:
        async with AsyncCyclesClient(CyclesConfig.from_env()) as cycles:
            floor = await capture_floor(cycles)
        return floor.bind(sdk.tracer_provider, sdk.meter_provider)

    return asyncio.run(captured())


async def calls(client: Caller, count: int) -> CreateResult | None:
    """``count`` sequential ``create()`` calls; the last result."""
    result = None
    for _ in range(count):
        result = await client.create(PROMPT)
    return result


def versions(variant: str) -> dict[str, str]:
    """What the client and the instrumentation are made of: rows from two venvs compare like with like."""
    names = VERSIONS_OF + (YARDSTICK_VERSIONS_OF if variant == "openai_v2" else ())
    return {name: metadata.version(name) for name in names}


def measure(
    variant: str,
    marks: Callable[[], Any],
    stop: Callable[[bytes], Any],
    model_url: str,
    count: int,
    warmup: int,
) -> dict[str, Any]:
    """Warm up, count ``count`` calls between the marks, and say what they did."""
    probe = build(variant, model_url)
    loop = asyncio.new_event_loop()  # one loop throughout: connection pools stay bound to it
    loop.run_until_complete(calls(probe.client, warmup))
    probe.flush()
    gc.collect()  # a collection owed by the warm-up must not land in the measured calls
    before = probe.exported
    marks()
    last = loop.run_until_complete(calls(probe.client, count))
    probe.flush()  # span export is work the calls caused: counted with them
    stop(DUMP_LABEL.encode())
    if last is None or not isinstance(last, CreateResult) or last.usage.completion_tokens <= 0:
        raise RuntimeError(f"{variant}: the model answered no completion tokens: {last!r}")
    spans = probe.exported - before
    loop.run_until_complete(probe.client.close())
    loop.close()
    if probe.sdk is not None:
        probe.sdk.shutdown()
    return {
        "variant": variant,
        "calls": count,
        "warmup": warmup,
        "spans_per_call": spans / count,
        "versions": versions(variant),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.callgrind_probe")
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--marks", required=True, help="the built callgrind_marks shared library")
    parser.add_argument("--model", required=True, help="base URL of the fake OpenAI endpoint")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    args = parser.parse_args(argv)
    library = ctypes.CDLL(args.marks)
    library.measure_stop.argtypes = [ctypes.c_char_p]
    report = measure(
        args.variant, library.measure_start, library.measure_stop, args.model, args.calls, args.warmup
    )
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
