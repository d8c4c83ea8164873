"""Bad configuration and arguments fail fast: an error naming the field and the fix, before reserving."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import UserMessage
from runcycles import AsyncCyclesClient, CyclesConfig, cycles  # type: ignore[import-untyped]

from cycles_otel.app import exporter
from cycles_otel.app.configure import configure_telemetry
from cycles_otel.autogen import BudgetedChatCompletionClient
from cycles_otel.pricing import PriceTable
from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.fake_openai import FakeOpenAI
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.ports import taken_port
from tests.support.reliability import MODEL_API_KEY, budgeted_client, governed_authority

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Setting:
    """Where a bad input is tried: a running authority and model endpoint, the environment, a temp dir."""

    server: LocalCyclesServer
    config: CyclesConfig
    env: pytest.MonkeyPatch
    tmp: Path
    fake: FakeOpenAI
    telemetry: TelemetryCapture


Attempt = Callable[[Setting], Any]


@dataclass(frozen=True)
class BadInput:
    """An application start-up or call with one bad value, and the words its error must contain."""

    attempt: Attempt
    names: str  # the field, parameter or variable the error must name
    fix: str  # a fragment of the fix the error must suggest
    error: type[Exception] = ValueError


def configure(**kwargs: Any) -> None:
    """Start telemetry the way an app does (not global), then stop it again if it did start."""
    handle = configure_telemetry("bad-input", set_global=False, instrument_cycles=False, **kwargs)
    handle.shutdown()


def with_env(name: str, value: str, then: Callable[[], Any]) -> Attempt:
    def attempt(setting: Setting) -> Any:
        setting.env.setenv(name, value)
        return then()

    return attempt


def just(then: Callable[[], Any]) -> Attempt:
    return lambda setting: then()


def with_port_taken(setting: Setting) -> Any:
    with taken_port() as port:
        configure(prometheus_port=port)


def price_file(content: str) -> Attempt:
    def attempt(setting: Setting) -> Any:
        path = setting.tmp / "prices.json"
        path.write_text(content)
        setting.env.setenv("CYCLES_OTEL_PRICES_FILE", str(path))
        return PriceTable.from_env()

    return attempt


def decorated(**options: Any) -> Attempt:
    """One call through runcycles' ``@cycles`` with ``options``; the guarded work must never run."""

    overrides = options.pop("config", {})

    async def attempt(setting: Setting) -> Any:
        async with AsyncCyclesClient(dataclasses.replace(setting.config, **overrides)) as client:

            @cycles(client=client, **{"estimate": 1_000, **options})  # type: ignore[untyped-decorator]
            async def governed() -> None:
                raise AssertionError("the guarded work ran despite bad input")

            await governed()

    return attempt


def governed_call(config: dict[str, Any] | None = None, **options: Any) -> Attempt:
    """A ``BudgetedChatCompletionClient`` with ``options`` makes one call; nothing may be reserved."""

    async def attempt(setting: Setting) -> Any:
        async with AsyncCyclesClient(dataclasses.replace(setting.config, **(config or {}))) as cycles_client:
            client = budgeted_client(cycles_client, setting.telemetry, setting.fake.base_url, **options)
            await client.create([UserMessage(content="hello", source="user")])

    return attempt


def twin_call(agent: str) -> Attempt:
    """A working client's ``with_agent(agent)`` twin makes one call; nothing may be reserved."""

    async def attempt(setting: Setting) -> Any:
        async with AsyncCyclesClient(setting.config) as cycles_client:
            client = budgeted_client(cycles_client, setting.telemetry, setting.fake.base_url)
            await client.with_agent(agent).create([UserMessage(content="hello", source="user")])

    return attempt


def load_with(field: str, value: Any) -> Attempt:
    """Dump a working client, put a wrongly typed ``field`` into its config, and load it back."""

    async def attempt(setting: Setting) -> Any:
        setting.env.setenv("CYCLES_API_KEY", setting.config.api_key)
        setting.env.setenv("OPENAI_API_KEY", MODEL_API_KEY)
        async with AsyncCyclesClient(setting.config) as cycles_client:
            dumped = budgeted_client(cycles_client, setting.telemetry, setting.fake.base_url).dump_component()
        dumped.config[field] = value
        BudgetedChatCompletionClient.load_component(dumped)

    return attempt


def exporter_flags(*flags: str) -> Attempt:
    """What ``cycles-otel exporter FLAGS`` checks before it polls anything."""

    def attempt(setting: Setting) -> Any:
        parser = argparse.ArgumentParser()
        exporter.add_arguments(parser)
        required = ["--base-url", setting.server.base_url, "--api-key", "k", "--subject", "tenant=acme"]
        return exporter.settings(parser.parse_args([*required, *flags]), {})

    return attempt


CASES: dict[str, BadInput] = {
    "cardinality-limit-not-a-number": BadInput(
        with_env("CYCLES_OTEL_CARDINALITY_LIMIT", "abc", lambda: configure()),
        "CYCLES_OTEL_CARDINALITY_LIMIT",
        "whole number",
    ),
    "cardinality-limit-zero": BadInput(
        with_env("CYCLES_OTEL_CARDINALITY_LIMIT", "0", lambda: configure()),
        "CYCLES_OTEL_CARDINALITY_LIMIT",
        "500",
    ),
    "prometheus-port-not-a-number": BadInput(
        with_env("CYCLES_OTEL_PROMETHEUS_PORT", "x", lambda: configure()),
        "CYCLES_OTEL_PROMETHEUS_PORT",
        "0 for any free port",
    ),
    "prometheus-port-out-of-range": BadInput(
        with_env("CYCLES_OTEL_PROMETHEUS_PORT", "70000", lambda: configure()),
        "CYCLES_OTEL_PROMETHEUS_PORT",
        "1-65535",
    ),
    "prometheus-port-wrong-type": BadInput(
        just(lambda: configure(prometheus_port="9464")), "prometheus_port", "whole number"
    ),
    "prometheus-port-in-use": BadInput(with_port_taken, "prometheus_port", "pick a free port"),
    "otlp-protocol-unknown": BadInput(
        with_env("OTEL_EXPORTER_OTLP_PROTOCOL", "foo", lambda: configure(otlp=True)),
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "http/protobuf",
    ),
    "otlp-protocol-argument": BadInput(
        just(lambda: configure(otlp=True, otlp_protocol="http/json")), "otlp_protocol", "grpc"
    ),
    "otlp-endpoint-without-scheme": BadInput(
        with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317", lambda: configure()),
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://localhost:4317",
    ),
    "otlp-endpoint-without-host": BadInput(
        with_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://:4318/v1/traces", lambda: configure()),
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "http://localhost:4318",
    ),
    "service-name-empty": BadInput(
        just(lambda: configure_telemetry(" ", set_global=False)), "service_name", "non-empty"
    ),
    "price-file-not-json": BadInput(price_file("{models: }"), "prices.json", "fix the syntax"),
    "price-file-negative-rate": BadInput(
        price_file('{"models": {"m": {"input": -1, "output": 2}}}'), "'input'", ">= 0"
    ),
    "price-file-missing-output": BadInput(price_file('{"models": {"m": {"input": 1}}}'), "'output'", "add"),
    "price-file-unknown-field": BadInput(
        price_file('{"models": {"m": {"input": 1, "output": 2, "cache": 1}}}'), "'cache'", "cached_input"
    ),
    "unknown-model-without-price": BadInput(
        just(lambda: PriceTable.default().price_for("my-own-llm")), "my-own-llm", "with_fallback"
    ),
    "decorator-negative-estimate": BadInput(decorated(estimate=-5), "estimate", "non-negative"),
    "decorator-ttl-too-short": BadInput(decorated(ttl_ms=10), "ttl_ms", "between 1000"),
    "decorator-agent-over-128-chars": BadInput(decorated(agent="a" * 129), "agent", "at most 128 characters"),
    "decorator-empty-tenant": BadInput(
        decorated(config={"tenant": ""}), "tenant", "at least one standard field"
    ),
    "client-negative-estimate": BadInput(governed_call(estimate_amount=-1), "estimate_amount", ">= 0"),
    "client-estimate-wrong-type": BadInput(
        governed_call(estimate_amount="lots"), "estimate_amount", "an int", TypeError
    ),
    "client-unknown-model": BadInput(governed_call(model="my-own-llm"), "my-own-llm", "with_fallback"),
    "client-invalid-unit": BadInput(governed_call(unit="EUR"), "unit", "USD_MICROCENTS"),
    "client-ttl-too-short": BadInput(governed_call(ttl_ms=10), "ttl_ms", "between 1000"),
    "client-unknown-overage-policy": BadInput(
        governed_call(overage_policy="SOMETIMES"), "overage_policy", "ALLOW_IF_AVAILABLE"
    ),
    "client-agent-over-128-chars": BadInput(
        governed_call(agent="a" * 129), "agent", "at most 128 characters"
    ),
    "client-empty-tenant": BadInput(
        governed_call(config={"tenant": ""}), "tenant", "at least one standard field"
    ),
    "client-zero-output-cap": BadInput(governed_call(max_output_tokens=0), "max_output_tokens", "positive"),
    "client-malformed-price-file": BadInput(
        lambda setting: (price_file("[1, 2")(setting), governed_call()(setting))[1],
        "prices.json",
        "fix the syntax",
    ),
    "load-component-wrong-field-type": BadInput(load_with("ttl_ms", "soon"), "ttl_ms", "valid integer"),
    "exporter-listen-not-host-port": BadInput(
        exporter_flags("--listen", "everywhere"), "--listen", "127.0.0.1:9464", exporter.UsageError
    ),
    "exporter-base-url-not-http": BadInput(
        exporter_flags("--base-url", "ftp://cycles"),
        "--base-url",
        "http://127.0.0.1:7878",
        exporter.UsageError,
    ),
    "exporter-interval-negative": BadInput(
        exporter_flags("--interval", "-1"), "--interval", "at least 1", exporter.UsageError
    ),
    "exporter-interval-infinite": BadInput(
        exporter_flags("--interval", "inf"), "--interval", "finite", exporter.UsageError
    ),
    "exporter-interval-below-a-second": BadInput(
        exporter_flags("--interval", "1e-9"), "--interval", "at least 1", exporter.UsageError
    ),
    "exporter-stale-after-below-the-interval": BadInput(
        exporter_flags("--interval", "10", "--stale-after", "5"),
        "--stale-after",
        "at least --interval",
        exporter.UsageError,
    ),
    "client-absurd-estimate": BadInput(
        governed_call(estimate_amount=10**30), "estimate_amount", "9223372036854775807"
    ),
    "client-scope-value-outside-charset": BadInput(
        governed_call(workflow="bad/scope"), "workflow", "a-zA-Z0-9"
    ),
    "client-tool-allowlist-is-a-string": BadInput(
        governed_call(tool_allowlist="web_search"), "tool_allowlist", "list", TypeError
    ),
    "client-base-url-without-scheme": BadInput(
        governed_call(config={"base_url": "localhost:7878"}), "base_url", "http://"
    ),
    "client-base-url-invalid-port": BadInput(
        governed_call(config={"base_url": "http://127.0.0.1:99999"}), "base_url", "http://host:port"
    ),
    **{
        f"client-{flag.replace('_', '-')}-a-string": BadInput(
            governed_call(None, **{flag: text}), flag, "True or False", TypeError
        )
        for flag, text in (
            ("settle_in_background", "false"),
            ("emit_inference_span", "no"),
            ("capture_content", "false"),
            ("instrument_protocol", "false"),
        )
    },
    "client-ttl-a-word": BadInput(governed_call(ttl_ms="soon"), "ttl_ms", "an int between", TypeError),
    "client-output-cap-a-string": BadInput(
        governed_call(max_output_tokens="100"), "max_output_tokens", "a positive int", TypeError
    ),
    "client-pricing-a-model-name": BadInput(
        governed_call(pricing="gpt-4o"), "pricing", "PriceTable or None", TypeError
    ),
    "client-tracer-provider-not-one": BadInput(
        governed_call(tracer_provider=object()), "tracer_provider", "TracerProvider or None", TypeError
    ),
    "client-meter-provider-not-one": BadInput(
        governed_call(meter_provider=object()), "meter_provider", "MeterProvider or None", TypeError
    ),
    "client-empty-tenant-argument": BadInput(governed_call(tenant=""), "tenant", "pass None"),
    "client-twin-agent-outside-charset": BadInput(twin_call("a/b"), "agent", "a-zA-Z0-9"),
    "client-empty-action-kind": BadInput(governed_call(action_kind=""), "action_kind", "1 to 64 characters"),
    "client-unknown-authority-error-policy": BadInput(
        governed_call(on_authority_error="sometimes"), "on_authority_error", "'allow'"
    ),
    "client-unknown-tokenizer": BadInput(governed_call(tokenizer="tiktoken"), "tokenizer", "'characters'"),
    "client-background-settlement-without-journal": BadInput(
        governed_call(settle_in_background=True), "settle_in_background", "journal_enabled=True"
    ),
}


@pytest.fixture
def setting(
    telemetry: TelemetryCapture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Setting]:
    with governed_authority(telemetry) as (server, config), FakeOpenAI() as fake:
        yield Setting(server, config, monkeypatch, tmp_path, fake, telemetry)


async def check(case: BadInput, setting: Setting) -> None:
    with pytest.raises(case.error) as caught:
        result = case.attempt(setting)
        if inspect.isawaitable(result):
            await result
    message = str(caught.value)
    assert case.names in message, f"the error does not name {case.names!r}: {message}"
    assert case.fix in message, f"the error does not suggest {case.fix!r}: {message}"
    assert setting.server.requests == [], "the authority was called before the error"
    assert setting.server.ledger().count() == 0
    assert setting.fake.requests == [], "the model was called despite the bad input"


@pytest.mark.parametrize("name", list(CASES))
async def test_bad_input_fails_fast_and_names_the_fix(name: str, setting: Setting) -> None:
    await check(CASES[name], setting)
