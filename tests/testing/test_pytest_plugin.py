"""The pytest plugin: its fixtures work in a user's own test run, are function-scoped and clean up."""

from __future__ import annotations

import re
from importlib.metadata import entry_points

import pytest

from cycles_otel.testing.fake_openai import FakeOpenAI
from cycles_otel.testing.otlp_receiver import OtlpReceiver
from cycles_otel.testing.telemetry import TelemetryCapture
from tests.support.paths import REPO

pytestmark = pytest.mark.slow

pytest_plugins = ["pytester"]

# Unrelated plugins in this venv cost seconds of start-up; blocking an absent plugin is harmless.
UNRELATED_PLUGINS = ["-p", "no:schemathesis", "-p", "no:hypothesispytest", "-p", "no:randomly"]

# A user's test module: one governed model call (reserve, call, commit the priced usage, export a span),
# then checks that each test got fresh servers and that the previous test's servers were stopped.
USER_TESTS = """
import uuid

import pytest
from autogen_core.models import UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from runcycles import CyclesClient

SEEN = []


async def test_a_governed_call(otlp_receiver, fake_openai, cycles_server):
    key = cycles_server.create_api_key("acme")
    cycles_server.set_budget("tenant:acme", 1_000_000)
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True))
    )
    model = OpenAIChatCompletionClient(model="gpt-4o", base_url=fake_openai.base_url, api_key="sk-test")
    fake_openai.script(["Paris is sunny."])
    tracer = provider.get_tracer("user")
    with CyclesClient(cycles_server.config(key)) as cycles, tracer.start_as_current_span("call"):
        reservation = cycles.create_reservation({
            "idempotency_key": uuid.uuid4().hex,
            "subject": {"tenant": "acme"},
            "action": {"kind": "llm.completion", "name": "gpt-4o"},
            "estimate": {"unit": "USD_MICROCENTS", "amount": 100_000},
        }).body["reservation_id"]
        result = await model.create([UserMessage(content="Weather in Paris?", source="user")])
        cost = result.usage.prompt_tokens * 250 + result.usage.completion_tokens * 1_000
        cycles.commit_reservation(reservation, {
            "idempotency_key": uuid.uuid4().hex, "actual": {"unit": "USD_MICROCENTS", "amount": cost},
        })
    provider.shutdown()
    await model.close()
    assert result.content == "Paris is sunny."
    assert result.usage.prompt_tokens == fake_openai.requests[0].usage["prompt_tokens"]
    assert cycles_server.ledger().scopes["tenant:acme"].spent == cost > 0
    assert [span.name for span in otlp_receiver.wait_for_spans(1)] == ["call"]
    SEEN.append((otlp_receiver, fake_openai, cycles_server))


def test_fresh_servers_each_test_and_the_last_ones_stopped(
    otlp_receiver, fake_openai, cycles_server, telemetry
):
    previous, current = SEEN[0], (otlp_receiver, fake_openai, cycles_server)
    assert telemetry.spans() == []
    assert all(now is not before for now, before in zip(current, previous))
    assert fake_openai.requests == [] and otlp_receiver.spans() == []
    for stopped, address in zip(previous, ("http_endpoint", "base_url", "base_url")):
        with pytest.raises(RuntimeError, match="not running"):
            getattr(stopped, address)
"""


def test_the_plugin_is_registered_under_the_pytest11_entry_point() -> None:
    [entry] = [entry for entry in entry_points(group="pytest11") if entry.name == "cycles_otel"]
    assert entry.value == "cycles_otel.testing.pytest_plugin"


@pytest.fixture
def user_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose subprocess runs import this checkout's ``cycles_otel`` (and so its plugin), not
    whichever copy is installed. Subprocess, because an in-process run would drop the modules it imported
    (httpcore2...) from sys.modules afterwards while libraries imported earlier keep references to them."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return pytester


def readme_testing_example() -> str:
    """The Python block of README.md's "Testing your own agents" section, exactly as written."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Testing your own agents", 1)[1]
    section = re.split(r"^##", section, maxsplit=1, flags=re.MULTILINE)[0]
    blocks = re.findall(r"^```python\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "the section must hold exactly one Python example"
    return str(blocks[0])


def assertion_lines(source: str) -> list[int]:
    """Indices of the lines of ``source`` that hold a whole ``assert`` statement."""
    return [n for n, line in enumerate(source.splitlines()) if re.fullmatch(r"\s+assert .*[^,(\[{]", line)]


def negate_assertion(source: str, line: int) -> str:
    """``source`` with the ``assert X`` on ``line`` turned into ``assert not (X)``."""
    lines = source.splitlines(keepends=True)
    indent, expression = lines[line].rstrip("\n").split("assert ", 1)
    lines[line] = f"{indent}assert not ({expression})\n"
    return "".join(lines)


def test_the_readme_example_passes_as_written_and_fails_on_any_wrong_assertion(
    user_run: pytest.Pytester,
) -> None:
    example = readme_testing_example()
    lines = assertion_lines(example)
    assert len(lines) >= 3 and len(lines) == example.count("assert "), "keep each assertion on one line"
    # No ini file: pytest-asyncio's default strict mode, as in a user's fresh project.
    user_run.makepyfile(
        test_readme_example=example,
        **{f"test_readme_negated_{n}": negate_assertion(example, line) for n, line in enumerate(lines)},
    )
    result = user_run.runpytest_subprocess(*UNRELATED_PLUGINS)
    result.assert_outcomes(passed=1, failed=len(lines))
    result.stdout.fnmatch_lines([f"FAILED test_readme_negated_{n}.py::*" for n in range(len(lines))])
    result.stdout.no_fnmatch_line("FAILED test_readme_example.py::*")


def test_a_users_test_module_runs_with_the_fixtures(user_run: pytest.Pytester) -> None:
    user_run.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    user_run.makepyfile(test_user=USER_TESTS)
    result = user_run.runpytest_subprocess("--setup-show", *UNRELATED_PLUGINS)
    result.assert_outcomes(passed=2)
    # --setup-show prints each fixture's scope letter: F is function scope.
    for name in ("otlp_receiver", "fake_openai", "cycles_server", "telemetry"):
        result.stdout.fnmatch_lines([f"*SETUP    F {name}*", f"*TEARDOWN F {name}*"])


def test_the_fixtures_serve_this_projects_own_tests(
    otlp_receiver: OtlpReceiver, fake_openai: FakeOpenAI, telemetry: TelemetryCapture
) -> None:
    assert otlp_receiver.http_endpoint.startswith("http://127.0.0.1:")
    assert fake_openai.base_url.startswith("http://127.0.0.1:") and fake_openai.base_url.endswith("/v1")
    telemetry.tracer_provider.get_tracer("plugin.test").start_span("kept").end()
    telemetry.meter_provider.get_meter("plugin.test").create_counter("calls").add(2, {"kind": "x"})
    assert telemetry.span_names() == ["kept"] and telemetry.value("calls", kind="x") == 2
