"""One test per protocol rule of the local Cycles authority over raw HTTP: status, body and ledger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cycles_otel.testing.authority import LocalCyclesServer
from tests.support.budgeted import USD
from tests.support.conformance import assert_conforms
from tests.support.raw_api import Api, reservation


def test_scopes_skip_missing_levels_lowercase_values_and_hold_on_every_budget(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    cycles_server.set_budget("tenant:acme/workflow:research", 1_000)
    response = acme_api.reserve(300, subject={"tenant": "ACME", "workflow": "Research", "agent": "Writer"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["affected_scopes"] == [
        "tenant:acme",
        "tenant:acme/workflow:research",
        "tenant:acme/workflow:research/agent:writer",
    ]
    assert body["scope_path"] == "tenant:acme/workflow:research/agent:writer"
    assert [b["scope"] for b in body["balances"]] == ["tenant:acme", "tenant:acme/workflow:research"]
    snap = cycles_server.ledger()
    assert snap.scopes["tenant:acme"].reserved == 300
    assert snap.scopes["tenant:acme/workflow:research"].remaining == 700
    assert snap.reservation(body["reservation_id"]).scope_path == body["scope_path"]


def test_a_reservation_must_fit_every_budgeted_scope(cycles_server: LocalCyclesServer, acme_api: Api) -> None:
    cycles_server.set_budget("tenant:acme/workflow:small", 100)
    response = acme_api.reserve(101, subject={"tenant": "acme", "workflow": "small"})
    assert response.status_code == 409
    assert response.json()["error"] == "BUDGET_EXCEEDED"
    assert "tenant:acme/workflow:small" in response.json()["message"]
    assert cycles_server.ledger().scopes["tenant:acme"].reserved == 0
    assert cycles_server.ledger().count() == 0


def test_no_budget_at_any_derived_scope_is_404(cycles_server: LocalCyclesServer) -> None:
    cycles_server.create_api_key(tenant="globex")
    api = Api(cycles_server, cycles_server.create_api_key(tenant="globex"))
    response = api.reserve(1, subject={"tenant": "globex"})
    assert response.status_code == 404
    assert response.json()["error"] == "NOT_FOUND"
    assert "tenant:globex" in response.json()["message"]


def test_unit_mismatch_is_400_and_says_which_units_exist(acme_api: Api) -> None:
    response = acme_api.reserve(5, unit="TOKENS")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "UNIT_MISMATCH"
    assert body["details"] == {
        "scope": "tenant:acme",
        "requested_unit": "TOKENS",
        "expected_units": ["USD_MICROCENTS"],
    }


def test_dry_run_answers_a_decision_without_holding(cycles_server: LocalCyclesServer, acme_api: Api) -> None:
    allow = acme_api.reserve(USD, dry_run=True).json()
    deny = acme_api.reserve(11 * USD, dry_run=True).json()
    assert allow["decision"] == "ALLOW" and "reservation_id" not in allow and "expires_at_ms" not in allow
    assert deny["decision"] == "DENY" and deny["reason_code"] == "BUDGET_EXCEEDED"
    assert deny["affected_scopes"] == ["tenant:acme"]
    assert cycles_server.ledger().count() == 0
    assert cycles_server.ledger().scopes["tenant:acme"].reserved == 0


def test_decide_denies_with_reason_codes_and_never_409(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    body = reservation(USD)
    body.pop("idempotency_key")
    assert acme_api.post("/v1/decide", {"idempotency_key": "d1", **body}).json()["decision"] == "ALLOW"
    cycles_server.set_budget("tenant:acme", 10 * USD, overdraft_limit=USD)
    rid = acme_api.reserve_id(USD, overage_policy="ALLOW_WITH_OVERDRAFT")
    assert acme_api.commit(rid, 10 * USD + 5).status_code == 200  # 5 of debt
    decided = acme_api.post("/v1/decide", {"idempotency_key": "d2", **body})
    assert decided.status_code == 200
    assert decided.json() == {
        "decision": "DENY",
        "reason_code": "DEBT_OUTSTANDING",
        "affected_scopes": ["tenant:acme"],
    }


def test_commit_below_the_estimate_releases_the_rest(cycles_server: LocalCyclesServer, acme_api: Api) -> None:
    rid = acme_api.reserve_id(1_000)
    body = acme_api.commit(rid, 600).json()
    assert body["status"] == "COMMITTED"
    assert body["charged"]["amount"] == 600 and body["released"]["amount"] == 400
    scope = cycles_server.ledger().scopes["tenant:acme"]
    assert (scope.spent, scope.reserved, scope.remaining) == (600, 0, 10 * USD - 600)
    assert cycles_server.ledger().reservation(rid).charged == 600


def test_reject_policy_refuses_an_overage_and_leaves_the_reservation_active(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    cycles_server.set_budget("tenant:acme", 1_000)
    rid = acme_api.reserve_id(600, overage_policy="REJECT")
    response = acme_api.commit(rid, 1_001)
    assert response.status_code == 409 and response.json()["error"] == "BUDGET_EXCEEDED"
    snap = cycles_server.ledger()
    assert snap.reservation(rid).status == "ACTIVE"
    assert (snap.scopes["tenant:acme"].spent, snap.scopes["tenant:acme"].reserved) == (0, 600)
    within = acme_api.commit(rid, 601)  # REJECT refuses any overage, even one the budget could cover
    assert within.status_code == 409 and "REJECT" in within.json()["message"]
    assert acme_api.commit(rid, 600).json()["charged"]["amount"] == 600


def test_allow_if_available_caps_the_charge_and_marks_the_scope_over_limit(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    cycles_server.set_budget("tenant:acme", 1_000)
    rid = acme_api.reserve_id(600, overage_policy="ALLOW_IF_AVAILABLE")
    body = acme_api.commit(rid, 1_500).json()
    assert body["charged"]["amount"] == 1_000
    assert body["balances"][0]["is_over_limit"] is True
    assert cycles_server.ledger().scopes["tenant:acme"].debt == 0  # never creates debt
    blocked = acme_api.reserve(1)
    assert blocked.status_code == 409 and blocked.json()["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    cycles_server.fund("tenant:acme", 500)
    assert acme_api.reserve(1).status_code == 200


def test_allow_with_overdraft_books_debt_then_denies_with_debt_outstanding(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    cycles_server.set_budget("tenant:acme", 1_000, overdraft_limit=300)
    rid = acme_api.reserve_id(800, overage_policy="ALLOW_WITH_OVERDRAFT")
    body = acme_api.commit(rid, 1_200).json()
    assert body["charged"]["amount"] == 1_200
    scope = cycles_server.ledger().scopes["tenant:acme"]
    assert (scope.spent, scope.debt, scope.remaining) == (1_000, 200, -200)
    denied = acme_api.reserve(1)
    assert denied.status_code == 409 and denied.json()["error"] == "DEBT_OUTSTANDING"
    cycles_server.fund("tenant:acme", 250)  # debt is repaid first
    scope = cycles_server.ledger().scopes["tenant:acme"]
    assert (scope.debt, scope.remaining) == (0, 50)


def test_overdraft_beyond_the_limit_is_refused_and_changes_nothing(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    cycles_server.set_budget("tenant:acme", 1_000, overdraft_limit=100)
    rid = acme_api.reserve_id(900, overage_policy="ALLOW_WITH_OVERDRAFT")
    response = acme_api.commit(rid, 1_101)
    assert response.status_code == 409 and response.json()["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    scope = cycles_server.ledger().scopes["tenant:acme"]
    assert (scope.spent, scope.reserved, scope.debt) == (0, 900, 0)


def test_over_limit_takes_precedence_over_debt_outstanding(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    cycles_server.set_budget("tenant:acme", 1_000, overdraft_limit=500)
    acme_api.commit(acme_api.reserve_id(1_000, overage_policy="ALLOW_WITH_OVERDRAFT"), 1_400)
    cycles_server.set_budget(
        "tenant:acme", 1_000, overdraft_limit=100
    )  # operator lowers the limit below the debt
    assert cycles_server.ledger().scopes["tenant:acme"].is_over_limit
    assert acme_api.reserve(1).json()["error"] == "OVERDRAFT_LIMIT_EXCEEDED"


def test_the_budget_policy_applies_when_the_request_names_none(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    cycles_server.set_budget("tenant:acme", 1_000, overage_policy="ALLOW_IF_AVAILABLE")
    cycles_server.set_budget("tenant:acme/workflow:w", 1_000)  # default budget policy: REJECT
    rid = acme_api.reserve_id(10, subject={"tenant": "acme", "workflow": "w"})
    assert acme_api.commit(rid, 11).json()["error"] == "BUDGET_EXCEEDED"  # the most specific budget decides
    acme_api.release(rid)
    rid = acme_api.reserve_id(500)
    assert acme_api.commit(rid, 2_000).json()["charged"]["amount"] == 1_000


def test_commit_in_the_grace_period_succeeds_but_extend_is_410(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    rid = acme_api.reserve_id(100, ttl_ms=1_000, grace_period_ms=2_000)
    cycles_server.clock.advance(1.5)
    extended = acme_api.extend(rid, 1_000)
    assert extended.status_code == 410 and extended.json()["error"] == "RESERVATION_EXPIRED"
    assert acme_api.commit(rid, 100).status_code == 200


def test_past_ttl_and_grace_a_reservation_expires_and_returns_its_hold(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    rid = acme_api.reserve_id(100, ttl_ms=1_000, grace_period_ms=2_000)
    other = acme_api.reserve_id(50, ttl_ms=60_000)
    cycles_server.clock.advance(3.1)
    committed = acme_api.commit(rid, 100)
    assert committed.status_code == 410 and committed.json()["error"] == "RESERVATION_EXPIRED"
    assert acme_api.release(rid).status_code == 410
    assert acme_api.get(f"/v1/reservations/{rid}").status_code == 410
    listed = acme_api.get("/v1/reservations", status="EXPIRED").json()["reservations"]
    assert [r["reservation_id"] for r in listed] == [rid]
    snap = cycles_server.ledger()
    assert snap.reservation(rid).status == "EXPIRED" and snap.reservation(other).status == "ACTIVE"
    assert snap.scopes["tenant:acme"].reserved == 50


def test_expire_now_expires_one_reservation(cycles_server: LocalCyclesServer, acme_api: Api) -> None:
    rid = acme_api.reserve_id(100)
    cycles_server.expire_now(rid)
    assert cycles_server.ledger().count(status="EXPIRED") == 1
    assert cycles_server.ledger().scopes["tenant:acme"].reserved == 0


def test_extensions_move_expiry_up_to_the_limit() -> None:
    with LocalCyclesServer(max_extensions=2) as server:
        server.set_budget("tenant:acme", 1_000)
        api = Api(server, server.create_api_key("acme"))
        created = api.reserve(10, ttl_ms=5_000).json()
        first = api.extend(created["reservation_id"], 1_000).json()
        assert first["expires_at_ms"] == created["expires_at_ms"] + 1_000
        assert first["status"] == "ACTIVE"
        assert api.extend(created["reservation_id"], 1_000).status_code == 200
        third = api.extend(created["reservation_id"], 1_000)
        assert third.status_code == 409 and third.json()["error"] == "MAX_EXTENSIONS_EXCEEDED"
        assert server.ledger().reservation(created["reservation_id"]).extensions == 2
        assert_conforms(server)


def test_finished_reservations_answer_reservation_finalized(acme_api: Api) -> None:
    committed, released = acme_api.reserve_id(10), acme_api.reserve_id(10)
    acme_api.commit(committed, 10)
    acme_api.release(released)
    for response in (
        acme_api.release(committed),
        acme_api.commit(released, 1),
        acme_api.extend(committed, 1_000),
    ):
        assert response.status_code == 409 and response.json()["error"] == "RESERVATION_FINALIZED"


def test_unknown_reservation_is_404(acme_api: Api) -> None:
    assert acme_api.commit("rsv_missing", 1).json()["error"] == "NOT_FOUND"
    assert acme_api.get("/v1/reservations/rsv_missing").status_code == 404


def test_same_key_same_payload_replays_the_first_answer(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    first = acme_api.reserve(100, key="k-1").json()
    cycles_server.clock.advance(10)
    again = acme_api.reserve(100, key="k-1").json()
    assert again["reservation_id"] == first["reservation_id"]
    assert (
        first["remaining_ttl_ms"] - 10_500 < again["remaining_ttl_ms"] <= first["remaining_ttl_ms"] - 10_000
    )
    assert {k: v for k, v in again.items() if k != "remaining_ttl_ms"} == {
        k: v for k, v in first.items() if k != "remaining_ttl_ms"
    }
    assert (
        cycles_server.ledger().count() == 1 and cycles_server.ledger().scopes["tenant:acme"].reserved == 100
    )
    commit = acme_api.commit(first["reservation_id"], 80, key="c-1").json()
    assert (
        acme_api.commit(first["reservation_id"], 80, key="c-1").json() == commit
    )  # not RESERVATION_FINALIZED
    assert cycles_server.ledger().scopes["tenant:acme"].spent == 80


def test_same_key_different_payload_is_idempotency_mismatch(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    acme_api.reserve(100, key="k-2")
    response = acme_api.reserve(101, key="k-2")
    assert response.status_code == 409 and response.json()["error"] == "IDEMPOTENCY_MISMATCH"
    assert cycles_server.ledger().count() == 1


def test_idempotency_is_per_tenant(cycles_server: LocalCyclesServer, acme_api: Api) -> None:
    cycles_server.set_budget("tenant:globex", 1_000)
    other = Api(cycles_server, cycles_server.create_api_key("globex"))
    mine = acme_api.reserve(5, key="shared").json()
    theirs = other.reserve(5, key="shared", subject={"tenant": "globex"}).json()
    assert mine["reservation_id"] != theirs["reservation_id"]


def test_header_and_body_idempotency_keys_must_match(acme_api: Api) -> None:
    response = acme_api.post("/v1/reservations", reservation(1, key="body"), {"X-Idempotency-Key": "header"})
    assert response.status_code == 400 and "idempotency_key" in response.json()["message"]


def test_balances_obey_the_ledger_invariant_and_filter_by_subject(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    cycles_server.set_budget("tenant:acme/workflow:a", 1_000, overdraft_limit=500)
    cycles_server.set_budget("tenant:acme/workflow:b", 1_000)
    acme_api.commit(
        acme_api.reserve_id(
            900, subject={"tenant": "acme", "workflow": "a"}, overage_policy="ALLOW_WITH_OVERDRAFT"
        ),
        1_200,
    )
    acme_api.reserve_id(300, subject={"tenant": "acme", "workflow": "b"})
    balances = acme_api.get("/v1/balances", tenant="acme").json()["balances"]
    assert [b["scope"] for b in balances] == [
        "tenant:acme",
        "tenant:acme/workflow:a",
        "tenant:acme/workflow:b",
    ]
    for b in balances:
        expected = (
            b["allocated"]["amount"] - b["spent"]["amount"] - b["reserved"]["amount"] - b["debt"]["amount"]
        )
        assert b["remaining"]["amount"] == expected
    assert {b["scope"]: b["remaining"]["amount"] for b in balances} == {
        "tenant:acme": 10 * USD - 1_500,
        "tenant:acme/workflow:a": -200,
        "tenant:acme/workflow:b": 700,
    }
    only_b = acme_api.get("/v1/balances", workflow="B").json()["balances"]
    assert [b["scope"] for b in only_b] == ["tenant:acme/workflow:b"]
    assert acme_api.get("/v1/balances").status_code == 400


def test_balances_paginate_with_a_cursor_bound_to_the_filters(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    for name in ("a", "b", "c"):
        cycles_server.set_budget(f"tenant:acme/app:{name}", 10)
    seen, cursor = [], None
    while True:
        params = {"tenant": "acme", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = acme_api.get("/v1/balances", **params).json()
        seen += [b["scope"] for b in page["balances"]]
        cursor = page.get("next_cursor")
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
        assert acme_api.get("/v1/balances", app="a", cursor=cursor).status_code == 400
    assert seen == ["tenant:acme", "tenant:acme/app:a", "tenant:acme/app:b", "tenant:acme/app:c"]


def test_list_reservations_filters_sorts_and_projects_metadata(acme_api: Api) -> None:
    small = acme_api.reserve_id(1, key="find-me", metadata={"run": "42"})
    big = acme_api.reserve_id(9)
    acme_api.release(big)
    by_key = acme_api.get("/v1/reservations", idempotency_key="find-me").json()["reservations"]
    assert [r["reservation_id"] for r in by_key] == [small] and "metadata" not in by_key[0]
    with_meta = acme_api.get("/v1/reservations", idempotency_key="find-me", include="metadata").json()
    assert with_meta["reservations"][0]["metadata"] == {"run": "42"}
    ordered = acme_api.get("/v1/reservations", sort_by="reserved", sort_dir="desc").json()["reservations"]
    assert [r["reservation_id"] for r in ordered] == [big, small]
    assert [
        r["status"] for r in acme_api.get("/v1/reservations", status="RELEASED").json()["reservations"]
    ] == ["RELEASED"]
    bad = acme_api.get("/v1/reservations", **{"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"})
    assert bad.status_code == 400 and "from" in bad.json()["message"]
    assert (
        acme_api.get("/v1/reservations", **{"from": "", "to": ""}).status_code == 200
    )  # blank bounds are unset


def test_missing_or_unknown_api_key_is_401(cycles_server: LocalCyclesServer, acme_key: str) -> None:
    for key in (None, acme_key + "x"):
        response = Api(cycles_server, key).reserve(1)
        assert response.status_code == 401 and response.json()["error"] == "UNAUTHORIZED"


def test_another_tenants_subject_or_reservation_is_403(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    rid = acme_api.reserve_id(1)
    intruder = Api(cycles_server, cycles_server.create_api_key("globex"))
    assert intruder.reserve(1, subject={"tenant": "acme"}).status_code == 403
    assert intruder.get(f"/v1/reservations/{rid}").status_code == 403
    assert intruder.commit(rid, 1).json()["error"] == "FORBIDDEN"
    assert intruder.get("/v1/balances", tenant="acme").status_code == 403
    assert cycles_server.ledger().reservation(rid).status == "ACTIVE"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["estimate"].update(amount=-1), "estimate.amount"),
        (lambda b: b.update(ttl_ms=10), "ttl_ms"),
        (lambda b: b.update(colour="red"), "colour"),
        (lambda b: b.update(subject={"dimensions": {"team": "x"}}), "subject"),
        (lambda b: b["subject"].update(agent="a/b"), "subject.agent"),
        (lambda b: b.pop("action"), "action"),
    ],
)
def test_schema_violations_are_400_naming_the_field(
    acme_api: Api, mutate: Callable[[dict[str, Any]], object], field: str
) -> None:
    body = reservation(1)
    mutate(body)
    response = acme_api.post("/v1/reservations", body)
    assert response.status_code == 400
    assert response.json()["error"] == "INVALID_REQUEST"
    assert response.json()["message"].startswith(field)


def test_malformed_json_is_400(acme_api: Api) -> None:
    response = acme_api.http.post(
        "/v1/reservations", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and "JSON" in response.json()["message"]


def test_an_oversized_body_is_400_and_the_connection_survives() -> None:
    with LocalCyclesServer(max_body_bytes=512) as server:
        server.set_budget("tenant:acme", 100)
        api = Api(server, server.create_api_key("acme"))
        big = reservation(1, metadata={"blob": "x" * 1_000})
        response = api.post("/v1/reservations", big)
        assert response.status_code == 400 and "512" in response.json()["message"]
        assert (
            api.reserve(1).status_code == 200
        )  # the client reconnects; nothing leaked into the next request
        assert server.ledger().count() == 1
        assert_conforms(server)


def test_every_answer_carries_request_and_trace_ids(cycles_server: LocalCyclesServer, acme_api: Api) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    ok = acme_api.post("/v1/reservations", reservation(1), {"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    assert ok.headers["x-cycles-trace-id"] == trace and ok.headers["x-request-id"]
    flat = acme_api.post("/v1/reservations", reservation(10**15), {"X-Cycles-Trace-Id": trace})
    assert flat.json()["trace_id"] == trace == flat.headers["x-cycles-trace-id"]
    assert flat.json()["request_id"] == flat.headers["x-request-id"]
    malformed = acme_api.post(
        "/v1/reservations", reservation(1), {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"}
    )
    assert malformed.status_code == 200 and malformed.headers["x-cycles-trace-id"] != "0" * 32
    assert cycles_server.requests[0].headers["traceparent"].startswith(f"00-{trace}")
    assert cycles_server.requests[0].operation == "reserve"


def test_events_charge_every_budget_and_honour_their_policy(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    cycles_server.set_budget("tenant:acme", 1_000)
    applied = acme_api.event(400, metadata={"why": "post-hoc"})
    assert applied.status_code == 201
    assert applied.json()["status"] == "APPLIED" and applied.json()["charged"]["amount"] == 400
    rejected = acme_api.event(700, overage_policy="REJECT")
    assert rejected.status_code == 409 and rejected.json()["error"] == "BUDGET_EXCEEDED"
    capped = acme_api.event(700, overage_policy="ALLOW_IF_AVAILABLE")
    assert capped.json()["charged"]["amount"] == 600
    snap = cycles_server.ledger()
    assert [(e.actual, e.charged) for e in snap.events] == [(400, 400), (700, 600)]
    assert snap.events[0].metadata == {"why": "post-hoc"} and snap.scopes["tenant:acme"].spent == 1_000
    assert (
        acme_api.event(1, subject={"tenant": "acme", "app": "x"}).status_code == 201
    )  # tenant budget still applies
    globex = Api(cycles_server, cycles_server.create_api_key("globex"))
    assert globex.event(1, subject={"tenant": "globex"}).status_code == 404


def test_a_closed_tenant_cannot_mutate_but_can_read_and_evaluate(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    rid = acme_api.reserve_id(5)
    cycles_server.close_tenant("acme")
    assert acme_api.reserve(1).json()["error"] == "TENANT_CLOSED"
    assert acme_api.commit(rid, 5).json()["error"] == "TENANT_CLOSED"
    assert acme_api.reserve(1, dry_run=True).json() | {"balances": []} == {
        "decision": "DENY",
        "reason_code": "TENANT_CLOSED",
        "affected_scopes": ["tenant:acme"],
        "scope_path": "tenant:acme",
        "reserved": {"unit": "USD_MICROCENTS", "amount": 0},
        "balances": [],
    }
    assert acme_api.get(f"/v1/reservations/{rid}").json()["status"] == "ACTIVE"


def test_frozen_and_closed_budgets_deny_reservations(cycles_server: LocalCyclesServer, acme_api: Api) -> None:
    cycles_server.set_budget("tenant:acme/app:f", 100, status="FROZEN")
    cycles_server.set_budget("tenant:acme/app:c", 100, status="CLOSED")
    assert acme_api.reserve(1, subject={"tenant": "acme", "app": "f"}).json()["error"] == "BUDGET_FROZEN"
    assert acme_api.reserve(1, subject={"tenant": "acme", "app": "c"}).json()["error"] == "BUDGET_CLOSED"


def test_other_methods_get_405_with_allow_and_the_connection_stays_usable(acme_api: Api) -> None:
    for method in ("TRACE", "DELETE", "HEAD"):
        response = acme_api.http.request(method, "/v1/reservations")
        assert response.status_code == 405 and response.headers["allow"] == "GET, POST"
    assert acme_api.reserve(1).status_code == 200
    assert acme_api.http.request("TRACE", "/v1/nowhere").status_code == 404
