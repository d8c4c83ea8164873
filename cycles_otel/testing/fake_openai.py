"""``FakeOpenAI``: an OpenAI-compatible chat completions endpoint on loopback, scripted and deterministic.

Usage::

    with FakeOpenAI() as api:
        api.script([ScriptedReply(tool_calls=[("get_weather", {"city": "Paris"})]), ScriptedReply("Sunny.")])
        client = OpenAIChatCompletionClient(model="gpt-4o", base_url=api.base_url, api_key="sk-test")
        ...
        assert api.requests[0].headers["authorization"] == "Bearer sk-test"

Token usage is real and deterministic (see :func:`count_prompt_tokens`): every message costs
``MESSAGE_OVERHEAD`` plus the whitespace-separated words of its text, name and tool calls, each
image ``IMAGE_TOKENS``; the request adds ``REPLY_PRIMING`` plus the words of each tool's JSON
definition. A reply costs the words of its content plus the words of each tool call's name and
arguments. ``max_tokens`` / ``max_completion_tokens`` cut the reply's text to that many words
(``finish_reason="length"``); tool calls are never cut.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from cycles_otel.testing.loopback import BackgroundService, LoopbackHTTPServer

__all__ = [
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD",
    "REPLY_PRIMING",
    "FakeOpenAI",
    "FakeOpenAIFaults",
    "OpenAIRequest",
    "ScriptedReply",
    "count_completion_tokens",
    "count_prompt_tokens",
]

MESSAGE_OVERHEAD = 3
REPLY_PRIMING = 3
IMAGE_TOKENS = 85
# What OpenAI answers in ``model`` for an alias; autogen-ext warns when the answer differs from its own map.
MODEL_SNAPSHOTS = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
}
_WORDS: tuple[str, ...] = (
    "budget", "agent", "token", "model", "reply", "cycle", "plan", "answer", "result", "check", "trace",
    "span", "metric", "reserve", "commit", "release", "limit", "cost", "value", "report", "summary",
)  # fmt: skip
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error"}


@dataclass(frozen=True)
class ScriptedReply:
    """One scripted answer: text, tool calls ``(name, arguments)`` (a mapping or raw JSON text), or both."""

    content: str | None = None
    tool_calls: Sequence[tuple[str, Mapping[str, Any] | str]] = ()
    finish_reason: str | None = None  # default: "tool_calls" with tool calls, else "stop" (or "length")


@dataclass
class OpenAIRequest:
    """One request the endpoint received; ``usage`` is what it answered (None for errors, other paths)."""

    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    body: Any
    status: int = 0
    usage: dict[str, Any] | None = None


@dataclass
class _Fault:
    status: int | None = None
    message: str = ""
    retry_after: float | None = None
    delay: float = 0.0
    cut_after_chunks: int | None = None


@dataclass
class FakeOpenAIFaults:
    """Faults for the next chat completion requests, taken in order (one per request)."""

    _queue: deque[_Fault] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(
        self, count: int = 1, status: int = 500, message: str | None = None, retry_after: float | None = 0.001
    ) -> None:
        """Answer the next ``count`` requests with ``status`` and an OpenAI error body. ``retry_after``
        (seconds, sent as ``retry-after-ms``) keeps the SDK's automatic retries fast; None omits it."""
        text = message or f"fake failure with HTTP {status}"
        self._add(count, _Fault(status=status, message=text, retry_after=retry_after))

    def delay_next(self, count: int = 1, seconds: float = 0.1) -> None:
        self._add(count, _Fault(delay=seconds))

    def cut_stream_next(self, count: int = 1, after_chunks: int = 2) -> None:
        """Close the connection of the next ``count`` streamed replies after ``after_chunks`` chunks."""
        self._add(count, _Fault(cut_after_chunks=after_chunks))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def _add(self, count: int, fault: _Fault) -> None:
        with self._lock:
            self._queue.extend(fault for _ in range(count))

    def _take(self) -> _Fault:
        with self._lock:
            return self._queue.popleft() if self._queue else _Fault()


def _words(text: str) -> int:
    return len(text.split())


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return _words(content)
    if isinstance(content, list):
        return sum(
            IMAGE_TOKENS if part.get("type") == "image_url" else _words(str(part.get("text", "")))
            for part in content
            if isinstance(part, dict)
        )
    return 0


def count_prompt_tokens(body: Mapping[str, Any]) -> int:
    """The ``prompt_tokens`` reported for a chat completion request body (the rule is in the module doc)."""
    total = REPLY_PRIMING
    for message in body.get("messages") or []:
        total += (
            MESSAGE_OVERHEAD + _content_tokens(message.get("content")) + _words(str(message.get("name", "")))
        )
        for call in message.get("tool_calls") or []:
            function = call.get("function", {})
            total += _words(function.get("name", "")) + _words(function.get("arguments", ""))
    for tool in body.get("tools") or []:
        total += _words(json.dumps(tool.get("function", tool), sort_keys=True))
    return total


def count_completion_tokens(content: str | None, tool_calls: Iterable[tuple[str, str]] = ()) -> int:
    """The ``completion_tokens`` of a reply: words of the text plus words of each (name, arguments JSON)."""
    return _words(content or "") + sum(_words(name) + _words(arguments) for name, arguments in tool_calls)


@dataclass
class _Completion:
    id: str
    model: str
    content: str | None
    tool_calls: list[tuple[str, str, str]]  # (id, name, arguments JSON)
    finish_reason: str
    usage: dict[str, Any]


class FakeOpenAI(BackgroundService["_Server"]):
    """OpenAI-compatible ``/v1/chat/completions`` (plain and SSE streaming) and ``/v1/models`` on 127.0.0.1.

    Replies come from :meth:`script` first (FIFO), then a deterministic text derived from ``seed`` and the
    request's messages. ``latency`` delays every answer; ``faults`` injects errors, delays and cut streams.
    ``api_key`` (optional) is the only key accepted; without it any ``Bearer`` key is.
    """

    def __init__(self, latency: float = 0.0, seed: int = 0, api_key: str | None = None) -> None:
        self.latency, self.seed, self.api_key = latency, seed, api_key
        self.faults = FakeOpenAIFaults()
        self._script: deque[ScriptedReply] = deque()
        self._requests: list[OpenAIRequest] = []
        self._lock = threading.Lock()
        self._counter = 0

    # ---- lifecycle ----

    thread_name = "fake-openai"

    def _make_server(self) -> _Server:
        return _Server(self)

    @property
    def base_url(self) -> str:
        """For ``OpenAIChatCompletionClient(base_url=...)`` / ``openai.OpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self.http_port}/v1"

    # ---- test surface ----

    def script(self, replies: Iterable[ScriptedReply | str]) -> None:
        """Queue replies (a plain string is a text reply); each chat completion request takes the next one."""
        with self._lock:
            self._script.extend(ScriptedReply(r) if isinstance(r, str) else r for r in replies)

    @property
    def requests(self) -> list[OpenAIRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def pending_script(self) -> int:
        """Scripted replies not yet used."""
        with self._lock:
            return len(self._script)

    def count_prompt_tokens(self, body: Mapping[str, Any]) -> int:
        return count_prompt_tokens(body)

    def clear(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()
        self.faults.clear()

    # ---- answering (called on handler threads) ----

    def _complete(self, body: Mapping[str, Any]) -> _Completion:
        with self._lock:
            self._counter += 1
            number = self._counter
            scripted = self._script.popleft() if self._script else None
        reply = scripted or ScriptedReply(self._default_text(body))
        tool_calls = [
            (f"call_{number:04d}_{index}", name, args if isinstance(args, str) else json.dumps(args))
            for index, (name, args) in enumerate(reply.tool_calls)
        ]
        content, truncated = reply.content, False
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        if content and isinstance(cap, int) and _words(content) > cap:
            kept = re.match(r"\s*(?:\S+\s*){%d}" % cap, content)  # noqa: UP031  (a regex, not a format)
            content, truncated = (kept.group(0).rstrip() if kept else ""), True
        finish = reply.finish_reason or ("length" if truncated else "tool_calls" if tool_calls else "stop")
        prompt = count_prompt_tokens(body)
        completion = count_completion_tokens(content, [(name, args) for _, name, args in tool_calls])
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        model = str(body["model"])
        return _Completion(
            f"chatcmpl-fake{number:06d}",
            MODEL_SNAPSHOTS.get(model, model),
            content,
            tool_calls,
            finish,
            usage,
        )

    def _default_text(self, body: Mapping[str, Any]) -> str:
        digest = hashlib.sha256(f"{self.seed}\0{json.dumps(body.get('messages'), sort_keys=True)}".encode())
        rng = random.Random(digest.digest())
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 12))]
        return " ".join(words).capitalize() + "."

    def _record(self, request: OpenAIRequest) -> None:
        with self._lock:
            self._requests.append(request)


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body shape."""
    kind = _ERROR_TYPES.get(status) or ("requests" if status == 429 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _message(completion: _Completion) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.content if completion.content or not completion.tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if completion.tool_calls:
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            for call_id, name, args in completion.tool_calls
        ]
    return message


def _deltas(completion: _Completion) -> list[tuple[dict[str, Any], str | None]]:
    """(delta, finish_reason) for each streamed choice chunk, in OpenAI's order."""
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": "" if completion.content else None, "refusal": None}, None)
    ]
    deltas += [({"content": piece}, None) for piece in re.findall(r"\s*\S+|\s+$", completion.content or "")]
    for index, (call_id, name, args) in enumerate(completion.tool_calls):
        head = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        deltas.append(({"tool_calls": [head]}, None))
        for piece in re.findall(r".{1,16}", args, flags=re.DOTALL):
            deltas.append(({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None))
    deltas.append(({}, completion.finish_reason))
    return deltas


class _Server(LoopbackHTTPServer):
    def __init__(self, api: FakeOpenAI) -> None:
        self.api = api
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small SSE chunks must not wait for the client's delayed ACK
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request log lines: they would drown test output."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        api = self.server.api
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, RecursionError):  # json raises RecursionError on deeply nested input
            body = None
        path = self.path.split("?")[0]
        request = OpenAIRequest(self.command, path, {k.lower(): v for k, v in self.headers.items()}, body)
        if (self.command, path) == ("POST", "/v1/chat/completions"):
            self._chat(api, request)
        elif (self.command, path) == ("GET", "/v1/models"):
            models = [
                {"id": model, "object": "model", "created": 0, "owned_by": "system"}
                for model in MODEL_SNAPSHOTS
            ]
            self._json(request, 200, {"object": "list", "data": models})
        else:
            self._json(request, 404, _error(404, f"Invalid URL ({self.command} {path})"))

    def _chat(self, api: FakeOpenAI, request: OpenAIRequest) -> None:
        problem = self._check(api, request)
        if (
            problem is not None
        ):  # refused before any fault is taken: a fault is for a request OpenAI would serve
            self._json(request, *problem)
            return
        body, fault = request.body, api.faults._take()
        if self.server.stopping.wait(api.latency + fault.delay):
            return
        if fault.status is not None:
            headers = (
                {} if fault.retry_after is None else {"retry-after-ms": str(int(fault.retry_after * 1000))}
            )
            code = "rate_limit_exceeded" if fault.status == 429 else None
            self._json(request, fault.status, _error(fault.status, fault.message, code=code), headers)
            return
        completion = api._complete(body)
        request.usage = completion.usage
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(request, completion, include_usage, fault.cut_after_chunks)
        else:
            choice = {"index": 0, "message": _message(completion), "logprobs": None}
            self._json(
                request,
                200,
                {
                    **self._envelope(completion, "chat.completion"),
                    "choices": [{**choice, "finish_reason": completion.finish_reason}],
                    "usage": completion.usage,
                },
            )

    @staticmethod
    def _check(api: FakeOpenAI, request: OpenAIRequest) -> tuple[int, dict[str, Any]] | None:
        """The 4xx OpenAI would answer for this request, if any."""
        body, auth = request.body, request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return 401, _error(401, "You didn't provide an API key. Send 'Authorization: Bearer <key>'.")
        if api.api_key is not None and auth[7:].strip() != api.api_key:
            return 401, _error(401, "Incorrect API key provided.", code="invalid_api_key")
        if not isinstance(body, dict):
            return 400, _error(400, "The request body is not valid JSON.")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return 400, _error(400, "you must provide a model parameter", param="model")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return 400, _error(400, "'messages' must be a non-empty array", param="messages")
        if body.get("stream_options") is not None and not body.get("stream"):
            message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
            return 400, _error(400, message, param="stream_options")
        return None

    @staticmethod
    def _envelope(completion: _Completion, kind: str) -> dict[str, Any]:
        return {
            "id": completion.id,
            "object": kind,
            "created": int(time.time()),
            "model": completion.model,
            "system_fingerprint": "fp_fake",
            "service_tier": "default",
        }

    def _json(
        self, request: OpenAIRequest, status: int, payload: dict[str, Any], headers: Mapping[str, str] = {}
    ) -> None:
        request.status = status
        self.server.api._record(request)
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {
            **headers,
            "Content-Type": "application/json",
            "x-request-id": _request_id(),
        }.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(
        self, request: OpenAIRequest, completion: _Completion, include_usage: bool, cut_after: int | None
    ) -> None:
        request.status = 200
        self.server.api._record(request)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", _request_id())
        self.end_headers()
        envelope = self._envelope(completion, "chat.completion.chunk")
        chunks = [
            {**envelope, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            for delta, finish in _deltas(completion)
        ]
        if include_usage:  # OpenAI then sends "usage": null on every chunk and one final usage-only chunk
            chunks = [{**chunk, "usage": None} for chunk in chunks]
            chunks.append({**envelope, "choices": [], "usage": completion.usage})
        events = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]
        for number, event in enumerate(events):
            if cut_after is not None and number >= cut_after:
                self.close_connection = True  # no terminating chunk: the client sees a broken stream
                self.wfile.flush()
                return
            data = event.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex}"
