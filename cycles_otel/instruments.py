"""Every metric instrument of the telemetry contract, created once per meter provider."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from typing import Final

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from cycles_otel.balance_board import BalanceBoard
from cycles_otel.cardinality import CardinalityGuard
from cycles_otel.leases import ActiveLeases
from cycles_otel.semconv import (
    LABEL_OVERFLOW_KEY,
    LABEL_SCOPE,
    METRIC_GEN_AI_OPERATION_DURATION,
    METRIC_GEN_AI_TOKEN_USAGE,
    SCHEMA_URL,
)
from cycles_otel.tally import Tally
from cycles_otel.version import __version__

# GenAI semconv advisory boundaries.
TOKEN_BUCKETS: Final = tuple(float(4**i) for i in range(14))  # 1, 4, 16, ..., 67108864
GENAI_DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
# Authority round trips are milliseconds on a LAN and seconds when something is wrong.
PROTOCOL_DURATION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

METER_NAME: Final = "cycles_otel"
logger = logging.getLogger(__name__)


class Instruments:
    """The instruments of one meter; the budget gauges read ``board``, every label passes ``guard``.

    The guard is fixed here: the board's gauges are registered once per meter (the SDK ignores a
    second registration), so every caller on one provider must see the same labels.
    """

    def __init__(self, meter: Meter, guard: CardinalityGuard | None = None) -> None:
        self.label_overflow = meter.create_counter(
            "cycles.otel.label_overflow",
            "{value}",
            "Label values collapsed to 'other' by the cardinality guard, by label key.",
        )
        self._guard = guard or CardinalityGuard.from_env()
        # Every collapse is counted once, whoever asked the guard.
        self._guard.on_overflow = self._count_overflow
        self.board = BalanceBoard(lambda scope: self._guard.bound(LABEL_SCOPE, scope))
        # Ledger-like counts, one or more per governed call: summed here, read at collection (tally.py).
        self.reservations = Tally(
            meter,
            "cycles.client.reservations",
            "{reservation}",
            "Reservation decisions, by decision and reason.",
        )
        self.decisions = Tally(
            meter,
            "cycles.client.decisions",
            "{decision}",
            "Decisions that held no budget (/v1/decide, dry-run reservations), by decision and reason.",
        )
        self.settlements = Tally(
            meter, "cycles.client.settlements", "{reservation}", "Reservations settled, by outcome."
        )
        self.reserved = Tally(
            meter, "cycles.client.reserved", "{amount}", "Amount reserved, in the budget's unit."
        )
        self.charged = Tally(
            meter,
            "cycles.client.charged",
            "{amount}",
            "Amount charged by commits and events, in the budget's unit.",
        )
        self.ungoverned = meter.create_counter(
            "cycles.client.ungoverned",
            "{call}",
            "Calls run without a reservation because the authority was unavailable (fail open).",
        )
        self.cost_usd = meter.create_counter(
            "cycles.client.cost.usd",
            "{USD}",
            "Priced cost of governed LLM calls and tool runs in US dollars.",
        )
        self.operation_duration = meter.create_histogram(
            "cycles.client.operation.duration",
            "s",
            "Duration of Cycles protocol calls.",
            explicit_bucket_boundaries_advisory=PROTOCOL_DURATION_BUCKETS,
        )
        # The reservations held and not yet settled, shared by every instrumentation on this provider;
        # the gauge reads them at collection, so a call makes no measurement for it.
        self.active = ActiveLeases()
        self.active_reservations = meter.create_observable_gauge(
            "cycles.client.active_reservations",
            callbacks=[self._observe_active],
            unit="{reservation}",
            description="Reservations held and not yet settled.",
        )
        self.token_usage = meter.create_histogram(
            METRIC_GEN_AI_TOKEN_USAGE,
            "{token}",
            "Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.genai_duration = meter.create_histogram(
            METRIC_GEN_AI_OPERATION_DURATION,
            "s",
            "GenAI operation duration.",
            explicit_bucket_boundaries_advisory=GENAI_DURATION_BUCKETS,
        )
        self.poll_errors = meter.create_counter(
            "cycles.exporter.poll_errors",
            "{error}",
            "Failed balance polls, by error.type (transport error class, HTTP status or invalid_response).",
        )
        self.board.register_gauges(meter)

    @property
    def guard(self) -> CardinalityGuard:
        """The cardinality guard every label of these instruments passes; fixed at creation."""
        return self._guard

    def _observe_active(self, _: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self.active.count())

    def _count_overflow(self, key: str) -> None:
        self.label_overflow.add(1, {LABEL_OVERFLOW_KEY: key})


_cache: weakref.WeakKeyDictionary[MeterProvider, Instruments] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def get_instruments(
    meter_provider: MeterProvider | None = None, guard: CardinalityGuard | None = None
) -> Instruments:
    """The one :class:`Instruments` of ``meter_provider`` (default: the global provider).

    The first call for a provider fixes its cardinality guard (``guard``, or one from the
    environment); later calls pass no guard, or that same one. A different guard raises
    ``ValueError``: swapping it would silently change the labels of every other user of the provider.
    Instruments made on the global provider before one was set (OpenTelemetry's proxy) are the
    provider's once ``set_meter_provider()`` gives it to the proxy: the SDK would ignore a second
    set's callbacks and lose what they count. A guard passed then is not applied, and a warning
    says so.
    """
    provider = meter_provider or metrics.get_meter_provider()
    with _cache_lock:
        found = _cache.get(provider)
        if found is None:
            meter = provider.get_meter(METER_NAME, __version__, schema_url=SCHEMA_URL)
            early = _made_on_a_proxy_of(meter, provider)
            if early is not None:
                found = _cache[provider] = early
                if guard is not None and guard is not early.guard:
                    logger.warning(
                        "cycles_otel: cardinality guard not applied: instruments were made on the "
                        "global meter provider before it was set (limit %s); set the MeterProvider "
                        "(or call configure_telemetry()) before instrumenting",
                        early.guard.limit,
                    )
                return found
            found = _cache[provider] = Instruments(meter, guard)
        elif guard is not None and guard is not found.guard:
            raise ValueError(
                f"guard: this meter provider's instruments already have another cardinality guard "
                f"(limit {found.guard.limit}), fixed when they were first made by configure_telemetry() or "
                "the first get_instruments() call: pass no guard to use that one, pass yours to the "
                "first call, or give it a MeterProvider of its own"
            )
        return found


def _made_on_a_proxy_of(meter: Meter, provider: MeterProvider) -> Instruments | None:
    """The instruments made on a provider that now hands out ``provider``'s own meter (the proxy).

    Only a provider with no pipeline of its own can: an SDK provider (it has ``shutdown``) makes
    its own meters, and is not asked (a shut-down one would log a warning).
    """
    for other, instruments in list(_cache.items()):
        if other is provider or hasattr(other, "shutdown"):
            continue
        if other.get_meter(METER_NAME, __version__, schema_url=SCHEMA_URL) is meter:
            return instruments
    return None
