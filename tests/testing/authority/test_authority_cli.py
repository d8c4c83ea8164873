"""``cycles-otel authority`` as a subprocess: serves, prints its key, stops cleanly, refuses bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from cycles_otel.testing.authority.cli import UsageError, parse_amount, parse_budget
from tests.support.ports import free_port, taken_port

COMMAND = [sys.executable, "-m", "cycles_otel.app.cli", "authority"]


BUDGETS = ["--tenant", "acme", "--budget", "tenant:acme=5USD", "--budget", "tenant:acme/workflow:x=200000000"]


def start(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Run the command and read the ``NAME=value`` lines it prints once it serves."""
    process = subprocess.Popen([*COMMAND, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed: dict[str, str] = {}
    assert process.stdout is not None
    while "CYCLES_TENANT" not in printed:
        line = process.stdout.readline()
        assert line, f"authority exited early: {process.stderr.read() if process.stderr else ''}"
        name, sep, value = line.strip().partition("=")
        if sep:
            printed[name] = value
    return process, printed


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


@pytest.fixture
def authority_cli() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """``cycles-otel authority`` running: the process and the variables it printed."""
    process, printed = start("--port", "0", *BUDGETS)
    yield process, printed
    if process.poll() is None:
        process.kill()
        process.wait(timeout=5)


def _call(url: str, key: str, body: dict[str, object] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"X-Cycles-API-Key": key, "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        parsed: dict[str, Any] = json.loads(response.read())
        return parsed


@pytest.mark.slow
def test_the_command_serves_until_sigterm(
    authority_cli: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    process, printed = authority_cli
    base, key = printed["CYCLES_BASE_URL"], printed["CYCLES_API_KEY"]
    created = _call(
        f"{base}/v1/reservations",
        key,
        {
            "idempotency_key": "cli-1",
            "subject": {"tenant": "acme", "workflow": "x"},
            "action": {"kind": "llm.completion", "name": "gpt-4o"},
            "estimate": {"unit": "USD_MICROCENTS", "amount": 150_000_000},
        },
    )
    assert created["decision"] == "ALLOW"
    balances = _call(f"{base}/v1/balances?tenant=acme", key)["balances"]
    assert isinstance(balances, list)
    assert {b["scope"]: b["remaining"]["amount"] for b in balances} == {
        "tenant:acme": 350_000_000,
        "tenant:acme/workflow:x": 50_000_000,
    }
    stop(process)


@pytest.mark.slow
def test_the_health_probe_answers_up_without_a_key(
    authority_cli: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    """``GET /actuator/health`` is the reference server's probe; runcycles' live-server tests poll it."""
    _, printed = authority_cli
    with urllib.request.urlopen(f"{printed['CYCLES_BASE_URL']}/actuator/health", timeout=5) as answer:
        assert answer.status == 200 and json.loads(answer.read()) == {"status": "UP"}


@pytest.mark.slow
def test_a_stopped_authority_restarts_on_the_same_port_at_once() -> None:
    port = str(free_port())
    for run in range(2):
        process, printed = start("--port", port, *BUDGETS)
        try:
            assert printed["CYCLES_BASE_URL"] == f"http://127.0.0.1:{port}"
            # urllib closes after each answer, so the server side closes first and its end of the
            # connection lingers in TIME_WAIT: the next bind must not trip over it.
            balances = _call(
                f"{printed['CYCLES_BASE_URL']}/v1/balances?tenant=acme", printed["CYCLES_API_KEY"]
            )
            assert len(balances["balances"]) == 2, (run, balances)
            stop(process)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)


@pytest.mark.slow
def test_bad_budget_syntax_exits_2_naming_the_flag() -> None:
    result = subprocess.run(
        [*COMMAND, "--port", "0", "--budget", "acme=5"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "--budget" in result.stderr and "tenant:acme=5USD" in result.stderr


@pytest.mark.slow
def test_a_taken_port_exits_1_with_a_clear_message() -> None:
    with taken_port() as port:
        result = subprocess.run([*COMMAND, "--port", str(port)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5USD", (500_000_000, "USD_MICROCENTS")),
        ("2.5usd", (250_000_000, "USD_MICROCENTS")),
        ("42", (42, "TOKENS")),
    ],
)
def test_amounts_accept_dollars_or_integers(text: str, expected: tuple[int, str]) -> None:
    assert parse_amount(text, "TOKENS") == expected


@pytest.mark.parametrize(
    "text",
    ["tenant:acme=", "=5USD", "tenant:acme=1.5", "tenant:acme=0.000000001USD", "team:x=1", "workflow:x=1"],
)
def test_malformed_budgets_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="--budget"):
        parse_budget(text, "USD_MICROCENTS")


def test_a_budget_scope_is_canonicalised() -> None:
    assert parse_budget("tenant:ACME/agent:Writer=1USD", "USD_MICROCENTS") == (
        "tenant:acme/agent:writer",
        100_000_000,
        "USD_MICROCENTS",
    )
