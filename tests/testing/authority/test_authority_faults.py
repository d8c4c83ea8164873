"""Fault injection: errors, lost answers, dropped and held connections, latency; the ledger tells what ran."""

from __future__ import annotations

import httpx
import pytest
from runcycles import CyclesClient, cycles  # type: ignore[import-untyped]

from cycles_otel.testing.authority import LocalCyclesServer
from tests.support.raw_api import Api


def test_fail_answers_the_error_before_the_ledger_changes(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    cycles_server.faults.fail("reserve", 500, message="store unavailable", times=2)
    for _ in range(2):
        failed = acme_api.reserve(10)
        assert failed.status_code == 500
        assert failed.json()["error"] == "INTERNAL_ERROR" and failed.json()["message"] == "store unavailable"
    assert cycles_server.ledger().count() == 0
    assert acme_api.reserve(10).status_code == 200  # the fault was used up


def test_fail_after_applies_the_request_and_loses_the_answer(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    rid = acme_api.reserve_id(1_000)
    cycles_server.faults.fail("commit", 500, after=True)
    assert acme_api.commit(rid, 400, key="same").status_code == 500
    assert cycles_server.ledger().reservation(rid).status == "COMMITTED"
    retried = acme_api.commit(rid, 400, key="same")  # a same-key retry gets the original answer
    assert retried.status_code == 200 and retried.json()["charged"]["amount"] == 400
    assert cycles_server.ledger().scopes["tenant:acme"].spent == 400


def test_drop_closes_the_connection_without_applying(cycles_server: LocalCyclesServer, acme_api: Api) -> None:
    cycles_server.faults.drop("reserve")
    with pytest.raises(httpx.RemoteProtocolError):
        acme_api.reserve(10)
    assert cycles_server.ledger().count() == 0
    assert [r.status for r in cycles_server.requests] == [None]
    assert acme_api.reserve(10).status_code == 200


def test_runcycles_recovers_a_dropped_create_with_the_same_key(
    cycles_server: LocalCyclesServer, acme_key: str
) -> None:
    cycles_server.faults.drop("reserve")
    with CyclesClient(cycles_server.config(acme_key)) as client:

        @cycles(estimate=100, client=client)  # type: ignore[untyped-decorator]
        def work() -> str:
            return "done"

        assert work() == "done"
    reserves = [r for r in cycles_server.requests if r.operation == "reserve"]
    assert [r.status for r in reserves] == [None, 200]
    assert reserves[0].body["idempotency_key"] == reserves[1].body["idempotency_key"]
    assert cycles_server.ledger().count(status="COMMITTED") == 1


def test_timeout_holds_past_the_client_deadline_and_applies_nothing(
    cycles_server: LocalCyclesServer, acme_key: str
) -> None:
    cycles_server.faults.timeout("reserve", 2.0)
    impatient = httpx.Client(
        base_url=cycles_server.base_url, headers={"X-Cycles-API-Key": acme_key}, timeout=0.2
    )
    body = {
        "idempotency_key": "t1",
        "subject": {"tenant": "acme"},
        "action": {"kind": "llm.completion", "name": "gpt-4o"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": 1},
    }
    with pytest.raises(httpx.ReadTimeout):
        impatient.post("/v1/reservations", json=body)
    assert cycles_server.ledger().count() == 0
    impatient.close()


def test_delay_holds_every_call_of_its_operation_until_cleared(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    cycles_server.faults.delay("balances", 0.3)
    # What the handler waits before answering, for each call in turn (take() is what it asks).
    assert [cycles_server.faults.take("balances") for _ in range(2)] == [(0.3, None)] * 2
    assert cycles_server.faults.take("reserve") == (0.0, None)  # other operations are not slowed
    assert acme_api.get("/v1/balances", tenant="acme").status_code == 200  # a delayed call still runs
    cycles_server.faults.clear()
    assert cycles_server.faults.take("balances") == (0.0, None)
    cycles_server.faults.fail("balances", 500)
    cycles_server.faults.clear()
    assert acme_api.get("/v1/balances", tenant="acme").status_code == 200


def test_faults_reject_unknown_operations() -> None:
    with LocalCyclesServer() as server, pytest.raises(ValueError, match="use one of reserve"):
        server.faults.fail("reserv", 500)
