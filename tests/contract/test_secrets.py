"""No secret leaves the process, and conversation text leaves only when opted in.

A whole app — ``configure_telemetry`` exporting over real OTLP/HTTP to ``OtlpReceiver``, a Prometheus
endpoint, Python logging at DEBUG through the OTel ``LoggingHandler`` and to stderr — runs governed
calls through the real ``OpenAIChatCompletionClient`` against ``FakeOpenAI``, including failures. Every
byte that left (OTLP payloads, scrape text, component dumps, stdout/stderr) is scanned for both keys.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import ChatAgent, Team
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import SingleThreadedAgentRuntime
from autogen_core.models import UserMessage
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from runcycles import AsyncCyclesClient, BudgetExceededError, CyclesProtocolError  # type: ignore[import-untyped]

from cycles_otel import semconv as sc
from cycles_otel.app.configure import TelemetryHandle, configure_telemetry
from cycles_otel.autogen import BudgetedChatCompletionClient
from cycles_otel.content import REDACTED
from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.fake_openai import FakeOpenAI, ScriptedReply
from cycles_otel.testing.otlp_receiver import OtlpReceiver
from tests.support.ports import free_port
from tests.support.reliability import MAX_OUTPUT_TOKENS, MODEL, MODEL_API_KEY, settle

# The SDK's LoggingHandler is what apps use today; its successor lives in a package we do not depend on.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated"),
]

CYCLES_API_KEY = "cyc_live_SECRET-CYCLES-KEY-4b8e1f0a9d37c2"
SECRETS = {"Cycles API key": CYCLES_API_KEY, "model API key": MODEL_API_KEY}
PROMPT_TEXT = "Summarise the Zanzibar quarterly budget report"
REPLY_TEXT = "The Zanzibar ledger balances to the last microcent"
TENANT = "acme"
OUR_SCOPE = "cycles_otel"
QUIET_LOGGERS = ("urllib3", "opentelemetry")  # the exporters' own chatter would feed back into the export


@dataclass
class Exported:
    """Everything that left the process, as text, by where it went."""

    channels: dict[str, str] = field(default_factory=dict)
    our_spans: list[str] = field(default_factory=list)  # JSON of every span from our tracer
    all_spans: list[str] = field(default_factory=list)

    def leaks(self, needle: str) -> list[str]:
        return [name for name, text in self.channels.items() if needle in text]


@contextmanager
def debug_logging_to(receiver: OtlpReceiver) -> Iterator[LoggerProvider]:
    """Root logging at DEBUG, to stderr and through the OTel LoggingHandler to the receiver."""
    provider = LoggerProvider()
    provider.add_log_record_processor(
        BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=f"{receiver.http_endpoint}/v1/logs"), schedule_delay_millis=50
        )
    )
    handlers = [
        LoggingHandler(level=logging.DEBUG, logger_provider=provider),
        logging.StreamHandler(sys.stderr),
    ]
    root = logging.getLogger()
    old_level = root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    root.setLevel(logging.DEBUG)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield provider
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


def make_client(
    cycles_client: AsyncCyclesClient, fake: FakeOpenAI, handle: TelemetryHandle, **options: Any
) -> BudgetedChatCompletionClient:
    """As an app builds it: the real OpenAI client with its key, governed, on the app's providers."""
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    inner = OpenAIChatCompletionClient(
        model=MODEL, base_url=fake.base_url, api_key=MODEL_API_KEY, max_retries=0
    )
    return BudgetedChatCompletionClient(
        inner,
        cycles_client,
        max_output_tokens=MAX_OUTPUT_TOKENS,
        tracer_provider=handle.tracer_provider,
        meter_provider=handle.meter_provider,
        **options,
    )


async def workload(server: LocalCyclesServer, fake: FakeOpenAI, handle: TelemetryHandle) -> dict[str, str]:
    """Successes, failures, a denial, a retried commit, an unreachable authority, a team; the dumps."""
    prompt = [UserMessage(content=PROMPT_TEXT, source="user")]
    config = server.config(CYCLES_API_KEY, connect_timeout=0.5, read_timeout=0.5)
    async with AsyncCyclesClient(config) as cycles_client:
        client = make_client(cycles_client, fake, handle)
        fake.script([ScriptedReply(REPLY_TEXT), ScriptedReply(REPLY_TEXT)])
        await client.create(prompt)
        [item async for item in client.create_stream(prompt)]
        fake.faults.fail_next(status=500, message="upstream failure")
        with pytest.raises(Exception, match="upstream failure"):
            await client.create(prompt)
        server.faults.fail("commit", 500)  # retried in the background, logged by runcycles
        await client.create(prompt)
        server.set_budget(f"tenant:{TENANT}/workflow:tiny", 1)
        with pytest.raises(BudgetExceededError):
            await make_client(cycles_client, fake, handle, workflow="tiny").create(prompt)
        # A runtime with the app's provider, so AutoGen's own spans are exported too.
        runtime = SingleThreadedAgentRuntime(tracer_provider=handle.tracer_provider)
        runtime.start()
        agents: list[ChatAgent | Team] = [
            AssistantAgent(n, model_client=client) for n in ("writer", "critic")
        ]
        team = RoundRobinGroupChat(agents, termination_condition=MaxMessageTermination(3), runtime=runtime)
        try:
            await team.run(task=PROMPT_TEXT)
        finally:
            await runtime.stop()
        dumps = {
            "client dump": client.dump_component().model_dump_json(),
            "agent dump": agents[0].dump_component().model_dump_json(),
            "team dump": team.dump_component().model_dump_json(),
        }
        await settle(server)
    unreachable = dataclasses.replace(config, base_url=f"http://127.0.0.1:{free_port()}")
    async with AsyncCyclesClient(unreachable) as offline:
        with pytest.raises(CyclesProtocolError):
            await make_client(offline, fake, handle).create(prompt)
    return dumps


async def run_app(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> tuple[Exported, dict[str, Any]]:
    """Run the workload as an app would (env-configured OTLP, Prometheus, DEBUG logs); collect what left."""
    exported = Exported()
    with OtlpReceiver() as receiver, LocalCyclesServer() as server, FakeOpenAI(api_key=MODEL_API_KEY) as fake:
        server.set_budget(f"tenant:{TENANT}", 10**12)
        server.create_api_key(TENANT, key=CYCLES_API_KEY)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        with debug_logging_to(receiver) as logger_provider:
            handle = configure_telemetry("secrets-app", prometheus_port=0, set_global=False)
            try:
                dumps = await workload(server, fake, handle)
                async with httpx.AsyncClient() as http:
                    scrape = await http.get(str(handle.prometheus_url), timeout=5)
                exported.channels["prometheus scrape"] = scrape.text
            finally:
                handle.shutdown()
                logger_provider.shutdown()
        evidence: dict[str, Any] = {
            "cycles key sent": [r.headers.get("x-cycles-api-key") for r in server.requests][:1],
            "model key sent": [r.headers.get("authorization") for r in fake.requests][:1],
        }
        exported.channels.update(dumps)
        exported.channels["OTLP payloads"] = "\n".join(
            body.decode("latin-1") for body in receiver.raw_bytes()
        )
        exported.channels["OTLP decoded"] = receiver.to_json()
        for span in receiver.spans():
            text = json.dumps(
                [span.name, span.attributes, [e.attributes for e in span.events], span.status_message],
                default=str,
            )
            exported.all_spans.append(text)
            if span.scope_name.startswith(OUR_SCOPE):
                exported.our_spans.append(text)
        evidence["span names"] = sorted({s.name for s in receiver.spans()})
        evidence["log records"] = len(receiver.logs())
        evidence["metric names"] = sorted({m.name for m in receiver.metrics()})
    out, err = capfd.readouterr()
    exported.channels["stdout"], exported.channels["stderr"] = out, err
    return exported, evidence


async def test_no_key_leaves_the_process(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    exported, evidence = await run_app(monkeypatch, capfd)
    # The keys were really in use, and every channel really carried the workload (no vacuous pass).
    assert evidence["cycles key sent"] == [CYCLES_API_KEY]
    assert evidence["model key sent"] == [f"Bearer {MODEL_API_KEY}"]
    assert {sc.SPAN_RESERVATION, sc.SPAN_RESERVE, sc.SPAN_COMMIT, f"chat {MODEL}"} <= set(
        evidence["span names"]
    )
    assert "cycles.client.charged" in evidence["metric names"] and evidence["log records"] > 0
    assert "cycles_client_charged_total" in exported.channels["prometheus scrape"]
    assert "Transport error" in exported.channels["stderr"]  # DEBUG logging really reached stderr
    for what, secret in SECRETS.items():
        assert not exported.leaks(secret), f"the {what} leaked into {exported.leaks(secret)}"
        # Even a recognisable fragment (what log redaction often leaves) must not appear.
        assert not exported.leaks(secret[-16:]), (
            f"a fragment of the {what} leaked into {exported.leaks(secret[-16:])}"
        )


@pytest.mark.parametrize("opted_in", [False, True], ids=["default", "capture-on"])
async def test_conversation_text_leaves_only_when_opted_in(
    opted_in: bool, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AUTOGEN_DISABLE_RUNTIME_TRACING", raising=False)  # AutoGen's spans carry messages
    if opted_in:
        monkeypatch.setenv(sc.CAPTURE_CONTENT_ENV, "true")
    else:
        monkeypatch.delenv(sc.CAPTURE_CONTENT_ENV, raising=False)
    exported, _ = await run_app(monkeypatch, capfd)
    ours = "\n".join(exported.our_spans)
    everything = "\n".join(exported.all_spans)
    for text in (PROMPT_TEXT, REPLY_TEXT):
        assert (text in ours) is opted_in, f"{text!r} in our spans: {text in ours}, opted in: {opted_in}"
        assert (text in everything) is opted_in
    if opted_in:
        assert sc.GEN_AI_INPUT_MESSAGES in ours and sc.GEN_AI_OUTPUT_MESSAGES in ours
    else:
        assert not [
            c for c in ("client dump", "agent dump", "team dump") if REPLY_TEXT in exported.channels[c]
        ]


async def test_autogen_runtime_spans_stay_but_their_message_text_does_not(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """AutoGen's runtime spans serialise whole messages into ``message``; exported, it is a placeholder."""
    monkeypatch.delenv("AUTOGEN_DISABLE_RUNTIME_TRACING", raising=False)
    monkeypatch.delenv(sc.CAPTURE_CONTENT_ENV, raising=False)
    exported, _ = await run_app(monkeypatch, capfd)
    runtime = [s for s in exported.all_spans if s not in exported.our_spans and '"message"' in s]
    assert runtime, "AutoGen's runtime spans were not exported"
    assert all(json.dumps(REDACTED) in s for s in runtime)
    assert not [s for s in exported.all_spans if PROMPT_TEXT in s or REPLY_TEXT in s]
