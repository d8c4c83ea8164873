"""``cycles-otel exporter``: poll Cycles balances and serve them as Prometheus metrics, like node_exporter."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from cycles_otel.app.configure import configure_telemetry
from cycles_otel.app.poller import BalancePoller, PollError
from cycles_otel.semconv import SUBJECT_FIELDS

PROG = "cycles-otel exporter"
DEFAULT_LISTEN = "127.0.0.1:9464"
SUBJECTS_ENV = "CYCLES_EXPORTER_SUBJECTS"
_log = logging.getLogger(PROG)


class UsageError(ValueError):
    """A flag or variable that cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class Settings:
    base_url: str
    api_key: str
    subjects: list[dict[str, str]]
    interval: float
    stale_after: float | None
    host: str
    port: int
    otlp: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="Cycles authority URL (env CYCLES_BASE_URL)")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--api-key", help="Cycles API key (env CYCLES_API_KEY); prefer --api-key-file")
    key.add_argument("--api-key-file", type=Path, help="file holding the Cycles API key")
    parser.add_argument(
        "--subject",
        action="append",
        default=[],
        metavar="tenant=acme[,workflow=x]",
        help=f"a subject whose balances to poll, repeatable (env {SUBJECTS_ENV}, subjects separated by ';')",
    )
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between polls (default 15)")
    parser.add_argument(
        "--stale-after",
        type=float,
        help="drop gauges not refreshed for this many seconds (default 3 x interval)",
    )
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT to serve /metrics on (default {DEFAULT_LISTEN})"
    )
    parser.add_argument(
        "--otlp", action="store_true", help="also export via OTLP (standard OTEL_EXPORTER_OTLP_* env)"
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def parse_subject(text: str, source: str) -> dict[str, str]:
    """``tenant=acme,workflow=x`` → ``{"tenant": "acme", "workflow": "x"}``."""
    subject: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name not in SUBJECT_FIELDS or not value.strip():
            raise UsageError(
                f"{source} {text!r}: {part.strip()!r} is not FIELD=VALUE; use e.g. tenant=acme,workflow=x "
                f"with FIELD among {', '.join(SUBJECT_FIELDS)}"
            )
        subject[name] = value.strip()
    return subject


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r} is not HOST:PORT; use e.g. --listen {DEFAULT_LISTEN}")
    return host, int(port)


def _api_key(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    if args.api_key_file is not None:
        try:
            key = args.api_key_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"--api-key-file {args.api_key_file}: cannot read it ({exc.strerror})") from exc
        if not key:
            raise UsageError(f"--api-key-file {args.api_key_file} is empty; put the API key in it")
        return str(key)
    key = args.api_key or env.get("CYCLES_API_KEY", "")
    if not key.strip():
        raise UsageError("no API key: pass --api-key-file FILE or --api-key, or set CYCLES_API_KEY")
    return str(key).strip()


def settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    base_url = (args.base_url or env.get("CYCLES_BASE_URL", "")).strip()
    source = "--base-url" if args.base_url else "CYCLES_BASE_URL"
    if not base_url:
        raise UsageError("no authority URL: pass --base-url http://HOST:7878 or set CYCLES_BASE_URL")
    parts = urlsplit(base_url)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        parts = parts._replace(scheme="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{source}={base_url!r} is not an http(s) URL; use e.g. http://127.0.0.1:7878")
    if args.subject:
        subjects = [parse_subject(text, "--subject") for text in args.subject]
    else:
        texts = [t for t in env.get(SUBJECTS_ENV, "").replace("\n", ";").split(";") if t.strip()]
        subjects = [parse_subject(text, SUBJECTS_ENV) for text in texts]
    if not subjects:
        raise UsageError(f"no subject to poll: pass --subject tenant=acme (repeatable) or set {SUBJECTS_ENV}")
    if not args.interval > 0:
        raise UsageError(f"--interval {args.interval}: use a positive number of seconds, e.g. 15")
    if args.stale_after is not None and not args.stale_after > 0:
        raise UsageError(f"--stale-after {args.stale_after}: use a positive number of seconds, e.g. 45")
    host, port = parse_listen(args.listen)
    return Settings(
        base_url, _api_key(args, env), subjects, args.interval, args.stale_after, host, port, args.otlp
    )


def _startup_problem(error: PollError, config: Settings) -> str | None:
    """A first-poll failure that means the exporter is misconfigured, explained; else ``None``."""
    if error.transport:
        return (
            f"cannot reach the Cycles authority at {config.base_url} ({error.message}); "
            "check --base-url / CYCLES_BASE_URL and that the authority is running"
        )
    if error.error_type == "401":
        return "the authority rejected the API key (401); check --api-key-file / --api-key / CYCLES_API_KEY"
    if error.error_type in ("400", "403"):
        return (
            f"the authority refused subject {dict(error.subject)} ({error.error_type}: {error.message}); "
            f"check --subject / {SUBJECTS_ENV} (the tenant must be the API key's tenant)"
        )
    return None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "DEBUG":  # one line per poll request would drown the failures worth reading
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = settings(args, os.environ)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        handle = configure_telemetry(
            "cycles-otel-exporter",
            otlp=config.otlp,
            prometheus_port=config.port,
            prometheus_host=config.host,
            set_global=False,
            instrument_cycles=False,
        )
    except ValueError as exc:
        print(f"{PROG}: --listen {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    from runcycles import CyclesClient, CyclesConfig  # type: ignore[import-untyped]

    client = CyclesClient(CyclesConfig(base_url=config.base_url, api_key=config.api_key))
    try:
        poller = BalancePoller(
            client,
            config.subjects,
            config.interval,
            meter_provider=handle.meter_provider,
            stale_after=config.stale_after,
        )
        recorded = poller.poll_once_sync()
        problem = _startup_problem(poller.last_error, config) if poller.last_error else None
        if problem is not None:
            print(f"{PROG}: {problem}", file=sys.stderr)
            return 1
        return _serve(poller, handle.prometheus_url, recorded)
    finally:
        client.close()
        handle.shutdown()


def _serve(poller: BalancePoller, url: str | None, recorded: int) -> int:
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _log.info("serving %s (%d balances on first poll, every %gs)", url, recorded, poller.interval)
        print(f"Serving Cycles balance metrics on {url}", flush=True)
        poller.start(delay=poller.next_delay())  # the first poll is done
        stop.wait()
        _log.info("stopping")
        return 0
    finally:
        poller.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
