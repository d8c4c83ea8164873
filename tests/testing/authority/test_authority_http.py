"""The authority over real HTTP beyond the protocol's happy paths: the health probe and hostile nesting."""

from __future__ import annotations

import base64

import httpx

from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.authority.protocol import MAX_JSON_DEPTH
from tests.support.raw_api import Api, reservation


def nested_metadata(depth: int) -> dict[str, object]:
    """A ``metadata`` value whose reservation body nests exactly ``depth`` levels (body, metadata, ...)."""
    value: object = []
    for _ in range(depth - 3):
        value = [value]
    return {"chain": value}


def test_the_health_probe_answers_up_without_an_api_key(cycles_server: LocalCyclesServer) -> None:
    answer = httpx.get(f"{cycles_server.base_url}/actuator/health", timeout=5)
    assert answer.status_code == 200 and answer.json() == {"status": "UP"}
    assert answer.headers["Content-Type"] == "application/json"
    [record] = cycles_server.requests
    assert (record.operation, record.status) == ("health", 200)


def test_the_health_probe_takes_only_get(cycles_server: LocalCyclesServer) -> None:
    answer = httpx.post(f"{cycles_server.base_url}/actuator/health", content=b"", timeout=5)
    assert answer.status_code == 405 and answer.headers["Allow"] == "GET"
    assert answer.json()["error"] == "INVALID_REQUEST"


def test_a_body_of_100000_nested_arrays_is_a_protocol_400(
    cycles_server: LocalCyclesServer, acme_api: Api
) -> None:
    answer = acme_api.http.post(
        "/v1/reservations", content=b"[" * 100_000, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"] == "INVALID_REQUEST"
    assert f"nests deeper than {MAX_JSON_DEPTH} levels" in body["message"]
    assert body["request_id"] == answer.headers["X-Request-Id"]
    # The same keep-alive connection still serves, and the refused body was recorded, not lost.
    assert acme_api.reserve(1).status_code == 200
    assert [r.status for r in cycles_server.requests] == [400, 200]


def test_nesting_is_accepted_up_to_the_limit_and_refused_one_level_deeper(acme_api: Api) -> None:
    at_limit = acme_api.reserve(1, metadata=nested_metadata(MAX_JSON_DEPTH))
    assert at_limit.status_code == 200, at_limit.text
    deeper = acme_api.reserve(1, metadata=nested_metadata(MAX_JSON_DEPTH + 1))
    assert deeper.status_code == 400 and "nests deeper" in deeper.json()["message"]
    listed = acme_api.get("/v1/reservations", tenant="acme").json()["reservations"]
    assert len(listed) == 1  # only the reservation within the limit was kept


def test_a_deeply_nested_cursor_is_a_400_naming_the_cursor(acme_api: Api) -> None:
    cursor = base64.urlsafe_b64encode(b"[" * 40_000).decode().rstrip("=")
    answer = acme_api.get("/v1/balances", tenant="acme", cursor=cursor)
    assert answer.status_code == 400, answer.text
    assert answer.json()["details"]["field"] == "cursor"


def test_other_requests_pass_by_the_nesting_check(acme_api: Api) -> None:
    """The limit counts arrays and objects only: a long flat body is fine."""
    wide = reservation(1, metadata={f"k{i}": [i] for i in range(2_000)})
    assert acme_api.post("/v1/reservations", wide).status_code == 200
