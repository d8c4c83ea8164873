"""B4: governed calls while the OTLP endpoint refuses or black-holes connections, versus a healthy one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import statistics
import threading
from collections.abc import Iterator
from typing import Any

from runcycles import AsyncCyclesClient, CyclesConfig  # type: ignore[import-untyped]

from benchmarks.common import (
    EXPORT_THREAD_PREFIXES,
    PROMPT,
    Batch,
    BenchResult,
    CpuClock,
    Scale,
    governed,
    interleave,
    ms,
    per_call,
    percentile,
    protocol_instrumented,
    replay_inner,
    rss_bytes,
    timed_calls,
)
from benchmarks.servers import authority_process, otlp_process

NAME = "b4"
TITLE = "exporter outage"
COMMAND = "python -m benchmarks b4"
P99_GOAL_S = 0.001
RSS_GOAL_BYTES = 50 * 2**20
# Export often, so the outage bites during the measured calls rather than after them.
EXPORT_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "500"}
SHUTDOWN_WAIT_S = 15.0
QUIET_LOGGERS = ("opentelemetry.exporter", "opentelemetry.sdk", "opentelemetry.sdk._shared_internal")


class BlackHole:
    """A loopback port that accepts connections and never answers (a hung collector)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="bench-black-hole", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener was closed
            while True:
                connection, _ = self._listener.accept()
                self._held.append(connection)

    def close(self) -> None:
        """Reset every held and queued connection, so exports stuck on them fail at once."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        self._listener.close()
        self._thread.join(timeout=5)
        for connection in self._held:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


def _shutdown_now(handle: Any) -> None:
    """Shut a handle down without waiting out the export timeouts of a dead endpoint.

    That wait is the app's exit, not a call, and is not measured here; shutting the exporters
    first makes the providers' final flushes fail at once. Reaches into SDK internals, so any
    surprise there just means the slow, ordinary shutdown.
    """
    with contextlib.suppress(Exception):
        for processor in handle.tracer_provider._active_span_processor._span_processors:
            processor._batch_processor._exporter.shutdown()
        for reader in handle.meter_provider._metric_readers:
            if hasattr(reader, "_exporter"):
                reader._exporter.shutdown()
    handle.shutdown()


def refused_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Export failures are the point here: their log lines would bury the results."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _telemetry_for(endpoint: str) -> Any:
    """``configure_telemetry`` exactly as an app calls it, exporting to ``endpoint`` over OTLP/HTTP."""
    from cycles_otel.app.configure import configure_telemetry

    saved = {name: os.environ.get(name) for name in [*EXPORT_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT"]}
    os.environ.update({**EXPORT_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    try:
        return configure_telemetry("bench-outage", otlp=True, set_global=False, instrument_cycles=False)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def _measure(scale: Scale) -> BenchResult:
    rounds, per_round = scale.n(16, 2), scale.n(100, 5)
    total = (rounds + 1) * per_round
    result = BenchResult(NAME, TITLE, COMMAND, scale.name)
    clock = CpuClock(EXPORT_THREAD_PREFIXES)
    errors: dict[str, list[str]] = {}
    hole = BlackHole()
    # The healthy endpoint runs in its own process: receiving must not cost this one any CPU.
    with _quiet(), otlp_process() as receiver, authority_process() as authority:
        endpoints = {
            "healthy": receiver.base_url,
            "refused": f"http://127.0.0.1:{refused_port()}",
            "black_hole": f"http://127.0.0.1:{hole.port}",
        }
        handles = {name: _telemetry_for(url) for name, url in endpoints.items()}
        cycles = AsyncCyclesClient(
            CyclesConfig(base_url=authority.base_url, api_key=authority.api_key, journal_enabled=False)
        )
        clients = {
            name: governed(replay_inner(total), cycles, h.tracer_provider, h.meter_provider)
            for name, h in handles.items()
        }

        def variant(name: str) -> Any:
            async def call() -> None:
                try:
                    await clients[name].create(PROMPT)
                except Exception as exc:  # the goal is that this never happens
                    errors.setdefault(name, []).append(repr(exc))

            async def one_round() -> Batch:
                handle = handles[name]
                with protocol_instrumented(handle.tracer_provider, handle.meter_provider):
                    return await timed_calls(call, per_round, clock)

            return one_round

        variants = {name: variant(name) for name in endpoints}
        await interleave(variants, 1)
        rss_before = rss_bytes()
        batches = await interleave(variants, rounds)
        rss_growth = rss_bytes() - rss_before
        await cycles.aclose()
        hole.close()
        stoppers = [threading.Thread(target=_shutdown_now, args=(h,), daemon=True) for h in handles.values()]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(timeout=SHUTDOWN_WAIT_S)

    figures = {name: per_call(found) for name, found in batches.items()}
    healthy_p99 = figures["healthy"]["latency"]["p99"]
    # Per-round p99s compared with the adjacent healthy round: a burst of noise from a neighbour on
    # this shared machine then spoils one pair, not the pooled p99 of a whole variant.
    round_p99 = {name: [percentile(b.latencies, 99) for b in found] for name, found in batches.items()}
    added = {
        name: statistics.median(x - h for x, h in zip(round_p99[name], round_p99["healthy"], strict=True))
        for name in ("refused", "black_hole")
    }
    result.figures = {
        "rounds": rounds,
        "calls_per_round": per_round,
        "per_call": figures,
        "added_p99_s": added,
        "caller_exceptions": errors,
        "rss_growth_bytes": rss_growth,
        "spans_received_by_healthy_endpoint": receiver.final.get("spans", 0),
    }
    result.add("p99 latency per call, healthy endpoint (pooled)", "—", ms(healthy_p99))
    for name, label in (("refused", "connection refused"), ("black_hole", "black-holed")):
        result.add(
            f"added p99 latency, endpoint {label} (paired median of per-round p99s)",
            "<= 1 ms",
            f"{ms(added[name])} (pooled p99 {ms(figures[name]['latency']['p99'])})",
            added[name] <= P99_GOAL_S,
        )
    raised = sum(len(found) for found in errors.values())
    result.add("exceptions reaching the caller", "0", str(raised), raised == 0)
    result.add("RSS growth during the outage rounds", "<= 50 MB", f"{rss_growth / 2**20:.1f} MB",
               rss_growth <= RSS_GOAL_BYTES)  # fmt: skip
    result.notes.append(
        "telemetry from configure_telemetry(otlp=True) over OTLP/HTTP with its 5 s export timeout; "
        f"spans batched every {EXPORT_ENV['OTEL_BSP_SCHEDULE_DELAY']} ms and metrics exported every "
        f"{EXPORT_ENV['OTEL_METRIC_EXPORT_INTERVAL']} ms so exports fail during the measured calls."
    )
    return result


def run(scale: Scale) -> BenchResult:
    return asyncio.run(_measure(scale))
