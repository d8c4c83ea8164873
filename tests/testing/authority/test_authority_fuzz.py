"""Hostile input against the local authority: random bytes, odd scopes, huge bodies, broken framing.

Schema-driven fuzzing of every operation (schemathesis, positive and negative) lives in
``test_authority_matrix.py``; these properties cover what a schema cannot describe. Every answer
must be a protocol answer the official spec allows, never a 5xx, and bad input must change nothing.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cycles_otel.testing.authority import LocalCyclesServer
from tests.support.conformance import assert_conforms

pytestmark = pytest.mark.slow

TENANT = "acme"
BUDGET = 10**12
POST_PATHS = (
    "/v1/reservations",
    "/v1/decide",
    "/v1/events",
    "/v1/reservations/rsv_x/commit",
    "/v1/reservations/rsv_x/release",
    "/v1/reservations/rsv_x/extend",
)
FUZZ = settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))
# The spec's charset for subject values (info.description: SHOULD match ^[a-zA-Z0-9._-]+$).
SEGMENT_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class Target:
    """One authority shared by a module's examples, with a keep-alive client of tenant ``acme``."""

    def __init__(self, server: LocalCyclesServer) -> None:
        self.server = server
        self.key = server.create_api_key(TENANT)
        self.http = httpx.Client(base_url=server.base_url, headers={"X-Cycles-API-Key": self.key}, timeout=10)

    def post_raw(self, path: str, content: bytes, **headers: str) -> httpx.Response:
        return self.http.post(path, content=content, headers={"Content-Type": "application/json", **headers})

    def held(self) -> int:
        return self.server.ledger().scopes[f"tenant:{TENANT}"].reserved


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with LocalCyclesServer(max_body_bytes=64 * 1024) as server:
        server.set_budget(f"tenant:{TENANT}", BUDGET)
        found = Target(server)
        yield found
        found.http.close()
        assert not [r for r in server.requests if r.status is None or r.status >= 500]
        assert_conforms(server)


def reserve_body(subject: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "idempotency_key": uuid.uuid4().hex,
        "subject": subject,
        "action": {"kind": "llm.completion", "name": "gpt-4o"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": 7},
        **extra,
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(path=st.sampled_from(POST_PATHS), payload=st.binary(max_size=512))
def test_random_bytes_get_a_400_and_change_nothing(target: Target, path: str, payload: bytes) -> None:
    before = target.server.ledger()
    answer = target.post_raw(path, payload)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "INVALID_REQUEST"
    after = target.server.ledger()
    assert (after.count(), len(after.events)) == (before.count(), len(before.events))


@FUZZ
@given(path=st.sampled_from(POST_PATHS), value=json_values)
def test_any_json_that_is_not_a_request_is_refused_by_field(target: Target, path: str, value: Any) -> None:
    answer = target.post_raw(path, json.dumps(value).encode())
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"] == "INVALID_REQUEST" and body["message"]


@FUZZ
@given(
    value=json_values,
    where=st.sampled_from(["subject", "action", "estimate", "ttl_ms", "idempotency_key", "overage_policy"]),
)
def test_a_wrongly_typed_field_is_named_in_the_error(target: Target, value: Any, where: str) -> None:
    body = reserve_body({"tenant": TENANT}, ttl_ms=60_000)
    if body.get(where) == value:
        return
    body[where] = value
    held = target.held()
    answer = target.post_raw("/v1/reservations", json.dumps(body).encode())
    if answer.status_code == 200:  # the fuzzer found another valid value: settle it
        target.http.post(
            f"/v1/reservations/{answer.json()['reservation_id']}/release",
            json={"idempotency_key": uuid.uuid4().hex},
        )
        return
    assert answer.status_code == 400, answer.text
    assert answer.json()["details"]["field"].startswith(where)
    assert target.held() == held


def case_variants(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(word, upper, strict=True))
    )


@FUZZ
@given(tenant=case_variants(TENANT), agent=st.text(max_size=140), workflow=st.text(min_size=1, max_size=20))
def test_unicode_and_case_in_scope_values(target: Target, tenant: str, agent: str, workflow: str) -> None:
    """Case never makes a new tenant; a value outside the charset or over 128 chars never reaches a scope."""
    subject = {"tenant": tenant, "workflow": workflow}
    if agent:
        subject["agent"] = agent
    held = target.held()
    answer = target.post_raw("/v1/reservations", json.dumps(reserve_body(subject)).encode())
    valid = all(set(v) <= SEGMENT_CHARS and len(v) <= 128 for v in (workflow, agent or "x"))
    if not valid:
        assert answer.status_code == 400, answer.text
        assert answer.json()["details"]["field"] in {"subject.agent", "subject.workflow"}
        assert target.held() == held
        return
    assert answer.status_code == 200, answer.text
    scope = answer.json()["scope_path"]
    expected = f"tenant:{TENANT}/workflow:{workflow.lower()}" + (f"/agent:{agent.lower()}" if agent else "")
    assert scope == expected
    assert target.held() == held + 7
    rid = answer.json()["reservation_id"]
    released = target.http.post(f"/v1/reservations/{rid}/release", json={"idempotency_key": uuid.uuid4().hex})
    assert released.status_code == 200


@pytest.mark.parametrize("value", ["writer\n", "acme\n"])
def test_a_trailing_newline_is_not_a_valid_scope_value(target: Target, value: str) -> None:
    answer = target.post_raw(
        "/v1/reservations", json.dumps(reserve_body({"tenant": TENANT, "agent": value})).encode()
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["details"]["field"] == "subject.agent"


def raw_exchange(server: LocalCyclesServer, request: bytes) -> bytes:
    """Send bytes on a fresh connection and read until the server closes it or answers once."""
    with socket.create_connection((server.host, server.port), timeout=5) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def head(path: str, key: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"X-Cycles-API-Key: {key}", "Connection: close"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"Content_Length": str(10**9)}, b"{}", "the limit is 65536 bytes"),
        ({"Content_Length": str(64 * 1024 + 1)}, b"x" * (64 * 1024 + 1), "the limit is 65536 bytes"),
        ({"Content_Length": "abc"}, b"{}", "Content-Length must be an integer"),
        ({"Content_Length": "-5"}, b"{}", "Content-Length must be an integer"),
        ({"Transfer_Encoding": "chunked"}, b"2\r\n{}\r\n0\r\n\r\n", "send Content-Length"),
        ({"Content_Length": "2"}, b"{}", "idempotency_key: is required"),
    ],
    ids=[
        "huge-declared",
        "just-over-limit",
        "non-numeric-length",
        "negative-length",
        "chunked",
        "empty-object",
    ],
)
def test_framing_abuse_gets_a_protocol_400(
    target: Target, headers: dict[str, str], body: bytes, message: str
) -> None:
    before = target.server.ledger().count()
    answer = raw_exchange(target.server, head("/v1/reservations", target.key, **headers) + body)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), answer[:200]
    payload = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert payload["error"] == "INVALID_REQUEST" and message in payload["message"], payload
    assert target.server.ledger().count() == before
    # The server is still healthy for everyone else.
    assert target.http.get("/v1/balances", params={"tenant": TENANT}).status_code == 200


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    path=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#?%"), max_size=40
    ),
)
def test_unknown_routes_and_methods_are_404_or_405(target: Target, method: str, path: str) -> None:
    answer = target.http.request(method, "/" + path.lstrip("/"))
    assert answer.status_code < 500, answer.text
    if answer.status_code == 405:
        assert answer.headers["Allow"]


@pytest.mark.parametrize(
    "key",
    ["", "CYC_LIVE_WRONG", "cyc_live_" + "a" * 4096, "key with spaces", "ключ"],
    ids=["empty", "unknown", "very-long", "spaces", "non-ascii"],
)
def test_bad_api_keys_get_401_and_no_tenant(target: Target, key: str) -> None:
    answer = httpx.post(
        f"{target.server.base_url}/v1/reservations",
        json=reserve_body({"tenant": TENANT}),
        headers=[(b"X-Cycles-API-Key", key.encode())],
        timeout=10,
    )
    assert answer.status_code == 401 and answer.json()["error"] == "UNAUTHORIZED"


def test_a_case_variant_of_a_valid_key_is_refused(target: Target) -> None:
    answer = httpx.post(
        f"{target.server.base_url}/v1/reservations",
        json=reserve_body({"tenant": TENANT}),
        headers={"X-Cycles-API-Key": target.key.swapcase()},
        timeout=10,
    )
    assert answer.status_code == 401
