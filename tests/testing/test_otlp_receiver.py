"""OtlpReceiver: the real OTLP exporters (gRPC, HTTP, HTTP+gzip) deliver traces, metrics and logs intact."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from cycles_otel.testing.otlp_receiver import OtlpReceiver

RESOURCE = Resource.create({"service.name": "receiver-test", "deployment.environment": "ci"})
TRANSPORTS = ["grpc", "http", "http+gzip"]


def _exporter(kind: str, otlp_receiver: OtlpReceiver, signal: str) -> Any:
    """The real OTLP exporter for ``signal`` over ``kind`` (grpc, http, http+gzip)."""
    grpc_classes = {"traces": GrpcSpanExporter, "metrics": GrpcMetricExporter, "logs": GrpcLogExporter}
    http_classes = {"traces": HttpSpanExporter, "metrics": HttpMetricExporter, "logs": HttpLogExporter}
    if kind == "grpc":
        return grpc_classes[signal](endpoint=otlp_receiver.grpc_endpoint, insecure=True)
    compression = Compression.Gzip if kind == "http+gzip" else Compression.NoCompression
    return http_classes[signal](
        endpoint=f"{otlp_receiver.http_endpoint}/v1/{signal}", compression=compression
    )


def _expected_encoding(kind: str) -> str:
    return "gzip" if kind == "http+gzip" else ""


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_spans_arrive_with_parents_attributes_events_links_and_status(
    otlp_receiver: OtlpReceiver, kind: str
) -> None:
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(_exporter(kind, otlp_receiver, "traces")))
    tracer = provider.get_tracer("receiver.test", "1.2.3")
    with tracer.start_as_current_span("earlier") as earlier:
        pass
    with tracer.start_as_current_span("cycles.reservation") as parent:
        parent.set_attribute("cycles.estimate.amount", 123_456_789)
        with tracer.start_as_current_span(
            "cycles.reserve", kind=SpanKind.CLIENT, links=[Link(earlier.get_span_context(), {"why": "retry"})]
        ) as child:
            child.set_attributes(
                {"cycles.unit": "USD_MICROCENTS", "ratio": 0.25, "dry_run": False, "scopes": ["a", "b"]}
            )
            child.add_event("denied", {"cycles.reason": "BUDGET_EXCEEDED"})
            child.set_status(Status(StatusCode.ERROR, "budget exceeded"))
    provider.shutdown()

    spans = {span.name: span for span in otlp_receiver.wait_for_spans(3)}
    reserve, reservation = spans["cycles.reserve"], spans["cycles.reservation"]
    assert reserve.parent_span_id == reservation.span_id == format(parent.get_span_context().span_id, "016x")
    assert reserve.trace_id == reservation.trace_id == format(parent.get_span_context().trace_id, "032x")
    assert reservation.parent_span_id is None
    assert reserve.kind == "CLIENT" and reservation.kind == "INTERNAL"
    assert reserve.attributes == {
        "cycles.unit": "USD_MICROCENTS",
        "ratio": 0.25,
        "dry_run": False,
        "scopes": ("a", "b"),
    }
    assert reservation.attributes == {"cycles.estimate.amount": 123_456_789}
    assert (reserve.status_code, reserve.status_message) == ("ERROR", "budget exceeded")
    assert [(event.name, event.attributes) for event in reserve.events] == [
        ("denied", {"cycles.reason": "BUDGET_EXCEEDED"})
    ]
    assert [(link.span_id, link.attributes) for link in reserve.links] == [
        (spans["earlier"].span_id, {"why": "retry"})
    ]
    assert reserve.resource["service.name"] == "receiver-test"
    assert reserve.resource["deployment.environment"] == "ci"
    assert (reserve.scope_name, reserve.scope_version) == ("receiver.test", "1.2.3")
    assert reserve.end_time_unix_nano >= reserve.start_time_unix_nano > 0
    assert {span.transport for span in spans.values()} == {kind.split("+")[0]}
    assert {request.content_encoding for request in otlp_receiver.requests()} == {_expected_encoding(kind)}
    assert any(b"BUDGET_EXCEEDED" in body for body in otlp_receiver.raw_bytes())


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_metric_points_arrive_with_values_and_histogram_buckets(
    otlp_receiver: OtlpReceiver, kind: str
) -> None:
    reader = PeriodicExportingMetricReader(
        _exporter(kind, otlp_receiver, "metrics"), export_interval_millis=60_000
    )
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE)
    meter = provider.get_meter("receiver.test")
    counter = meter.create_counter("cycles.client.reservations", unit="{reservation}")
    histogram = meter.create_histogram(
        "gen_ai.client.token.usage", unit="{token}", explicit_bucket_boundaries_advisory=[1.0, 4.0, 16.0]
    )
    counter.add(2, {"cycles.decision": "ALLOW"})
    counter.add(1, {"cycles.decision": "DENY"})
    for count in (3, 10, 10):
        histogram.record(count, {"gen_ai.token.type": "input"})
    with TracerProvider().get_tracer("receiver.test").start_as_current_span("chat gpt-4o") as span:
        histogram.record(100, {"gen_ai.token.type": "input"})  # sampled span: the SDK keeps an exemplar
    provider.shutdown()  # flushes once

    reservations = otlp_receiver.wait_for_metric("cycles.client.reservations")
    by_decision = {point.attributes["cycles.decision"]: point for point in reservations}
    assert {decision: point.value for decision, point in by_decision.items()} == {"ALLOW": 2, "DENY": 1}
    allow = by_decision["ALLOW"]
    assert (allow.type, allow.unit, allow.monotonic, allow.temporality) == (
        "sum",
        "{reservation}",
        True,
        "CUMULATIVE",
    )
    assert allow.resource["service.name"] == "receiver-test" and allow.scope_name == "receiver.test"
    [tokens] = otlp_receiver.wait_for_metric("gen_ai.client.token.usage")
    assert tokens.type == "histogram" and tokens.attributes == {"gen_ai.token.type": "input"}
    assert (tokens.count, tokens.sum, tokens.min, tokens.max) == (4, 123.0, 3.0, 100.0)
    assert tokens.explicit_bounds == [1.0, 4.0, 16.0]
    assert tokens.bucket_counts == [0, 1, 2, 1]
    [exemplar] = [exemplar for exemplar in tokens.exemplars if exemplar.value == 100]
    assert exemplar.trace_id == format(span.get_span_context().trace_id, "032x")
    assert exemplar.span_id == format(span.get_span_context().span_id, "016x")
    assert {request.content_encoding for request in otlp_receiver.requests()} == {_expected_encoding(kind)}


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_log_records_arrive_with_body_severity_attributes_and_trace_context(
    otlp_receiver: OtlpReceiver, kind: str
) -> None:
    log_provider = LoggerProvider(resource=RESOURCE)
    log_provider.add_log_record_processor(SimpleLogRecordProcessor(_exporter(kind, otlp_receiver, "logs")))
    tracer = TracerProvider().get_tracer("receiver.test")
    with tracer.start_as_current_span("call") as span:
        log_provider.get_logger("receiver.test").emit(
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            body={"message": "commit failed", "attempts": [1, 2]},
            attributes={"cycles.reservation.id": "rsv_1"},
            event_name="cycles.commit.failed",
        )
    log_provider.shutdown()

    [record] = otlp_receiver.wait_for_logs(1)
    assert record.body == {"message": "commit failed", "attempts": (1, 2)}
    assert (record.severity_text, record.severity_number) == ("WARN", SeverityNumber.WARN.value)
    assert record.attributes == {"cycles.reservation.id": "rsv_1"}
    assert record.event_name == "cycles.commit.failed"
    assert record.trace_id == format(span.get_span_context().trace_id, "032x")
    assert record.span_id == format(span.get_span_context().span_id, "016x")
    assert record.resource["service.name"] == "receiver-test" and record.scope_name == "receiver.test"


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_http_rejects_unknown_paths_content_types_and_bodies_without_storing_them(
    otlp_receiver: OtlpReceiver,
) -> None:
    protobuf = {"Content-Type": "application/x-protobuf"}
    assert _post(f"{otlp_receiver.http_endpoint}/v1/profiles", b"", protobuf) == 404
    assert (
        _post(f"{otlp_receiver.http_endpoint}/v1/traces", b"{}", {"Content-Type": "application/json"}) == 415
    )
    assert _post(f"{otlp_receiver.http_endpoint}/v1/traces", b"\xff\xff\xff", protobuf) == 400
    assert (
        _post(
            f"{otlp_receiver.http_endpoint}/v1/traces", b"not gzip", {**protobuf, "Content-Encoding": "gzip"}
        )
        == 400
    )
    assert otlp_receiver.requests() == []
    assert (
        _post(
            f"{otlp_receiver.http_endpoint}/v1/traces",
            gzip.compress(b""),
            {**protobuf, "Content-Encoding": "gzip"},
        )
        == 200
    )
    assert [(request.signal, request.content_encoding) for request in otlp_receiver.requests()] == [
        ("traces", "gzip")
    ]


def _export_one_span(otlp_receiver: OtlpReceiver, name: str) -> None:
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(
        SimpleSpanProcessor(GrpcSpanExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True))
    )
    provider.get_tracer("receiver.test").start_span(name).end()
    provider.shutdown()


@pytest.mark.parametrize(
    ("wait", "expected"),
    [
        (lambda rx: rx.wait_for_spans(2, timeout=0.2), "2 spans"),
        (lambda rx: rx.wait_for_spans(lambda span: span.name == "absent", timeout=0.2), "matching"),
        (lambda rx: rx.wait_for_metric("absent", timeout=0.2), "metric 'absent'"),
    ],
)
def test_waits_time_out_naming_what_arrived(
    otlp_receiver: OtlpReceiver, wait: Callable[[OtlpReceiver], Any], expected: str
) -> None:
    _export_one_span(otlp_receiver, "cycles.commit")
    with pytest.raises(TimeoutError, match=expected) as raised:
        wait(otlp_receiver)
    assert "cycles.commit" in str(raised.value)


def test_wait_for_spans_with_a_predicate_returns_only_matching_spans(otlp_receiver: OtlpReceiver) -> None:
    for name in ("cycles.reserve", "cycles.commit", "cycles.reserve"):
        _export_one_span(otlp_receiver, name)
    matching = otlp_receiver.wait_for_spans(lambda span: span.name == "cycles.reserve")
    assert [span.name for span in matching] == ["cycles.reserve", "cycles.reserve"]


def test_write_json_dumps_everything_received_and_clear_forgets_it(
    otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    _export_one_span(otlp_receiver, "cycles.release")
    otlp_receiver.wait_for_spans(1)
    written = otlp_receiver.write_json(tmp_path / "out" / "telemetry.json")
    document = json.loads(written.read_text(encoding="utf-8"))
    assert [span["name"] for span in document["spans"]] == ["cycles.release"]
    assert document["spans"][0]["resource"]["service.name"] == "receiver-test"
    assert (document["metrics"], document["logs"]) == ([], [])
    otlp_receiver.clear()
    assert (otlp_receiver.spans(), otlp_receiver.raw_bytes()) == ([], [])


def test_endpoints_refuse_use_before_start() -> None:
    receiver = OtlpReceiver()
    with pytest.raises(RuntimeError, match="start"):
        _ = receiver.http_endpoint
    with receiver:
        assert receiver.grpc_endpoint.startswith("http://127.0.0.1:")
    with pytest.raises(RuntimeError, match="start"):
        _ = receiver.grpc_endpoint
