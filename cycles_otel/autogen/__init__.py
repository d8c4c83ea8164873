"""Budget-governed AutoGen model clients and tools: every call and tool run reserved, settled, traced.

This subpackage is the only part of ``cycles_otel`` that imports AutoGen.

Usage
-----
Code written for the guide's ``CyclesBudgetClient`` changes the class name and nothing else::

    from autogen_agentchat.agents import AssistantAgent
    from autogen_ext.models.openai import OpenAIChatCompletionClient
    from runcycles import BudgetExceededError, CyclesClient, CyclesConfig
    from cycles_otel.autogen import BudgetedChatCompletionClient

    model = BudgetedChatCompletionClient(
        inner=OpenAIChatCompletionClient(model="gpt-4o"),
        cycles_client=CyclesClient(CyclesConfig.from_env()),   # or an AsyncCyclesClient, or None (env)
        tenant="acme", workflow="research", agent="writer",   # agent=None: the calling AutoGen agent
    )
    agent = AssistantAgent("writer", model_client=model)
    try:
        await agent.run(task="...")                            # or team.run(): the same error
    except BudgetExceededError:
        print("Budget exhausted.")

A team's selector or manager model is governed the same way, attributed to its own agent:
``SelectorGroupChat(..., model_client=model.with_agent("selector"))`` (likewise the
``MagenticOneGroupChat`` orchestrator). ``Swarm`` makes no model calls of its own.

Two things of the guide's code that are not ours to change: AutoGen 0.7.5 requires agent names to
be identifiers (``"support_bot"``, not ``"support-bot"``), and runcycles' ``@cycles`` on an
``async def`` needs an ``AsyncCyclesClient`` (``client=`` or ``set_default_client``).

The lifecycle of a call
-----------------------
``create()`` and ``create_stream()`` share one lifecycle
(:class:`~cycles_otel.autogen.lifecycle.GovernedCall`): estimate -> reserve (runcycles'
``AsyncStreamReservation``: heartbeat/extend, durable commit journal and retries, ``/v1/events``
recovery) -> the inner call -> settle. Everything is async; the event loop never blocks.
Settling follows one rule:

* output was produced (a result, or streamed text): commit what it cost - the reported usage;
  for a stream without a usage chunk (or cut off), the estimated input plus the streamed text's
  tokens (characters / 3), marked ``cycles.actual.source=estimated``;
* nothing was produced (an error, a cancellation, a stream abandoned before its first chunk):
  release the reservation. The caller gets the very same exception object;
* the reserve and the settlement each run in a task of their own: a caller (or stream consumer)
  cancelled while the reserve is on the wire or the commit is in flight leaves it running, so
  the reservation is released or the commit lands and is counted, and the span always ends with
  its ``cycles.outcome``;
* a result with ``cached=True`` commits 0: on the ledger with its token counts, free.

``create()`` returns once its commit has landed. ``settle_in_background=True`` returns as soon as
the commit is in runcycles' journal (so a crash right after loses nothing; it needs the journal
on) and commits later, letting calls still awaiting their answers go first (at most 0.5 s, or a
quarter of ``ttl_ms``); ``await client.settled()`` or ``close()`` waits for the commits.

OpenAI-family inner clients are asked for the usage chunk of a stream (``include_usage=True``;
left alone if the request or client sets ``stream_options``).

Denials, outages and shadow mode
--------------------------------
* A denial (HTTP 409 with a denial code: ``BUDGET_EXCEEDED``, ``OVERDRAFT_LIMIT_EXCEEDED``,
  ``DEBT_OUTSTANDING``, ``BUDGET_FROZEN``, ``BUDGET_CLOSED``, ``TENANT_CLOSED``, and protocol
  0.1.27's ``ACTION_QUOTA_EXCEEDED``, ``ACTION_KIND_DENIED``, ``ACTION_KIND_NOT_ALLOWED``) raises
  runcycles' own typed error with ``error_code`` and ``request_id`` filled from the raw answer,
  and a ``deny_detail`` (``blocked_by_scope``, ``suggested_fix``, ``budget_remaining``) in its
  ``details`` and message. Nothing is called.
* An authority that cannot be reached (transport error, 5xx, 429) is an error, never a denial:
  ``error.type`` on the span, no ``cycles.decision``. With ``on_authority_error="allow"`` the call
  fails open: it runs ungoverned (``cycles.governed=false``, ``cycles.client.ungoverned``) and its
  priced spend is recorded with ``POST /v1/events``, journaled and retried until it lands.
* ``mode="observe"`` (shadow mode) asks ``/v1/decide`` instead of reserving, records the answer
  (``cycles.mode=observe``, ``cycles.decision``, ``cycles.client.decisions``) and runs the call
  whatever it says; nothing is held or charged. ``mode="enforce"`` is the default.

Estimates
---------
* ``estimate_amount=int`` reserves that amount; ``estimate_amount=callable(messages, tools) -> int``
  computes it.
* Otherwise, with an output cap known (``max_output_tokens``, else ``max_tokens`` /
  ``max_completion_tokens`` of the request or inner client): priced input tokens plus the cap
  (``cycles.estimate.source=tokenizer`` or ``characters``). The cap is also sent as ``max_tokens``
  to OpenAI-family clients so the estimate is a real ceiling.
* With neither: the guide's 2,000,000 USD_MICROCENTS per call (``cycles.estimate.source=default``).
  Under the protocol's default ``ALLOW_IF_AVAILABLE`` a commit above its reservation still lands
  (capped to what is left, the scope marked over limit), so this is safe. Under
  ``overage_policy="REJECT"`` a commit above the reservation is refused, so there a call with no
  known cap fails with :class:`EstimateError` before reserving, naming ``max_output_tokens``.
* Input tokens come from ``inner.count_tokens`` (the first count runs off the loop with a 2 s
  time box: tiktoken downloads its BPE files on first use, and offline that fails or hangs; on
  failure one log line says so and characters / 3 are counted from then on).
  ``tokenizer="characters"`` never tries the tokenizer.

Prices: USD_MICROCENTS from :class:`cycles_otel.pricing.PriceTable` (``pricing=``, default
``PriceTable.from_env()``); ``unit="TOKENS"`` charges input + output tokens.

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
else the agent named by a recorded ``invoke_agent`` span (a single ``agent.run()`` with a global
tracer provider), else the config's agent. One shared client thus charges each team member's own
scope.

Teams
-----
AutoGen turns any exception inside a team into ``RuntimeError("<Type>: <message>")``. When the
first governed client (or tool) is made, every AutoGen team's ``run()`` / ``run_stream()`` is
wrapped, process-wide and once, so that a governed call's error comes back as itself: a copy of
the runcycles error whose type is also a ``RuntimeError`` (code catching AutoGen's error keeps
working; its ``__cause__`` is AutoGen's error). Other errors of a team are untouched.
``typed_team_errors(False)`` or ``CYCLES_OTEL_TYPED_TEAM_ERRORS=false`` opts out.
:func:`stop_on_budget(team, raise_error=False) <stop_on_budget>` ends a run stopped by a denial
with a ``TaskResult`` of the messages so far and a ``stop_reason`` like
``"Budget stop: BUDGET_EXCEEDED (request req_...): ..."`` (test it with :func:`is_budget_stop`);
an authority outage is no budget stop and still raises.

Tools
-----
:class:`BudgetedTool` (``BudgetedTool(tool, cycles_client, estimate_amount=..., actual=...)``),
:func:`budgeted_tools` for a list, and :class:`BudgetedWorkbench` for any workbench govern tool
runs: each reserves on the calling agent's subject, action kind ``tool.call`` and action name
the tool's, commits ``actual`` (an int, ``callable(name, arguments, result) -> int``, or the
estimate) once the tool returned, and releases when it raises, answers an error or is cancelled.
Wrapped tools keep their name, description and schema and round-trip through dump/load.
``on_denied="result"`` answers the model ``"budget denied: ..."`` so the agent can recover;
``on_denied="raise"`` (the default) stops the agent's or team's run at its next governed model
call with the typed error (AutoGen's workbenches hand an error a tool raises to the model, so the
run is stopped instead); outside any run the error is raised. The ``cycles.reservation`` span of
a ``BudgetedTool`` sits in AutoGen's ``execute_tool {name}`` span; its cost goes to
``cycles.client.cost.usd`` under ``gen_ai.tool.name``.

Processes and the journal
-------------------------
runcycles journals each commit before sending it and replays what is left. Each process journals
under a directory of its own (``<journal dir>/workers/<host>-<pid>-<start>``, held with
``flock``), takes over the journals of processes that died when its first client is made, and
replays them right away, so a commit is replayed - and counted in ``cycles.client.charged`` - by
one process only. A journaled commit carries its call's ``traceparent``: its replay in a later
process links to the original ``cycles.reservation`` span.

Transport
---------
runcycles' own clients (a ``CyclesClient``, a plain ``AsyncCyclesClient``, or ``None`` for the
environment) are read for their config and spoken through
:class:`~cycles_otel.protocol.transport.AiohttpCyclesClient`, which answers exactly as runcycles'
httpx client does at a fraction of its cost (``transport="httpx"`` keeps runcycles' own). Any
other ``AsyncCyclesClient`` (a subclass of your own) is used as it is. ``close()`` closes what the
client made.

Telemetry
---------
Spans (tracer ``cycles_otel.autogen``, from ``tracer_provider=`` or the global provider):

* ``cycles.reservation`` (INTERNAL), a child of the current span - AutoGen's ``invoke_agent``
  span with a global provider, or the ``autogen process <agent>`` span's context when only the
  runtime has a provider (``SingleThreadedAgentRuntime(tracer_provider=...)``). runcycles'
  protocol spans (``cycles.reserve``, ``cycles.commit``, ``cycles.release``, ``cycles.extend``,
  ``cycles.decide``) nest in it. Attributes: ``cycles.reservation.id``, ``cycles.decision``,
  ``cycles.reason``, ``cycles.estimate.amount`` / ``.source``, ``cycles.actual.amount`` /
  ``.source``, ``cycles.charged.amount``, ``cycles.over_limit``, ``cycles.unit``,
  ``cycles.cost.usd``, ``cycles.outcome``, ``cycles.subject.*``, ``cycles.action.*``,
  ``cycles.mode``, ``cycles.governed``, ``cycles.deny.*``, ``gen_ai.agent.*``; events
  ``cycles.denied``, ``cycles.authority_unavailable``.
* ``chat {model}`` (CLIENT, GenAI semconv): ``gen_ai.operation.name``, ``gen_ai.provider.name``
  (from the inner client's class, model family or model name), ``gen_ai.request.model``,
  ``gen_ai.request.max_tokens``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
  ``gen_ai.response.finish_reasons``, ``gen_ai.agent.name`` / ``.id``. ``gen_ai.response.model``
  and ``gen_ai.response.id`` come only from a util-genai instrumentation inside the call (below):
  AutoGen's ``CreateResult`` does not carry them. ``emit_inference_span=False`` never emits it.
  Message content (``gen_ai.input.messages`` / ``gen_ai.output.messages``) only with
  ``capture_content=True`` or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
* On failure: ``error.type`` = exception class, status ERROR, the exception recorded once.
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
``gen_ai.provider.name``; reported usage only: estimated counts stay on the span),
``gen_ai.client.operation.duration`` (+ ``error.type``), ``cycles.client.cost.usd``
(``gen_ai.request.model`` or ``gen_ai.tool.name``, ``gen_ai.agent.name``) and
``cycles.client.ungoverned``; user-controlled labels bounded by the cardinality guard. Each
measurement is taken with its own span current, so exemplars point at it. Reservation counts and
amounts come from the protocol layer, never twice. Telemetry never raises into the call: a
failing span processor or exporter costs only its own data.

Protocol spans need runcycles instrumented. The client calls
``CyclesInstrumentor().instrument(tracer_provider, meter_provider)`` with its own providers when
nothing has instrumented runcycles yet (process-wide, once); pass ``instrument_protocol=False``
to leave that to the application (or ``opentelemetry-instrument``).

Serialisation
-------------
``dump_component()`` / ``load_component()`` round-trip the client, an ``AssistantAgent`` using
it, a team, and the tools (providers ``cycles_otel.autogen.BudgetedChatCompletionClient``,
``...BudgetedTool``, ``...BudgetedWorkbench``). A dump holds the Cycles base URL, subject and
settings, never a secret: the inner client's ``api_key`` (and any token) is stripped, so on load
the inner client reads its key from its environment (``OPENAI_API_KEY`` for OpenAI clients), and
the Cycles key comes from ``CYCLES_API_KEY`` (other ``CYCLES_*`` settings from the environment
too). Prices come from ``PriceTable.from_env()`` and telemetry from the global providers. A
callable ``estimate_amount`` or ``actual`` cannot be dumped. AutoGen releases after 0.7.5 load
only trusted namespaces: add ``cycles_otel`` to ``AUTOGEN_ALLOWED_PROVIDER_NAMESPACES``.

Bad input (a negative or non-int ``estimate_amount``, ``max_output_tokens="100"``, a string where
a bool belongs, an unknown ``mode`` ...) fails at construction with a message naming the
argument and the fix, before anything is reserved.

Configuration
-------------
``CYCLES_BASE_URL``, ``CYCLES_API_KEY``, ``CYCLES_TENANT`` ... (``CyclesConfig.from_env``, used
when ``cycles_client=None`` and on load); ``CYCLES_JOURNAL_DIR`` (the base of the per-process
journals); ``CYCLES_OTEL_PRICES_FILE`` / ``CYCLES_OTEL_PRICES_SOURCE`` (prices);
``CYCLES_OTEL_TYPED_TEAM_ERRORS`` (``false`` opts out of typed team errors);
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (content capture).

API
---
:class:`BudgetedChatCompletionClient`, :class:`BudgetedChatCompletionClientConfig`,
:class:`BudgetedTool`, :func:`budgeted_tools`, :class:`BudgetedWorkbench`,
:func:`typed_team_errors`, :func:`stop_on_budget`, :func:`is_budget_stop`,
:func:`budget_stop_reason`, :data:`BUDGET_STOP_PREFIX`, :class:`EstimateError`,
:func:`character_token_count`, :func:`apply_caps` / :class:`AppliedCaps`,
:func:`calling_agent` / :class:`CallingAgent`.
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
from cycles_otel.autogen.tools import BudgetedTool, BudgetedWorkbench, budgeted_tools

__all__ = [
    "BUDGET_STOP_PREFIX",
    "AppliedCaps",
    "BudgetedChatCompletionClient",
    "BudgetedChatCompletionClientConfig",
    "BudgetedTool",
    "BudgetedWorkbench",
    "CallingAgent",
    "EstimateError",
    "apply_caps",
    "budget_stop_reason",
    "budgeted_tools",
    "calling_agent",
    "character_token_count",
    "is_budget_stop",
    "stop_on_budget",
    "typed_team_errors",
]
