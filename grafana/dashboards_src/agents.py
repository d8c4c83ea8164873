"""The Agents & models dashboard: cost by agent, model and tool; tokens and LLM latency by model."""

from __future__ import annotations

from .builder import JSON, dashboard, label_variable, panel, target, targets

# One counter holds the spend of LLM calls (labelled by model) and of tool runs (labelled by tool):
# each panel selects one kind by requiring its label, so none counts the other ("" matches .*).
MODEL_COST = (
    'cycles_client_cost_usd_total{gen_ai_agent_name=~"$agent", gen_ai_request_model=~"$model", '
    'gen_ai_request_model!=""}'
)
TOOL_COST = (
    'cycles_client_cost_usd_total{gen_ai_agent_name=~"$agent", gen_ai_tool_name=~"$tool", '
    'gen_ai_tool_name!=""}'
)
MODEL = 'gen_ai_request_model=~"$model"'
GENAI_DURATION = "gen_ai_client_operation_duration_seconds"
RESERVATIONS_OF = '{ name = "cycles.reservation" && '
AGENT = 'span.gen_ai.agent.name = "${__field.labels.gen_ai_agent_name}"'
TOOL = 'span.gen_ai.tool.name = "${__field.labels.gen_ai_tool_name}"'
AGENT_SPANS = RESERVATIONS_OF + AGENT + " }"
TOOL_SPANS = RESERVATIONS_OF + TOOL + " }"
AGENT_TOOL_SPANS = RESERVATIONS_OF + f"{TOOL} && {AGENT} }}"
MODEL_SPANS = '{ span.gen_ai.request.model = "${__field.labels.gen_ai_request_model}" }'


def _latency(q: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (le, gen_ai_request_model) "
        f"(rate({GENAI_DURATION}_bucket{{{MODEL}}}[$__rate_interval])))"
    )


def _hourly(by: str, cost: str) -> str:
    return f"sum by ({by}) (rate({cost}[$__rate_interval])) * 3600"


def _cost_panel(title: str, description: str, by: str, cost: str, legend: str, traceql: str) -> JSON:
    return panel(
        "timeseries", title, description, "currencyUSD", [target(_hourly(by, cost), legend)], traceql=traceql
    )


def build(cycles_admin_url: str) -> JSON:
    panels = [
        _cost_panel(
            "LLM cost per hour by agent",
            "Priced cost of governed LLM calls in US dollars per hour, by AutoGen agent "
            "(tool runs are apart, in the tool cost panels).",
            "gen_ai_agent_name",
            MODEL_COST,
            "{{gen_ai_agent_name}}",
            AGENT_SPANS,
        ),
        _cost_panel(
            "LLM cost per hour by model",
            "Priced cost of governed LLM calls in US dollars per hour, by requested model.",
            "gen_ai_request_model",
            MODEL_COST,
            "{{gen_ai_request_model}}",
            MODEL_SPANS,
        ),
        _cost_panel(
            "Tool cost per hour by tool",
            "Cost of governed tool runs (BudgetedTool, BudgetedWorkbench) in US dollars per hour, by "
            "tool: the actual each run committed, when its budget counts USD_MICROCENTS.",
            "gen_ai_tool_name",
            TOOL_COST,
            "{{gen_ai_tool_name}}",
            TOOL_SPANS,
        ),
        _cost_panel(
            "Tool cost per hour by agent",
            "Cost of governed tool runs in US dollars per hour, by the AutoGen agent that ran the tool.",
            "gen_ai_agent_name, gen_ai_tool_name",
            TOOL_COST,
            "{{gen_ai_agent_name}} / {{gen_ai_tool_name}}",
            AGENT_TOOL_SPANS,
        ),
        panel(
            "bargauge",
            "Top spenders",
            "The ten agent and model pairs, and the ten agent and tool pairs, with the highest cost "
            "per hour, averaged over the dashboard's time range.",
            "currencyUSD",
            targets(
                (
                    f"topk(10, {_hourly('gen_ai_agent_name, gen_ai_request_model', MODEL_COST)})",
                    "{{gen_ai_agent_name}} / {{gen_ai_request_model}}",
                ),
                (
                    f"topk(10, {_hourly('gen_ai_agent_name, gen_ai_tool_name', TOOL_COST)})",
                    "{{gen_ai_agent_name}} / tool {{gen_ai_tool_name}}",
                ),
            ),
            traceql=AGENT_SPANS,
            options={
                "displayMode": "gradient",
                "orientation": "horizontal",
                "minVizHeight": 10,
                "reduceOptions": {"calcs": ["mean"], "fields": "", "values": False},
            },
        ),
        panel(
            "timeseries",
            "Tokens per second by model",
            "Input and output tokens per second by model (token "
            "metrics carry no agent label: the agent variable does not apply).",
            "short",
            [
                target(
                    "sum by (gen_ai_request_model, gen_ai_token_type) "
                    f"(rate(gen_ai_client_token_usage_sum{{{MODEL}}}[$__rate_interval]))",
                    "{{gen_ai_request_model}} {{gen_ai_token_type}}",
                )
            ],
            traceql=MODEL_SPANS,
        ),
        panel(
            "timeseries",
            "Tokens per call (p95)",
            "95th percentile of tokens per call by model and token type.",
            "short",
            [
                target(
                    "histogram_quantile(0.95, sum by (le, gen_ai_request_model, gen_ai_token_type) "
                    f"(rate(gen_ai_client_token_usage_bucket{{{MODEL}}}[$__rate_interval])))",
                    "{{gen_ai_request_model}} {{gen_ai_token_type}}",
                )
            ],
            traceql=MODEL_SPANS,
        ),
        panel(
            "timeseries",
            "LLM latency",
            "p50, p95 and p99 duration of governed LLM calls by model.",
            "s",
            targets(
                (_latency("0.5"), "p50 {{gen_ai_request_model}}"),
                (_latency("0.95"), "p95 {{gen_ai_request_model}}"),
                (_latency("0.99"), "p99 {{gen_ai_request_model}}"),
            ),
            traceql=MODEL_SPANS,
        ),
        panel(
            "timeseries",
            "LLM calls by model",
            "Governed LLM calls per second by model.",
            "reqps",
            [
                target(
                    f"sum by (gen_ai_request_model) "
                    f"(rate({GENAI_DURATION}_count{{{MODEL}}}[$__rate_interval]))",
                    "{{gen_ai_request_model}}",
                )
            ],
            traceql=MODEL_SPANS,
        ),
        panel(
            "timeseries",
            "LLM errors by type",
            "Failed LLM calls per second by model and error type.",
            "reqps",
            [
                target(
                    "sum by (gen_ai_request_model, error_type) "
                    f'(rate({GENAI_DURATION}_count{{{MODEL}, error_type!=""}}[$__rate_interval]))',
                    "{{gen_ai_request_model}} {{error_type}}",
                )
            ],
            traceql='{ span.gen_ai.operation.name = "chat" && status = error }',
        ),
    ]
    variables = [
        label_variable("agent", "Agent", "cycles_client_cost_usd_total", "gen_ai_agent_name"),
        label_variable("model", "Model", "cycles_client_cost_usd_total", "gen_ai_request_model"),
        label_variable("tool", "Tool", "cycles_client_cost_usd_total", "gen_ai_tool_name"),
    ]
    return dashboard(
        "cycles-agents-models",
        "Cycles / Agents & models",
        "What each AutoGen agent, model and governed tool costs, how many tokens the models use and "
        "how long their calls take.",
        variables,
        panels,
        cycles_admin_url,
    )
