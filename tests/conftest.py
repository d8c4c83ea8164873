"""Fixtures every folder shares, and the run's rules: loopback only, private journals, no skip under CI.

The cycles_otel pytest plugin brings ``cycles_server``, ``fake_openai``, ``otlp_receiver`` and
``telemetry``; the fixtures here build on them. A folder's own fixtures sit in its conftest.py.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
from opentelemetry import trace

from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.budgeted import USD, Authority
from tests.support.ci import IN_CI
from tests.support.otel_globals import reset_global_tracer_provider
from tests.support.protocol import instrumentation, uninstrument_runcycles
from tests.support.transports import ASYNC_CLIENTS, TRANSPORTS, AsyncClientFactory


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under ``CI=true`` a skipped test fails: whatever it needed must be installed there."""
    report: pytest.TestReport = yield
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"{reason} (CI=true: a test that would skip fails instead)"
    return report


@pytest.fixture(autouse=True)
def _no_commit_journal(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """runcycles journals commits under ~/.runcycles; keep each test's journal private."""
    monkeypatch.setenv("CYCLES_JOURNAL_DIR", str(tmp_path_factory.mktemp("journal")))


@pytest.fixture(autouse=True)
def _tiktoken_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken downloads its BPE files on first use; the suite stays on loopback and fails that
    download at once, exactly as on an offline machine, instead of asking DNS for a public host."""
    import tiktoken.load

    def offline(blobpath: str) -> bytes:
        raise ConnectionError(f"offline test run: not downloading {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    # Child processes (pytester, the CLI, opentelemetry-instrument) inherit this instead: any
    # https download goes to a closed loopback port; plain-http loopback servers are unaffected.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


# --- the authority ---------------------------------------------------------------------------------
@pytest.fixture
def acme_key(cycles_server: LocalCyclesServer) -> str:
    """An API key of tenant ``acme``, whose tenant budget (``tenant:acme``) is 10 USD."""
    cycles_server.set_budget("tenant:acme", 10 * USD)
    return cycles_server.create_api_key(tenant="acme")


@pytest.fixture
def authority(cycles_server: LocalCyclesServer, acme_key: str) -> Authority:
    """The running authority as tenant ``acme`` sees it: its server, its key, clients and ledger checks."""
    return Authority(cycles_server, acme_key)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> AsyncClientFactory:
    """The async client class of one transport (ids ``httpx``, ``aiohttp``): ``transport(config)``."""
    return ASYNC_CLIENTS[request.param]


# --- telemetry -------------------------------------------------------------------------------------
@pytest.fixture
def instrumented_telemetry(telemetry: TelemetryCapture) -> Iterator[TelemetryCapture]:
    """``telemetry``, with runcycles instrumented into its providers for this test only."""
    uninstrument_runcycles()
    with instrumentation(telemetry):
        yield telemetry


@pytest.fixture
def global_telemetry(instrumented_telemetry: TelemetryCapture) -> Iterator[TelemetryCapture]:
    """``instrumented_telemetry``, its tracer provider the global one: AutoGen's agent spans are kept too."""
    reset_global_tracer_provider()
    trace.set_tracer_provider(instrumented_telemetry.tracer_provider)
    yield instrumented_telemetry
    reset_global_tracer_provider()
