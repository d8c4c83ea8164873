"""OtlpReceiver size limits over real HTTP and gRPC: oversized and bomb bodies are refused, never expanded."""

from __future__ import annotations

import socket
import tracemalloc
import urllib.error
import urllib.request
import zlib

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cycles_otel.testing.otlp_receiver import DEFAULT_MAX_BYTES, OtlpReceiver

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
PROTOBUF = {"Content-Type": "application/x-protobuf"}
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def compressed_zeros(encoding: str, size: int) -> bytes:
    """``size`` zero bytes compressed (built a MiB at a time, so the test never holds them expanded)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, _WBITS[encoding])
    chunk = bytes(MIB)
    parts = [compressor.compress(chunk) for _ in range(size // MIB)]
    return b"".join([*parts, compressor.flush()])


def export_request(size: int) -> bytes:
    """A valid ExportTraceServiceRequest of exactly ``size`` bytes (one span, its name padded)."""
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = bytes(range(1, 17)), bytes(range(1, 9))
    span.name = "x" * size
    while (overshoot := request.ByteSize() - size) > 0:  # the length prefixes grow with the name
        span.name = span.name[:-overshoot]
    assert request.ByteSize() == size
    return bytes(request.SerializeToString())


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, str]:
    """``(status, Connection header, body text)`` of one POST."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return (
                response.status,
                response.headers.get("Connection", ""),
                response.read().decode(errors="replace"),
            )
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Connection", ""), error.read().decode(errors="replace")


def export_one_span(exporter: SpanExporter, name: str, **attributes: str) -> SpanExportResult:
    """What the real exporter reports for one finished span."""
    finished = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(finished))
    provider.get_tracer("limits.test").start_span(name, attributes=attributes).end()
    try:
        return exporter.export(finished.get_finished_spans())
    finally:
        exporter.shutdown()


def http_exporter(
    otlp_receiver: OtlpReceiver, compression: Compression = Compression.Gzip
) -> HttpSpanExporter:
    return HttpSpanExporter(endpoint=f"{otlp_receiver.http_endpoint}/v1/traces", compression=compression)


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """299 KiB of gzip that expands to 300 MiB."""
    return compressed_zeros("gzip", 300 * MIB)


def test_a_300_mib_gzip_bomb_gets_413_without_ever_expanding(
    otlp_receiver: OtlpReceiver, gzip_bomb: bytes
) -> None:
    assert len(gzip_bomb) < 300 * 1024 < DEFAULT_MAX_BYTES  # small on the wire: only the expansion is big
    tracemalloc.start()
    try:
        status, _, text = post(
            f"{otlp_receiver.http_endpoint}/v1/traces", gzip_bomb, {**PROTOBUF, "Content-Encoding": "gzip"}
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Held at most: zlib's output blocks up to the cap and the bytes they are joined into (about twice the
    # cap), never the 300 MiB the bomb expands to.
    assert peak < 3 * DEFAULT_MAX_BYTES, f"peak {peak / MIB:.0f} MiB"
    assert status == 413 and "max_decompressed_bytes" in text, text
    # The receiver still serves, and kept nothing of the bomb.
    assert export_one_span(http_exporter(otlp_receiver), "after the bomb") == SpanExportResult.SUCCESS
    assert [span.name for span in otlp_receiver.wait_for_spans(1)] == ["after the bomb"]
    assert len(otlp_receiver.requests()) == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "identity"])
def test_the_decoded_size_limit_is_exact_for_every_encoding(encoding: str) -> None:
    limit = 64 * 1024
    headers = {**PROTOBUF, "Content-Encoding": encoding}

    def encode(payload: bytes) -> bytes:
        if encoding == "identity":
            return payload
        compressor = zlib.compressobj(6, zlib.DEFLATED, _WBITS[encoding])
        return compressor.compress(payload) + compressor.flush()

    with OtlpReceiver(max_decompressed_bytes=limit) as rx:
        url = f"{rx.http_endpoint}/v1/traces"
        assert post(url, encode(export_request(limit)), headers)[0] == 200
        status, _, text = post(url, encode(export_request(limit + 1)), headers)
        assert status == 413 and f"more than {limit} bytes" in text, text
        assert [len(request.body) for request in rx.requests()] == [limit]


def test_gzip_members_back_to_back_count_against_one_limit() -> None:
    half = export_request(40 * 1024)
    member = zlib.compressobj(6, zlib.DEFLATED, _WBITS["gzip"])
    one = member.compress(half) + member.flush()
    with OtlpReceiver(max_decompressed_bytes=64 * 1024) as rx:
        url, headers = f"{rx.http_endpoint}/v1/traces", {**PROTOBUF, "Content-Encoding": "gzip"}
        assert post(url, one, headers)[0] == 200
        assert post(url, one + one, headers)[0] == 413  # 80 KiB decoded in all
        assert len(rx.requests()) == 1


def test_a_body_over_max_body_bytes_gets_413_and_the_connection_closes() -> None:
    with OtlpReceiver(max_body_bytes=1024) as rx:
        url = f"{rx.http_endpoint}/v1/traces"
        status, connection, text = post(url, export_request(4096), PROTOBUF)
        assert (status, connection) == (413, "close")
        assert "request body has 4096 bytes; the limit is 1024 bytes" in text and "max_body_bytes" in text
        assert post(url, export_request(512), PROTOBUF)[0] == 200
        assert [len(request.body) for request in rx.requests()] == [512]


def test_a_huge_declared_length_is_refused_before_any_body_is_read(otlp_receiver: OtlpReceiver) -> None:
    port = int(otlp_receiver.http_endpoint.rsplit(":", 1)[1])
    head = (
        "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
        f"Content-Length: {10**12}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head.encode() + b"\0" * 1024)
        answer = connection.recv(65_536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert otlp_receiver.requests() == []


def test_chunked_bodies_get_411(otlp_receiver: OtlpReceiver) -> None:
    port = int(otlp_receiver.http_endpoint.rsplit(":", 1)[1])
    request = (
        b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: connection.recv(65_536), b""))
    assert answer.startswith(b"HTTP/1.1 411") and b"send Content-Length" in answer, answer[:200]


def test_the_real_http_exporter_gets_a_413_and_does_not_retry() -> None:
    with OtlpReceiver(max_decompressed_bytes=MIB) as rx:
        # 2 MiB of one letter gzips to a few KiB: only the decoded size is over the limit.
        result = export_one_span(http_exporter(rx), "too big", blob="a" * (2 * MIB))
        assert result == SpanExportResult.FAILURE
        assert rx.requests() == []
        assert export_one_span(http_exporter(rx), "small") == SpanExportResult.SUCCESS
        assert [span.name for span in rx.wait_for_spans(1)] == ["small"]


@pytest.mark.parametrize(
    "compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip], ids=["plain", "gzip"]
)
def test_grpc_refuses_a_message_over_the_limit_with_resource_exhausted(
    compression: grpc.Compression,
) -> None:
    with OtlpReceiver(max_decompressed_bytes=MIB) as rx:
        target = rx.grpc_endpoint.removeprefix("http://")
        with grpc.insecure_channel(target) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            with pytest.raises(grpc.RpcError) as refused:
                export(export_request(MIB + 1), compression=compression, timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            export(export_request(MIB), compression=compression, timeout=10)  # at the limit: accepted
        assert [len(request.body) for request in rx.requests()] == [MIB]
        exporter = GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True)
        assert export_one_span(exporter, "after") == SpanExportResult.SUCCESS


@pytest.mark.parametrize("field", ["max_body_bytes", "max_decompressed_bytes"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_limits_must_be_positive_byte_counts(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{field}=.*positive number of bytes"):
        OtlpReceiver(**{field: value})  # type: ignore[arg-type]
