"""runcycles' own machinery over either transport: streams, heartbeats, retries, the commit journal."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from runcycles import Action, Amount, CyclesConfig  # type: ignore[import-untyped]
from runcycles.journal import CommitJournal, PendingCommitRecord, auth_fingerprint  # type: ignore[import-untyped]

from cycles_otel.testing.authority import LocalCyclesServer
from tests.support.paths import REPO
from tests.support.protocol import SCOPE, UNIT, running_authority
from tests.support.transports import AsyncClientFactory
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.slow

ACTION = Action(kind="llm.completion", name="gpt-4o")
ESTIMATE = Amount(unit=UNIT, amount=1_000)


def calls(server: LocalCyclesServer) -> list[tuple[str | None, int | None]]:
    return [(r.operation, r.status) for r in server.requests]


def pending(config: CyclesConfig) -> list[PendingCommitRecord]:
    """The commits runcycles' journal holds for this authority and key."""
    identity = auth_fingerprint(config.base_url, config.api_key, config.tenant)
    records: list[PendingCommitRecord] = CommitJournal(Path(config.journal_dir) / identity).load_pending(
        config.base_url
    )
    return records


async def test_a_stream_reserves_extends_commits_and_a_failed_one_releases(
    transport: AsyncClientFactory,
) -> None:
    with running_authority() as (server, config):
        client = transport(config)
        # The shortest lease runcycles allows: its heartbeat extends it at once.
        async with client.stream_reservation(action=ACTION, estimate=ESTIMATE, ttl_ms=1_000) as stream:
            await eventually_async(
                lambda: server.ledger().reservation(stream.reservation_id).extensions >= 1,
                "a heartbeat extension",
            )
            stream.usage.set_actual_cost(600)
        with pytest.raises(RuntimeError, match="model call failed"):
            async with client.stream_reservation(action=ACTION, estimate=ESTIMATE) as failed:
                raise RuntimeError("model call failed")
        await client.aclose()
        ledger = server.ledger()
        seen = calls(server)
    assert (
        ledger.reservation(stream.reservation_id).status,
        ledger.reservation(failed.reservation_id).status,
    ) == (
        "COMMITTED",
        "RELEASED",
    )
    assert (ledger.scopes[SCOPE].spent, ledger.scopes[SCOPE].reserved) == (600, 0)
    extends = [c for c in seen if c[0] == "extend"]
    assert extends and all(status == 200 for _, status in extends)
    assert [c for c in seen if c[0] != "extend"] == [
        ("reserve", 200),
        ("commit", 200),
        ("reserve", 200),
        ("release", 200),
    ]


async def test_a_failed_commit_is_journaled_and_retried_in_the_background(
    transport: AsyncClientFactory, tmp_path: Path
) -> None:
    with running_authority() as (server, config):
        journaling = dataclasses.replace(config, journal_enabled=True, journal_dir=str(tmp_path))
        server.faults.fail("commit", 503)
        client = transport(journaling)
        async with client.stream_reservation(action=ACTION, estimate=ESTIMATE) as stream:
            stream.usage.set_actual_cost(700)
        await eventually_async(
            lambda: server.ledger().reservation(stream.reservation_id).status == "COMMITTED",
            "the commit to land",
        )
        await client.aclose()
        assert calls(server) == [("reserve", 200), ("commit", 503), ("commit", 200)]
        assert server.ledger().scopes[SCOPE].spent == 700
    assert pending(journaling) == []  # settled, so discarded from the journal


REPLAYING_PROCESS = textwrap.dedent(
    """
    import asyncio, os
    from runcycles import AsyncCyclesClient, CyclesConfig
    from runcycles.retry import AsyncCommitRetryEngine
    from cycles_otel.protocol.transport import AiohttpCyclesClient

    async def main():
        config = CyclesConfig(
            base_url=os.environ["APP_URL"], api_key=os.environ["APP_KEY"], tenant="acme",
            journal_dir=os.environ["APP_JOURNAL"], retry_initial_delay=0.05,
        )
        client_class = {"AsyncCyclesClient": AsyncCyclesClient, "AiohttpCyclesClient": AiohttpCyclesClient}
        client = client_class[os.environ["APP_CLIENT"]](config)
        engine = AsyncCommitRetryEngine(config)
        engine.set_client(client)  # replays what the journal holds, in this loop
        await engine.flush(10)
        print("REPLAYED", (await client.get_reservation(os.environ["APP_RESERVATION"])).body["status"])
        await client.aclose()

    asyncio.run(main())
    """
)


async def test_a_journaled_commit_is_replayed_by_a_later_process(
    transport: AsyncClientFactory, tmp_path: Path
) -> None:
    with running_authority() as (server, config):
        journaling = dataclasses.replace(
            config, journal_enabled=True, journal_dir=str(tmp_path), retry_enabled=False
        )
        server.faults.fail("commit", 503)
        client = transport(journaling)
        async with client.stream_reservation(action=ACTION, estimate=ESTIMATE) as stream:
            stream.usage.set_actual_cost(400)
        await client.aclose()
        (record,) = pending(journaling)
        assert (record.reservation_id, record.commit_body["actual"]["amount"]) == (stream.reservation_id, 400)
        env = {
            **os.environ,
            "APP_URL": config.base_url,
            "APP_KEY": config.api_key,
            "APP_JOURNAL": str(tmp_path),
            "APP_CLIENT": transport.__name__,
            "APP_RESERVATION": stream.reservation_id,
        }
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", REPLAYING_PROCESS],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "REPLAYED COMMITTED" in done.stdout
        assert server.ledger().scopes[SCOPE].spent == 400
        assert calls(server)[-2:] == [("commit", 200), ("get_reservation", 200)]
    assert pending(journaling) == []
