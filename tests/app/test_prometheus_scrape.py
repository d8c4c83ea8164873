"""A real workload through the Prometheus endpoint: promtool-clean, scraped by a real Prometheus."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from runcycles import AsyncCyclesClient  # type: ignore[import-untyped]

from cycles_otel.app.configure import TelemetryHandle, configure_telemetry
from cycles_otel.app.poller import BalancePoller
from cycles_otel.testing.authority import LocalCyclesServer
from tests.support.ci import require_binary
from tests.support.prometheus import Prometheus

pytestmark = pytest.mark.slow

UNIT = "USD_MICROCENTS"
BUDGETS = {"tenant:acme": 500_000_000, "tenant:acme/workflow:research": 300_000_000}


@pytest.fixture
def scraped_server() -> Iterator[LocalCyclesServer]:
    """An authority with ``BUDGETS``, whose balances the scraped endpoint reports."""
    with LocalCyclesServer() as running:
        for scope, allocated in BUDGETS.items():
            running.set_budget(scope, allocated)
        yield running


@pytest.fixture
def handle() -> Iterator[TelemetryHandle]:
    """configure_telemetry() serving a Prometheus endpoint on a free port, no OTLP, nothing global."""
    with configure_telemetry("scrape-test", otlp=False, prometheus_port=0, set_global=False) as configured:
        yield configured


async def workload(scraped_server: LocalCyclesServer, handle: TelemetryHandle, calls: int = 6) -> None:
    """Governed calls (one denied), then a poll, through the instrumented async client."""
    key = scraped_server.create_api_key("acme")
    async with AsyncCyclesClient(scraped_server.config(key)) as client:
        for i in range(calls + 1):
            estimate = 10**12 if i == calls else 2_000_000
            held = await client.create_reservation(
                {
                    "idempotency_key": str(uuid.uuid4()),
                    "subject": {"tenant": "acme", "workflow": "research", "agent": f"writer-{i % 2}"},
                    "action": {"kind": "llm.completion", "name": "gpt-4o"},
                    "estimate": {"unit": UNIT, "amount": estimate},
                    "ttl_ms": 60_000,
                }
            )
            if held.is_success:
                rid = held.body["reservation_id"]
                actual: dict[str, Any] = {"unit": UNIT, "amount": 1_000_000 + 12_345 * i}
                committed = await client.commit_reservation(
                    rid, {"idempotency_key": str(uuid.uuid4()), "actual": actual}
                )
                assert committed.is_success
        poller = BalancePoller(client, [{"tenant": "acme"}], meter_provider=handle.meter_provider)
        assert await poller.poll_once() == len(BUDGETS)


def test_the_endpoint_passes_promtool_after_a_workload(
    scraped_server: LocalCyclesServer, handle: TelemetryHandle
) -> None:
    promtool = require_binary("promtool")
    asyncio.run(workload(scraped_server, handle))
    assert handle.prometheus_url is not None
    exposition = httpx.get(handle.prometheus_url, timeout=5).text
    for expected in (
        "cycles_budget_remaining{",
        "cycles_client_charged_total{",
        "cycles_client_reservations_total{",
    ):
        assert expected in exposition
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_real_prometheus_sees_the_ledger(
    scraped_server: LocalCyclesServer, handle: TelemetryHandle, tmp_path: Path
) -> None:
    binary = require_binary("prometheus")
    assert handle.prometheus_url is not None
    prometheus = Prometheus(binary, handle.prometheus_url, tmp_path)
    try:
        prometheus.wait_ready()
        asyncio.run(workload(scraped_server, handle))
        ledger = scraped_server.ledger().scopes
        prometheus.wait_for(
            f'cycles_budget_remaining{{cycles_unit="{UNIT}"}}',
            {s: float(ledger[s].remaining) for s in BUDGETS},
        )
        prometheus.wait_for(
            f'sum(cycles_client_charged_total{{cycles_unit="{UNIT}"}})',
            {"": float(ledger["tenant:acme"].spent)},
        )
        assert ledger["tenant:acme"].spent > 0
    finally:
        prometheus.stop()


def test_two_worker_processes_each_serve_their_own_port(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from cycles_otel.app.configure import configure_telemetry\n"
        "from cycles_otel.instruments import get_instruments\n"
        "handle = configure_telemetry(sys.argv[1], prometheus_port=0)\n"
        "get_instruments(handle.meter_provider).charged.add(int(sys.argv[2]), {'cycles.unit': 'TOKENS'})\n"
        "print(handle.prometheus_url, flush=True)\n"
        "sys.stdin.read()\n"
        "handle.shutdown()\n"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, f"worker-{i}", str(10 * (i + 1))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        urls = [worker.stdout.readline().strip() for worker in workers if worker.stdout is not None]
        assert len(set(urls)) == 2, urls
        for i, url in enumerate(urls):
            samples = [
                sample
                for family in text_string_to_metric_families(httpx.get(url, timeout=5).text)
                for sample in family.samples
            ]
            assert {s.labels.get("service_name") for s in samples if s.name == "target_info"} == {
                f"worker-{i}"
            }
            charged = [s.value for s in samples if s.name == "cycles_client_charged_total"]
            assert charged == [10.0 * (i + 1)]
    finally:
        for worker in workers:
            worker.communicate(input="", timeout=20)
    assert [worker.returncode for worker in workers] == [0, 0]
