"""Reservations this process holds: each until it is settled, or until its lease (TTL + grace) lapses."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cycles_otel.bounded import BoundedMap

# The protocol's defaults for a reservation that names neither (cycles-protocol-v0 ReservationCreateRequest).
DEFAULT_TTL_MS: Final = 60_000
DEFAULT_GRACE_MS: Final = 5_000


@dataclass(frozen=True)
class Lease:
    """One hold, on this process's clock: the authority has let it go once ``ends_at`` has passed."""

    expires_at: float  # local clock, seconds: the latest moment the authority's expiry can fall on
    grace: float  # seconds after expiry during which a commit is still accepted
    authority_expires_at_ms: int | None  # the authority's own stamp, to apply extensions exactly

    @property
    def ends_at(self) -> float:
        return self.expires_at + self.grace


class ActiveLeases:
    """What ``cycles.client.active_reservations`` counts.

    A reservation whose settlement never got through (the release was lost, the process gave up)
    is still let go by the authority at expiry + grace. The lease is timed on this process's clock
    from the authority's ``remaining_ttl_ms`` (or the requested TTL), never from comparing the two
    machines' wall clocks, so the count drops to what the authority holds without asking it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # seconds; tests may move it along with a simulated authority clock
        self._leases: BoundedMap[str, Lease] = BoundedMap()

    def opened(
        self, reservation_id: str, remaining_ms: int, grace_ms: int, expires_at_ms: int | None
    ) -> None:
        lease = Lease(self.clock() + remaining_ms / 1000, grace_ms / 1000, expires_at_ms)
        # Beyond capacity the oldest ids are forgotten, and so no longer counted as active.
        self._leases.add_new(reservation_id, lease)

    def extended(self, reservation_id: str, remaining_ms: int | None, expires_at_ms: int | None) -> None:
        lease = self._leases.get(reservation_id)
        if lease is None:
            return
        if remaining_ms is not None:
            expires_at = self.clock() + remaining_ms / 1000
        elif expires_at_ms is not None and lease.authority_expires_at_ms is not None:
            expires_at = lease.expires_at + (expires_at_ms - lease.authority_expires_at_ms) / 1000
        else:
            return
        self._leases.put(reservation_id, Lease(expires_at, lease.grace, expires_at_ms))

    def closed(self, reservation_id: str) -> None:
        self._leases.pop(reservation_id)

    def count(self) -> int:
        """Reservations held now; lapsed leases are forgotten on the way."""
        now = self.clock()
        return self._leases.remove_where(lambda lease: lease.ends_at < now)
