"""What the demo talks to: telemetry pipeline, model endpoint and budget authority, embedded or live."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runcycles import CyclesClient, CyclesConfig  # type: ignore[import-untyped]

from cycles_otel.app.configure import ENDPOINT_ENVS, PROTOCOL_ENV, TelemetryHandle, configure_telemetry
from cycles_otel.balance_board import BalanceReading
from cycles_otel.demo import scenario
from cycles_otel.demo.accounting import readings_from_balances, readings_from_ledger
from cycles_otel.demo.live import LiveTargets
from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.fake_openai import FakeOpenAI, ScriptedReply
from cycles_otel.testing.otlp_receiver import OtlpReceiver

if TYPE_CHECKING:
    from cycles_otel.demo.runner import DemoOptions

SERVICE_NAME = "cycles-otel-demo"
FAKE_API_KEY = "sk-demo"  # the fake endpoint accepts any key; a real one is never printed


class SetupError(RuntimeError):
    """A part of the demo cannot start; the message names the flag or variable and the fix."""


@dataclass
class Services:
    live: LiveTargets
    telemetry: TelemetryHandle
    telemetry_description: str
    receiver: OtlpReceiver | None
    model_base_url: str | None
    model_api_key: str
    model_description: str
    cycles_config: CyclesConfig
    authority_description: str
    budgets: dict[str, int]
    """Allocations the demo set (empty against a live authority, whose budgets are its own)."""
    ledger: Callable[[], list[BalanceReading]]

    @property
    def tenant(self) -> str:
        return self.live.tenant


def start_services(stack: ExitStack, options: DemoOptions, live: LiveTargets) -> Services:
    """Start (or point at) everything; each part is stopped by ``stack``."""
    if options.prometheus_port is not None:
        _check_port_free(options.prometheus_port)
    telemetry, receiver, telemetry_description = _start_telemetry(stack, options.prometheus_port)
    if live.real_cycles:
        assert live.cycles_url is not None
        config = CyclesConfig(base_url=live.cycles_url, api_key=live.cycles_key, tenant=live.tenant)
        budgets: dict[str, int] = {}
        ledger = _balances_reader(config, live.tenant)
        authority = f"Cycles server at {live.cycles_url} (tenant {live.tenant}; its budgets, its ledger)"
    else:
        server = stack.enter_context(LocalCyclesServer())
        key = server.create_api_key(tenant=scenario.TENANT)
        budgets = scenario.BudgetPlan.for_demo(options.short).allocations
        for scope, allocated in budgets.items():
            server.set_budget(scope, allocated)
        config = server.config(key)
        ledger = lambda: readings_from_ledger(server.ledger().scopes)  # noqa: E731
        authority = f"local Cycles authority at {server.base_url}"
    if live.real_openai:
        base_url, api_key = live.openai_base_url, live.openai_key or ""
        model = f"{scenario.MODEL} at {base_url or 'https://api.openai.com/v1'} (real calls, real cost)"
    else:
        fake = stack.enter_context(FakeOpenAI(seed=options.seed))
        fake.script(
            ScriptedReply(content=reply.content or None, tool_calls=list(reply.tool_calls))
            for reply in scenario.scripted_replies(options.seed, scenario.scripted_turns(options.short))
        )
        base_url, api_key = fake.base_url, FAKE_API_KEY
        model = f"fake OpenAI at {base_url} (scripted, seed {options.seed}; priced as {scenario.MODEL})"
    return Services(
        live=live,
        telemetry=telemetry,
        telemetry_description=telemetry_description,
        receiver=receiver,
        model_base_url=base_url,
        model_api_key=api_key,
        model_description=model,
        cycles_config=config,
        authority_description=authority,
        budgets=budgets,
        ledger=ledger,
    )


def _check_port_free(port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the metrics server binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise SetupError(
                f"--prometheus-port {port}: 127.0.0.1:{port} is in use ({exc.strerror or exc}); "
                "pick another port, or leave the flag out to take a free one"
            ) from None


@contextlib.contextmanager
def _environment(overrides: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _start_telemetry(stack: ExitStack, port: int | None) -> tuple[TelemetryHandle, OtlpReceiver | None, str]:
    """Providers exporting over OTLP (to the user's endpoint, else an embedded receiver) plus ``/metrics``."""
    configured = next((os.environ[n].strip() for n in ENDPOINT_ENVS if os.environ.get(n, "").strip()), None)
    receiver: OtlpReceiver | None = None
    overrides: dict[str, str] = {}
    if configured is None:
        receiver = stack.enter_context(OtlpReceiver())
        # The exporters read their endpoint from the environment; point them at the receiver just
        # for their construction.
        overrides = {ENDPOINT_ENVS[0]: receiver.http_endpoint, PROTOCOL_ENV: "http/protobuf"}
        description = f"embedded OTLP receiver at {receiver.http_endpoint} (http/protobuf)"
    else:
        protocol = os.environ.get(PROTOCOL_ENV, "").strip() or "http/protobuf"
        description = f"your OTLP endpoint {configured} ({protocol})"
    with _environment(overrides):
        try:
            handle = configure_telemetry(SERVICE_NAME, otlp=True, prometheus_port=port or 0)
        except ValueError as exc:
            raise SetupError(str(exc)) from None
    stack.callback(handle.shutdown)
    return handle, receiver, description


def _balances_reader(config: CyclesConfig, tenant: str) -> Callable[[], list[BalanceReading]]:
    def read() -> list[BalanceReading]:
        with CyclesClient(config) as client:
            answer = client.get_balances(tenant=tenant)
        return readings_from_balances(answer.body if answer.is_success else None)

    return read
