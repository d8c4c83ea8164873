"""Shared benchmark machinery: clocks, interleaved rounds, results files and the parts all benchmarks use."""

from __future__ import annotations

import gc
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage, RequestUsage, UserMessage
from opentelemetry.metrics import MeterProvider as MeterProviderApi
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider
from opentelemetry.trace import TracerProvider as TracerProviderApi

if TYPE_CHECKING:
    from cycles_otel.autogen import BudgetedChatCompletionClient

RESULTS_DIR = Path(__file__).parent / "results"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Scale:
    """How big a run is: ``full`` for the published figures, ``smoke`` for the test that they still run."""

    name: str
    factor: float

    def n(self, full: int, minimum: int = 1) -> int:
        """``full`` iterations scaled down, never below ``minimum``."""
        return max(minimum, round(full * self.factor))


FULL = Scale("full", 1.0)
SMOKE = Scale("smoke", 0.01)


@dataclass(frozen=True)
class Row:
    """One line of ``latest.md``: what was measured, the goal, the figure and whether it met the goal."""

    measure: str
    goal: str
    measured: str
    met: bool | None  # None: informational, no goal


@dataclass
class BenchResult:
    """What one benchmark reports: table rows for people, ``figures`` for machines."""

    name: str
    title: str
    command: str
    scale: str
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, measure: str, goal: str, measured: str, met: bool | None = None) -> None:
        self.rows.append(Row(measure, goal, measured, met))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---- statistics ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; ``values`` need not be sorted."""
    if not values:
        raise ValueError("percentile of no values: run at least one round")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, p90 and p99 of ``values``."""
    return {
        "median": statistics.median(values),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
    }


# ---- clocks --------------------------------------------------------------------------------------


class CpuClock:
    """CPU seconds of the calling thread plus every live thread whose name starts with a prefix.

    Per-thread clocks keep an in-process authority's handler threads out of the client's figure
    while still charging work the client pushes to background threads (e.g. span export).
    """

    def __init__(self, background_prefixes: Iterable[str] = ()) -> None:
        self._prefixes = tuple(background_prefixes)
        self._ident = threading.get_ident()

    def _threads(self) -> list[int]:
        idents = [self._ident]
        for thread in threading.enumerate():
            if thread.ident and thread.ident != self._ident and thread.name.startswith(self._prefixes):
                idents.append(thread.ident)
        return idents

    def read(self) -> dict[int, float]:
        readings: dict[int, float] = {}
        for ident in self._threads() if self._prefixes else [self._ident]:
            try:
                readings[ident] = time.clock_gettime(time.pthread_getcpuclockid(ident))
            except (OSError, ProcessLookupError):  # the thread ended between enumerate() and the read
                continue
        return readings

    @staticmethod
    def spent(before: Mapping[int, float], after: Mapping[int, float]) -> float:
        """CPU seconds between two readings; a thread that started in between counts from zero."""
        return sum(value - before.get(ident, 0.0) for ident, value in after.items())


def rss_bytes() -> int:
    """Resident set size of this process, from ``/proc/self/statm``."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


# ---- interleaved rounds --------------------------------------------------------------------------


@dataclass
class Batch:
    """Per-call figures of one round of one variant (seconds)."""

    wall: float
    cpu: float
    latencies: list[float] = field(default_factory=list)


RoundRunner = Callable[[], Awaitable[Batch]]


async def interleave(variants: Mapping[str, RoundRunner], rounds: int) -> dict[str, list[Batch]]:
    """Run ``rounds`` rounds of every variant, rotating the order (ABC, BCA, CAB, ...).

    Side-by-side rounds let every variant see the same machine noise; rotating removes the bias
    of always running first (cold caches) or last (pending GC).
    """
    names = list(variants)
    batches: dict[str, list[Batch]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            batches[name].append(await variants[name]())
    return batches


async def timed_calls(
    call: Callable[[], Awaitable[Any]],
    count: int,
    clock: CpuClock,
    settle: Callable[[], Any] | None = None,
) -> Batch:
    """``count`` sequential calls: per-call wall time and CPU, each call's latency.

    ``settle`` (e.g. flushing batched spans) runs after the calls and is charged to CPU but not to
    wall time: in an application it happens off the caller's path, but it is still work it pays for.
    """
    gc.collect()  # a collection owed by the previous variant must not land in this one
    latencies: list[float] = []
    cpu_before = clock.read()
    started = time.perf_counter()
    for _ in range(count):
        begin = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - begin)
    wall = time.perf_counter() - started
    if settle is not None:
        settle()
    cpu = CpuClock.spent(cpu_before, clock.read())
    return Batch(wall / count, cpu / count, latencies)


def per_call(batches: Sequence[Batch]) -> dict[str, dict[str, float]]:
    """Median/p90 over rounds of per-call wall and CPU, and p99 over every single call's latency."""
    figures = {"wall": summary([b.wall for b in batches]), "cpu": summary([b.cpu for b in batches])}
    latencies = [latency for b in batches for latency in b.latencies]
    if latencies:
        figures["latency"] = summary(latencies)
    return figures


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms"


# ---- results files -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import platform

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_results(results: Sequence[BenchResult], directory: Path = RESULTS_DIR) -> Path:
    """Merge ``results`` into ``latest.json`` (one entry per benchmark) and regenerate ``latest.md``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "latest.json"
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except ValueError:  # a half-written file from an interrupted run: start over
            existing = {}
    benchmarks = dict(existing.get("benchmarks", {}))
    for result in results:
        benchmarks[result.name] = result.to_json()
    document = {"machine": machine(), "benchmarks": dict(sorted(benchmarks.items()))}
    path.write_text(json.dumps(document, indent=2) + "\n")
    (directory / "latest.md").write_text(markdown(document))
    return path


def markdown(document: Mapping[str, Any]) -> str:
    """The table ``benchmark | measure | goal | measured | met?`` for every row of every benchmark."""
    marks = {True: "yes", False: "**no**", None: "—"}
    info = document["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Python {info['python']} on {info['platform']}, {info['cpus']} CPUs, {info['when']}.",
        "",
        "| benchmark | measure | goal | measured | met? |",
        "|---|---|---|---|---|",
    ]
    for name, bench in document["benchmarks"].items():
        for row in bench["rows"]:
            lines.append(
                f"| {name} {bench['title']} | {row['measure']} | {row['goal']} | {row['measured']} "
                f"| {marks[row['met']]} |"
            )
    lines.append("")
    for name, bench in document["benchmarks"].items():
        if bench["scale"] != FULL.name:
            lines.append(f"_{name} ran at scale `{bench['scale']}`: its figures are not comparable._")
        for note in bench["notes"]:
            lines.append(f"- {name}: {note}")
    lines.append("")
    return "\n".join(lines)


# ---- the parts every benchmark assembles -----------------------------------------------------------

MODEL = "gpt-4o"
ESTIMATE_MICROCENTS = 2_000_000  # the guide's default estimate
EXPORT_THREAD_PREFIXES = ("OtelBatch", "OtelPeriodic")


class DiscardingSpanExporter(SpanExporter):
    """Accepts every batch and keeps nothing: export cost without an unbounded in-memory list."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass
class SdkTelemetry:
    """SDK providers as an application would run them: batched spans, every metric read by a reader."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    reader: InMemoryMetricReader
    exporter: DiscardingSpanExporter

    @classmethod
    def create(cls) -> SdkTelemetry:
        exporter = DiscardingSpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        reader = InMemoryMetricReader()
        return cls(tracer_provider, MeterProvider(metric_readers=[reader]), reader, exporter)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@contextmanager
def protocol_instrumented(
    tracer_provider: TracerProviderApi | None, meter_provider: MeterProviderApi | None
) -> Iterator[None]:
    """``CyclesInstrumentor`` on for a stretch (it patches runcycles' classes: one provider pair at once)."""
    from cycles_otel.protocol import CyclesInstrumentor

    instrumentor = CyclesInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, skip_dep_check=True
    )
    try:
        yield
    finally:
        instrumentor.uninstrument()


def replay_inner(calls: int) -> ChatCompletionClient:
    """A zero-latency model client with ``calls`` uncached answers of 10 input / 5 output tokens."""
    from autogen_ext.models.replay import ReplayChatCompletionClient

    answer = CreateResult(
        finish_reason="stop",
        content="budget governance works",
        usage=RequestUsage(prompt_tokens=10, completion_tokens=5),
        cached=False,
    )
    return ReplayChatCompletionClient([answer] * calls)


def governed(
    inner: ChatCompletionClient,
    cycles: Any,
    tracer_provider: TracerProviderApi | None,
    meter_provider: MeterProviderApi | None,
    agent: str = "bench",
    instrument_protocol: bool = False,
    **options: Any,
) -> BudgetedChatCompletionClient:
    """``BudgetedChatCompletionClient`` the way the benchmarks use it: the protocol layer is toggled apart
    unless ``instrument_protocol`` (the client then instruments runcycles itself, as an app's does).

    ``cycles`` None: the client builds its own from ``CYCLES_*``. ``options`` go to the client as they
    are (e.g. ``settle_in_background=True``).
    """
    from cycles_otel.autogen import BudgetedChatCompletionClient

    return BudgetedChatCompletionClient(
        inner,
        cycles,
        tenant="acme",
        agent=agent,
        model=MODEL,
        estimate_amount=ESTIMATE_MICROCENTS,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        instrument_protocol=instrument_protocol,
        **options,
    )


def noop_providers() -> tuple[TracerProviderApi, MeterProviderApi]:
    return NoOpTracerProvider(), NoOpMeterProvider()


def reservation_request() -> Any:
    """A reserve body like the guide's: fresh idempotency key, the estimate, a 60 s TTL."""
    from runcycles import Action, Amount, ReservationCreateRequest, Subject, Unit  # type: ignore[import-untyped]

    return ReservationCreateRequest(
        idempotency_key=str(uuid.uuid4()),
        subject=Subject(tenant="acme", agent="bench"),
        action=Action(kind="llm.completion", name=MODEL),
        estimate=Amount(unit=Unit.USD_MICROCENTS, amount=ESTIMATE_MICROCENTS),
        ttl_ms=60_000,
    )


def commit_request() -> Any:
    """A commit body for 10 input and 5 output GPT-4o tokens."""
    from runcycles import Amount, CommitRequest, Unit

    return CommitRequest(
        idempotency_key=str(uuid.uuid4()), actual=Amount(unit=Unit.USD_MICROCENTS, amount=7_500)
    )


async def raw_protocol_call(cycles: Any) -> None:
    """Reserve and commit on an ``AsyncCyclesClient`` with nothing around them."""
    reserved = await cycles.create_reservation(reservation_request())
    await cycles.commit_reservation(reserved.get_body_attribute("reservation_id"), commit_request())


PROMPT: list[LLMMessage] = [UserMessage(content="What is budget authority?", source="user")]
