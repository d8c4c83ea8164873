"""``OtlpReceiver``: an in-process OTLP endpoint (gRPC and HTTP/protobuf) that keeps what it receives."""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from cycles_otel.testing.loopback import BackgroundService, LoopbackHTTPServer, drain_unread_body

__all__ = [
    "DEFAULT_MAX_BYTES",
    "OtlpReceiver",
    "PayloadTooLarge",
    "ReceivedEvent",
    "ReceivedExemplar",
    "ReceivedLink",
    "ReceivedLog",
    "ReceivedMetricPoint",
    "ReceivedRequest",
    "ReceivedSpan",
]

_T = TypeVar("_T")

# signal -> (gRPC service, HTTP path, request message, response message)
_SIGNALS: dict[str, tuple[str, str, Any, Any]] = {
    "traces": (
        "opentelemetry.proto.collector.trace.v1.TraceService",
        "/v1/traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "metrics": (
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        "/v1/metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "logs": (
        "opentelemetry.proto.collector.logs.v1.LogsService",
        "/v1/logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}
# An SDK batch (512 spans by default) is a few hundred KiB; the Collector's own HTTP default is 20 MiB.
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUS_CODES = ("UNSET", "OK", "ERROR")


@dataclass(frozen=True)
class ReceivedRequest:
    """One export request as it arrived: ``body`` is the decompressed protobuf payload."""

    signal: str  # traces, metrics or logs
    transport: str  # grpc or http
    content_encoding: str  # as sent over HTTP ("gzip", "deflate" or ""); gRPC decompresses itself
    body: bytes
    message: Any  # the parsed Export*ServiceRequest


@dataclass(frozen=True)
class ReceivedEvent:
    name: str
    time_unix_nano: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span; ids are lowercase hex, ``parent_span_id`` is None for a root span."""

    name: str
    kind: str  # INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER (the ``SpanKind`` member names)
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any]
    status_code: str  # UNSET, OK, ERROR
    status_message: str
    events: list[ReceivedEvent]
    links: list[ReceivedLink]
    resource: dict[str, Any]
    scope_name: str
    scope_version: str
    transport: str  # "grpc" or "http"


@dataclass(frozen=True)
class ReceivedExemplar:
    value: float
    trace_id: str | None
    span_id: str | None
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedMetricPoint:
    """One data point of one metric: ``value`` for sums and gauges, the histogram fields for histograms."""

    name: str
    description: str
    unit: str
    type: str  # sum, gauge, histogram, exponential_histogram, summary
    attributes: dict[str, Any]
    time_unix_nano: int
    value: int | float | None = None
    monotonic: bool | None = None
    temporality: str | None = None  # DELTA or CUMULATIVE
    count: int | None = None
    sum: float | None = None
    bucket_counts: list[int] = field(default_factory=list)
    explicit_bounds: list[float] = field(default_factory=list)
    min: float | None = None
    max: float | None = None
    exemplars: list[ReceivedExemplar] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    scope_name: str = ""
    transport: str = ""


@dataclass(frozen=True)
class ReceivedLog:
    body: Any
    severity_number: int
    severity_text: str
    attributes: dict[str, Any]
    time_unix_nano: int
    observed_time_unix_nano: int
    trace_id: str | None
    span_id: str | None
    event_name: str
    resource: dict[str, Any]
    scope_name: str
    transport: str


def _any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` as a plain Python value (arrays become tuples, like SDK attributes)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return tuple(_any_value(item) for item in value.array_value.values)
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which)


def _attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in key_values}


def _hex(raw: bytes) -> str | None:
    return raw.hex() if raw else None


def _spans(request: Any, transport: str) -> Iterator[ReceivedSpan]:
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ReceivedSpan(
                    name=span.name,
                    kind=_SPAN_KINDS[span.kind],
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=_hex(span.parent_span_id),
                    start_time_unix_nano=span.start_time_unix_nano,
                    end_time_unix_nano=span.end_time_unix_nano,
                    attributes=_attributes(span.attributes),
                    status_code=_STATUS_CODES[span.status.code],
                    status_message=span.status.message,
                    events=[
                        ReceivedEvent(event.name, event.time_unix_nano, _attributes(event.attributes))
                        for event in span.events
                    ],
                    links=[
                        ReceivedLink(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
                        for link in span.links
                    ],
                    resource=resource,
                    scope_name=scope_spans.scope.name,
                    scope_version=scope_spans.scope.version,
                    transport=transport,
                )


def _exemplars(point: Any) -> list[ReceivedExemplar]:
    return [
        ReceivedExemplar(
            value=getattr(exemplar, exemplar.WhichOneof("value") or "as_double"),
            trace_id=_hex(exemplar.trace_id),
            span_id=_hex(exemplar.span_id),
            attributes=_attributes(exemplar.filtered_attributes),
        )
        for exemplar in point.exemplars
    ]


def _metric_fields(kind: str, data: Any, point: Any) -> dict[str, Any]:
    """The type-specific fields of one data point."""
    temporality = {1: "DELTA", 2: "CUMULATIVE"}.get(getattr(data, "aggregation_temporality", 0))
    if kind in ("sum", "gauge"):
        number = point.WhichOneof("value")
        monotonic = data.is_monotonic if kind == "sum" else None
        return {
            "value": getattr(point, number) if number else None,
            "monotonic": monotonic,
            "temporality": temporality if kind == "sum" else None,
        }
    if kind == "histogram":
        return {
            "temporality": temporality,
            "count": point.count,
            "sum": point.sum if point.HasField("sum") else None,
            "bucket_counts": list(point.bucket_counts),
            "explicit_bounds": list(point.explicit_bounds),
            "min": point.min if point.HasField("min") else None,
            "max": point.max if point.HasField("max") else None,
        }
    # exponential histograms and summaries: totals only; their buckets have no use in these tests
    return {"temporality": temporality, "count": point.count, "sum": point.sum}


def _metric_points(request: Any, transport: str) -> Iterator[ReceivedMetricPoint]:
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                data = getattr(metric, kind)
                for point in data.data_points:
                    yield ReceivedMetricPoint(
                        name=metric.name,
                        description=metric.description,
                        unit=metric.unit,
                        type=kind,
                        attributes=_attributes(point.attributes),
                        time_unix_nano=point.time_unix_nano,
                        exemplars=_exemplars(point) if kind != "summary" else [],
                        resource=resource,
                        scope_name=scope_metrics.scope.name,
                        transport=transport,
                        **_metric_fields(kind, data, point),
                    )


def _logs(request: Any, transport: str) -> Iterator[ReceivedLog]:
    for resource_logs in request.resource_logs:
        resource = _attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                yield ReceivedLog(
                    body=_any_value(record.body),
                    severity_number=record.severity_number,
                    severity_text=record.severity_text,
                    attributes=_attributes(record.attributes),
                    time_unix_nano=record.time_unix_nano,
                    observed_time_unix_nano=record.observed_time_unix_nano,
                    trace_id=_hex(record.trace_id),
                    span_id=_hex(record.span_id),
                    event_name=record.event_name,
                    resource=resource,
                    scope_name=scope_logs.scope.name,
                    transport=transport,
                )


class PayloadTooLarge(ValueError):
    """An export over one of the receiver's size limits: HTTP answers 413, gRPC ``RESOURCE_EXHAUSTED``."""


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded per its Content-Encoding, holding at most ``limit`` + 1 decoded bytes: a small
    compressed body can expand a thousandfold, so it is inflated with a cap, never in full."""
    if encoding in ("", "identity"):
        parts = [body]
    elif encoding in _WBITS:
        parts, size, rest = [], 0, body
        while rest:  # gzip allows several members back to back
            inflater = zlib.decompressobj(_WBITS[encoding])
            parts.append(inflater.decompress(rest, limit + 1 - size))
            size += len(parts[-1])
            if size > limit:
                break
            if not inflater.eof:
                raise ValueError(f"the {encoding} body is truncated")
            rest = inflater.unused_data if encoding == "gzip" else b""
    else:
        raise ValueError(f"unsupported Content-Encoding {encoding!r}; send gzip, deflate or none")
    if sum(map(len, parts)) > limit:
        raise PayloadTooLarge(
            f"the {encoding or 'request'} body decodes to more than {limit} bytes; "
            f"raise OtlpReceiver(max_decompressed_bytes=...) or export smaller batches"
        )
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        """Exporters post every few hundred milliseconds; a log line each would drown test output."""

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self._read_body(receiver.max_body_bytes)
        if body is None:
            return
        signal = next((name for name, spec in _SIGNALS.items() if spec[1] == self.path.split("?")[0]), None)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if signal is None:
            self._reply(404, b"", "text/plain")
        elif content_type != "application/x-protobuf":
            self._reply(415, b"send Content-Type: application/x-protobuf", "text/plain")
        else:
            try:
                encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
                payload = _decompress(body, encoding, receiver.max_decompressed_bytes)
                receiver._ingest(signal, payload, "http", encoding)
            except PayloadTooLarge as error:
                self._reply(413, str(error).encode(), "text/plain")
            except Exception as error:  # a malformed body must answer 400, not kill the handler thread
                self._reply(400, str(error).encode(), "text/plain")
            else:
                self._reply(200, _SIGNALS[signal][3]().SerializeToString(), "application/x-protobuf")

    def _read_body(self, limit: int) -> bytes | None:
        """The request body, or ``None`` once a refusal was answered (the body then is never read whole)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True  # the unread chunks would corrupt the next request
            self._reply(411, b"chunked bodies are not supported; send Content-Length", "text/plain")
            drain_unread_body(self.connection, limit)
            return None
        length_text = (self.headers.get("Content-Length") or "0").strip()
        if not length_text.isdigit():
            self.close_connection = True
            self._reply(400, b"Content-Length must be a non-negative integer", "text/plain")
            return None
        length = int(length_text)
        if length > limit:
            self.close_connection = True
            message = (
                f"request body has {length} bytes; the limit is {limit} bytes: "
                "raise OtlpReceiver(max_body_bytes=...) or export smaller batches"
            )
            self._reply(413, message.encode(), "text/plain")
            drain_unread_body(self.connection, length)
            return None
        return self.rfile.read(length)

    def _reply(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()


class _HttpServer(LoopbackHTTPServer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _HttpHandler)


class OtlpReceiver(BackgroundService["_HttpServer"]):
    """An OTLP receiver on 127.0.0.1: gRPC and HTTP/protobuf (plain, gzip, deflate) for traces, metrics, logs.

    Limits: an HTTP body over ``max_body_bytes``, or any export that decodes to more than
    ``max_decompressed_bytes``, is refused (HTTP 413, gRPC ``RESOURCE_EXHAUSTED``) and not stored;
    compressed bodies are inflated with that cap, so a gzip bomb never expands in memory.

    Usage::

        with OtlpReceiver() as rx:
            exporter = OTLPSpanExporter(endpoint=rx.grpc_endpoint, insecure=True)
            # or the HTTP exporter: endpoint=f"{rx.http_endpoint}/v1/traces"
            ...
            span = rx.wait_for_spans(lambda s: s.name == "cycles.reserve")[0]
            assert span.attributes["cycles.unit"] == "USD_MICROCENTS"
    """

    def __init__(
        self,
        grpc_workers: int = 4,
        *,
        max_body_bytes: int = DEFAULT_MAX_BYTES,
        max_decompressed_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        for name, value in (
            ("max_body_bytes", max_body_bytes),
            ("max_decompressed_bytes", max_decompressed_bytes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: give a positive number of bytes, e.g. 16 * 1024 * 1024")
        self.max_body_bytes, self.max_decompressed_bytes = max_body_bytes, max_decompressed_bytes
        self._grpc_workers = grpc_workers
        self._requests: list[ReceivedRequest] = []
        self._changed = threading.Condition()
        self._grpc_server: Any = None
        self._grpc_port = 0

    # ---- lifecycle ----

    thread_name = "otlp-receiver"

    def _make_server(self) -> _HttpServer:
        self._grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._grpc_workers),
            # gRPC checks it on the wire and again while decompressing, answering RESOURCE_EXHAUSTED.
            options=[("grpc.max_receive_message_length", self.max_decompressed_bytes)],
        )
        self._grpc_server.add_generic_rpc_handlers(
            [self._grpc_handler(signal, spec[0]) for signal, spec in _SIGNALS.items()]
        )
        self._grpc_port = self._grpc_server.add_insecure_port("127.0.0.1:0")
        self._grpc_server.start()
        return _HttpServer(self)

    def _stopped(self) -> None:
        self._grpc_server.stop(grace=None).wait(timeout=5)

    @property
    def grpc_endpoint(self) -> str:
        """For the gRPC exporters: ``OTLPSpanExporter(endpoint=rx.grpc_endpoint, insecure=True)``."""
        self._running()
        return f"http://127.0.0.1:{self._grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL: the HTTP exporters take ``{http_endpoint}/v1/traces`` (``/v1/metrics``, ``/v1/logs``)."""
        server = self._running()
        return f"http://127.0.0.1:{server.server_address[1]}"

    # ---- what was received ----

    def spans(self) -> list[ReceivedSpan]:
        return self._collect("traces", _spans)

    def metrics(self) -> list[ReceivedMetricPoint]:
        """Every data point of every export, oldest first (cumulative exports repeat a point each time)."""
        return self._collect("metrics", _metric_points)

    def logs(self) -> list[ReceivedLog]:
        return self._collect("logs", _logs)

    def requests(self) -> list[ReceivedRequest]:
        """Every export request received, in arrival order."""
        with self._changed:
            return list(self._requests)

    def raw_bytes(self) -> list[bytes]:
        """Every request body received, decompressed, in arrival order."""
        return [request.body for request in self.requests()]

    def clear(self) -> None:
        with self._changed:
            self._requests.clear()

    def wait_for_spans(
        self, until: int | Callable[[ReceivedSpan], bool], timeout: float = 5.0
    ) -> list[ReceivedSpan]:
        """With a count: all spans once at least that many arrived. With a predicate: the spans that match,
        once at least one does. Raises ``TimeoutError`` naming what did arrive."""
        if isinstance(until, int):
            count = until
            return self._wait(self.spans, lambda spans: len(spans) >= count, f"{count} spans", timeout)
        matching = self._wait(
            lambda: [span for span in self.spans() if until(span)],
            bool,
            "a span matching the predicate",
            timeout,
        )
        return matching

    def wait_for_metric(self, name: str, timeout: float = 5.0) -> list[ReceivedMetricPoint]:
        """The points of metric ``name`` once at least one arrived; raises ``TimeoutError`` otherwise."""
        return self._wait(
            lambda: [point for point in self.metrics() if point.name == name],
            bool,
            f"metric {name!r}",
            timeout,
        )

    def wait_for_logs(self, count: int = 1, timeout: float = 5.0) -> list[ReceivedLog]:
        return self._wait(self.logs, lambda logs: len(logs) >= count, f"{count} log records", timeout)

    def to_json(self) -> str:
        """Everything received as JSON ``{"spans": [...], "metrics": [...], "logs": [...]}``."""
        document = {
            "spans": [asdict(span) for span in self.spans()],
            "metrics": [asdict(point) for point in self.metrics()],
            "logs": [asdict(log) for log in self.logs()],
        }
        return json.dumps(document, indent=2, default=_json_default)

    def write_json(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.to_json(), encoding="utf-8")
        return target

    # ---- internals ----

    def _ingest(self, signal: str, payload: bytes, transport: str, encoding: str = "") -> None:
        message = _SIGNALS[signal][2].FromString(payload)  # parse first: a bad body is rejected, not stored
        with self._changed:
            self._requests.append(ReceivedRequest(signal, transport, encoding, payload, message))
            self._changed.notify_all()

    def _grpc_handler(self, signal: str, service: str) -> Any:
        response: bytes = _SIGNALS[signal][3]().SerializeToString()

        def export(payload: bytes, context: Any) -> bytes:
            try:
                self._ingest(signal, payload, "grpc")
            except Exception as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            return response

        # No (de)serializers: the handler sees the exact bytes the exporter sent.
        handler = grpc.unary_unary_rpc_method_handler(export)
        return grpc.method_handlers_generic_handler(service, {"Export": handler})

    def _collect(self, signal: str, convert: Callable[[Any, str], Iterator[_T]]) -> list[_T]:
        received = [request for request in self.requests() if request.signal == signal]
        return [item for request in received for item in convert(request.message, request.transport)]

    def _wait(self, get: Callable[[], _T], done: Callable[[_T], bool], what: str, timeout: float) -> _T:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = get()
                if done(value):
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
        names = sorted({span.name for span in self.spans()} | {point.name for point in self.metrics()})
        raise TimeoutError(
            f"OtlpReceiver got no {what} within {timeout} s; it received: {names or 'nothing'}"
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
