"""Write the dashboards, or with --check fail when the committed JSON differs from the generator."""

from __future__ import annotations

import argparse
import os
import sys

from ..rules_src.config import checked_base_url
from . import OUTPUT_DIR, rendered
from .builder import CYCLES_ADMIN_URL_ENV, DEFAULT_CYCLES_ADMIN_URL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.dashboards_src", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare, exit 1 on a difference")
    parser.add_argument(
        "--cycles-admin-url",
        help="default of the dashboards' cycles_admin_url variable, the Cycles admin dashboard that "
        f"trace links open (default: ${CYCLES_ADMIN_URL_ENV}, else {DEFAULT_CYCLES_ADMIN_URL})",
    )
    args = parser.parse_args(argv)
    if args.cycles_admin_url is not None:
        url, source = args.cycles_admin_url, "--cycles-admin-url"
    else:
        url, source = os.environ.get(CYCLES_ADMIN_URL_ENV, DEFAULT_CYCLES_ADMIN_URL), CYCLES_ADMIN_URL_ENV
    try:
        cycles_admin_url = checked_base_url(url, source, DEFAULT_CYCLES_ADMIN_URL)
    except ValueError as error:
        parser.error(str(error))
    stale = []
    for name, text in rendered(cycles_admin_url).items():
        path = OUTPUT_DIR / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run python -m grafana.dashboards_src", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
