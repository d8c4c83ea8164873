"""Other GenAI instrumentations on governed calls: one inference span per call, each GenAI metric once.

Real AutoGen ``AssistantAgent`` + real ``OpenAIChatCompletionClient`` against FakeOpenAI, the local
authority, in-memory exporters. ``opentelemetry-instrumentation-openai-v2`` 2.4b0 needs util-genai
1.1b0, so its cases run the same scenario in ``benchmarks/.venv-openai-v2``, the venv B6 measures
that instrumentation in (built here on first use).
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation

from benchmarks import yardstick
from cycles_otel.autogen.telemetry import TRACER_NAME
from cycles_otel.instruments import METER_NAME
from cycles_otel.testing.authority import LocalCyclesServer
from cycles_otel.testing.fake_openai import FakeOpenAI
from tests.support.coexistence_scenario import observe
from tests.support.paths import REPO, TESTS

pytestmark = pytest.mark.slow

CALLS = 2
USD = 100_000_000
SCENARIO = TESTS / "support" / "coexistence_scenario.py"
OPENINFERENCE = "openinference.instrumentation.autogen_agentchat"
UTIL_GENAI = "opentelemetry.util.genai.handler"


@dataclass(frozen=True)
class Case:
    """One instrumentation, create or stream, and who is expected to emit what."""

    instrumentation: str
    stream: bool
    span: str  # the scope of the one inference span
    duration: str  # the scope that records gen_ai.client.operation.duration
    tokens: str  # the scope that records gen_ai.client.token.usage
    outer: bool = False  # the inference span encloses cycles.reservation (else the reverse)

    @property
    def id(self) -> str:
        return f"{self.instrumentation}-{'stream' if self.stream else 'create'}"


IN_PROCESS = [
    *(Case("none", stream, TRACER_NAME, METER_NAME, METER_NAME) for stream in (False, True)),
    # util-genai 1.3b0's nested inference is suppressed by our context key and publishes to our span.
    *(Case("util-genai", stream, TRACER_NAME, METER_NAME, METER_NAME) for stream in (False, True)),
    # OpenInference: its LLM span, no metrics of its own.
    *(Case("openinference", stream, OPENINFERENCE, METER_NAME, METER_NAME) for stream in (False, True)),
    Case("util-genai-outer", False, UTIL_GENAI, UTIL_GENAI, UTIL_GENAI, outer=True),
]
# 2.4b0 emits through its util-genai 1.1b0 handler (scope opentelemetry.util.genai.handler).
OPENAI_V2_CASES = [Case("openai-v2", stream, UTIL_GENAI, UTIL_GENAI, UTIL_GENAI) for stream in (False, True)]


@pytest.fixture
def settings(cycles_server: LocalCyclesServer, fake_openai: FakeOpenAI) -> dict[str, Any]:
    key = cycles_server.create_api_key(tenant="acme")
    cycles_server.set_budget("tenant:acme", 10 * USD)
    fake_openai.script([f"Answer {index}: it decides who may spend." for index in range(CALLS)])
    return {
        "cycles_url": cycles_server.base_url,
        "cycles_key": key,
        "openai_url": fake_openai.base_url,
        "calls": CALLS,
    }


@pytest.fixture(scope="session")
def openai_v2_python() -> Path:
    return yardstick.ensure()


# --- the cases ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", IN_PROCESS, ids=lambda case: case.id)
async def test_one_inference_span_per_call_and_each_metric_once(
    case: Case, settings: dict[str, Any], cycles_server: LocalCyclesServer, fake_openai: FakeOpenAI
) -> None:
    observed = await observe({**settings, "instrumentation": case.instrumentation, "stream": case.stream})

    assert_shared_once(observed, case, cycles_server, fake_openai)


@pytest.mark.timeout(600)  # the first run builds the venv
@pytest.mark.parametrize("case", OPENAI_V2_CASES, ids=lambda case: case.id)
def test_openai_v2_one_inference_span_per_call_and_each_metric_once(
    case: Case,
    settings: dict[str, Any],
    cycles_server: LocalCyclesServer,
    fake_openai: FakeOpenAI,
    openai_v2_python: Path,
) -> None:
    scenario = {**settings, "instrumentation": case.instrumentation, "stream": case.stream}
    done = subprocess.run(
        [str(openai_v2_python), str(SCENARIO), json.dumps(scenario)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    observed = json.loads(done.stdout.splitlines()[-1])
    assert Path(observed["cycles_otel"]).resolve().is_relative_to(REPO)  # the code under test, not a copy

    assert_shared_once(observed, case, cycles_server, fake_openai)


async def test_the_util_genai_inference_inside_reports_through_our_span(
    settings: dict[str, Any], fake_openai: FakeOpenAI
) -> None:
    observed = await observe({**settings, "instrumentation": "util-genai", "stream": False})

    server_port = int(fake_openai.base_url.rsplit(":", 1)[1].split("/")[0])
    for chat in inference_spans(observed):
        attributes = chat["attributes"]
        assert attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"  # what the endpoint answered
        assert attributes["gen_ai.response.id"].startswith("chatcmpl-")
        assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", server_port)
        assert attributes["gen_ai.request.max_tokens"] == 100  # ours, beside theirs
        assert attributes["gen_ai.response.finish_reasons"] == ["stop"]


async def test_the_util_genai_inference_outside_gets_our_usage(
    settings: dict[str, Any], fake_openai: FakeOpenAI
) -> None:
    observed = await observe({**settings, "instrumentation": "util-genai-outer", "stream": False})

    answered = [
        (r.usage["prompt_tokens"], r.usage["completion_tokens"]) for r in fake_openai.requests if r.usage
    ]
    reported = [
        (span["attributes"]["gen_ai.usage.input_tokens"], span["attributes"]["gen_ai.usage.output_tokens"])
        for span in inference_spans(observed)
    ]
    assert sorted(reported) == sorted(answered)
    assert all(
        s["attributes"]["gen_ai.response.finish_reasons"] == ["stop"] for s in inference_spans(observed)
    )


async def test_openinference_suppressed_leaves_the_inference_span_to_ours(
    settings: dict[str, Any], cycles_server: LocalCyclesServer, fake_openai: FakeOpenAI
) -> None:
    with suppress_instrumentation():  # OpenInference then emits nothing at all
        observed = await observe({**settings, "instrumentation": "openinference", "stream": False})

    case = Case("openinference", False, TRACER_NAME, METER_NAME, METER_NAME)
    assert_shared_once(observed, case, cycles_server, fake_openai)
    assert not [s for s in observed["spans"] if s["scope"] == OPENINFERENCE]


# --- what every case must show --------------------------------------------------------------------
def is_inference(span: dict[str, Any]) -> bool:
    """A GenAI inference span (``gen_ai.operation.name=chat``) or an OpenInference LLM span."""
    attributes: dict[str, Any] = span["attributes"]
    return bool(
        attributes.get("gen_ai.operation.name") == "chat"
        or attributes.get("openinference.span.kind") == "LLM"
    )


def inference_spans(observed: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for span in observed["spans"] if is_inference(span)]


def render(observed: dict[str, Any]) -> str:
    """The span tree, one span a line: name [scope]."""
    spans = observed["spans"]
    ids = {span["id"] for span in spans}

    def lines(parent: str | None, depth: int) -> Iterator[str]:
        for span in spans:
            if span["parent"] == parent or (depth == 0 and span["parent"] not in ids and parent is None):
                yield "  " * depth + f"{span['name']} [{span['scope']}]"
                yield from lines(span["id"], depth + 1)

    return "\n".join(lines(None, 0))


def recorded_by(observed: dict[str, Any], metric: str, **attributes: object) -> Counter[str]:
    """Recordings of histogram ``metric`` with (at least) ``attributes``, counted per scope."""
    counts: Counter[str] = Counter()
    for point in observed["points"]:
        if point["metric"] == metric and attributes.items() <= point["attributes"].items():
            counts[point["scope"]] += point["count"]
    return counts


def token_sum(observed: dict[str, Any], token_type: str) -> float:
    return float(
        sum(
            p["value"]
            for p in observed["points"]
            if p["metric"] == "gen_ai.client.token.usage"
            and p["attributes"]["gen_ai.token.type"] == token_type
        )
    )


def assert_shared_once(
    observed: dict[str, Any], case: Case, cycles_server: LocalCyclesServer, fake_openai: FakeOpenAI
) -> None:
    tree = render(observed)
    spans = {span["id"]: span for span in observed["spans"]}
    reservations = [span for span in observed["spans"] if span["name"] == "cycles.reservation"]
    inferences = inference_spans(observed)
    assert len(reservations) == CALLS, tree
    assert [span["scope"] for span in inferences] == [case.span] * CALLS, tree
    for reservation in reservations:
        if case.outer:
            assert is_inference(spans[reservation["parent"]]), tree
        else:
            assert len([s for s in inferences if s["parent"] == reservation["id"]]) == 1, tree

    assert recorded_by(observed, "gen_ai.client.operation.duration") == {case.duration: CALLS}
    for token_type in ("input", "output"):
        counted = recorded_by(observed, "gen_ai.client.token.usage", **{"gen_ai.token.type": token_type})
        assert counted == {case.tokens: CALLS}, token_type
    answered = [r.usage for r in fake_openai.requests if r.usage]
    assert len(answered) == CALLS
    assert token_sum(observed, "input") == sum(usage["prompt_tokens"] for usage in answered)
    assert token_sum(observed, "output") == sum(usage["completion_tokens"] for usage in answered)

    cost = [p for p in observed["points"] if p["metric"] == "cycles.client.cost.usd"]
    assert [p["scope"] for p in cost] == [METER_NAME] and cost[0]["value"] > 0
    ledger = cycles_server.ledger()
    assert [r.status for r in ledger.reservations] == ["COMMITTED"] * CALLS
