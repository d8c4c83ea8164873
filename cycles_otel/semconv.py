"""Span names and attribute keys of the telemetry contract (``cycles.*`` ours, the rest from semconv)."""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as _gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv.attributes import server_attributes as _server
from opentelemetry.semconv.schemas import Schemas

SCHEMA_URL: Final = Schemas.V1_37_0.value

# --- span names -----------------------------------------------------------------------------
SPAN_RESERVATION: Final = "cycles.reservation"
"""INTERNAL span around one governed LLM call: reserve, call, settle."""
SPAN_RESERVE: Final = "cycles.reserve"
SPAN_COMMIT: Final = "cycles.commit"
SPAN_RELEASE: Final = "cycles.release"
SPAN_EXTEND: Final = "cycles.extend"
SPAN_DECIDE: Final = "cycles.decide"
SPAN_EVENT: Final = "cycles.event"
SPAN_BALANCES: Final = "cycles.balances"
SPAN_GET_RESERVATION: Final = "cycles.get_reservation"
SPAN_LIST_RESERVATIONS: Final = "cycles.list_reservations"

# --- cycles.* span attributes ------------------------------------------------------------------
CYCLES_OPERATION: Final = "cycles.operation"
CYCLES_RESERVATION_ID: Final = "cycles.reservation.id"
CYCLES_DECISION: Final = "cycles.decision"
CYCLES_REASON: Final = "cycles.reason"
CYCLES_ESTIMATE_AMOUNT: Final = "cycles.estimate.amount"
CYCLES_ACTUAL_AMOUNT: Final = "cycles.actual.amount"
CYCLES_ACTUAL_SOURCE: Final = "cycles.actual.source"
CYCLES_ESTIMATE_SOURCE: Final = "cycles.estimate.source"
"""How a reservation estimate was made: fixed, callable, tokenizer or characters."""
CYCLES_CHARGED_AMOUNT: Final = "cycles.charged.amount"
CYCLES_RELEASED_AMOUNT: Final = "cycles.released.amount"
CYCLES_UNIT: Final = "cycles.unit"
CYCLES_SCOPE: Final = "cycles.scope"
CYCLES_AFFECTED_SCOPES: Final = "cycles.affected_scopes"
CYCLES_SUBJECT_PREFIX: Final = "cycles.subject."
SUBJECT_FIELDS: Final = ("tenant", "workspace", "app", "workflow", "agent", "toolset")
CYCLES_ACTION_KIND: Final = "cycles.action.kind"
CYCLES_ACTION_NAME: Final = "cycles.action.name"
CYCLES_OUTCOME: Final = "cycles.outcome"
CYCLES_REQUEST_ID: Final = "cycles.request_id"
CYCLES_DRY_RUN: Final = "cycles.dry_run"
CYCLES_OVER_LIMIT: Final = "cycles.over_limit"
CYCLES_CAPS_MAX_TOKENS: Final = "cycles.caps.max_tokens"
CYCLES_CAPS_TOOLS_REMOVED: Final = "cycles.caps.tools_removed"
CYCLES_COST_USD: Final = "cycles.cost.usd"
CYCLES_LATE_SETTLEMENT: Final = "cycles.late_settlement"
CYCLES_DENY_PREFIX: Final = "cycles.deny."
DENY_DETAIL_FIELDS: Final = ("blocked_by_scope", "suggested_fix", "budget_remaining")
"""The fields of a denial's ``deny_detail`` (protocol 0.1.27), each a ``cycles.deny.<field>`` attribute."""
CYCLES_MODE: Final = "cycles.mode"
"""``observe`` on a call governed in shadow mode (asked, never blocked or held); absent when enforced."""
CYCLES_GOVERNED: Final = "cycles.governed"
"""False on a call that ran without a reservation because the authority was unavailable."""
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"

# --- span events --------------------------------------------------------------------------------
EVENT_DENIED: Final = "cycles.denied"
EVENT_BUDGET_EXHAUSTED: Final = "cycles.budget_exhausted"
EVENT_AUTHORITY_UNAVAILABLE: Final = "cycles.authority_unavailable"

# --- metric labels (Prometheus: dots become underscores) ----------------------------------------
LABEL_DECISION: Final = "cycles.decision"
LABEL_REASON: Final = "cycles.reason"
LABEL_ACTION_KIND: Final = "cycles.action.kind"
LABEL_ACTION_NAME: Final = "cycles.action.name"
LABEL_OUTCOME: Final = "cycles.outcome"
LABEL_UNIT: Final = "cycles.unit"
LABEL_OPERATION: Final = "cycles.operation"
LABEL_SCOPE: Final = "cycles.scope"
LABEL_OVERFLOW_KEY: Final = "cycles.label"
"""On ``cycles.otel.label_overflow``: the label key whose value was collapsed to ``other``."""

# --- values -----------------------------------------------------------------------------------
DECISION_ALLOW: Final = "ALLOW"
DECISION_ALLOW_WITH_CAPS: Final = "ALLOW_WITH_CAPS"
DECISION_DENY: Final = "DENY"
OUTCOME_COMMITTED: Final = "committed"
OUTCOME_RELEASED: Final = "released"
OUTCOME_RECOVERED: Final = "recovered"
OUTCOME_FAILED: Final = "failed"
SETTLEMENT_OUTCOMES: Final = (OUTCOME_COMMITTED, OUTCOME_RELEASED, OUTCOME_RECOVERED, OUTCOME_FAILED)
RESERVATION_RECORDED: Final = "recorded"
"""On ``cycles.reservation`` only: an ungoverned call's spend, sent as an event (no reservation existed)."""
ACTUAL_SOURCE_USAGE: Final = "usage"
ACTUAL_SOURCE_ESTIMATED: Final = "estimated"
RESERVATION_OBSERVED: Final = "observed"
"""On ``cycles.reservation`` only: a shadow-mode call, decided but not reserved."""
MODE_OBSERVE: Final = "observe"
DENIAL_CODES: Final = frozenset(
    {
        "BUDGET_EXCEEDED",
        "OVERDRAFT_LIMIT_EXCEEDED",
        "DEBT_OUTSTANDING",
        "BUDGET_FROZEN",
        "BUDGET_CLOSED",
        "TENANT_CLOSED",
        # protocol 0.1.27 (companion specs): per-action quotas and action-kind policies
        "ACTION_QUOTA_EXCEEDED",
        "ACTION_KIND_DENIED",
        "ACTION_KIND_NOT_ALLOWED",
    }
)
"""Reasons a 409 is a budget decision (DENY), not a failure of the authority."""

# --- semconv re-exports, so logic never spells a key twice --------------------------------------
ERROR_TYPE: Final = _error.ERROR_TYPE
SERVER_ADDRESS: Final = _server.SERVER_ADDRESS
SERVER_PORT: Final = _server.SERVER_PORT
GEN_AI_OPERATION_NAME: Final = _gen_ai.GEN_AI_OPERATION_NAME
GEN_AI_PROVIDER_NAME: Final = _gen_ai.GEN_AI_PROVIDER_NAME
GEN_AI_REQUEST_MODEL: Final = _gen_ai.GEN_AI_REQUEST_MODEL
GEN_AI_REQUEST_MAX_TOKENS: Final = _gen_ai.GEN_AI_REQUEST_MAX_TOKENS
GEN_AI_RESPONSE_MODEL: Final = _gen_ai.GEN_AI_RESPONSE_MODEL
GEN_AI_RESPONSE_ID: Final = _gen_ai.GEN_AI_RESPONSE_ID
GEN_AI_RESPONSE_FINISH_REASONS: Final = _gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
GEN_AI_USAGE_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_INPUT_TOKENS
GEN_AI_USAGE_OUTPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
GEN_AI_AGENT_NAME: Final = _gen_ai.GEN_AI_AGENT_NAME
GEN_AI_AGENT_ID: Final = _gen_ai.GEN_AI_AGENT_ID
GEN_AI_TOOL_NAME: Final = _gen_ai.GEN_AI_TOOL_NAME
GEN_AI_TOKEN_TYPE: Final = _gen_ai.GEN_AI_TOKEN_TYPE
GEN_AI_INPUT_MESSAGES: Final = _gen_ai.GEN_AI_INPUT_MESSAGES
GEN_AI_OUTPUT_MESSAGES: Final = _gen_ai.GEN_AI_OUTPUT_MESSAGES
GEN_AI_OPERATION_CHAT: Final = _gen_ai.GenAiOperationNameValues.CHAT.value
GEN_AI_TOKEN_INPUT: Final = _gen_ai.GenAiTokenTypeValues.INPUT.value
GEN_AI_TOKEN_OUTPUT: Final = _gen_ai.GenAiTokenTypeValues.OUTPUT.value
GenAiProvider: Final = _gen_ai.GenAiProviderNameValues
"""``gen_ai.provider.name`` values (``GenAiProvider.OPENAI.value`` is ``"openai"``)."""
METRIC_GEN_AI_TOKEN_USAGE: Final = _gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE
METRIC_GEN_AI_OPERATION_DURATION: Final = _gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION
CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
