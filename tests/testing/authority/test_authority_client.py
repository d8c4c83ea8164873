"""The real runcycles client (sync and async, decorator and streaming) against the local authority."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel
from runcycles import (  # type: ignore[import-untyped]
    Action,
    Amount,
    BalanceResponse,
    BudgetExceededError,
    CommitResponse,
    CyclesClient,
    DecisionResponse,
    EventCreateResponse,
    ReleaseResponse,
    ReservationCreateResponse,
    ReservationExtendResponse,
    Unit,
    cycles,
)

from cycles_otel.testing.authority import LocalCyclesServer
from tests.support.budgeted import USD
from tests.support.transports import AsyncClientFactory
from tests.support.waiting import eventually, eventually_async

ACTION = Action(kind="llm.completion", name="gpt-4o")
Model = TypeVar("Model", bound=BaseModel)


def _strict(model: type[Model], body: Any) -> Model:
    """Parse a body the way runcycles' lifecycle does: JSON, strict, unknown fields forbidden."""
    parsed: Model = model.model_validate_json(json.dumps(body), strict=True)
    return parsed


@pytest.fixture(autouse=True)
def _runcycles_stays_quiet(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """runcycles warns whenever an answer is not the protocol's exact success: none may appear."""
    caplog.set_level(logging.INFO, logger="runcycles")
    yield
    complaints = [
        r.getMessage() for r in caplog.records if r.name.startswith("runcycles") and r.levelno >= 30
    ]
    assert not complaints, complaints


def _body(amount: int, **extra: object) -> dict[str, object]:
    return {
        "idempotency_key": uuid.uuid4().hex,
        "subject": {"tenant": "acme", "agent": "writer"},
        "action": {"kind": "llm.completion", "name": "gpt-4o"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": amount},
        **extra,
    }


def test_the_sync_client_drives_every_endpoint(cycles_server: LocalCyclesServer, acme_key: str) -> None:
    with CyclesClient(cycles_server.config(acme_key)) as client:
        created = client.create_reservation(_body(1_000))
        assert created.status == 200 and created.request_id
        rid = _strict(ReservationCreateResponse, created.body).reservation_id
        extended = client.extend_reservation(rid, {"idempotency_key": "e1", "extend_by_ms": 5_000})
        assert _strict(ReservationExtendResponse, extended.body).expires_at_ms > 0
        assert client.get_reservation(rid).body["status"] == "ACTIVE"
        assert [
            r["reservation_id"] for r in client.list_reservations(status="ACTIVE").body["reservations"]
        ] == [rid]
        committed = _strict(
            CommitResponse,
            client.commit_reservation(
                rid, {"idempotency_key": "c1", "actual": {"unit": "USD_MICROCENTS", "amount": 700}}
            ).body,
        )
        assert committed.charged.amount == 700
        other = client.create_reservation(_body(50)).body["reservation_id"]
        released = _strict(ReleaseResponse, client.release_reservation(other, {"idempotency_key": "r1"}).body)
        assert released.released.amount == 50
        decision = client.decide({k: v for k, v in _body(10).items()})
        assert _strict(DecisionResponse, decision.body).decision.value == "ALLOW"
        event = client.create_event(
            {
                "idempotency_key": "ev1",
                "subject": {"tenant": "acme"},
                "action": {"kind": "tool.search", "name": "web"},
                "actual": {"unit": "USD_MICROCENTS", "amount": 300},
            }
        )
        assert event.status == 201 and _strict(EventCreateResponse, event.body).status.value == "APPLIED"
        balances = _strict(BalanceResponse, client.get_balances(tenant="acme").body)
        assert balances.balances[0].spent is not None and balances.balances[0].spent.amount == 1_000
    snap = cycles_server.ledger()
    assert snap.scopes["tenant:acme"].spent == 1_000 and snap.scopes["tenant:acme"].reserved == 0
    assert {r.status for r in snap.reservations} == {"COMMITTED", "RELEASED"}


def test_the_sync_decorator_commits_the_actual_cost(cycles_server: LocalCyclesServer, acme_key: str) -> None:
    client = CyclesClient(cycles_server.config(acme_key, agent="writer"))

    @cycles(
        estimate=5_000, actual=lambda result: len(result) * 100, client=client, action_kind="llm.completion"
    )  # type: ignore[untyped-decorator]
    def write(prompt: str) -> str:
        return prompt.upper()

    assert write("hello") == "HELLO"
    record = cycles_server.ledger().reservations[0]
    assert (record.status, record.reserved, record.charged) == ("COMMITTED", 5_000, 500)
    assert record.scope_path == "tenant:acme/agent:writer"
    assert cycles_server.ledger().scopes["tenant:acme"].spent == 500


async def test_the_async_decorator_commits_and_a_denial_raises_budget_exceeded(
    cycles_server: LocalCyclesServer, acme_key: str, transport: AsyncClientFactory
) -> None:
    client = transport(cycles_server.config(acme_key))

    @cycles(estimate=2 * USD, actual=USD, client=client, action_kind="llm.completion", action_name="gpt-4o")  # type: ignore[untyped-decorator]
    async def call() -> str:
        return "ok"

    assert await call() == "ok"
    assert cycles_server.ledger().scopes["tenant:acme"].spent == USD

    @cycles(estimate=50 * USD, client=client)  # type: ignore[untyped-decorator]
    async def too_big() -> str:
        raise AssertionError("must not run without a reservation")

    with pytest.raises(BudgetExceededError) as denied:
        await too_big()
    assert denied.value.status == 409 and denied.value.error_code == "BUDGET_EXCEEDED"
    assert cycles_server.ledger().count(status="COMMITTED") == 1 and cycles_server.ledger().count() == 1
    await client.aclose()


async def test_the_async_stream_heartbeat_extends_the_reservation(
    cycles_server: LocalCyclesServer, acme_key: str, transport: AsyncClientFactory
) -> None:
    # With 0.5 s timeouts runcycles keeps 13 s of retry reserve: a 12 s lease is extended at once, then not
    # again within the test.
    client = transport(cycles_server.config(acme_key, connect_timeout=0.5, read_timeout=0.5))
    estimate = Amount(unit=Unit.USD_MICROCENTS, amount=10_000)
    async with client.stream_reservation(action=ACTION, estimate=estimate, ttl_ms=12_000) as stream:
        created_expiry = cycles_server.ledger().reservation(stream.reservation_id).expires_at_ms
        await eventually_async(
            lambda: cycles_server.ledger().reservation(stream.reservation_id).extensions == 1, "one extension"
        )
        stream.usage.tokens_input, stream.usage.tokens_output = 100, 20
        stream.usage.set_actual_cost(7_000)
    record = cycles_server.ledger().reservation(stream.reservation_id)
    assert record.expires_at_ms == created_expiry + 12_000
    assert (record.status, record.charged) == ("COMMITTED", 7_000)
    assert [r.status for r in cycles_server.requests if r.operation == "extend"] == [200]
    await client.aclose()


def test_a_sync_stream_that_fails_releases_its_hold(cycles_server: LocalCyclesServer, acme_key: str) -> None:
    client = CyclesClient(cycles_server.config(acme_key))
    estimate = Amount(unit=Unit.USD_MICROCENTS, amount=10_000)
    with pytest.raises(RuntimeError), client.stream_reservation(action=ACTION, estimate=estimate):
        raise RuntimeError("model call failed")
    snap = cycles_server.ledger()
    assert snap.reservations[0].status == "RELEASED" and snap.scopes["tenant:acme"].reserved == 0


async def test_a_commit_after_expiry_is_recovered_through_events(
    cycles_server: LocalCyclesServer,
    acme_key: str,
    caplog: pytest.LogCaptureFixture,
    transport: AsyncClientFactory,
) -> None:
    client = transport(cycles_server.config(acme_key))
    estimate = Amount(unit=Unit.USD_MICROCENTS, amount=10_000)
    async with client.stream_reservation(action=ACTION, estimate=estimate) as stream:
        cycles_server.expire_now(stream.reservation_id)
        stream.usage.set_actual_cost(4_000)
    await eventually_async(lambda: bool(cycles_server.ledger().events), "the recovery event")
    snap = cycles_server.ledger()
    assert snap.reservation(stream.reservation_id).status == "EXPIRED"
    assert snap.events[0].metadata is not None
    assert snap.events[0].metadata["recovered_reservation_id"] == stream.reservation_id
    assert (
        snap.events[0].charged,
        snap.scopes["tenant:acme"].spent,
        snap.scopes["tenant:acme"].reserved,
    ) == (
        4_000,
        4_000,
        0,
    )
    assert [(r.operation, r.status) for r in cycles_server.requests] == [
        ("reserve", 200),
        ("commit", 410),
        ("event", 201),
    ]
    # The one expected warning: the 410 that triggers recovery.
    caplog.records[:] = [r for r in caplog.records if "recovering spend" not in r.getMessage()]
    await client.aclose()


def test_a_commit_that_failed_with_500_is_retried_by_runcycles(
    cycles_server: LocalCyclesServer, acme_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    cycles_server.faults.fail("commit", 500)
    client = CyclesClient(cycles_server.config(acme_key))

    @cycles(estimate=1_000, actual=900, client=client)  # type: ignore[untyped-decorator]
    def work() -> int:
        return 1

    assert work() == 1
    eventually(lambda: cycles_server.ledger().count(status="COMMITTED") == 1, "the retried commit")
    assert [r.status for r in cycles_server.requests if r.operation == "commit"] == [500, 200]
    assert cycles_server.ledger().scopes["tenant:acme"].spent == 900
    caplog.records[:] = [r for r in caplog.records if "retryable" not in r.getMessage()]
