"""The one configuration of the alerts: runbook base URL, thresholds, windows and ``for:`` holds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta

RUNBOOK_URL_ENV = "CYCLES_RUNBOOK_URL"
# Where the runbook is read when nobody says otherwise: the repository's copy on GitHub, whose
# Markdown view turns each "## CyclesAlertName" heading into the anchor #cyclesalertname.
DEFAULT_RUNBOOK_URL = "https://github.com/cycles-otel/cycles-otel/blob/main/grafana/runbook.md"


def minutes(count: float) -> timedelta:
    return timedelta(minutes=count)


def hours(count: float) -> timedelta:
    return timedelta(hours=count)


@dataclass(frozen=True)
class Tunables:
    """Every threshold, window and hold of the alerts; ratios are fractions (0.8 is 80 %).

    The rule files, their promtool tests, the runbook and the dashboards' thresholds all read
    these values; change one here and regenerate (``python -m grafana.rules_src`` and
    ``python -m grafana.dashboards_src``).
    """

    # CyclesBudgetNearlyExhausted: utilisation is (allocated - remaining) / allocated.
    utilisation_warning: float = 0.80
    utilisation_warning_for: timedelta = timedelta(minutes=5)
    utilisation_critical: float = 0.95
    utilisation_critical_for: timedelta = timedelta(minutes=2)
    # CyclesBudgetExhaustionPredicted: used at least this much AND empty within the horizon.
    forecast_floor: float = 0.50
    forecast_window: timedelta = timedelta(hours=6)
    forecast_horizon: timedelta = timedelta(hours=24)
    forecast_for: timedelta = timedelta(minutes=30)
    # CyclesBudgetBurnRateHigh: share of the allocation spent per hour, over both burn windows.
    burn_rate: float = 0.10
    burn_for: timedelta = timedelta(minutes=2)
    # CyclesReservationDenialsHigh: denied share of a job's reservations.
    denial_ratio: float = 0.10
    denial_for: timedelta = timedelta(minutes=10)
    # CyclesAuthorityLatencyHigh / CyclesAuthorityErrors.
    authority_p99_seconds: float = 0.5
    authority_latency_for: timedelta = timedelta(minutes=10)
    authority_error_ratio: float = 0.05
    authority_errors_for: timedelta = timedelta(minutes=5)
    # CyclesBudgetExhausted, CyclesBudgetInDebt, CyclesCostOverrun.
    exhausted_for: timedelta = timedelta(minutes=1)
    debt_for: timedelta = timedelta(minutes=5)
    over_limit_for: timedelta = timedelta(minutes=1)
    # CyclesBudgetExceededDenials and CyclesOverdraftDenials: any denial within the window.
    denials_window: timedelta = timedelta(minutes=5)
    # CyclesShadowDenials: any DENY of a decision that held nothing (shadow mode) within the window.
    shadow_denials_window: timedelta = timedelta(minutes=15)
    # CyclesEstimatesTooLow: charged above this factor of reserved, over the window.
    estimate_factor: float = 1.2
    estimate_window: timedelta = timedelta(hours=1)
    estimate_for: timedelta = timedelta(minutes=15)
    # CyclesBudgetDataStale: newest balance of a scope older than this.
    stale_after: timedelta = timedelta(minutes=10)
    stale_for: timedelta = timedelta(minutes=5)
    # CyclesSettlementFailures: any failed or recovered settlement within the window.
    settlement_window: timedelta = timedelta(minutes=15)
    # CyclesUngovernedCalls: any call run without a reservation (failing open) within the window.
    ungoverned_window: timedelta = timedelta(minutes=5)
    # CyclesBalancePollErrors.
    poll_errors_window: timedelta = timedelta(minutes=5)
    poll_errors_for: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, timedelta) and (value <= timedelta(0) or value % timedelta(seconds=1)):
                raise ValueError(f"Tunables.{field.name} = {value}: use a positive whole number of seconds")
            if isinstance(value, float) and not value > 0:
                raise ValueError(f"Tunables.{field.name} = {value}: use a number above 0")
        for name in ("utilisation_warning", "utilisation_critical", "forecast_floor", "denial_ratio"):
            if getattr(self, name) > 1:
                raise ValueError(f"Tunables.{name} = {getattr(self, name)}: a ratio, at most 1 (1 is 100 %)")
        if self.utilisation_warning >= self.utilisation_critical:
            raise ValueError(
                f"Tunables.utilisation_warning ({self.utilisation_warning}) must be below "
                f"utilisation_critical ({self.utilisation_critical})"
            )


TUNABLES = Tunables()
