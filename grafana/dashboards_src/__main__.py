"""Write the dashboards, or with --check fail when the committed JSON differs from the generator."""

from __future__ import annotations

import sys

from ..generator_cli import run
from . import OUTPUT_DIR, rendered
from .builder import CYCLES_ADMIN_URL_ENV, DEFAULT_CYCLES_ADMIN_URL


def main(argv: list[str] | None = None) -> int:
    return run(
        "python -m grafana.dashboards_src",
        __doc__,
        url_flag="--cycles-admin-url",
        url_env=CYCLES_ADMIN_URL_ENV,
        default_url=DEFAULT_CYCLES_ADMIN_URL,
        url_help="default of the dashboards' cycles_admin_url variable: the Cycles admin dashboard "
        "that trace links open",
        render=rendered,
        folder=OUTPUT_DIR,
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
