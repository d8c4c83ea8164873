"""The authority over real HTTP beyond the protocol: the health probe the reference server answers."""

from __future__ import annotations

import httpx
from authority_conformance import acme, api, authority

from cycles_otel.testing.authority import LocalCyclesServer

__all__ = ["acme", "api", "authority"]  # fixtures used by name below


def test_the_health_probe_answers_up_without_an_api_key(authority: LocalCyclesServer) -> None:
    answer = httpx.get(f"{authority.base_url}/actuator/health", timeout=5)
    assert answer.status_code == 200 and answer.json() == {"status": "UP"}
    assert answer.headers["Content-Type"] == "application/json"
    [record] = authority.requests
    assert (record.operation, record.status) == ("health", 200)


def test_the_health_probe_takes_only_get(authority: LocalCyclesServer) -> None:
    answer = httpx.post(f"{authority.base_url}/actuator/health", content=b"", timeout=5)
    assert answer.status_code == 405 and answer.headers["Allow"] == "GET"
    assert answer.json()["error"] == "INVALID_REQUEST"
