"""A worker process as an app runs one: governed calls against a given authority and model endpoint.

Run by the durability tests as a real child process (and killed with SIGKILL by some of them).
Settings come as one JSON argument. It prints JSON lines on stdout: ``ready`` once the client is
built (journal replay started), ``returned`` after each ``create()`` returns, and on stdin EOF,
after every settlement and retry has finished, ``telemetry``: what its metrics counted and its
commit spans.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from autogen_core.models import UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from runcycles import AsyncCyclesClient, CyclesConfig  # type: ignore[import-untyped]

from cycles_otel.autogen import BudgetedChatCompletionClient
from cycles_otel.testing.telemetry import TelemetryCapture


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def main(settings: dict[str, Any]) -> None:
    telemetry = TelemetryCapture()
    config = CyclesConfig(
        base_url=settings["base_url"],
        api_key=settings["api_key"],
        tenant="acme",
        journal_dir=settings["journal_dir"],
        read_timeout=2.0,
        retry_initial_delay=0.2,
        retry_max_delay=1.0,
        retry_max_attempts=20,
        retry_flush_timeout=0.0,
    )
    inner = OpenAIChatCompletionClient(
        model="gpt-4o", base_url=settings["openai_url"], api_key="sk-worker-test", max_retries=0
    )
    client = BudgetedChatCompletionClient(
        inner,
        AsyncCyclesClient(config),
        agent=settings.get("agent", "worker"),
        max_output_tokens=100,
        settle_in_background=settings.get("background", False),
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    say("ready")
    for index in range(settings.get("calls", 0)):
        await client.create([UserMessage(content=f"question {index}", source="user")])
        say("returned", index=index)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test says stop
    await client.close()
    current = asyncio.current_task()
    while pending := [t for t in asyncio.all_tasks() if t is not current and not t.done()]:
        await asyncio.wait(pending, timeout=30)  # runcycles' retries and replays
    commits = [
        {
            "attributes": dict(span.attributes or {}),
            "links": [format(link.context.span_id, "016x") for link in span.links],
            "trace_id": format(span.context.trace_id, "032x"),
        }
        for span in telemetry.spans("cycles.commit")
    ]
    say(
        "telemetry",
        charged=telemetry.value("cycles.client.charged", cycles__unit="USD_MICROCENTS"),
        commits=commits,
        reservations=len(telemetry.spans("cycles.reservation")),
    )
    telemetry.shutdown()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
