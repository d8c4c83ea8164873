"""The Budgets dashboard: remaining, utilisation, forecast, burn rate and denials per scope."""

from __future__ import annotations

from ..rules_src.config import TUNABLES as T
from ..rules_src.rules import LONG_WINDOW, SHORT_WINDOW, UTILISATION, burn_rate
from ..rules_src.wording import number, percent, promql, seconds, words
from .builder import JSON, dashboard, label_variable, panel, target, targets

SCOPE = 'cycles_scope=~"$scope", cycles_unit=~"$unit"'
BY_SCOPE = "by (cycles_scope, cycles_unit)"
SCOPE_LEGEND = "{{cycles_scope}} ({{cycles_unit}})"
SCOPE_SPANS = '{ name = "cycles.reservation" && span.cycles.scope = "${__field.labels.cycles_scope}" }'


def build(cycles_admin_url: str) -> JSON:
    utilisation = f"{UTILISATION}{{{SCOPE}}}"
    stale = int(T.stale_after.total_seconds())
    remaining = f"min {BY_SCOPE} (cycles_budget_remaining{{{SCOPE}}})"
    panels = [
        panel(
            "stat",
            f"Scopes over {percent(T.utilisation_warning)}",
            f"Scopes whose utilisation is at or above the {percent(T.utilisation_warning)} warning "
            "threshold.",
            "none",
            [target(f"count({utilisation} >= {number(T.utilisation_warning)}) or vector(0)", instant=True)],
            width=6,
            height=4,
            thresholds=(1, 1),
        ),
        panel(
            "stat",
            "Scopes exhausted",
            "Scopes with an allocation and nothing remaining: reservations are denied.",
            "none",
            [
                target(
                    f"count(({remaining} <= 0) and on (cycles_scope, cycles_unit) "
                    f"(max {BY_SCOPE} (cycles_budget_allocated{{{SCOPE}}}) > 0)) or vector(0)",
                    instant=True,
                )
            ],
            width=6,
            height=4,
            thresholds=(1, 1),
        ),
        panel(
            "stat",
            "Scopes over limit",
            "Scopes the authority reports over their limit (overage capped or debt "
            "above the overdraft limit).",
            "none",
            [
                target(
                    'count(max by (cycles_scope) (cycles_budget_over_limit{cycles_scope=~"$scope"}) == 1) '
                    "or vector(0)",
                    instant=True,
                )
            ],
            width=6,
            height=4,
            thresholds=(1, 1),
        ),
        panel(
            "stat",
            "Oldest balance reading",
            "Age of the oldest balance among the selected scopes; budget alerts "
            f"are blind for a scope whose data is stale (alert after {seconds(T.stale_after)} s).",
            "s",
            [
                target(
                    "max(time() - max by (cycles_scope) "
                    '(cycles_budget_updated_timestamp_seconds{cycles_scope=~"$scope"}))',
                    instant=True,
                )
            ],
            width=6,
            height=4,
            thresholds=(stale // 2, stale),
        ),
        panel(
            "bargauge",
            "Utilisation per scope",
            "(allocated - remaining) / allocated: spent, reserved and debt. "
            f"Warning at {percent(T.utilisation_warning)}, critical at {percent(T.utilisation_critical)}.",
            "percentunit",
            [target(utilisation, SCOPE_LEGEND, instant=True)],
            traceql=SCOPE_SPANS,
            thresholds=(T.utilisation_warning, T.utilisation_critical),
            options={
                "displayMode": "gradient",
                "orientation": "horizontal",
                "minVizHeight": 10,
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            },
        ),
        panel(
            "timeseries",
            "Remaining per scope",
            "Budget remaining in the scope's unit (smallest value any process reports).",
            "short",
            [target(remaining, SCOPE_LEGEND)],
            traceql=SCOPE_SPANS,
        ),
        panel(
            "timeseries",
            "Utilisation over time",
            "Share of each scope's allocation that is used.",
            "percentunit",
            [target(utilisation, SCOPE_LEGEND)],
            traceql=SCOPE_SPANS,
            thresholds=(T.utilisation_warning, T.utilisation_critical),
        ),
        panel(
            "timeseries",
            "Forecast time to exhaustion",
            "Remaining divided by the rate it fell at over the last "
            f"{words(T.forecast_window)} (the window CyclesBudgetExhaustionPredicted uses). "
            "No line: the scope is not draining.",
            "s",
            [
                target(
                    f"{remaining} / (-min {BY_SCOPE} "
                    f"(deriv(cycles_budget_remaining{{{SCOPE}}}[{promql(T.forecast_window)}])) > 0)",
                    SCOPE_LEGEND,
                )
            ],
            traceql=SCOPE_SPANS,
        ),
        panel(
            "timeseries",
            "Burn rate",
            f"Share of the allocation spent per hour, over {words(SHORT_WINDOW)} and over "
            f"{words(LONG_WINDOW)}. CyclesBudgetBurnRateHigh fires when both exceed {percent(T.burn_rate)}.",
            "percentunit",
            targets(
                *(
                    (f"{burn_rate(window)}{{{SCOPE}}}", f"{SCOPE_LEGEND} {promql(window)}")
                    for window in (SHORT_WINDOW, LONG_WINDOW)
                )
            ),
            traceql=SCOPE_SPANS,
            thresholds=(T.burn_rate, 2.5 * T.burn_rate),  # red: the alert's rate 2.5 times over
        ),
        panel(
            "timeseries",
            "Charged per second by unit",
            "Amount charged by commits and events of the whole fleet, per second, in each unit.",
            "short",
            [
                target(
                    "sum by (cycles_unit) "
                    '(rate(cycles_client_charged_total{cycles_unit=~"$unit"}[$__rate_interval]))',
                    "{{cycles_unit}}",
                )
            ],
        ),
        panel(
            "timeseries",
            "Denied reservations by reason",
            "Reservations the authority denied, per second, by "
            "reason (BUDGET_EXCEEDED, DEBT_OUTSTANDING, ...).",
            "reqps",
            [
                target(
                    'sum by (cycles_reason) (rate(cycles_client_reservations_total{cycles_decision="DENY"}'
                    "[$__rate_interval]))",
                    "{{cycles_reason}}",
                )
            ],
            traceql='{ name = "cycles.reservation" && span.cycles.decision = "DENY" }',
        ),
        panel(
            "timeseries",
            "Debt per scope",
            "Debt owed by each scope (overdraft in use); new reservations are denied "
            "with DEBT_OUTSTANDING while it is positive.",
            "short",
            [target(f"max {BY_SCOPE} (cycles_budget_debt{{{SCOPE}}})", SCOPE_LEGEND)],
            traceql=SCOPE_SPANS,
        ),
    ]
    variables = [
        label_variable("scope", "Scope", "cycles_budget_remaining", "cycles_scope"),
        label_variable("unit", "Unit", "cycles_budget_remaining", "cycles_unit"),
    ]
    return dashboard(
        "cycles-budgets",
        "Cycles / Budgets",
        "Budget balance per Cycles scope: what is left, how fast it goes, when it runs out.",
        variables,
        panels,
        cycles_admin_url,
    )
