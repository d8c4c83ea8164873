"""A loopback HTTP server on a daemon thread, with start/stop and context-manager use."""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any, Generic, TypeVar

from typing_extensions import Self


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can cut its idle keep-alive connections when it stops."""

    daemon_threads = True
    # SO_REUSEADDR: a stopped server leaves its accepted connections in TIME_WAIT, and without it the same
    # port cannot be bound again for a minute. Linux still refuses a port another socket listens on.
    allow_reuse_address = True
    # SO_REUSEPORT would let two servers share one port: a taken port must stay an error.
    allow_reuse_port = False
    request_queue_size = 1024  # dozens of clients connect at once; the default backlog of 5 drops SYNs

    def __init__(self, address: tuple[str, int], handler: type[Any]) -> None:
        self.stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        with self._open_lock:
            self._open.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut idle keep-alive connections so clients see a closed socket, not a hang."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


DRAIN_SECONDS = 1.0  # how long a refused body is read and dropped before the connection closes


def drain_unread_body(connection: socket.socket, unread: int) -> None:
    """After answering, read and drop a refused request's body (briefly): closing on unread bytes resets
    the connection, and the reset can destroy the answer before the client reads it."""
    try:
        connection.shutdown(socket.SHUT_WR)
        connection.settimeout(DRAIN_SECONDS)
        while unread > 0 and (chunk := connection.recv(min(unread, 65_536))):
            unread -= len(chunk)
    except OSError:
        pass  # the client went away: nothing left to protect


ServerT = TypeVar("ServerT", bound=LoopbackHTTPServer)


class BackgroundService(Generic[ServerT]):
    """Owns one :class:`LoopbackHTTPServer` served on a daemon thread.

    Subclasses build the server in :meth:`_make_server` and may extend :meth:`_stopped`.
    """

    thread_name = "loopback"
    _http: ServerT | None = None
    _http_thread: threading.Thread | None = None

    def _make_server(self) -> ServerT:
        raise NotImplementedError

    def _stopped(self) -> None:
        """Called after the HTTP server has stopped; release anything else here."""

    def start(self) -> Self:
        """Bind and serve on a background thread; raises ``OSError`` when the port is taken."""
        if self._http is not None:
            return self
        self._http = self._make_server()
        self._http_thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.thread_name}-{self._http.server_address[1]}",
            daemon=True,
        )
        self._http_thread.start()
        return self

    def stop(self) -> None:
        http, self._http = self._http, None
        if http is None:
            return
        http.stopping.set()
        http.shutdown()
        http.close_connections()
        http.server_close()
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
        self._stopped()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def http_port(self) -> int:
        """The bound port; raises ``RuntimeError`` when the service is not running."""
        return int(self._running().server_address[1])

    def _running(self) -> ServerT:
        if self._http is None:
            raise RuntimeError(
                f"{type(self).__name__} is not running: call start() or use it as a context manager"
            )
        return self._http
