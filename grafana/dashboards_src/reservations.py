"""The Reservations dashboard: decisions (shadow mode's too), settlements, authority latency and errors."""

from __future__ import annotations

from ..rules_src.config import TUNABLES as T
from ..rules_src.wording import number
from .builder import JSON, dashboard, label_variable, panel, target, targets, trace_table

ACTION = 'cycles_action_name=~"$model"'
OPERATION = 'cycles_operation=~"$operation"'
DURATION = "cycles_client_operation_duration_seconds"
ACTION_SPANS = (
    '{ name = "cycles.reservation" && span.cycles.action.name = "${__field.labels.cycles_action_name}" }'
)
SHADOW_DENIAL_SPANS = (
    '{ name = "cycles.reservation" && span.cycles.mode = "observe" && span.cycles.decision = "DENY" '
    '&& span.cycles.action.name = "${__field.labels.cycles_action_name}" }'
)
SHADOW_DENIALS = f'cycles_client_decisions_total{{cycles_decision="DENY", {ACTION}}}'
UNGOVERNED_SPANS = '{ name = "cycles.reservation" && span.cycles.governed = false }'
OUTCOME_SPANS = '{ name = "cycles.reservation" && span.cycles.outcome = "${__field.labels.cycles_outcome}" }'
OPERATION_SPANS = '{ name = "cycles.${__field.labels.cycles_operation}" }'
# No $model filter: Grafana's regex escaping (gpt-4\.1) is not a valid TraceQL string escape.
RECENT_RESERVATIONS = (
    '{ name = "cycles.reservation" } '
    "| select(span.cycles.decision, span.cycles.reason, span.cycles.scope, span.cycles.charged.amount)"
)


def _quantile(q: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (le, cycles_operation) "
        f"(rate({DURATION}_bucket{{{OPERATION}}}[$__rate_interval])))"
    )


def build(cycles_admin_url: str) -> JSON:
    panels = [
        panel(
            "timeseries",
            "Reservation decisions",
            "Reservations per second by decision (ALLOW, ALLOW_WITH_CAPS, DENY).",
            "reqps",
            [
                target(
                    "sum by (cycles_decision) "
                    f"(rate(cycles_client_reservations_total{{{ACTION}}}[$__rate_interval]))",
                    "{{cycles_decision}}",
                )
            ],
        ),
        panel(
            "timeseries",
            "Decisions by action",
            "Reservations per second by action (the model of a governed LLM call, the tool of a "
            "governed tool run) and decision.",
            "reqps",
            [
                target(
                    "sum by (cycles_action_name, cycles_decision) "
                    f"(rate(cycles_client_reservations_total{{{ACTION}}}[$__rate_interval]))",
                    "{{cycles_action_name}} {{cycles_decision}}",
                )
            ],
            traceql=ACTION_SPANS,
        ),
        panel(
            "timeseries",
            "Would-be denials (shadow mode)",
            "Decisions that held no budget and answered DENY, per second, by reason and action: calls "
            'in shadow mode (mode="observe") that ran anyway and would be denied once enforced, and '
            "any /v1/decide or dry run of your own. CyclesShadowDenials fires on any.",
            "reqps",
            [
                target(
                    "sum by (cycles_reason, cycles_action_kind, cycles_action_name) "
                    f"(rate({SHADOW_DENIALS}[$__rate_interval]))",
                    "{{cycles_action_name}} {{cycles_reason}}",
                )
            ],
            traceql=SHADOW_DENIAL_SPANS,
        ),
        panel(
            "timeseries",
            "Ungoverned calls (fail open)",
            "Calls per second that ran without a reservation because the authority was unavailable "
            'and the client fails open (on_authority_error="allow"), by error type: no budget was '
            "checked before them. CyclesUngovernedCalls fires on any.",
            "reqps",
            [
                target(
                    "sum by (error_type) (rate(cycles_client_ungoverned_total[$__rate_interval]))",
                    "{{error_type}}",
                )
            ],
            traceql=UNGOVERNED_SPANS,
        ),
        panel(
            "timeseries",
            "Settlements by outcome",
            "Reservations settled per second: committed, released, "
            "recovered (re-recorded after expiry) or failed.",
            "reqps",
            [
                target(
                    "sum by (cycles_outcome) (rate(cycles_client_settlements_total[$__rate_interval]))",
                    "{{cycles_outcome}}",
                )
            ],
            traceql=OUTCOME_SPANS,
        ),
        panel(
            "timeseries",
            "Active reservations",
            "Reservations held and not yet settled, summed over processes.",
            "none",
            [target("sum(cycles_client_active_reservations)", "active")],
        ),
        panel(
            "timeseries",
            "Authority latency",
            "p50, p95 and p99 of Cycles protocol calls by operation. "
            f"CyclesAuthorityLatencyHigh fires when p99 stays above {number(T.authority_p99_seconds)} s.",
            "s",
            targets(
                (_quantile("0.5"), "p50 {{cycles_operation}}"),
                (_quantile("0.95"), "p95 {{cycles_operation}}"),
                (_quantile("0.99"), "p99 {{cycles_operation}}"),
            ),
            traceql=OPERATION_SPANS,
            thresholds=(T.authority_p99_seconds / 2, T.authority_p99_seconds),
        ),
        panel(
            "timeseries",
            "Authority calls by operation",
            "Cycles protocol calls per second by operation.",
            "reqps",
            [
                target(
                    f"sum by (cycles_operation) (rate({DURATION}_count{{{OPERATION}}}[$__rate_interval]))",
                    "{{cycles_operation}}",
                )
            ],
            traceql=OPERATION_SPANS,
        ),
        panel(
            "timeseries",
            "Authority errors by type",
            "Failed protocol calls per second by operation and error type "
            "(transport error, HTTP status or protocol error code). Denials are not errors.",
            "reqps",
            [
                target(
                    "sum by (cycles_operation, error_type) "
                    f'(rate({DURATION}_count{{{OPERATION}, error_type!=""}}[$__rate_interval]))',
                    "{{cycles_operation}} {{error_type}}",
                )
            ],
            traceql='{ name =~ "cycles\\\\..*" && status = error }',
        ),
        panel(
            "timeseries",
            "Estimate accuracy",
            "Charged divided by reserved, per unit: above 1 the estimates are "
            f"too low (CyclesEstimatesTooLow at {number(T.estimate_factor)}), well below 1 they hold "
            "budget needlessly.",
            "percentunit",
            [
                target(
                    "sum by (cycles_unit) (rate(cycles_client_charged_total[$__rate_interval])) / "
                    "sum by (cycles_unit) (rate(cycles_client_reserved_total[$__rate_interval]))",
                    "{{cycles_unit}}",
                )
            ],
            thresholds=(1.0, T.estimate_factor),
        ),
        panel(
            "timeseries",
            "Reserved and charged per second",
            "Amount reserved and amount charged per second, per unit.",
            "short",
            targets(
                (
                    "sum by (cycles_unit) (rate(cycles_client_reserved_total[$__rate_interval]))",
                    "reserved {{cycles_unit}}",
                ),
                (
                    "sum by (cycles_unit) (rate(cycles_client_charged_total[$__rate_interval]))",
                    "charged {{cycles_unit}}",
                ),
            ),
        ),
        panel(
            "timeseries",
            "Telemetry health",
            "Failed balance polls by error type, and label values the cardinality "
            "guard collapsed to 'other', per second.",
            "ops",
            targets(
                (
                    "sum by (error_type) (rate(cycles_exporter_poll_errors_total[$__rate_interval]))",
                    "poll errors {{error_type}}",
                ),
                (
                    "sum by (cycles_label) (rate(cycles_otel_label_overflow_total[$__rate_interval]))",
                    "collapsed {{cycles_label}}",
                ),
            ),
            traceql='{ name = "cycles.balances" && status = error }',
        ),
        trace_table(
            "Recent reservations",
            "The latest governed LLM calls and tool runs (cycles.reservation spans) with their "
            "decision, reason, scope and charge. A trace id opens the trace in Tempo, or the Cycles "
            "authority's events and audit entries of that trace in the Cycles admin dashboard.",
            RECENT_RESERVATIONS,
        ),
    ]
    variables = [
        label_variable(
            "model", "Action (model or tool)", "cycles_client_reservations_total", "cycles_action_name"
        ),
        label_variable("operation", "Operation", f"{DURATION}_count", "cycles_operation"),
    ]
    return dashboard(
        "cycles-reservations",
        "Cycles / Reservations",
        "Reserve, commit and release of governed calls; the Cycles authority's latency and errors.",
        variables,
        panels,
        cycles_admin_url,
    )
