"""Hundreds of concurrent runcycles calls against one shared budget: no overspend, no lost update."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from runcycles import Action, Amount, AsyncCyclesClient, BudgetExceededError, Unit  # type: ignore[import-untyped]

from cycles_otel.testing.authority import LocalCyclesServer

pytestmark = pytest.mark.slow

ESTIMATE = 1_000
FITS = 100  # the budget holds exactly this many estimates
CALLERS = 240


def _request(amount: int) -> dict[str, object]:
    return {
        "idempotency_key": uuid.uuid4().hex,
        "subject": {"tenant": "acme", "workflow": "swarm"},
        "action": {"kind": "llm.completion", "name": "gpt-4o"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": amount},
    }


async def test_concurrent_reservations_never_exceed_the_allocation(cycles_server: LocalCyclesServer) -> None:
    cycles_server.set_budget("tenant:acme", 10 * FITS * ESTIMATE)
    cycles_server.set_budget("tenant:acme/workflow:swarm", FITS * ESTIMATE)
    client = AsyncCyclesClient(cycles_server.config(cycles_server.create_api_key("acme")))
    answers = await asyncio.gather(*(client.create_reservation(_request(ESTIMATE)) for _ in range(CALLERS)))
    allowed = [a.body["reservation_id"] for a in answers if a.status == 200 and a.body]
    assert len(allowed) == FITS  # every caller that could fit got in, and not one more
    assert sorted({a.status for a in answers}) == [200, 409]
    assert {a.body["error"] for a in answers if a.status == 409 and a.body} == {"BUDGET_EXCEEDED"}
    swarm = cycles_server.ledger().scopes["tenant:acme/workflow:swarm"]
    assert (swarm.reserved, swarm.remaining) == (FITS * ESTIMATE, 0)

    commits = await asyncio.gather(
        *(
            client.commit_reservation(
                rid,
                {
                    "idempotency_key": uuid.uuid4().hex,
                    "actual": {"unit": "USD_MICROCENTS", "amount": ESTIMATE // 2},
                },
            )
            for rid in allowed
        )
    )
    assert {c.status for c in commits} == {200}
    snap = cycles_server.ledger()
    for scope in ("tenant:acme", "tenant:acme/workflow:swarm"):
        balance = snap.scopes[scope]
        assert (balance.spent, balance.reserved) == (FITS * ESTIMATE // 2, 0)
        assert balance.remaining == balance.allocated - balance.spent
    assert snap.count(status="COMMITTED") == FITS and snap.count() == FITS
    await client.aclose()


async def test_concurrent_streams_settle_to_an_exact_ledger(cycles_server: LocalCyclesServer) -> None:
    cycles_server.set_budget("tenant:acme", 150 * ESTIMATE)
    client = AsyncCyclesClient(cycles_server.config(cycles_server.create_api_key("acme")))
    action = Action(kind="llm.completion", name="gpt-4o")

    async def one(cost: int) -> int:
        try:
            async with client.stream_reservation(
                action=action, estimate=Amount(unit=Unit.USD_MICROCENTS, amount=ESTIMATE)
            ) as stream:
                await asyncio.sleep(0)
                stream.usage.set_actual_cost(cost)
        except BudgetExceededError:
            return 0
        return cost

    charged = await asyncio.gather(*(one(100 + i) for i in range(200)))
    snap = cycles_server.ledger()
    assert snap.scopes["tenant:acme"].spent == sum(charged) == sum(r.charged or 0 for r in snap.reservations)
    assert snap.scopes["tenant:acme"].reserved == 0
    assert 150 <= snap.count(status="COMMITTED") == sum(1 for c in charged if c)
    await client.aclose()
