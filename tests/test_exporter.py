"""``cycles-otel exporter`` as operators run it: against a standalone authority, through its failure."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cycles_otel.app.cli import main
from cycles_otel.testing.authority import LocalCyclesServer

CLI = [sys.executable, "-m", "cycles_otel.app.cli"]
SCOPES = {"tenant:acme": 500_000_000, "tenant:acme/workflow:research": 200_000_000}


def read_until(process: subprocess.Popen[str], pattern: str, timeout: float = 20) -> re.Match[str]:
    """The first stdout line matching ``pattern``; fails with the process's output otherwise."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if found := re.search(pattern, line):
            return found
    process.kill()
    _, err = process.communicate(timeout=10)
    raise AssertionError(f"no line matching {pattern!r}; stdout={seen!r} stderr={err!r}")


def budget_series(url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(url, timeout=5).text
    return {
        (sample.name, sample.labels.get("cycles_scope", sample.labels.get("error_type", ""))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(("cycles_budget_", "cycles_exporter_"))
    }


def wait_for(condition: object, timeout: float = 20) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture
def authority() -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    budgets = [arg for scope, amount in SCOPES.items() for arg in ("--budget", f"{scope}={amount}")]
    process = subprocess.Popen(
        [*CLI, "authority", "--port", "0", "--tenant", "acme", *budgets], stdout=subprocess.PIPE, text=True
    )
    try:
        base_url = read_until(process, r"CYCLES_BASE_URL=(\S+)").group(1)
        api_key = read_until(process, r"CYCLES_API_KEY=(\S+)").group(1)
        yield process, base_url, api_key
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_the_exporter_serves_gauges_survives_the_authority_and_exits_cleanly(
    authority: tuple[subprocess.Popen[str], str, str], tmp_path: Path
) -> None:
    authority_process, base_url, api_key = authority
    key_file = tmp_path / "key"
    key_file.write_text(api_key + "\n")
    env = {**os.environ, "CYCLES_BASE_URL": base_url, "CYCLES_EXPORTER_SUBJECTS": "tenant=acme"}
    options = [
        "--api-key-file",
        str(key_file),
        "--interval",
        "0.2",
        "--stale-after",
        "1",
        "--listen",
        "127.0.0.1:0",
    ]
    exporter = subprocess.Popen(
        [*CLI, "exporter", *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        url = read_until(exporter, r"on (http://\S+/metrics)").group(1)
        series = budget_series(url)
        for scope, allocated in SCOPES.items():
            assert series[("cycles_budget_remaining", scope)] == allocated
            assert series[("cycles_budget_allocated", scope)] == allocated
            assert series[("cycles_budget_over_limit", scope)] == 0

        authority_process.terminate()
        authority_process.wait(timeout=10)
        wait_for(lambda: ("cycles_budget_remaining", "tenant:acme") not in budget_series(url))
        after = budget_series(url)
        assert exporter.poll() is None  # still serving
        assert {scope for name, scope in after if name == "cycles_budget_updated_timestamp_seconds"} == set(
            SCOPES
        )
        errors = [value for (name, _), value in after.items() if name == "cycles_exporter_poll_errors_total"]
        assert errors and sum(errors) >= 1

        exporter.send_signal(signal.SIGTERM)
        out, err = exporter.communicate(timeout=20)
    finally:
        if exporter.poll() is None:
            exporter.kill()
            exporter.communicate(timeout=10)
    assert exporter.returncode == 0, err
    assert api_key not in out + err
    assert "Cycles balance poll" in err  # the failures were logged


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["exporter", *args])
    return code, capsys.readouterr().err


URL, KEY, SUBJECT = ["--base-url", "http://127.0.0.1:1"], ["--api-key", "k"], ["--subject", "tenant=a"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([*KEY, *SUBJECT], "--base-url"),
        (["--base-url", "ftp://x", *KEY, *SUBJECT], "--base-url"),
        ([*URL, *SUBJECT], "--api-key"),
        ([*URL, *KEY], "--subject"),
        ([*URL, *KEY, "--subject", "team=x"], "--subject"),
        ([*URL, *KEY, *SUBJECT, "--listen", "9464"], "--listen"),
        ([*URL, *KEY, *SUBJECT, "--interval", "0"], "--interval"),
    ],
)
def test_bad_flags_exit_non_zero_naming_the_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], named: str
) -> None:
    for name in ("CYCLES_BASE_URL", "CYCLES_API_KEY", "CYCLES_EXPORTER_SUBJECTS"):
        monkeypatch.delenv(name, raising=False)
    code, err = run_cli(capsys, *args)
    assert code == 2
    assert err.startswith("cycles-otel exporter: ") and named in err and len(err.strip().splitlines()) == 1


def test_an_unreadable_key_file_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run_cli(
        capsys,
        "--base-url",
        "http://127.0.0.1:1",
        "--subject",
        "tenant=a",
        "--api-key-file",
        str(tmp_path / "none"),
    )
    assert code == 2 and "--api-key-file" in err


def test_an_unreachable_authority_at_start_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{port}"
        code, err = run_cli(
            capsys, "--base-url", url, "--api-key", "secret-key", *SUBJECT, "--listen", "127.0.0.1:0"
        )
    lines = [line for line in err.splitlines() if line.startswith("cycles-otel exporter: ")]
    assert code == 1
    assert len(lines) == 1 and "cannot reach the Cycles authority" in lines[0] and "--base-url" in lines[0]
    assert "secret-key" not in err


def test_a_rejected_api_key_at_start_names_the_key_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with LocalCyclesServer() as server:
        code, err = run_cli(
            capsys, "--base-url", server.base_url, "--api-key", "wrong", "--subject", "tenant=acme"
        )
    assert code == 1 and "401" in err and "--api-key" in err


def test_a_port_in_use_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run_cli(capsys, *URL, *KEY, *SUBJECT, "--listen", f"127.0.0.1:{port}")
    assert code == 1 and f"--listen 127.0.0.1:{port}" in err and "free port" in err
