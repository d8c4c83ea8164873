"""CyclesInstrumentor as a BaseInstrumentor: patch and restore, auto-instrumentation, broken telemetry."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from opentelemetry.metrics import (
    CallbackT,
    Counter,
    Histogram,
    Meter,
    MeterProvider,
    NoOpMeter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from runcycles import (  # type: ignore[import-untyped]
    AsyncCyclesClient,
    CyclesClient,
    cycles,
    lifecycle,
    retry,
    streaming,
)

from cycles_otel import CyclesInstrumentor
from cycles_otel import semconv as sc
from cycles_otel.protocol.transport import AiohttpCyclesClient
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.ci import require_module
from tests.support.protocol import (
    CLIENT_CLASSES,
    CLIENT_KINDS,
    TENANT,
    UNIT,
    call,
    close,
    instrumentation,
    make_client,
    reserve_body,
    running_authority,
    settle_body,
)

OPERATION_METHODS = (
    "create_reservation", "commit_reservation", "release_reservation", "extend_reservation", "decide",
    "create_event", "get_balances", "get_reservation", "list_reservations",
)  # fmt: skip
PATCHED: list[tuple[type, str]] = [
    (c, m) for c in (CyclesClient, AsyncCyclesClient, AiohttpCyclesClient) for m in OPERATION_METHODS
] + [(e, "_attempt_once") for e in (retry.CommitRetryEngine, retry.AsyncCommitRetryEngine)]
VENV_BIN = Path(sys.executable).parent


def originals() -> dict[tuple[type, str], Any]:
    return {(owner, name): vars(owner)[name] for owner, name in PATCHED}


def test_instrument_wraps_every_method_and_uninstrument_restores_the_originals(
    telemetry: TelemetryCapture,
) -> None:
    before = originals()
    threading_modules = (lifecycle.threading, streaming.threading)
    with instrumentation(telemetry) as instrumentor:
        wrapped = originals()
        assert all(wrapped[key] is not before[key] for key in before)
        assert all(wrapped[key].__wrapped__ is before[key] for key in before)
        assert lifecycle.threading is not threading_modules[0]
        instrumentor.instrument(tracer_provider=telemetry.tracer_provider)  # a second call changes nothing
        assert originals() == wrapped
    assert all(vars(owner)[name] is before[(owner, name)] for owner, name in PATCHED)
    assert (lifecycle.threading, streaming.threading) == threading_modules
    assert instrumentor.instrumentation_dependencies() == ("runcycles >= 0.5.3",)


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_an_uninstrumented_client_sends_no_spans_and_no_traceparent(
    telemetry: TelemetryCapture, kind: str
) -> None:
    with running_authority() as (server, config):
        client = make_client(kind, config)
        with instrumentation(telemetry):
            assert (await call(client, "create_reservation", reserve_body(10))).is_success
        assert (await call(client, "create_reservation", reserve_body(10))).is_success
        await close(client)
        first, second = server.requests
    assert "traceparent" in first.headers and "traceparent" not in second.headers
    assert len(telemetry.spans(sc.SPAN_RESERVE)) == 1


# --- telemetry that breaks must not break the call ---------------------------------------------------
class ThrowingProcessor(SpanProcessor):
    def __init__(self, breaks_on: str) -> None:
        self.breaks_on = breaks_on

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.breaks_on == "on_start":
            raise RuntimeError("span processor broke on start")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("span processor broke on end")


class ThrowingExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        raise RuntimeError("metric exporter broke")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


class _Throwing:
    def add(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("instrument broke")

    record = add


class ThrowingMeter(NoOpMeter):
    """A meter whose every synchronous instrument raises when used."""

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Counter:
        return cast(Counter, _Throwing())

    def create_up_down_counter(self, name: str, unit: str = "", description: str = "") -> UpDownCounter:
        return cast(UpDownCounter, _Throwing())

    def create_histogram(self, name: str, unit: str = "", description: str = "", **kwargs: Any) -> Histogram:
        return cast(Histogram, _Throwing())

    def create_observable_gauge(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> Any:
        return None


class ThrowingMeterProvider(MeterProvider):
    def get_meter(
        self, name: str, version: str | None = None, schema_url: str | None = None, attributes: Any = None
    ) -> Meter:
        return ThrowingMeter(name)


@pytest.fixture(params=["sdk-with-failing-exporter", "instruments-that-raise"])
def broken_meter_provider(request: pytest.FixtureRequest) -> Iterator[MeterProvider]:
    if request.param == "instruments-that-raise":
        yield ThrowingMeterProvider()
        return
    reader = PeriodicExportingMetricReader(ThrowingExporter(), export_interval_millis=10)
    provider = SdkMeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


@pytest.mark.parametrize("breaks_on", ["on_start", "on_end"])
@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_broken_telemetry_never_reaches_the_caller(
    kind: str, breaks_on: str, broken_meter_provider: MeterProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(ThrowingProcessor(breaks_on))
    client_class = CLIENT_CLASSES[kind]
    returned_by_runcycles: list[Any] = []
    for private in ("_post", "_get"):
        real = getattr(client_class, private)

        def sync_spy(self: Any, *args: Any, _real: Any = real) -> Any:
            returned_by_runcycles.append(_real(self, *args))
            return returned_by_runcycles[-1]

        async def async_spy(self: Any, *args: Any, _real: Any = real) -> Any:
            returned_by_runcycles.append(await _real(self, *args))
            return returned_by_runcycles[-1]

        monkeypatch.setattr(client_class, private, sync_spy if kind == "sync" else async_spy)

    instrumentor = CyclesInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=broken_meter_provider)
    try:
        with running_authority() as (server, config):
            client = make_client(kind, config)
            held = await call(client, "create_reservation", reserve_body(1_000))
            rid = held.body["reservation_id"]
            committed = await call(
                client, "commit_reservation", rid, settle_body(actual={"unit": UNIT, "amount": 5})
            )
            balances = await call(client, "get_balances", tenant=TENANT)
            denied = await call(client, "create_reservation", reserve_body(10**12))
            await close(client)
            assert server.ledger().scopes[f"tenant:{TENANT}"].spent == 5
    finally:
        instrumentor.uninstrument()
    assert [held, committed, balances, denied] == returned_by_runcycles
    assert all(
        a is b for a, b in zip([held, committed, balances, denied], returned_by_runcycles, strict=True)
    )
    assert (held.status, committed.status, balances.status, denied.status) == (200, 200, 200, 409)


# --- auto-instrumentation, in a later process that replays the commit journal ----------------------
APP = textwrap.dedent(
    """
    import os
    from runcycles import CyclesClient, CyclesConfig, cycles

    client = CyclesClient(CyclesConfig(
        base_url=os.environ["APP_CYCLES_URL"], api_key=os.environ["APP_CYCLES_KEY"], tenant="acme",
        journal_dir=os.environ["APP_JOURNAL_DIR"], retry_initial_delay=0.05, retry_flush_timeout=10.0,
    ))

    @cycles(estimate=100, actual=60, client=client)
    def work():
        return "done"

    print("APP RESULT", work())
    """
)


def console_spans(stdout: str) -> list[dict[str, Any]]:
    """The JSON spans the console exporter printed, one object after the other."""
    decoder, spans, index = json.JSONDecoder(), [], stdout.find("{")
    while index != -1:
        span, end = decoder.raw_decode(stdout, index)
        spans.append(span)
        index = stdout.find("{", end)
    return [span for span in spans if "name" in span]


@pytest.mark.slow
def test_opentelemetry_instrument_traces_a_later_process_that_replays_the_journal(tmp_path: Path) -> None:
    # Without a distro, opentelemetry-instrument configures no SDK and exports nothing.
    require_module("opentelemetry.distro", "pip install opentelemetry-distro==0.66b2")
    app = tmp_path / "app.py"
    app.write_text(APP, encoding="utf-8")
    assert "cycles_otel" not in APP
    with running_authority() as (server, config):
        server.faults.fail("commit", 503, error="INTERNAL_ERROR")
        # This process reserves, its commit fails and, with retries off, stays in the journal.
        journaling = dataclasses.replace(
            config, journal_enabled=True, journal_dir=str(tmp_path / "journal"), retry_enabled=False
        )
        with CyclesClient(journaling) as client:
            cycles(estimate=100, actual=40, client=client)(lambda: None)()
        (journaled,) = [r.reservation_id for r in server.ledger().reservations]
        assert server.ledger().count(status="ACTIVE") == 1
        server.clear_requests()
        env = {
            **os.environ,
            "APP_CYCLES_URL": config.base_url,
            "APP_CYCLES_KEY": config.api_key,
            "APP_JOURNAL_DIR": str(tmp_path / "journal"),
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "auto-app",
        }
        done = subprocess.run(
            [str(VENV_BIN / "opentelemetry-instrument"), sys.executable, str(app)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "APP RESULT done" in done.stdout
        received = [request.headers["traceparent"] for request in server.requests]
        assert server.ledger().scopes[f"tenant:{TENANT}"].spent == 100
    spans = console_spans(done.stdout)
    assert sorted(s["name"] for s in spans) == [sc.SPAN_COMMIT, sc.SPAN_COMMIT, sc.SPAN_RESERVE], done.stdout
    commits = {
        s["attributes"][sc.CYCLES_RESERVATION_ID]: s["attributes"]
        for s in spans
        if s["name"] == sc.SPAN_COMMIT
    }
    assert commits[journaled][sc.CYCLES_LATE_SETTLEMENT] is True
    assert commits[journaled][sc.CYCLES_CHARGED_AMOUNT] == 40
    (own,) = set(commits) - {journaled}
    assert sc.CYCLES_LATE_SETTLEMENT not in commits[own] and commits[own][sc.CYCLES_CHARGED_AMOUNT] == 60
    sent = [f"{s['context']['trace_id'][2:]}-{s['context']['span_id'][2:]}" for s in spans]
    assert sorted(sent) == sorted("-".join(header.split("-")[1:3]) for header in received)
