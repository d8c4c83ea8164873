"""``configure_telemetry()``: providers, OTLP exporters and a Prometheus endpoint in one call, for apps."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, make_server

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from cycles_otel.cardinality import CardinalityGuard
from cycles_otel.content import ConversationRedactor, capture_content_enabled
from cycles_otel.instruments import get_instruments

PROMETHEUS_PORT_ENV = "CYCLES_OTEL_PROMETHEUS_PORT"
PROTOCOL_ENV = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENDPOINT_ENVS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)
TIMEOUT_ENVS = (
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
)
PROTOCOLS = ("http/protobuf", "grpc")
# A collector that is down must cost the app little: each export gives up after this long
# (unless OTEL_EXPORTER_OTLP_*TIMEOUT says otherwise), in the processors' background threads.
EXPORT_TIMEOUT_SECONDS = 5.0
# How long the metrics endpoint waits on a scraper's socket (for its request, or for it to take
# the answer) before it drops the connection; a scrape itself takes milliseconds.
REQUEST_TIMEOUT_SECONDS = 10.0

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from wsgiref.types import ErrorStream, StartResponse, WSGIApplication, WSGIEnvironment


class ListenError(ValueError):
    """The Prometheus endpoint cannot listen where asked: the port is taken, or the host is not ours."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        self.host, self.port = host, port
        self.reason = error.strerror or str(error)
        self.port_taken = error.errno in (errno.EADDRINUSE, errno.EACCES)
        if self.port_taken:
            where, fix = f"prometheus_port={port} on {host}", "pick a free port, or 0 for any free port"
            fix += f" (env {PROMETHEUS_PORT_ENV})"
        else:
            where, fix = f"prometheus_host={host!r}", "use an address of this machine, e.g. 127.0.0.1 or ::1"
        super().__init__(f"{where}: cannot listen ({self.reason}); {fix}")


def metrics_app(registry: CollectorRegistry) -> WSGIApplication:
    """prometheus_client's WSGI app for ``registry``, at ``GET /metrics`` and nowhere else.

    Other paths answer 404 and other methods 405 (prometheus_client alone serves every path and
    answers OPTIONS); a registry that fails to render answers 500 and is logged.
    """
    serve = make_wsgi_app(registry)

    def answer(
        start_response: StartResponse, status: str, text: str, *headers: tuple[str, str]
    ) -> list[bytes]:
        body = text.encode()
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *headers])
        return [body]

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            return answer(start_response, "404 Not Found", "only /metrics is served here\n")
        if environ.get("REQUEST_METHOD") != "GET":
            return answer(
                start_response, "405 Method Not Allowed", "read-only endpoint: GET only\n", ("Allow", "GET")
            )
        try:
            rendered: Iterable[bytes] = serve(environ, start_response)
        except Exception:
            _log.warning("rendering /metrics failed", exc_info=True)
            return answer(start_response, "500 Internal Server Error", "metrics collection failed\n")
        return rendered

    return app


class _ScraperLog(io.StringIO):
    """wsgiref's error stream for one request, into the debug log: a scraper that hangs up or
    stalls mid-response is its own problem, not a traceback on the app's stderr."""

    def flush(self) -> None:
        if text := self.getvalue().strip():
            _log.debug("a scrape failed: %s", text)
        self.seek(0)
        self.truncate()


class _ScrapeHandler(WSGIRequestHandler):
    """One request per connection, each socket operation bounded by ``timeout`` (set per server),
    so a client that connects and sends nothing, or stops reading, cannot hold a thread."""

    timeout = REQUEST_TIMEOUT_SECONDS

    def get_stderr(self) -> ErrorStream:
        return _ScraperLog()

    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        pass


class _ScrapeServer(ThreadingWSGIServer):
    """prometheus_client's thread-per-request server, quiet about clients that time out or hang up."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("a scrape from %s failed", client_address, exc_info=True)


def _address_family(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """IPv4 or IPv6, as ``getaddrinfo`` picks for ``host`` (what prometheus_client's own server does)."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return family, str(address[0])


class MetricsServer:
    """A Prometheus endpoint for one registry: prometheus_client's WSGI server, in a daemon thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        family, address = _address_family(host, port)
        server_class = type("MetricsWSGIServer", (_ScrapeServer,), {"address_family": family})
        handler_class = type("MetricsRequestHandler", (_ScrapeHandler,), {"timeout": request_timeout})
        self._httpd: _ScrapeServer = make_server(
            address, port, metrics_app(registry), server_class, handler_class
        )
        self.host, self.port = host, int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="cycles-metrics",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving; returns once every request in progress has finished (each is bounded)."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@dataclass
class TelemetryHandle:
    """What :func:`configure_telemetry` set up; :meth:`shutdown` flushes and stops it all."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    prometheus_url: str | None = None
    _server: MetricsServer | None = field(default=None, repr=False)
    _instrumentor: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _done: bool = field(default=False, repr=False)

    def shutdown(self) -> None:
        """Flush spans and metrics, stop exporting and serving; safe to call more than once."""
        with self._lock:
            if self._done:
                return
            self._done = True
        if self._instrumentor is not None:
            with contextlib.suppress(Exception):
                self._instrumentor.uninstrument()
        if self._server is not None:  # first: no scrape may read a provider that is shutting down
            self._server.close()
        for provider in (self.tracer_provider, self.meter_provider):
            try:
                provider.shutdown()
            except Exception:  # shutting down must not fail the app's exit
                _log.warning("telemetry shutdown failed", exc_info=True)

    def __enter__(self) -> TelemetryHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


def _check_endpoints(env: Mapping[str, str]) -> None:
    for name in ENDPOINT_ENVS:
        value = env.get(name, "").strip()
        if not value:
            continue
        parts = urlsplit(value)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
            raise ValueError(
                f"{name}={value!r} is not an endpoint URL: set it to e.g. http://localhost:4318 "
                "(http/protobuf) or http://localhost:4317 (grpc)"
            )


def _protocol(otlp_protocol: str | None, env: Mapping[str, str]) -> str:
    source, value = "otlp_protocol", otlp_protocol
    if value is None:
        source, value = PROTOCOL_ENV, env.get(PROTOCOL_ENV, "").strip() or PROTOCOLS[0]
    if value not in PROTOCOLS:
        raise ValueError(f"{source}={value!r} is not supported: use one of {', '.join(PROTOCOLS)}")
    return value


def _prometheus_port(port: int | None, env: Mapping[str, str]) -> int | None:
    source: str = "prometheus_port"
    value: object = port
    if port is None:
        raw = env.get(PROMETHEUS_PORT_ENV, "").strip()
        if not raw:
            return None
        source = PROMETHEUS_PORT_ENV
        try:
            value = int(raw)
        except ValueError:
            value = raw
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(
            f"{source}={value!r} is not a port: use a whole number 1-65535, or 0 for any free port"
        )
    return value


def _exporters(protocol: str, env: Mapping[str, str]) -> tuple[SpanExporter, MetricReader]:
    timeout = None if any(env.get(name) for name in TIMEOUT_ENVS) else EXPORT_TIMEOUT_SECONDS
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

        spans: SpanExporter = GrpcSpans(timeout=timeout)
        metric_exporter: Any = GrpcMetrics(timeout=timeout)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

        spans = HttpSpans(timeout=timeout)
        metric_exporter = HttpMetrics(timeout=timeout)
    export_timeout_ms = 1000 * (timeout or EXPORT_TIMEOUT_SECONDS)
    return spans, PeriodicExportingMetricReader(metric_exporter, export_timeout_millis=export_timeout_ms)


def _instrument_cycles(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Any:
    try:
        from cycles_otel.protocol import CyclesInstrumentor
    except ImportError:
        _log.debug("cycles_otel.protocol is unavailable; runcycles calls stay uninstrumented")
        return None
    instrumentor = CyclesInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        _log.warning("runcycles is already instrumented; configure_telemetry leaves that instrumentation be")
        return None
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return instrumentor


class ScrapedMetricReader(PrometheusMetricReader):
    """The Prometheus reader, collected by each scrape and never by ``force_flush``.

    ``MeterProvider.force_flush()`` makes every reader collect; the upstream Prometheus reader
    queues that collection and serves it beside the next scrape's own, so the scrape carries every
    series twice and Prometheus rejects it. A pull reader has nothing to push: flushing is a no-op.
    """

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True


def configure_telemetry(
    service_name: str,
    *,
    otlp: bool | None = None,
    otlp_protocol: str | None = None,
    prometheus_port: int | None = None,
    prometheus_host: str = "127.0.0.1",
    cardinality_limit: int | None = None,
    cardinality_allow: Iterable[str] = (),
    set_global: bool = True,
    resource_attributes: Mapping[str, Any] | None = None,
    instrument_cycles: bool = True,
) -> TelemetryHandle:
    """Tracer and meter providers exporting over OTLP and/or serving Prometheus ``/metrics``.

    ``otlp`` defaults to on when an ``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set; the exporters read the
    standard ``OTEL_EXPORTER_OTLP_*`` variables. ``prometheus_port`` defaults to
    ``CYCLES_OTEL_PROMETHEUS_PORT`` (unset: no endpoint; 0: any free port). Bad values raise
    ``ValueError`` naming the parameter or variable before anything starts. Unless
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``, the message text AutoGen's runtime
    spans carry is replaced before export (the spans stay).
    """
    env = os.environ
    if not isinstance(service_name, str) or not service_name.strip():
        raise ValueError(f"service_name={service_name!r}: pass a non-empty name, e.g. 'research-agents'")
    protocol = _protocol(otlp_protocol, env)
    if otlp is None:
        otlp = any(env.get(name, "").strip() for name in ENDPOINT_ENVS)
    if otlp:
        _check_endpoints(env)
    port = _prometheus_port(prometheus_port, env)
    guard = CardinalityGuard.from_env(cardinality_limit, cardinality_allow)

    resource = Resource.create({**(resource_attributes or {}), SERVICE_NAME: service_name})
    readers: list[MetricReader] = []
    server: MetricsServer | None = None
    if port is not None:
        registry = CollectorRegistry(auto_describe=True)
        try:
            server = MetricsServer(registry, prometheus_host, port)
        except OSError as exc:
            raise ListenError(prometheus_host, port, exc) from exc
        readers.append(ScrapedMetricReader(registry=registry))
    tracer_provider = TracerProvider(resource=resource)
    if not capture_content_enabled(env):
        tracer_provider.add_span_processor(ConversationRedactor())
    if otlp:
        span_exporter, otlp_reader = _exporters(protocol, env)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        readers.append(otlp_reader)
    # Exemplars reach Prometheus only through OTLP; without it they are pure per-measurement cost.
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=readers,
        exemplar_filter=None if otlp else AlwaysOffExemplarFilter(),
    )
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    # After the global is set: instruments made on it before (the API's proxy) become this provider's.
    get_instruments(meter_provider, guard)
    instrumentor = _instrument_cycles(tracer_provider, meter_provider) if instrument_cycles else None
    return TelemetryHandle(
        tracer_provider,
        meter_provider,
        server.url if server is not None else None,
        _server=server,
        _instrumentor=instrumentor,
    )


__all__ = ["ListenError", "TelemetryHandle", "configure_telemetry"]
