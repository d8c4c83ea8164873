"""cycles-otel: budget observability and safety for Cycles-governed AutoGen agents.

Every LLM call (and governed tool run) is reserved before it runs, committed at its real priced cost
after, and released on failure or cancellation; every step is an OpenTelemetry span inside AutoGen's
own agent trace, and token, cost, reservation and budget metrics go out over OTLP and as a
Prometheus endpoint.

Usage
-----
Govern an AutoGen model client (the manual is ``cycles_otel.autogen``'s docstring)::

    from cycles_otel.autogen import BudgetedChatCompletionClient   # the guide's CyclesBudgetClient, renamed

    model = BudgetedChatCompletionClient(inner=OpenAIChatCompletionClient(model="gpt-4o"),
                                         cycles_client=CyclesClient(CyclesConfig.from_env()),
                                         tenant="acme", workflow="research")
    team = RoundRobinGroupChat([...])   # team.run() raises BudgetExceededError when a call is denied

Paid tools the same way: ``BudgetedTool(tool, cycles_client, estimate_amount=..., actual=...)``;
roll governance out in shadow mode first with ``mode="observe"`` (decide and record, never block).

Trace every Cycles protocol call, whoever makes it (``@cycles``, ``stream_reservation``, retries,
journal replay, your own code)::

    CyclesInstrumentor().instrument(tracer_provider=..., meter_provider=...)   # both optional

or with no code change: ``opentelemetry-instrument python app.py`` (entry point ``cycles``).

Set up providers, OTLP and a Prometheus endpoint in one optional call (the library itself never
touches global providers)::

    telemetry = configure_telemetry("my-agents", prometheus_port=9464)
    ...
    telemetry.shutdown()

Poll balances into the ``cycles_budget_*`` gauges: :class:`BalancePoller` in an app, or the
``cycles-otel exporter`` command for operators. Test offline with ``cycles_otel.testing``
(a local Cycles authority, a fake OpenAI endpoint, an OTLP receiver, pytest fixtures).

Configuration
-------------
``CYCLES_BASE_URL``, ``CYCLES_API_KEY``, ``CYCLES_TENANT`` ...   the authority (runcycles)
``CYCLES_JOURNAL_DIR``                                          base of the per-process commit journals
``CYCLES_OTEL_PRICES_FILE``, ``CYCLES_OTEL_PRICES_SOURCE``        price overrides, genai-prices
``CYCLES_OTEL_TYPED_TEAM_ERRORS``                               ``false``: AutoGen's RuntimeError from teams
``CYCLES_OTEL_CARDINALITY_LIMIT`` (500), ``..._ALLOW``          label cardinality guard
``CYCLES_OTEL_PROMETHEUS_PORT``                                 ``configure_telemetry``'s endpoint
``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL``  OTLP export
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``          prompt/completion text on spans (opt-in;
                                                                 off, ``configure_telemetry`` also blanks the
                                                                 ``message`` of AutoGen's runtime spans)

Layout
------
The shared telemetry contract sits at the top (``semconv``, ``instruments``, ``cardinality``,
``pricing``, ``balance_board``, ``leases``, ``content``, ``wire``); each instrumentation layer is a
folder: ``cycles_otel.protocol`` (runcycles' protocol calls) and ``cycles_otel.autogen`` (the
budgeted model client, the only layer importing AutoGen). ``cycles_otel.app`` holds the application
entry points (``configure_telemetry``, the poller, the exporter, the command line),
``cycles_otel.testing`` the offline kit and ``cycles_otel.demo`` the demo. A layer imports only the
contract and the layers before it (protocol: contract; autogen and app: contract and protocol);
``docs/architecture.md`` has the full rule, and a test enforces it.

API
---
:class:`CyclesInstrumentor`, :func:`configure_telemetry` / :class:`TelemetryHandle`,
:class:`BalancePoller`, :class:`CardinalityGuard`, :func:`get_instruments` / :class:`Instruments`,
:class:`PriceTable` / :class:`ModelPrice`; ``cycles_otel.autogen`` (the budgeted client),
``cycles_otel.testing`` (the offline kit), ``cycles_otel.semconv`` (span and attribute names).
Every span, attribute and metric is listed in ``docs/telemetry.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cycles_otel.version import __version__

if TYPE_CHECKING:
    from cycles_otel.app.configure import TelemetryHandle, configure_telemetry
    from cycles_otel.app.poller import BalancePoller
    from cycles_otel.cardinality import CardinalityGuard
    from cycles_otel.instruments import Instruments, get_instruments
    from cycles_otel.pricing import ModelPrice, PriceTable
    from cycles_otel.protocol import CyclesInstrumentor

# Every export loads on first use: ``import cycles_otel.pricing`` (or any one module) costs only
# that module, and no module of the package is imported while the package itself initialises.
_LAZY = {
    "CardinalityGuard": "cycles_otel.cardinality",
    "CyclesInstrumentor": "cycles_otel.protocol",
    "Instruments": "cycles_otel.instruments",
    "get_instruments": "cycles_otel.instruments",
    "configure_telemetry": "cycles_otel.app.configure",
    "TelemetryHandle": "cycles_otel.app.configure",
    "BalancePoller": "cycles_otel.app.poller",
    "PriceTable": "cycles_otel.pricing",
    "ModelPrice": "cycles_otel.pricing",
}

__all__ = [
    "BalancePoller",
    "CardinalityGuard",
    "CyclesInstrumentor",
    "Instruments",
    "ModelPrice",
    "PriceTable",
    "TelemetryHandle",
    "__version__",
    "configure_telemetry",
    "get_instruments",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cycles_otel' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
