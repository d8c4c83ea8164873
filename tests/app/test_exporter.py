"""``cycles-otel exporter`` as operators run it: against a standalone authority, through its failure."""

from __future__ import annotations

import contextlib
import os
import re
import signal
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
from tests.support.ports import free_port, taken_port
from tests.support.waiting import eventually

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


@contextlib.contextmanager
def exporter_process(options: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``cycles-otel exporter OPTIONS`` as a child process, killed on the way out if still running."""
    process = subprocess.Popen(
        [*CLI, "exporter", *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


@pytest.fixture
def authority_process() -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """``cycles-otel authority`` in a child process: the process, its base URL and API key."""
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


@pytest.mark.slow
def test_the_exporter_serves_gauges_survives_the_authority_and_exits_cleanly(
    authority_process: tuple[subprocess.Popen[str], str, str], tmp_path: Path
) -> None:
    process, base_url, api_key = authority_process
    key_file = tmp_path / "key"
    key_file.write_text(api_key + "\n")
    env = {**os.environ, "CYCLES_BASE_URL": base_url, "CYCLES_EXPORTER_SUBJECTS": "tenant=acme"}
    options = [
        "--api-key-file",
        str(key_file),
        "--interval",
        "1",
        "--stale-after",
        "1",
        "--listen",
        "127.0.0.1:0",
    ]
    with exporter_process(options, env) as exporter:
        url = read_until(exporter, r"on (http://\S+/metrics)").group(1)
        series = budget_series(url)
        for scope, allocated in SCOPES.items():
            assert series[("cycles_budget_remaining", scope)] == allocated
            assert series[("cycles_budget_allocated", scope)] == allocated
            assert series[("cycles_budget_over_limit", scope)] == 0

        process.terminate()
        process.wait(timeout=10)
        eventually(
            lambda: ("cycles_budget_remaining", "tenant:acme") not in budget_series(url),
            "the gauge of the stopped authority's scope to go stale",
        )
        after = budget_series(url)
        assert exporter.poll() is None  # still serving
        assert {scope for name, scope in after if name == "cycles_budget_updated_timestamp_seconds"} == set(
            SCOPES
        )
        errors = [value for (name, _), value in after.items() if name == "cycles_exporter_poll_errors_total"]
        assert errors and sum(errors) >= 1

        exporter.send_signal(signal.SIGTERM)
        out, err = exporter.communicate(timeout=20)
    assert exporter.returncode == 0, err
    assert api_key not in out + err
    assert "Cycles balance poll" in err  # the failures were logged


@pytest.mark.slow
def test_the_standard_runcycles_environment_is_enough(
    authority_process: tuple[subprocess.Popen[str], str, str],
) -> None:
    _, base_url, api_key = authority_process
    env = {**os.environ, "CYCLES_BASE_URL": base_url, "CYCLES_API_KEY": api_key, "CYCLES_TENANT": "acme"}
    env.pop("CYCLES_EXPORTER_SUBJECTS", None)
    with exporter_process(["--listen", "127.0.0.1:0"], env) as exporter:
        url = read_until(exporter, r"on (http://\S+/metrics)").group(1)
        series = budget_series(url)
        exporter.send_signal(signal.SIGTERM)
        _, err = exporter.communicate(timeout=20)
    assert exporter.returncode == 0, err
    assert {
        scope: value for (name, scope), value in series.items() if name == "cycles_budget_allocated"
    } == SCOPES


# What --interval inf did before it was refused: a wait no timer can make, so polling dies.
DYING_POLLER = """
import sys
from cycles_otel.app.cli import main
from cycles_otel.app.poller import BalancePoller
BalancePoller.next_delay = lambda self: float("inf")
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_an_exporter_whose_polling_dies_says_so_and_exits_non_zero(
    authority_process: tuple[subprocess.Popen[str], str, str],
) -> None:
    _, base_url, api_key = authority_process
    env = {**os.environ, "CYCLES_BASE_URL": base_url, "CYCLES_API_KEY": api_key, "CYCLES_TENANT": "acme"}
    exporter = subprocess.run(
        [sys.executable, "-c", DYING_POLLER, "exporter", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "Serving Cycles balance metrics on http://" in exporter.stdout  # it had started
    assert exporter.returncode == 1
    last = exporter.stderr.strip().splitlines()[-1]
    assert last.startswith("cycles-otel exporter: balance polling stopped (OverflowError"), exporter.stderr


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["exporter", *args])
    return code, capsys.readouterr().err


URL, KEY, SUBJECT = ["--base-url", "http://127.0.0.1:1"], ["--api-key", "k"], ["--subject", "tenant=a"]
RUNCYCLES_ENV = ("CYCLES_BASE_URL", "CYCLES_API_KEY", "CYCLES_TENANT", "CYCLES_EXPORTER_SUBJECTS")


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
        ([*URL, *KEY, *SUBJECT, "--interval", "inf"], "--interval"),
        ([*URL, *KEY, *SUBJECT, "--interval", "nan"], "--interval"),
        ([*URL, *KEY, *SUBJECT, "--interval", "1e-9"], "--interval"),
        ([*URL, *KEY, *SUBJECT, "--stale-after", "inf"], "--stale-after"),
        ([*URL, *KEY, *SUBJECT, "--interval", "30", "--stale-after", "10"], "--stale-after"),
    ],
)
def test_bad_flags_exit_non_zero_naming_the_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], named: str
) -> None:
    for name in RUNCYCLES_ENV:
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
    url = f"http://127.0.0.1:{free_port()}"
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
    with taken_port() as port:
        code, err = run_cli(capsys, *URL, *KEY, *SUBJECT, "--listen", f"127.0.0.1:{port}")
    assert code == 1 and f"--listen 127.0.0.1:{port}" in err and "free port" in err


@pytest.mark.parametrize(
    ("changed", "flags", "code", "expected"),
    [
        ({"CYCLES_TENANT": "beta"}, [], 1, "CYCLES_TENANT='beta': the authority refused subject"),
        ({"CYCLES_API_KEY": "wrong"}, [], 1, "CYCLES_API_KEY: the authority rejected the API key (401)"),
        ({"CYCLES_OTEL_CARDINALITY_LIMIT": "many"}, [], 2, "CYCLES_OTEL_CARDINALITY_LIMIT='many' is not"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "pigeon"}, ["--otlp"], 2, "OTEL_EXPORTER_OTLP_PROTOCOL='pigeon'"),
    ],
)
def test_errors_from_the_environment_name_the_variable(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    changed: dict[str, str],
    flags: list[str],
    code: int,
    expected: str,
) -> None:
    monkeypatch.delenv("CYCLES_EXPORTER_SUBJECTS", raising=False)
    with LocalCyclesServer() as server:
        env = {"CYCLES_BASE_URL": server.base_url, "CYCLES_API_KEY": server.create_api_key("acme")}
        for name, value in (env | {"CYCLES_TENANT": "acme"} | changed).items():
            monkeypatch.setenv(name, value)
        got, err = run_cli(capsys, "--listen", "127.0.0.1:0", *flags)
    lines = [line for line in err.splitlines() if line.startswith("cycles-otel exporter: ")]
    assert got == code and len(lines) == 1, err
    assert lines[0].startswith(f"cycles-otel exporter: {expected}") and "--listen" not in lines[0]


def test_an_unreachable_authority_from_the_environment_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for name, value in {"CYCLES_BASE_URL": url, "CYCLES_API_KEY": "k", "CYCLES_TENANT": "acme"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CYCLES_EXPORTER_SUBJECTS", raising=False)
    code, err = run_cli(capsys, "--listen", "127.0.0.1:0")
    assert code == 1
    assert f"cycles-otel exporter: CYCLES_BASE_URL={url!r}: cannot reach the Cycles authority" in err
