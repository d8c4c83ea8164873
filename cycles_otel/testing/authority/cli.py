"""``cycles-otel authority``: serve a local Cycles authority until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from decimal import Decimal, InvalidOperation
from types import FrameType

from cycles_otel.testing.authority.scopes import canonical_scope
from cycles_otel.testing.authority.server import LocalCyclesServer
from cycles_otel.testing.authority.validation import OVERAGE_POLICIES, UNITS

MICROCENTS_PER_USD = 100_000_000
_BUDGET_HELP = (
    "use --budget SCOPE=AMOUNT, e.g. --budget tenant:acme=5USD or --budget tenant:acme/workflow:x=200000000"
)


class UsageError(ValueError):
    """A command-line value that cannot be used; the message names the flag and the fix."""


def parse_amount(text: str, unit: str) -> tuple[int, str]:
    """``5USD`` / ``2.5USD`` → USD_MICROCENTS; a bare integer is in ``unit``."""
    cleaned = text.strip().replace("_", "")
    if cleaned.upper().endswith("USD"):
        try:
            dollars = Decimal(cleaned[:-3])
        except InvalidOperation as exc:
            raise UsageError(f"--budget amount {text!r} is not a number of USD; {_BUDGET_HELP}") from exc
        value = dollars * MICROCENTS_PER_USD
        if dollars < 0 or value != value.to_integral_value():
            raise UsageError(
                f"--budget amount {text!r} must be a non-negative USD amount with at most 8 decimals"
            )
        return int(value), "USD_MICROCENTS"
    if not cleaned.isdigit():
        raise UsageError(
            f"--budget amount {text!r} must be a non-negative integer or end in USD; {_BUDGET_HELP}"
        )
    return int(cleaned), unit


def parse_budget(text: str, unit: str) -> tuple[str, int, str]:
    """``SCOPE=AMOUNT`` → (canonical scope, amount, unit)."""
    scope, sep, amount_text = text.rpartition("=")
    if not sep or not scope or not amount_text:
        raise UsageError(f"--budget {text!r} is not SCOPE=AMOUNT; {_BUDGET_HELP}")
    try:
        path = canonical_scope(scope)
    except ValueError as exc:
        raise UsageError(f"--budget {text!r}: {exc}; {_BUDGET_HELP}") from exc
    if not path.startswith("tenant:"):
        raise UsageError(f"--budget {text!r}: the scope must start with tenant:NAME; {_BUDGET_HELP}")
    value, value_unit = parse_amount(amount_text, unit)
    return path, value, value_unit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=7878, help="port to bind, 0 for any free port (default 7878)"
    )
    parser.add_argument("--tenant", default="acme", help="tenant the API key is bound to (default acme)")
    parser.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="SCOPE=AMOUNT",
        help="a budget, repeatable: tenant:acme=5USD, tenant:acme/workflow:x=200000000",
    )
    parser.add_argument(
        "--unit", default="USD_MICROCENTS", choices=UNITS, help="unit of bare integer amounts"
    )
    parser.add_argument("--api-key", help="use this API key instead of generating one")
    parser.add_argument(
        "--overage-policy",
        default="REJECT",
        choices=OVERAGE_POLICIES,
        help="budget overage policy for requests that name none (default REJECT)",
    )
    parser.add_argument("--overdraft-limit", type=int, default=0, help="overdraft limit of every budget")


def run(args: argparse.Namespace) -> int:
    try:
        budgets = [parse_budget(text, args.unit) for text in args.budget]
    except UsageError as exc:
        print(f"cycles-otel authority: {exc}", file=sys.stderr)
        return 2
    server = LocalCyclesServer(host=args.host, port=args.port, record_requests=False)
    for scope, value, unit in budgets:
        server.set_budget(
            scope, value, unit, overdraft_limit=args.overdraft_limit, overage_policy=args.overage_policy
        )
    key = server.create_api_key(tenant=args.tenant, key=args.api_key)
    try:
        server.start()
    except OSError as exc:
        print(
            f"cycles-otel authority: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
            "pick another --port, or --port 0 for any free port",
            file=sys.stderr,
        )
        return 1
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"Cycles authority listening on {server.base_url}")
    print(f"CYCLES_BASE_URL={server.base_url}")
    print(f"CYCLES_API_KEY={key}")
    print(f"CYCLES_TENANT={args.tenant}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
