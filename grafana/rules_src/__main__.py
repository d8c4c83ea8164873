"""Write the rule files, their promtool tests and the runbook; --check: exit 1 if committed ones differ."""

from __future__ import annotations

import argparse
import os
import sys

from . import GRAFANA_DIR, rendered
from .config import DEFAULT_RUNBOOK_URL, RUNBOOK_URL_ENV, checked_runbook_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.rules_src", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare, exit 1 on a difference")
    parser.add_argument(
        "--runbook-url",
        help=f"where readers open runbook.md; each alert appends #<its name in lower case> "
        f"(default: ${RUNBOOK_URL_ENV}, else {DEFAULT_RUNBOOK_URL})",
    )
    args = parser.parse_args(argv)
    if args.runbook_url is not None:
        url, source = args.runbook_url, "--runbook-url"
    else:
        url, source = os.environ.get(RUNBOOK_URL_ENV, DEFAULT_RUNBOOK_URL), RUNBOOK_URL_ENV
    try:
        runbook_url = checked_runbook_url(url, source)
    except ValueError as error:
        parser.error(str(error))
    stale = []
    for name, text in rendered(runbook_url).items():
        path = GRAFANA_DIR / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(
            f"out of date: {', '.join(stale)}; run python -m grafana.rules_src"
            + (f" --runbook-url {runbook_url}" if runbook_url != DEFAULT_RUNBOOK_URL else ""),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
