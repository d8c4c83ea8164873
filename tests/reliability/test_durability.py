"""Spend survives crashes and is counted once: real worker processes, SIGKILL, restart, shared journals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cycles_otel.testing.authority import LedgerSnapshot, LocalCyclesServer
from cycles_otel.testing.fake_openai import FakeOpenAI
from tests.support.paths import REPO
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

WORKER = Path(__file__).parent / "governed_worker.py"
PATIENCE_S = 30.0


@dataclass
class Worker:
    """One governed worker process, read line by line."""

    process: subprocess.Popen[str]
    lines: list[dict[str, Any]] = field(default_factory=list)

    def wait_for(self, event: str, count: int = 1) -> dict[str, Any]:
        deadline = time.monotonic() + PATIENCE_S
        while sum(1 for line in self.lines if line["event"] == event) < count:
            assert time.monotonic() < deadline, f"no {event!r} from the worker: {self.lines}"
            assert self.process.stdout is not None
            raw = self.process.stdout.readline()
            assert raw, f"the worker ended before {event!r}: {self.stderr()}"
            self.lines.append(json.loads(raw))
        return [line for line in self.lines if line["event"] == event][count - 1]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=PATIENCE_S)

    def finish(self) -> dict[str, Any]:
        """Tell the worker to stop; its telemetry once every settlement and retry has finished."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        found = self.wait_for("telemetry")
        assert self.process.wait(timeout=PATIENCE_S) == 0, self.stderr()
        return found

    def stderr(self) -> str:
        return self.process.stderr.read() if self.process.stderr and self.process.poll() is not None else ""


@dataclass
class Stack:
    server: LocalCyclesServer
    model: FakeOpenAI
    key: str
    journal: Path

    @contextmanager
    def worker(self, **settings: Any) -> Iterator[Worker]:
        arguments = {
            "base_url": self.server.base_url,
            "api_key": self.key,
            "openai_url": self.model.base_url,
            "journal_dir": str(self.journal),
            **settings,
        }
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(arguments)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        worker = Worker(process)
        try:
            yield worker
        finally:
            if process.poll() is None:
                worker.kill()

    def ledger(self) -> LedgerSnapshot:
        return self.server.ledger()

    def journaled(self) -> list[Path]:
        return sorted(self.journal.rglob("v2-*.json"))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with LocalCyclesServer() as server, FakeOpenAI() as model:
        server.set_budget("tenant:acme", 10**12)
        yield Stack(server, model, server.create_api_key("acme"), tmp_path / "journal")


def commit_requests(server: LocalCyclesServer) -> int:
    return sum(1 for r in server.requests if r.operation == "commit")


def traceparent_span(record: Path) -> str:
    """The span id a journaled commit carries (its call's ``cycles.reservation`` span)."""
    body = json.loads(record.read_text())["commit_body"]
    return str(body["metadata"]["traceparent"].split("-")[2])


def assert_charged_once(stack: Stack, calls: int) -> LedgerSnapshot:
    snap = stack.ledger()
    assert [r.status for r in snap.reservations] == ["COMMITTED"] * calls
    assert snap.scopes["tenant:acme"].spent == sum(r.charged or 0 for r in snap.reservations)
    assert all((r.charged or 0) > 0 for r in snap.reservations)
    return snap


def killed_then_restarted(
    stack: Stack, arm: Callable[[], None], until: Callable[[Worker], object], **settings: Any
) -> tuple[dict[str, Any], str]:
    """A worker makes one call and is SIGKILLed at ``until``; a new worker replays; its telemetry."""
    arm()
    with stack.worker(calls=1, **settings) as first:
        first.wait_for("ready")
        until(first)
        eventually(stack.journaled, "the commit was never journaled")
        first.kill()
    (record,) = stack.journaled()
    original_span = traceparent_span(record)
    assert stack.ledger().count(status="ACTIVE") == 1, "the commit landed before the kill"
    stack.server.faults.clear()
    with stack.worker(calls=0) as restarted:  # makes no call: the replay starts with the client
        restarted.wait_for("ready")
        eventually(
            lambda: stack.ledger().count(status="COMMITTED") == 1, "the restarted worker never replayed"
        )
        telemetry = restarted.finish()
    assert stack.journaled() == []
    return telemetry, original_span


def assert_replay_counted_and_linked(telemetry: dict[str, Any], original_span: str, stack: Stack) -> None:
    snap = assert_charged_once(stack, 1)
    assert telemetry["charged"] == snap.scopes["tenant:acme"].spent
    (commit,) = telemetry["commits"]
    assert commit["attributes"]["cycles.late_settlement"] is True
    assert commit["attributes"]["cycles.outcome"] == "committed"
    assert commit["links"] == [original_span]


def test_killed_while_its_commit_is_held_the_restarted_worker_commits_it_once(stack: Stack) -> None:
    telemetry, original = killed_then_restarted(
        stack,
        lambda: stack.server.faults.timeout("commit", 20),
        lambda first: None,  # killed as soon as the commit is journaled, i.e. as it is being sent
    )
    assert_replay_counted_and_linked(telemetry, original, stack)


def test_killed_while_its_commit_keeps_failing_the_restarted_worker_commits_it_once(stack: Stack) -> None:
    telemetry, original = killed_then_restarted(
        stack,
        lambda: stack.server.faults.fail("commit", 503, times=1_000),
        lambda first: eventually(lambda: commit_requests(stack.server) >= 2, "the commit was never retried"),
    )
    assert_replay_counted_and_linked(telemetry, original, stack)


def test_killed_right_after_create_returned_in_the_background_loses_nothing(stack: Stack) -> None:
    telemetry, original = killed_then_restarted(
        stack,
        lambda: stack.server.faults.timeout("commit", 20),
        lambda first: first.wait_for("returned"),  # killed at once: its commit had not landed
        background=True,
    )
    assert_replay_counted_and_linked(telemetry, original, stack)


def test_two_live_workers_sharing_a_journal_dir_count_each_charge_once(stack: Stack) -> None:
    stack.server.faults.fail("commit", 503, times=10_000)  # every commit waits in a journal, retried
    with stack.worker(calls=3, agent="first") as first:
        first.wait_for("returned", 3)
        eventually(lambda: len(stack.journaled()) == 3, "the first worker's commits were not journaled")
        with stack.worker(calls=2, agent="second") as second:  # starts while they are pending
            second.wait_for("returned", 2)
            eventually(lambda: len(stack.journaled()) == 5, "the second worker's commits were not journaled")
            stack.server.faults.clear()
            eventually(lambda: stack.ledger().count(status="COMMITTED") == 5, "not every commit landed")
            counted = first.finish()["charged"] + second.finish()["charged"]
    snap = assert_charged_once(stack, 5)
    assert counted == snap.scopes["tenant:acme"].spent
