"""A seeded random workload against the authority: every answer conforms and the ledger reconciles."""

from __future__ import annotations

import random
import uuid

from cycles_otel.testing.authority import LocalCyclesServer, RecordedRequest
from tests.support.conformance import load_spec, response_problems
from tests.support.raw_api import Api, reservation


def _invariants(server: LocalCyclesServer) -> None:
    snap = server.ledger()
    for scope, balance in snap.scopes.items():
        assert balance.remaining == balance.allocated - balance.spent - balance.reserved - balance.debt
        held = sum(
            r.reserved for r in snap.reservations if r.status == "ACTIVE" and scope in r.affected_scopes
        )
        assert balance.reserved == held, scope
        charged = sum(r.charged or 0 for r in snap.reservations if scope in r.affected_scopes)
        charged += sum(
            e.charged for e in snap.events if e.scope_path == scope or e.scope_path.startswith(scope + "/")
        )
        assert balance.spent + balance.debt == charged, scope


def test_a_random_workload_conforms_and_reconciles(cycles_server: LocalCyclesServer) -> None:
    rng = random.Random(20_260_101)
    cycles_server.set_budget("tenant:acme", 200_000, overdraft_limit=20_000)
    cycles_server.set_budget("tenant:acme/workflow:w1", 60_000, overage_policy="ALLOW_IF_AVAILABLE")
    cycles_server.set_budget("tenant:acme/workflow:w2", 60_000, overdraft_limit=5_000)
    api = Api(cycles_server, cycles_server.create_api_key("acme"))
    subjects = [
        {"tenant": "acme"},
        {"tenant": "acme", "workflow": "w1"},
        {"tenant": "acme", "workflow": "w2", "agent": "a"},
    ]
    policies = [None, "REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"]
    live: list[str] = []
    for _ in range(400):
        choice = rng.random()
        if choice < 0.35 or not live:
            extra = {"overage_policy": p} if (p := rng.choice(policies)) else {}
            body = reservation(
                rng.randint(0, 9_000),
                subject=rng.choice(subjects),
                ttl_ms=rng.choice([1_000, 60_000]),
                grace_period_ms=rng.choice([0, 2_000]),
                dry_run=rng.random() < 0.1,
                **extra,
            )
            answer = api.post("/v1/reservations", body)
            if answer.status_code == 200 and "reservation_id" in answer.json():
                live.append(answer.json()["reservation_id"])
        elif choice < 0.6:
            api.commit(
                rng.choice(live), rng.randint(0, 12_000), unit=rng.choice(["USD_MICROCENTS"] * 9 + ["TOKENS"])
            )
        elif choice < 0.7:
            api.release(rng.choice(live))
        elif choice < 0.78:
            api.extend(rng.choice(live), rng.randint(1, 5_000))
        elif choice < 0.84:
            policy = rng.choice(policies)
            api.event(
                rng.randint(0, 5_000),
                subject=rng.choice(subjects),
                **({"overage_policy": policy} if policy else {}),
            )
        elif choice < 0.88:
            cycles_server.clock.advance(rng.choice([0.5, 1.5, 4.0]))
        elif choice < 0.92:
            cycles_server.fund(rng.choice(list(cycles_server.ledger().scopes)), rng.randint(0, 20_000))
        elif choice < 0.95:
            api.get("/v1/reservations", status=rng.choice(["ACTIVE", "COMMITTED", "EXPIRED"]), limit="5")
        elif choice < 0.98:
            api.get("/v1/balances", tenant="acme")
        else:
            api.post("/v1/decide", {k: v for k, v in reservation(rng.randint(0, 90_000)).items()})
    statuses = {r.status for r in cycles_server.requests}
    assert not [s for s in statuses if s is None or s >= 500]
    assert {200, 201, 409, 410}.issubset(
        statuses
    )  # the workload reached denials and expiry, not just successes
    _invariants(cycles_server)
    api.close()


def test_the_conformance_check_catches_an_answer_outside_the_spec() -> None:
    load_spec()
    bad = RecordedRequest(
        method="POST",
        path="/v1/reservations/rsv_1/commit",
        query="",
        headers={},
        operation="commit",
        body=None,
        status=200,
        response_body={
            "status": "COMMITTED",
            "charged": {"unit": "USD_MICROCENTS", "amount": -1},
            "extra": 1,
        },
        response_headers={"X-Request-Id": "req_1", "X-Cycles-Trace-Id": uuid.uuid4().hex},
    )
    problems = response_problems(bad)
    assert any("amount" in p for p in problems) and any("extra" in p for p in problems)
    undeclared = RecordedRequest("GET", "/v1/balances", "", {}, "balances", None, 404, {}, {})
    assert {p.split(": ", 1)[1] for p in response_problems(undeclared)} == {
        "no X-Request-Id header",
        "X-Cycles-Trace-Id missing or not 32 lowercase hex",
        "status 404 is not declared for getBalances",
    }
