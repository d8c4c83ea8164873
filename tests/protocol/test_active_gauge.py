"""``cycles.client.active_reservations``: an observable gauge over the reservations held right now."""

from __future__ import annotations

from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.protocol import (
    UNIT,
    call,
    close,
    instrumentation,
    make_client,
    reserve_body,
    running_authority,
    settle_body,
)
from tests.support.reliability import on_authority_time

ACTIVE = "cycles.client.active_reservations"


async def test_the_gauge_counts_held_reservations_until_they_settle(telemetry: TelemetryCapture) -> None:
    with running_authority() as (_, config):
        client = make_client("async", config)
        with instrumentation(telemetry):
            assert telemetry.value(ACTIVE) == 0  # exported (as 0) before any reservation
            held = [(await call(client, "create_reservation", reserve_body(100))).body for _ in range(3)]
            assert telemetry.value(ACTIVE) == 3
            await call(
                client,
                "commit_reservation",
                held[0]["reservation_id"],
                settle_body(actual={"unit": UNIT, "amount": 90}),
            )
            await call(client, "release_reservation", held[1]["reservation_id"], settle_body())
            assert telemetry.value(ACTIVE) == 1
            await call(client, "create_reservation", reserve_body(100, dry_run=True))
            assert telemetry.value(ACTIVE) == 1  # a dry run holds nothing
            await call(client, "release_reservation", held[2]["reservation_id"], settle_body())
            assert telemetry.value(ACTIVE) == 0
        await close(client)
    (point,) = telemetry.points(ACTIVE)
    assert dict(point.attributes or {}) == {}


async def test_one_count_per_provider_across_instrumentations(telemetry: TelemetryCapture) -> None:
    """A reservation held when instrumentation stops stays counted, and whoever settles it uncounts it."""
    with running_authority() as (_, config):
        client = make_client("async", config)
        with instrumentation(telemetry):
            held = (await call(client, "create_reservation", reserve_body(100))).body
        assert telemetry.value(ACTIVE) == 1
        with instrumentation(telemetry):
            await call(client, "release_reservation", held["reservation_id"], settle_body())
        await close(client)
    assert telemetry.value(ACTIVE) == 0


async def test_an_unsettled_reservation_stops_counting_once_ttl_and_grace_have_passed(
    telemetry: TelemetryCapture,
) -> None:
    """The authority lets go of a reservation nobody settled at expiry + grace; so does the gauge."""
    with running_authority() as (server, config):
        on_authority_time(telemetry, server)
        client = make_client("async", config)
        with instrumentation(telemetry):
            await call(client, "create_reservation", {**reserve_body(100), "grace_period_ms": 2_000})
            server.clock.advance(60 + 1.5)  # past the TTL, inside the grace: a commit would still land
            assert telemetry.value(ACTIVE) == 1
            server.clock.advance(1)
            assert telemetry.value(ACTIVE) == 0
        await close(client)
    assert {r.status for r in server.ledger().reservations} == {"EXPIRED"}


async def test_an_extension_keeps_the_reservation_counted(telemetry: TelemetryCapture) -> None:
    with running_authority() as (server, config):
        on_authority_time(telemetry, server)
        client = make_client("async", config)
        with instrumentation(telemetry):
            held = (await call(client, "create_reservation", reserve_body(100))).body
            server.clock.advance(50)
            extended = await call(
                client, "extend_reservation", held["reservation_id"], settle_body(extend_by_ms=30_000)
            )
            assert extended.is_success, extended.body
            server.clock.advance(20)  # 70 s in: past the first TTL + grace (65 s), inside the new one (95 s)
            assert telemetry.value(ACTIVE) == 1
            server.clock.advance(30)
            assert telemetry.value(ACTIVE) == 0
        await close(client)
