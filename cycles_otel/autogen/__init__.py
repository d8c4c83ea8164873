"""Budget-governed AutoGen model clients: every LLM call reserved, settled and traced through Cycles.

This subpackage is the only part of ``cycles_otel`` that imports AutoGen.

Usage
-----
Wrap any ``ChatCompletionClient``; code written for the guide's ``CyclesBudgetClient`` only
changes the class name::

    from autogen_agentchat.agents import AssistantAgent
    from autogen_ext.models.openai import OpenAIChatCompletionClient
    from runcycles import BudgetExceededError, CyclesClient, CyclesConfig
    from cycles_otel.autogen import BudgetedChatCompletionClient, stop_on_budget

    model = BudgetedChatCompletionClient(
        inner=OpenAIChatCompletionClient(model="gpt-4o"),
        cycles_client=CyclesClient(CyclesConfig.from_env()),   # or an AsyncCyclesClient, or None (env)
        tenant="acme", workflow="research", agent="writer",   # agent=None: the calling AutoGen agent
        max_output_tokens=1_000,                               # or estimate_amount=2_000_000
    )
    agent = AssistantAgent("writer", model_client=model)

    team = stop_on_budget(RoundRobinGroupChat([...]))           # one line: typed errors from teams
    try:
        await team.run(task="...")
    except BudgetExceededError:
        print("Team stopped - budget exhausted.")

A team's selector or manager model is governed the same way, attributed to its own agent:
``SelectorGroupChat(..., model_client=model.with_agent("selector"))`` (likewise the
``MagenticOneGroupChat`` orchestrator). ``Swarm`` makes no model calls of its own.

What a call does
----------------
``create()``: estimate -> reserve (``AsyncCyclesClient.stream_reservation`` machinery:
heartbeat/extend, durable commit journal and retries, ``/v1/events`` recovery) -> inner call ->
commit the priced ``CreateResult.usage``. Everything is async; the event loop never blocks.

* Any exception, ``asyncio.CancelledError`` included, releases the reservation; the caller gets
  the very same exception object. A cancellation that lands as the reserve answer arrives (which
  Python 3.11's ``asyncio.wait_for`` inside runcycles would drop) still cancels, before the model
  is called.
* The commit runs in a task of its own: a caller cancelled after the model has answered still
  commits. ``settle_in_background=True`` returns the result before the commit lands (one
  authority round trip off each call); ``await client.settled()`` or ``close()`` waits for every
  pending commit. Settle before the event loop stops.
* A result with ``cached=True`` commits 0: the call is on the ledger with its token counts, and
  costs nothing (a release would be recorded as a failed call).
* A denial raises runcycles' own typed error (``BudgetExceededError``,
  ``OverdraftLimitExceededError``, ``DebtOutstandingError``, ``TenantClosedError``, or
  ``CyclesProtocolError`` with ``error_code`` BUDGET_FROZEN / BUDGET_CLOSED ...), with
  ``error_code`` and ``request_id`` filled from the raw answer even when runcycles cannot parse it.
  Nothing is called and nothing is reserved.

``create_stream()``: reserved before the first chunk, committed after the final
``CreateResult``. OpenAI-family inner clients are asked for the usage chunk
(``include_usage=True``; left alone if the request or client sets ``stream_options``). A stream
whose consumer stops early (``break``/``aclose()``), is cancelled, or fails mid-stream still
settles: with a final result, its usage is committed; with streamed text only, the estimated
input tokens plus the streamed text's tokens (characters / 3) are committed; with nothing
streamed, the reservation is released. Whenever usage is missing (0/0) or counted this way, the
span says ``cycles.actual.source=estimated``.

Prices: USD_MICROCENTS from :class:`cycles_otel.pricing.PriceTable` (``pricing=``, default
``PriceTable.from_env()``); ``unit="TOKENS"`` charges input + output tokens. AutoGen's
``RequestUsage`` has no cached-input count, so cached prompt tokens are priced as input.

Estimates
---------
* default: ``pricing.max_cost_microcents(model, input_tokens, output_cap)``: input tokens from
  ``inner.count_tokens(messages, tools=tools)``, the output cap from ``max_output_tokens``, else
  ``max_tokens``/``max_completion_tokens`` of the request or inner client. Without a cap the call
  fails with :class:`EstimateError` before anything is reserved. The cap is also sent as
  ``max_tokens`` to OpenAI-family clients so the estimate is a real ceiling.
* The first ``count_tokens`` runs off the loop with a 2 s time box: ``tiktoken`` downloads its
  BPE files on first use and, offline, fails (here: at once) or hangs. On failure the client
  counts characters (characters / 3, per-message and per-image overheads) from then on, and
  the span says ``cycles.estimate.source=characters`` (else ``tokenizer``, ``fixed``, ``callable``).
* ``estimate_amount=int`` reserves that amount; ``estimate_amount=callable(messages, tools) -> int``
  computes it.

Caps
----
Under ``ALLOW_WITH_CAPS``, ``caps.max_tokens`` lowers the output cap (sent to OpenAI-family
clients; other clients spell the limit differently and get it on the span only) and
``caps.tool_allowlist`` / ``tool_denylist`` filter the tools passed, on top of the constructor's
``tool_allowlist`` / ``tool_denylist``. Span: ``cycles.caps.max_tokens``, ``cycles.caps.tools_removed``.

Subject and attribution
-----------------------
tenant / workspace / app / workflow / toolset come from the constructor, else the Cycles config.
The agent is ``agent=``, else the AutoGen agent making the call
(``MessageHandlerContext.agent_id()``, team suffix removed: ``alice_<team id>`` -> ``alice``),
else the agent named by a recorded ``invoke_agent`` span (a single ``agent.run()``), else the
config's agent. One shared client thus charges each team member's own scope.

Telemetry
---------
Spans (tracer ``cycles_otel.autogen``, from ``tracer_provider=`` or the global provider):

* ``cycles.reservation`` (INTERNAL), a child of the current span - AutoGen's ``invoke_agent``
  span with a global provider, or the ``autogen process <agent>`` span's context when only the
  runtime has a provider (``SingleThreadedAgentRuntime(tracer_provider=...)``). It is current
  while the reservation runs, so runcycles' protocol spans (``cycles.reserve``,
  ``cycles.commit``, ``cycles.release``, ``cycles.extend``) nest in it. Attributes:
  ``cycles.reservation.id``, ``cycles.decision``, ``cycles.reason``, ``cycles.estimate.amount`` /
  ``.source``, ``cycles.actual.amount`` / ``.source``, ``cycles.charged.amount``,
  ``cycles.over_limit``, ``cycles.unit``, ``cycles.cost.usd``, ``cycles.outcome``,
  ``cycles.subject.*``, ``cycles.action.*``, ``gen_ai.agent.*``; ``cycles.denied`` event.
* ``chat {model}`` (CLIENT, GenAI semconv): ``gen_ai.operation.name``, ``gen_ai.provider.name``
  (from the inner client's class, model family or model name), ``gen_ai.request.model``,
  ``gen_ai.request.max_tokens``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
  ``gen_ai.response.finish_reasons``, ``gen_ai.agent.name`` / ``.id``. ``gen_ai.response.model``
  and ``gen_ai.response.id`` come only from a util-genai instrumentation inside the call (below):
  AutoGen's ``CreateResult`` does not carry them. ``emit_inference_span=False`` never emits it.
  Message content (``gen_ai.input.messages`` / ``gen_ai.output.messages``) only with
  ``capture_content=True`` or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
* On failure: ``error.type`` = exception class, status ERROR, the exception recorded.
* Beside another GenAI instrumentation, each call still has exactly one inference span inside
  ``cycles.reservation`` and records each GenAI metric once, with no setting: when
  ``opentelemetry-instrumentation-openai-v2`` wraps the openai SDK an OpenAI-family inner client
  calls, it emits the span and both metrics and ours step back; when
  ``openinference-instrumentation-autogen-agentchat`` wraps the inner client, its LLM span stands
  in for ``chat {model}`` and ours keep the metrics; an ``opentelemetry-util-genai`` (1.3b0 on)
  inference inside the call is suppressed through util-genai's own context key and reports to our
  span (response model and id, ``server.address`` / ``server.port``); one around the governed call
  keeps its span and metrics and gets our usage. ``cycles.reservation`` and the cost metric are
  always ours (docs/telemetry.md, "Beside other GenAI instrumentations").

Metrics (from ``meter_provider=`` or the global provider): ``gen_ai.client.token.usage``
(``gen_ai.token.type``, ``gen_ai.request.model``, ``gen_ai.operation.name``,
``gen_ai.provider.name``), ``gen_ai.client.operation.duration`` (+ ``error.type``) and
``cycles.client.cost.usd`` (``gen_ai.request.model``, ``gen_ai.agent.name``), user-controlled
labels bounded by the cardinality guard. Reservation counts and amounts come from the protocol
layer, never twice.

Protocol spans need runcycles instrumented. The client calls
``CyclesInstrumentor().instrument(tracer_provider, meter_provider)`` with its own providers when
nothing has instrumented runcycles yet (process-wide, once); pass ``instrument_protocol=False``
to leave that to the application (or ``opentelemetry-instrument``).

Teams
-----
AutoGen turns any exception inside a team into ``RuntimeError("<Type>: <message>")``.
:func:`stop_on_budget(team) <stop_on_budget>` (returns the same team) records, per run, the
Cycles error a governed call raised, and makes ``team.run()`` / ``run_stream()`` raise that
original typed error (its ``__cause__`` is the ``RuntimeError``). With ``raise_error=False`` the
run ends with a ``TaskResult`` of the messages so far and a ``stop_reason`` like
``"Budget stop: BUDGET_EXCEEDED (request req_...): ..."``; test it with :func:`is_budget_stop`.
The run is found through the run's context (tasks of an embedded runtime copy it) or through
the team id (every member's agent key), so teams on an application's runtime work too.
``agent.run()`` on a single agent raises the typed error without help.

Serialisation
-------------
``dump_component()`` / ``load_component()`` round-trip the client, an ``AssistantAgent`` using
it and a team (provider ``cycles_otel.autogen.BudgetedChatCompletionClient``). The dump holds the
Cycles base URL, subject and settings, never a secret: the inner client's ``api_key`` (and any
token) is stripped, so on load the inner client reads its key from its environment
(``OPENAI_API_KEY`` for OpenAI clients), and the Cycles key comes from ``CYCLES_API_KEY`` (other
``CYCLES_*`` settings from the environment too). Prices come from ``PriceTable.from_env()`` and
telemetry from the global providers. A callable ``estimate_amount`` cannot be dumped. AutoGen
releases after 0.7.5 load only trusted namespaces: add ``cycles_otel`` to
``AUTOGEN_ALLOWED_PROVIDER_NAMESPACES``.

Configuration
-------------
``CYCLES_BASE_URL``, ``CYCLES_API_KEY``, ``CYCLES_TENANT`` ... (``CyclesConfig.from_env``, used
when ``cycles_client=None`` and on load); ``CYCLES_OTEL_PRICES_FILE`` (prices);
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (content capture).

Notes for guide users: AutoGen 0.7.5 requires agent names to be Python identifiers
(``"support_bot"``, not ``"support-bot"``), and ``@cycles`` on an ``async def`` needs an
``AsyncCyclesClient`` (``client=`` or ``set_default_client``).

API
---
:class:`BudgetedChatCompletionClient`, :class:`BudgetedChatCompletionClientConfig`,
:func:`stop_on_budget`, :func:`is_budget_stop`, :func:`budget_stop_reason`,
:data:`BUDGET_STOP_PREFIX`, :class:`EstimateError`, :func:`character_token_count`,
:func:`apply_caps` / :class:`AppliedCaps`, :func:`calling_agent` / :class:`CallingAgent`.
"""

from cycles_otel.autogen.attribution import CallingAgent, calling_agent
from cycles_otel.autogen.client import BudgetedChatCompletionClient
from cycles_otel.autogen.config import BudgetedChatCompletionClientConfig
from cycles_otel.autogen.estimate import EstimateError, character_token_count
from cycles_otel.autogen.reservation import AppliedCaps, apply_caps
from cycles_otel.autogen.team import (
    BUDGET_STOP_PREFIX,
    budget_stop_reason,
    is_budget_stop,
    stop_on_budget,
    typed_team_errors,
)

__all__ = [
    "BUDGET_STOP_PREFIX",
    "AppliedCaps",
    "BudgetedChatCompletionClient",
    "BudgetedChatCompletionClientConfig",
    "CallingAgent",
    "EstimateError",
    "apply_caps",
    "budget_stop_reason",
    "calling_agent",
    "character_token_count",
    "is_budget_stop",
    "stop_on_budget",
    "typed_team_errors",
]
