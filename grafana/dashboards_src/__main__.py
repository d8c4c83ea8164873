"""Write the dashboards, or with --check fail when the committed JSON differs from the generator."""

from __future__ import annotations

import argparse
import sys

from . import OUTPUT_DIR, rendered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.dashboards_src", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare, exit 1 on a difference")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
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
