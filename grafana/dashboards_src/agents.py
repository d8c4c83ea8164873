"""The Agents & models dashboard: cost, tokens and LLM latency by agent and model."""

from __future__ import annotations

from .builder import JSON, dashboard, label_variable, panel, target, targets

COST = 'cycles_client_cost_usd_total{gen_ai_agent_name=~"$agent", gen_ai_request_model=~"$model"}'
MODEL = 'gen_ai_request_model=~"$model"'
GENAI_DURATION = "gen_ai_client_operation_duration_seconds"
AGENT_SPANS = (
    '{ name = "cycles.reservation" && span.gen_ai.agent.name = "${__field.labels.gen_ai_agent_name}" }'
)
MODEL_SPANS = '{ span.gen_ai.request.model = "${__field.labels.gen_ai_request_model}" }'


def _latency(q: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (le, gen_ai_request_model) "
        f"(rate({GENAI_DURATION}_bucket{{{MODEL}}}[$__rate_interval])))"
    )


def build(cycles_admin_url: str) -> JSON:
    panels = [
        panel(
            "timeseries",
            "Cost per hour by agent",
            "Priced cost of governed LLM calls in US dollars per hour, by AutoGen agent.",
            "currencyUSD",
            [
                target(
                    f"sum by (gen_ai_agent_name) (rate({COST}[$__rate_interval])) * 3600",
                    "{{gen_ai_agent_name}}",
                )
            ],
            traceql=AGENT_SPANS,
        ),
        panel(
            "timeseries",
            "Cost per hour by model",
            "Priced cost of governed LLM calls in US dollars per hour, by requested model.",
            "currencyUSD",
            [
                target(
                    f"sum by (gen_ai_request_model) (rate({COST}[$__rate_interval])) * 3600",
                    "{{gen_ai_request_model}}",
                )
            ],
            traceql=MODEL_SPANS,
        ),
        panel(
            "bargauge",
            "Top spenders",
            "The ten agent and model pairs with the highest cost per hour, averaged over "
            "the dashboard's time range.",
            "currencyUSD",
            [
                target(
                    "topk(10, sum by (gen_ai_agent_name, gen_ai_request_model) "
                    f"(rate({COST}[$__rate_interval])) * 3600)",
                    "{{gen_ai_agent_name}} / {{gen_ai_request_model}}",
                )
            ],
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
    ]
    return dashboard(
        "cycles-agents-models",
        "Cycles / Agents & models",
        "What each AutoGen agent and each model costs, how many tokens they use and how long calls take.",
        variables,
        panels,
        cycles_admin_url,
    )
