"""configure_telemetry(): OTLP (both protocols), the Prometheus endpoint, validation and shutdown."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from runcycles import CyclesClient  # type: ignore[import-untyped]

from cycles_otel.app.configure import (
    ENDPOINT_ENVS,
    PROMETHEUS_PORT_ENV,
    PROTOCOL_ENV,
    MetricsServer,
    configure_telemetry,
)
from cycles_otel.instruments import get_instruments
from cycles_otel.protocol import CyclesInstrumentor
from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.otlp_receiver import OtlpReceiver
from tests.support.ports import free_port, taken_port

QUIET: dict[str, Any] = {"set_global": False, "instrument_cycles": False}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*ENDPOINT_ENVS, PROTOCOL_ENV, PROMETHEUS_PORT_ENV, "CYCLES_OTEL_CARDINALITY_LIMIT"):
        monkeypatch.delenv(name, raising=False)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is fine
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_and_metrics_reach_an_otlp_endpoint_named_by_the_standard_env(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    endpoint = otlp_receiver.http_endpoint if protocol == "http/protobuf" else otlp_receiver.grpc_endpoint
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv(PROTOCOL_ENV, protocol)
    handle = configure_telemetry("otlp-test", resource_attributes={"deployment.environment": "test"}, **QUIET)
    assert handle.prometheus_url is None
    handle.tracer_provider.get_tracer("t").start_span("work").end()
    get_instruments(handle.meter_provider).charged.add(7, {"cycles.unit": "TOKENS"})
    handle.shutdown()  # flushes both
    (span,) = otlp_receiver.wait_for_spans(lambda s: s.name == "work")
    assert span.resource["service.name"] == "otlp-test"
    assert span.resource["deployment.environment"] == "test"
    assert span.transport == ("http" if protocol == "http/protobuf" else "grpc")
    points = otlp_receiver.wait_for_metric("cycles.client.charged")
    assert points[-1].value == 7 and points[-1].attributes == {"cycles.unit": "TOKENS"}


def test_no_otlp_without_an_endpoint(otlp_receiver: OtlpReceiver) -> None:
    handle = configure_telemetry("quiet", **QUIET)
    handle.tracer_provider.get_tracer("t").start_span("work").end()
    handle.shutdown()
    assert otlp_receiver.spans() == []


def test_the_prometheus_endpoint_serves_metrics_only() -> None:
    with configure_telemetry("prom", prometheus_port=0, **QUIET) as handle:
        assert handle.prometheus_url is not None and handle.prometheus_url.startswith("http://127.0.0.1:")
        get_instruments(handle.meter_provider).charged.add(3, {"cycles.unit": "TOKENS"})
        scrape = httpx.get(handle.prometheus_url, timeout=5)
        assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
        assert 'cycles_client_charged_total{cycles_unit="TOKENS"' in scrape.text
        assert 'service_name="prom"' in scrape.text  # target_info carries the resource
        base = handle.prometheus_url.removesuffix("/metrics")
        assert httpx.get(base + "/", timeout=5).status_code == 404
        refused = httpx.post(handle.prometheus_url, content=b"x", timeout=5)
        assert (refused.status_code, refused.headers["allow"]) == (405, "GET")


def test_the_endpoint_listens_on_ipv6_loopback_when_asked() -> None:
    with configure_telemetry("v6", prometheus_host="::1", prometheus_port=0, **QUIET) as handle:
        assert handle.prometheus_url is not None and handle.prometheus_url.startswith("http://[::1]:")
        get_instruments(handle.meter_provider).charged.add(5, {"cycles.unit": "TOKENS"})
        scrape = httpx.get(handle.prometheus_url, timeout=5)
    assert scrape.status_code == 200
    assert 'cycles_client_charged_total{cycles_unit="TOKENS"' in scrape.text


def test_a_host_that_is_not_this_machine_is_named() -> None:
    with pytest.raises(ValueError, match=r"prometheus_host='192\.0\.2\.1': cannot listen .*127\.0\.0\.1"):
        configure_telemetry("elsewhere", prometheus_host="192.0.2.1", prometheus_port=0, **QUIET)


class LargeFamily:
    """A registry collector whose exposition outgrows every socket buffer between two processes."""

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("large", "Series padded to 16 MB in all.", labels=["pad"])
        for i in range(1_600):
            family.add_metric([f"{i:04d}" + "x" * 10_000], i)
        yield family


def closed_by_server(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    try:
        while chunk := client.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_a_scraper_that_hangs_up_mid_response_leaves_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    registry = CollectorRegistry()
    registry.register(LargeFamily())
    server = MetricsServer(registry, "127.0.0.1", 0)
    try:
        with socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the answer cannot all fit
            client.settimeout(30)
            client.connect(("127.0.0.1", server.port))
            client.sendall(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            assert client.recv(64).startswith(b"HTTP/1.0 200")  # mid-response from here on
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
    finally:
        server.close()  # returns once the request's thread has finished
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /metr", b"GET /metrics HTTP/1.1\r\nHost: test\r\n"],
    ids=["nothing", "half-a-request-line", "no-end-of-headers"],
)
def test_a_client_that_stalls_is_dropped_and_frees_its_thread(
    sent: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, request_timeout=0.2)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
            client.sendall(sent)
            assert closed_by_server(client) == b""
    finally:
        server.close()  # would wait forever for a thread still held
    assert capfd.readouterr().err == ""


def test_a_connection_kept_open_is_closed_after_its_answer(capfd: pytest.CaptureFixture[str]) -> None:
    server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, request_timeout=0.2)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
            client.sendall(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: keep-alive\r\n\r\n")
            answer = closed_by_server(client)
    finally:
        server.close()
    assert answer.startswith(b"HTTP/1.0 200 OK")
    assert capfd.readouterr().err == ""


class FailingCollector:
    def collect(self) -> Iterable[Metric]:
        raise RuntimeError("collector down")


def test_a_registry_that_fails_to_render_answers_500_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    registry.register(FailingCollector())
    server = MetricsServer(registry, "127.0.0.1", 0)
    try:
        answer = httpx.get(server.url, timeout=5)
    finally:
        server.close()
    assert (answer.status_code, answer.text) == (500, "metrics collection failed\n")
    (record,) = [r for r in caplog.records if r.getMessage() == "rendering /metrics failed"]
    assert record.exc_info is not None and "collector down" in str(record.exc_info[1])


def test_the_port_can_come_from_the_environment_and_is_freed_by_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv(PROMETHEUS_PORT_ENV, str(port))
    handle = configure_telemetry("env-port", **QUIET)
    assert handle.prometheus_url == f"http://127.0.0.1:{port}/metrics"
    assert httpx.get(handle.prometheus_url, timeout=5).status_code == 200
    handle.shutdown()
    handle.shutdown()  # idempotent
    assert port_is_free(port)


def test_runcycles_calls_are_instrumented_and_uninstrumented_on_shutdown() -> None:
    spans = InMemorySpanExporter()
    with LocalCyclesServer() as server:
        server.set_budget("tenant:acme", 1_000)
        key = server.create_api_key("acme")
        handle = configure_telemetry("instrumented", prometheus_port=0, set_global=False)
        handle.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        try:
            with CyclesClient(server.config(key)) as client:
                assert client.get_balances(tenant="acme").is_success
            assert handle.prometheus_url is not None
            scrape = httpx.get(handle.prometheus_url, timeout=5).text
        finally:
            handle.shutdown()
    assert [s.name for s in spans.get_finished_spans()] == ["cycles.balances"]
    assert 'cycles_budget_remaining{cycles_scope="tenant:acme",cycles_unit="USD_MICROCENTS"' in scrape
    assert not CyclesInstrumentor().is_instrumented_by_opentelemetry


def test_the_cardinality_guard_is_configured() -> None:
    with configure_telemetry("guarded", cardinality_limit=3, cardinality_allow=["vip"], **QUIET) as handle:
        guard = get_instruments(handle.meter_provider).guard
        assert (guard.limit, guard.allow) == (3, frozenset({"vip"}))


@pytest.mark.parametrize(
    ("env", "kwargs", "named"),
    [
        ({PROMETHEUS_PORT_ENV: "nine"}, {}, PROMETHEUS_PORT_ENV),
        ({}, {"prometheus_port": 70_000}, "prometheus_port"),
        ({}, {"prometheus_port": "9464"}, "prometheus_port"),
        ({}, {"otlp_protocol": "http/json"}, "otlp_protocol"),
        ({PROTOCOL_ENV: "carrier-pigeon"}, {}, PROTOCOL_ENV),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317"}, {}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://:99999"}, {}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        ({}, {"cardinality_limit": 0}, "cardinality_limit"),
        ({"CYCLES_OTEL_CARDINALITY_LIMIT": "many"}, {}, "CYCLES_OTEL_CARDINALITY_LIMIT"),
        ({}, {"service_name": ""}, "service_name"),
    ],
)
def test_bad_values_fail_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], kwargs: dict[str, object], named: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    options = dict(kwargs)
    service_name = str(options.pop("service_name", "bad"))
    port = free_port()
    if "prometheus_port" not in options and PROMETHEUS_PORT_ENV not in env:
        options["prometheus_port"] = port
    with pytest.raises(ValueError, match=named) as raised:
        configure_telemetry(service_name, **options, **QUIET)  # type: ignore[arg-type]
    problem, _, fix = str(raised.value).partition(": ")
    assert problem and fix  # "<what is wrong>: <how to fix it>"
    assert port_is_free(port)  # nothing was left listening


def test_a_port_in_use_is_a_clear_error() -> None:
    with taken_port() as port, pytest.raises(ValueError, match=rf"prometheus_port={port}.*pick a free port"):
        configure_telemetry("clash", prometheus_port=port, **QUIET)


def test_force_flush_does_not_duplicate_series_on_the_next_scrape() -> None:
    """A flush (as apps do before exit) must leave the scrape with one sample per series."""
    handle = configure_telemetry("flush", prometheus_port=0, set_global=False, instrument_cycles=False)
    try:
        assert handle.prometheus_url is not None
        handle.meter_provider.get_meter("flush-test").create_counter("flush.count").add(3)
        handle.meter_provider.force_flush()
        body = httpx.get(handle.prometheus_url).text
    finally:
        handle.shutdown()
    samples = [line for line in body.splitlines() if line.startswith("flush_count_total")]
    assert len(samples) == 1 and samples[0].endswith(" 3.0"), samples
