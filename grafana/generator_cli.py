"""The generators' command line: one base URL (flag, environment or default), then write or --check."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit


def checked_base_url(url: str, source: str, example: str) -> str:
    """``url`` without a trailing ``/`` if links can be built on it, else a ValueError naming ``source``.

    Links built on it are opened from notifications and other sites, so it must be absolute
    http(s); the generator adds the path, query and anchor, so it carries none of those itself.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{source} = {url!r}: give an absolute http(s) URL, e.g. {example}")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"{source} = {url!r}: leave out the '?...' and '#...' parts, links add their own")
    return url.rstrip("/")


def run(
    prog: str,
    description: str | None,
    *,
    url_flag: str,
    url_env: str,
    default_url: str,
    url_help: str,
    render: Callable[[str], Mapping[str, str]],
    folder: Path,
    argv: list[str] | None = None,
) -> int:
    """Parse ``argv``, render every file for the base URL given, then write them or, with --check, compare.

    The flag wins over ``url_env``, which wins over ``default_url``. Exit 1 with --check when a
    committed file differs; 2 (argparse's) when the URL cannot carry links.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--check", action="store_true", help="only compare, exit 1 on a difference")
    parser.add_argument(url_flag, dest="url", help=f"{url_help} (default: ${url_env}, else {default_url})")
    args = parser.parse_args(argv)
    if args.url is not None:
        url, source = args.url, url_flag
    else:
        url, source = os.environ.get(url_env, default_url), url_env
    try:
        base_url = checked_base_url(url, source, default_url)
    except ValueError as error:
        parser.error(str(error))
    stale = []
    for name, text in render(base_url).items():
        path = folder / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        again = prog + ("" if base_url == default_url else f" {url_flag} {base_url}")
        print(f"out of date: {', '.join(stale)}; run {again}", file=sys.stderr)
        return 1
    return 0
