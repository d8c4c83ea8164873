"""A thin raw-HTTP caller of the local authority, for tests that need exact status codes and bodies."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import httpx

from cycles_otel.testing.authority import LocalCyclesServer

UNIT = "USD_MICROCENTS"


def reservation(
    amount: int,
    *,
    subject: dict[str, str] | None = None,
    key: str | None = None,
    unit: str = UNIT,
    **fields: Any,
) -> dict[str, Any]:
    """A ReservationCreateRequest body (subject defaults to tenant acme); ``fields`` are added as given."""
    return {
        "idempotency_key": key or uuid.uuid4().hex,
        "subject": subject or {"tenant": "acme"},
        "action": {"kind": "llm.completion", "name": "gpt-4o"},
        "estimate": {"unit": unit, "amount": amount},
        **fields,
    }


class Api:
    """Raw calls with one API key; every call returns the ``httpx.Response``."""

    def __init__(self, server: LocalCyclesServer, api_key: str | None) -> None:
        headers = {"X-Cycles-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=server.base_url, headers=headers, timeout=10)

    def post(self, path: str, body: Any, headers: Mapping[str, str] | None = None) -> httpx.Response:
        return self.http.post(path, json=body, headers=dict(headers or {}))

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(path, params=params)

    def reserve(self, amount: int, **options: Any) -> httpx.Response:
        return self.post("/v1/reservations", reservation(amount, **options))

    def reserve_id(self, amount: int, **options: Any) -> str:
        response = self.reserve(amount, **options)
        assert response.status_code == 200, response.text
        rid: str = response.json()["reservation_id"]
        return rid

    def commit(self, rid: str, actual: int, key: str | None = None, unit: str = UNIT) -> httpx.Response:
        body = {"idempotency_key": key or uuid.uuid4().hex, "actual": {"unit": unit, "amount": actual}}
        return self.post(f"/v1/reservations/{rid}/commit", body)

    def release(self, rid: str) -> httpx.Response:
        return self.post(f"/v1/reservations/{rid}/release", {"idempotency_key": uuid.uuid4().hex})

    def extend(self, rid: str, by_ms: int, key: str | None = None) -> httpx.Response:
        body = {"idempotency_key": key or uuid.uuid4().hex, "extend_by_ms": by_ms}
        return self.post(f"/v1/reservations/{rid}/extend", body)

    def event(self, amount: int, **options: Any) -> httpx.Response:
        body = reservation(0, **options)
        body["actual"] = body.pop("estimate") | {"amount": amount}
        return self.post("/v1/events", body)

    def close(self) -> None:
        self.http.close()
