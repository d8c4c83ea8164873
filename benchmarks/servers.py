"""The Cycles authority and the fake model endpoint in processes of their own: the measured one is all client.

Parent side: ``with authority_process(delay={"reserve": 0.02}) as auth: auth.base_url, auth.api_key``,
``with model_process(latency=0.01) as model: model.base_url``, ``with otlp_process() as otlp: ...``.
Child side: ``python -m benchmarks.servers authority|model|otlp ...`` prints one JSON line with its
address and serves until its stdin closes, so a parent that dies never leaves a server behind.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

TENANT = "acme"
BUDGET_MICROCENTS = 10**16  # 100 million USD: no benchmark ever runs out
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ChildServer:
    """A server running in a child process: where to reach it and the key it accepts."""

    base_url: str
    api_key: str
    pid: int
    final: dict[str, Any] = field(default_factory=dict)
    """What the child reported as it stopped (filled in when the ``with`` block ends)."""


@contextmanager
def _child(args: list[str]) -> Iterator[ChildServer]:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.servers", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark server {args[0]} exited with {process.wait(START_TIMEOUT_S)}")
        info: dict[str, Any] = json.loads(line)
        server = ChildServer(info["base_url"], info.get("api_key", ""), process.pid)
        yield server
    finally:
        if process.stdin is not None:
            process.stdin.close()  # the child's cue to stop
        try:
            last = process.stdout.read() if process.stdout is not None else ""
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            last = ""
    if last.strip():
        server.final.update(json.loads(last))


@contextmanager
def authority_process(delay: Mapping[str, float] | None = None) -> Iterator[ChildServer]:
    """A ``LocalCyclesServer`` with a huge ``tenant:acme`` budget; ``delay`` adds latency per operation.

    ``final["committed"]`` / ``final["active"]``: reservations in each state when it stopped.
    """
    args = ["authority"]
    for operation, seconds in (delay or {}).items():
        args += ["--delay", f"{operation}={seconds}"]
    with _child(args) as server:
        yield server


@contextmanager
def model_process(latency: float = 0.0) -> Iterator[ChildServer]:
    """A ``FakeOpenAI`` endpoint answering every chat completion after ``latency`` seconds.

    ``final["completions"]``: the chat completion requests it received.
    """
    with _child(["model", "--latency", str(latency)]) as server:
        yield server


@contextmanager
def otlp_process() -> Iterator[ChildServer]:
    """An ``OtlpReceiver`` (its HTTP endpoint); ``final["spans"]`` counts the spans it received."""
    with _child(["otlp"]) as server:
        yield server


def _serve_authority(delays: list[str]) -> None:
    from cycles_otel.testing.authority import LocalCyclesServer

    with LocalCyclesServer(record_requests=False) as server:
        server.set_budget(f"tenant:{TENANT}", BUDGET_MICROCENTS)
        for spec in delays:
            operation, _, seconds = spec.partition("=")
            server.faults.delay(operation, float(seconds))
        key = server.create_api_key(TENANT)
        print(json.dumps({"base_url": server.base_url, "api_key": key}), flush=True)
        sys.stdin.read()
        ledger = server.ledger()
        print(
            json.dumps({"committed": ledger.count("COMMITTED"), "active": ledger.count("ACTIVE")}), flush=True
        )


def _serve_model(latency: float) -> None:
    from cycles_otel.testing.fake_openai import FakeOpenAI

    with FakeOpenAI(latency=latency) as api:
        print(json.dumps({"base_url": api.base_url, "api_key": "sk-bench"}), flush=True)
        sys.stdin.read()
        completions = sum(1 for request in api.requests if request.path.endswith("/chat/completions"))
        print(json.dumps({"completions": completions}), flush=True)


def _serve_otlp() -> None:
    from cycles_otel.testing.otlp_receiver import OtlpReceiver

    with OtlpReceiver() as receiver:
        print(json.dumps({"base_url": receiver.http_endpoint}), flush=True)
        sys.stdin.read()
        print(json.dumps({"spans": len(receiver.spans())}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers")
    commands = parser.add_subparsers(dest="command", required=True)
    authority = commands.add_parser("authority")
    authority.add_argument("--delay", action="append", default=[], metavar="OPERATION=SECONDS")
    model = commands.add_parser("model")
    model.add_argument("--latency", type=float, default=0.0)
    commands.add_parser("otlp")
    args = parser.parse_args(argv)
    if args.command == "authority":
        _serve_authority(args.delay)
    elif args.command == "model":
        _serve_model(args.latency)
    else:
        _serve_otlp()


if __name__ == "__main__":
    main()
