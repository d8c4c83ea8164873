"""Write the rule files, their promtool tests and the runbook; --check: exit 1 if committed ones differ."""

from __future__ import annotations

import sys

from ..generator_cli import run
from . import GRAFANA_DIR, rendered
from .config import DEFAULT_RUNBOOK_URL, RUNBOOK_URL_ENV


def main(argv: list[str] | None = None) -> int:
    return run(
        "python -m grafana.rules_src",
        __doc__,
        url_flag="--runbook-url",
        url_env=RUNBOOK_URL_ENV,
        default_url=DEFAULT_RUNBOOK_URL,
        url_help="where readers open runbook.md; each alert appends #<its name in lower case>",
        render=rendered,
        folder=GRAFANA_DIR,
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
