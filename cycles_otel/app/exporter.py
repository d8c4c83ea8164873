"""``cycles-otel exporter``: poll Cycles balances and serve them as Prometheus metrics, like node_exporter."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from cycles_otel.app.configure import ListenError, configure_telemetry
from cycles_otel.app.poller import BalancePoller, PollError
from cycles_otel.semconv import SUBJECT_FIELDS

PROG = "cycles-otel exporter"
DEFAULT_LISTEN = "127.0.0.1:9464"
SUBJECTS_ENV = "CYCLES_EXPORTER_SUBJECTS"
TENANT_ENV = "CYCLES_TENANT"  # runcycles' own subject default
# Polling faster than this only loads the authority: balances change with calls, not by the millisecond.
MIN_INTERVAL = 1.0
_log = logging.getLogger(PROG)


class UsageError(ValueError):
    """A flag or variable that cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class Settings:
    """What the exporter runs with; each ``*_from`` names where a value came from, for its errors."""

    base_url: str
    api_key: str
    subjects: list[dict[str, str]]
    interval: float
    stale_after: float | None
    host: str
    port: int
    otlp: bool
    base_url_from: str
    api_key_from: str
    subjects_from: str


def named(source: str, value: str) -> str:
    """``--flag 'value'`` or ``VARIABLE='value'``: how an error names what it is about."""
    return f"{source} {value!r}" if source.startswith("--") else f"{source}={value!r}"


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
        help=f"a subject whose balances to poll, repeatable (env {SUBJECTS_ENV}, subjects separated by "
        f"';'; without either, the tenant {TENANT_ENV} names)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=15.0,
        help=f"seconds between polls, at least {MIN_INTERVAL:g} (default 15)",
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        help="drop gauges not refreshed for this many seconds, at least --interval (default 3 x interval)",
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


def _api_key(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, str]:
    """The API key and where it came from (never the key itself)."""
    if args.api_key_file is not None:
        source = f"--api-key-file {args.api_key_file}"
        try:
            key = args.api_key_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"{source}: cannot read it ({exc.strerror})") from exc
        if not key:
            raise UsageError(f"{source} is empty; put the API key in it")
        return str(key), source
    if args.api_key:
        return str(args.api_key).strip(), "--api-key"
    key = env.get("CYCLES_API_KEY", "").strip()
    if not key:
        raise UsageError("no API key: pass --api-key-file FILE or --api-key, or set CYCLES_API_KEY")
    return key, "CYCLES_API_KEY"


def _base_url(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, str]:
    source = "--base-url" if args.base_url else "CYCLES_BASE_URL"
    base_url = (args.base_url or env.get("CYCLES_BASE_URL", "")).strip()
    if not base_url:
        raise UsageError("no authority URL: pass --base-url http://HOST:7878 or set CYCLES_BASE_URL")
    parts = urlsplit(base_url)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        parts = parts._replace(scheme="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{named(source, base_url)} is not an http(s) URL; use e.g. http://127.0.0.1:7878")
    return base_url, named(source, base_url)


def _subjects(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[list[dict[str, str]], str]:
    """From ``--subject``, else ``CYCLES_EXPORTER_SUBJECTS``, else the tenant of ``CYCLES_TENANT``."""
    if args.subject:
        return [parse_subject(text, "--subject") for text in args.subject], "--subject"
    listed = env.get(SUBJECTS_ENV, "")
    texts = [t for t in listed.replace("\n", ";").split(";") if t.strip()]
    if texts:
        return [parse_subject(text, SUBJECTS_ENV) for text in texts], named(SUBJECTS_ENV, listed)
    tenant = env.get(TENANT_ENV, "").strip()
    if tenant:
        return [{"tenant": tenant}], named(TENANT_ENV, tenant)
    raise UsageError(
        f"no subject to poll: pass --subject tenant=acme (repeatable), or set {SUBJECTS_ENV} or {TENANT_ENV}"
    )


def _seconds(args: argparse.Namespace) -> tuple[float, float | None]:
    interval, stale_after = args.interval, args.stale_after
    if not MIN_INTERVAL <= interval < math.inf:  # NaN fails too
        raise UsageError(
            f"--interval {interval:g}: use a finite number of seconds, at least {MIN_INTERVAL:g}, e.g. 15"
        )
    if stale_after is not None and not interval <= stale_after < math.inf:
        raise UsageError(
            f"--stale-after {stale_after:g}: use a finite number of seconds, at least --interval "
            f"({interval:g}), e.g. {3 * interval:g}"
        )
    return interval, stale_after


def settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    base_url, base_url_from = _base_url(args, env)
    subjects, subjects_from = _subjects(args, env)
    interval, stale_after = _seconds(args)
    host, port = parse_listen(args.listen)
    api_key, api_key_from = _api_key(args, env)
    return Settings(
        base_url,
        api_key,
        subjects,
        interval,
        stale_after,
        host,
        port,
        args.otlp,
        base_url_from=base_url_from,
        api_key_from=api_key_from,
        subjects_from=subjects_from,
    )


def _startup_problem(error: PollError, config: Settings) -> str | None:
    """A first-poll failure that means the exporter is misconfigured, explained; else ``None``."""
    if error.transport:
        return (
            f"{config.base_url_from}: cannot reach the Cycles authority ({error.message}); "
            "check the URL and that the authority is running"
        )
    if error.error_type == "401":
        return f"{config.api_key_from}: the authority rejected the API key (401); check the key"
    if error.error_type in ("400", "403"):
        return (
            f"{config.subjects_from}: the authority refused subject {dict(error.subject)} "
            f"({error.error_type}: {error.message}); the tenant must be the API key's tenant"
        )
    return None


def _listen_problem(error: ListenError, listen: str) -> str:
    if error.port_taken:
        return f"--listen {listen}: cannot listen ({error.reason}); pick a free port, or port 0 for any"
    return (
        f"--listen {listen}: cannot listen ({error.reason}); use an address of this machine, e.g. 127.0.0.1"
    )


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
    except ListenError as exc:
        print(f"{PROG}: {_listen_problem(exc, args.listen)}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a telemetry variable (OTEL_EXPORTER_OTLP_*, ...): the message names it
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
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
    """Poll in this thread until SIGINT/SIGTERM (exit 0) or until polling itself fails (exit 1):
    an exporter serving gauges no one refreshes would look healthy while it lies."""

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        poller.stop()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _log.info("serving %s (%d balances on first poll, every %gs)", url, recorded, poller.interval)
        print(f"Serving Cycles balance metrics on {url}", flush=True)
        poller.run(delay=poller.next_delay())  # the first poll is done
    except Exception as exc:
        _log.error("balance polling stopped", exc_info=exc)
        print(f"{PROG}: balance polling stopped ({type(exc).__name__}: {exc}); exiting", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _log.info("stopping")
    return 0
