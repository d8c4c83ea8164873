"""A loopback TCP server that answers each HTTP request with bytes a test chooses, and keeps what it read.

For the failures a conformant authority never produces: a reset, a truncated or garbled answer, an
HTML error page, a redirect. ``RawHttpServer(answer)`` calls ``answer(connection, request_bytes)``
for every request; the answer writes what it likes and returns whether to keep the connection.
It counts the connections it accepted and those the client closed (``wait_until`` waits on them).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType

Answer = Callable[[socket.socket, bytes], bool]


class RawHttpServer:
    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed_by_client = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, name="raw-http", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_until(self, condition: Callable[[RawHttpServer], bool], seconds: float = 5.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: condition(self), seconds)

    def __enter__(self) -> RawHttpServer:
        self._accepting.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._changed:
                self.connections += 1
                self._changed.notify_all()
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(5)
        buffer = b""
        with connection:
            while True:
                request, buffer = _read_request(connection, buffer)
                if request is None:
                    with self._changed:
                        self.closed_by_client += 1
                        self._changed.notify_all()
                    return
                with self._changed:
                    self.requests.append(request)
                    self._changed.notify_all()
                if not self._answer(connection, request):
                    return


def _read_request(connection: socket.socket, buffer: bytes) -> tuple[bytes | None, bytes]:
    """One request (head and Content-Length body) and what was read past it; None when the peer left."""
    while b"\r\n\r\n" not in buffer:
        chunk = _recv(connection)
        if not chunk:
            return None, b""
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = _recv(connection)
        if not chunk:
            return None, b""
        rest += chunk
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


def _recv(connection: socket.socket) -> bytes:
    try:
        return connection.recv(65_536)
    except OSError:
        return b""


def reply(raw: bytes, *, keep: bool = False) -> Answer:
    """An answer that writes ``raw`` (a status line, headers and body) and closes unless ``keep``."""

    def answer(connection: socket.socket, request: bytes) -> bool:
        connection.sendall(raw)
        return keep

    return answer


def reset(connection: socket.socket, request: bytes) -> bool:
    """Abort the connection (RST) instead of answering."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return False


def json_answer(status_line: str, body: bytes = b"{}", headers: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status_line}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{headers}\r\n"
    ).encode() + body
