"""The ``cycles-otel`` command: one subcommand per module, each with ``add_arguments`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help). A module loads only when its command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("cycles_otel.demo", "run governed AutoGen agents offline until their budget runs out"),
    "authority": ("cycles_otel.testing.authority.cli", "serve a local Cycles-protocol authority"),
    "exporter": ("cycles_otel.app.exporter", "poll Cycles balances and serve them as Prometheus metrics"),
}


def _usage() -> str:
    lines = ["usage: cycles-otel COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "Run 'cycles-otel COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(_usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"cycles-otel: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"cycles-otel {name}", description=help_text)
    module.add_arguments(parser)
    result: int = module.run(parser.parse_args(rest))
    return result


if __name__ == "__main__":
    raise SystemExit(main())
