"""``cycles-otel demo``: governed AutoGen agents run offline until their budget runs out, with all telemetry.

Usage::

    cycles-otel demo                      # offline, seconds: fake OpenAI, local authority, OTLP receiver
    cycles-otel demo --with-prometheus    # also run prometheus with the shipped rules; show alerts firing
    cycles-otel demo --serve              # keep the endpoints up afterwards, until Ctrl-C
    cycles-otel demo --live openai        # real OpenAI (OPENAI_API_KEY); also: cycles, both

A team of two ``AssistantAgent`` s (``researcher`` with a ``search_papers`` tool, ``writer``) of tenant
``acme``, workflow ``research-pipeline``, shares one ``BudgetedChatCompletionClient`` over the real
``OpenAIChatCompletionClient``. Every model call is reserved, priced and committed against per-agent
budgets; the team stops with a typed reason when the researcher's budget runs out. The closing report
shows totals per agent, each scope's balance from the ledger next to the same from the metrics, one
agent turn's span tree, and where the telemetry went (``--output``, default ``./demo-output``).

Configuration: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and ``OTEL_EXPORTER_OTLP_PROTOCOL``) send telemetry to
your collector instead of the embedded receiver. ``--live`` reads ``OPENAI_API_KEY`` (and optional
``OPENAI_BASE_URL``), ``CYCLES_BASE_URL``, ``CYCLES_API_KEY`` and ``CYCLES_TENANT``; keys are never shown.
Exit status: 0 when the team stopped on budget exhaustion (or, live, at its message cap), 1 when the run
ended otherwise or the ledger and metrics disagree, 2 for a setup problem (flags, ports, binaries, env).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cycles_otel.demo.live import LIVE_CHOICES

DEFAULT_SEED = 7
DEFAULT_OUTPUT = Path("demo-output")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {port}")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="seed of the scripted conversation (default 7)"
    )
    parser.add_argument("--short", action="store_true", help="smaller budgets, fewer turns (for tests)")
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="folder for exported telemetry (default ./demo-output)",
    )
    parser.add_argument(
        "--prometheus-port",
        type=_port,
        default=None,
        help="port of the Prometheus metrics endpoint on 127.0.0.1 (default: a free port)",
    )
    parser.add_argument(
        "--with-prometheus",
        action="store_true",
        help="start the 'prometheus' binary with the shipped alert rules and show which alerts fire",
    )
    parser.add_argument(
        "--serve", action="store_true", help="keep every endpoint up after the run, until Ctrl-C"
    )
    parser.add_argument(
        "--live",
        nargs="?",
        const="both",
        choices=LIVE_CHOICES,
        default=None,
        help="use real services: openai (OPENAI_API_KEY), cycles (CYCLES_BASE_URL, CYCLES_API_KEY), "
        "or both (the default when the flag is given alone)",
    )


def run(args: argparse.Namespace) -> int:
    from cycles_otel.demo.runner import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            seed=args.seed,
            short=args.short,
            output=args.output,
            prometheus_port=args.prometheus_port,
            with_prometheus=args.with_prometheus,
            serve=args.serve,
            live=args.live,
        )
    )


__all__ = ["add_arguments", "run"]
