"""Safe defaults: every listening socket is loopback-only unless asked; scrape endpoints are read-only."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest

from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.fake_openai import FakeOpenAI
from cycles_otel.testing.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.slow

LOOPBACK = {"127.0.0.1", "::1"}
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def _address(hex_address: str, family: int) -> tuple[str, int]:
    host_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(host_hex)
    if family == socket.AF_INET:
        host = socket.inet_ntop(family, raw[::-1])
    else:  # four little-endian 32-bit words
        host = socket.inet_ntop(family, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    if host.startswith("::ffff:"):
        host = host.removeprefix("::ffff:")
    return host, int(port_hex, 16)


def listening_sockets() -> set[tuple[str, int]]:
    """(host, port) of every TCP socket this process is listening on, read from /proc."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == _LISTEN and fields[9] in inodes:
                    found.add(_address(fields[1], family))
    return found


@contextlib.contextmanager
def opened_by(start: Callable[[], AbstractContextManager[Any]]) -> Iterator[tuple[Any, set[tuple[str, int]]]]:
    """Run ``start``; yield what it returned and the listening sockets it added."""
    before = listening_sockets()
    with start() as running:
        yield running, listening_sockets() - before


SERVERS: dict[str, Callable[[], AbstractContextManager[Any]]] = {
    "authority": LocalCyclesServer,
    "fake-openai": FakeOpenAI,
    "otlp-receiver": OtlpReceiver,
}


@pytest.mark.parametrize("name", list(SERVERS))
def test_every_server_listens_on_loopback_only_by_default(name: str) -> None:
    with opened_by(SERVERS[name]) as (_, added):
        assert added, f"{name} opened no listening socket (the check would prove nothing)"
        assert {host for host, _ in added} <= LOOPBACK, f"{name} listens on {sorted(added)}"


def test_the_check_sees_a_socket_bound_to_every_interface() -> None:
    """The /proc reader is not blind: a wildcard bind shows up as 0.0.0.0."""
    with socket.socket() as wildcard:
        wildcard.bind(("0.0.0.0", 0))
        wildcard.listen()
        port = wildcard.getsockname()[1]
        assert ("0.0.0.0", port) in listening_sockets()


def test_the_authority_binds_elsewhere_only_when_asked() -> None:
    with opened_by(lambda: LocalCyclesServer(host="127.0.0.2")) as (server, added):
        assert {host for host, _ in added} == {"127.0.0.2"}
        assert server.base_url.startswith("http://127.0.0.2:")


def test_the_authority_cli_defaults_to_loopback() -> None:
    cli = importlib.import_module("cycles_otel.testing.authority.cli")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert parser.parse_args([]).host in LOOPBACK


def test_the_balance_exporter_listens_on_loopback_by_default() -> None:
    from cycles_otel.app import exporter

    parser = argparse.ArgumentParser()
    exporter.add_arguments(parser)
    args = parser.parse_args(
        ["--base-url", "http://127.0.0.1:7878", "--api-key", "k", "--subject", "tenant=a"]
    )
    assert exporter.settings(args, {}).host in LOOPBACK


def _prometheus_endpoint() -> AbstractContextManager[Any]:
    from cycles_otel.app.configure import configure_telemetry

    return configure_telemetry(
        "safe-defaults", otlp=False, prometheus_port=0, set_global=False, instrument_cycles=False
    )


def test_the_prometheus_endpoint_listens_on_loopback_only_by_default() -> None:
    with opened_by(_prometheus_endpoint) as (_, added):
        assert added and {host for host, _ in added} <= LOOPBACK, sorted(added)


WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")
WRITE_PATHS = ("/metrics", "/", "/-/reload", "/api/v1/admin/tsdb/delete_series")


def write_everywhere(method: str) -> tuple[str, str, dict[str, int]]:
    """Try ``method`` on every path of a fresh endpoint: the scrape before, after, and each status."""
    with _prometheus_endpoint() as handle:
        handle.meter_provider.get_meter("safe").create_counter("safe.writes").add(3)
        url = handle.prometheus_url
        before = httpx.get(url, timeout=5)
        assert before.status_code == 200 and "safe_writes_total" in before.text
        statuses = {
            path: httpx.request(
                method, url.replace("/metrics", path), content=b"safe_writes_total 0\n", timeout=5
            ).status_code
            for path in WRITE_PATHS
        }
        return before.text, httpx.get(url, timeout=5).text, statuses


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_writes_to_the_prometheus_endpoint_are_refused_and_change_nothing(method: str) -> None:
    before, after, statuses = write_everywhere(method)
    assert all(400 <= status < 600 for status in statuses.values()), statuses
    assert after == before


def test_writes_to_the_prometheus_endpoint_get_405_or_404() -> None:
    for method in WRITE_METHODS:
        _, _, statuses = write_everywhere(method)
        assert set(statuses.values()) <= {404, 405}, f"{method}: {statuses}"
