"""B6: instructions per ``create()`` (callgrind): bare, governed, with full telemetry, and the yardstick."""

from __future__ import annotations

import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import callgrind, yardstick
from benchmarks.callgrind_probe import VARIANTS
from benchmarks.common import BenchResult, Scale
from benchmarks.servers import authority_process, model_process

NAME = "b6"
TITLE = "instructions per call"
COMMAND = "python -m benchmarks b6"
GOVERNANCE_GOAL = 2.5e6  # instructions governance may add to a bare call
TELEMETRY_GOAL = 1.2e6  # instructions full telemetry may add to a governed call
RATIO_GOAL = 1.5  # a fully telemetered governed call / a bare one
# Counts do not depend on load, so two probes at once only shorten the run.
PARALLEL_PROBES = 2


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def millions(instructions: float) -> str:
    return f"{instructions / 1e6:,.2f} M"


def added(instructions: float) -> str:
    return f"{'+' if instructions >= 0 else '−'}{abs(instructions) / 1e6:,.2f} M"


def not_measured(scale: Scale, missing: list[str]) -> BenchResult:
    """What B6 reports where it cannot count (outside CI): what is missing and how to install it."""
    result = BenchResult(NAME, TITLE, COMMAND, scale.name)
    what = ", ".join(missing)
    result.add("instructions per create() (callgrind)", "—", f"not measured: missing {what}")
    result.figures = {"missing": missing}
    print(f"b6: not measured, missing {what}", file=sys.stderr)
    return result


def _count_all(scale: Scale, directory: Path) -> tuple[dict[str, callgrind.Count], dict[str, Any]]:
    """Every variant counted against one authority and one fake OpenAI endpoint, each in its own process."""
    calls, warmup = scale.n(50, 3), scale.n(10, 2)
    marks = callgrind.build_marks(directory)
    interpreters = {variant: Path(sys.executable) for variant in VARIANTS}
    interpreters["openai_v2"] = yardstick.ensure()
    with authority_process() as authority, model_process() as model:
        env = {
            "CYCLES_BASE_URL": authority.base_url,
            "CYCLES_API_KEY": authority.api_key,
            "CYCLES_JOURNAL_ENABLED": "false",  # as in B1 and B2
        }
        # runcycles' default: every commit journaled before it is sent (a directory of the run's own).
        journaled = {
            **env,
            "CYCLES_JOURNAL_ENABLED": "true",
            "CYCLES_JOURNAL_DIR": str(directory / "journal"),
        }
        with ThreadPoolExecutor(PARALLEL_PROBES) as pool:
            futures = {
                variant: pool.submit(
                    callgrind.count,
                    interpreters[variant],
                    variant,
                    marks=marks,
                    model_url=model.base_url,
                    calls=calls,
                    warmup=warmup,
                    env=journaled if variant == "governed_journaled" else env,
                    directory=directory,
                )
                for variant in VARIANTS
            }
            counts = {variant: future.result() for variant, future in futures.items()}
    servers = {"authority": authority.final, "model": model.final}
    return counts, servers


def run(scale: Scale) -> BenchResult:
    missing = callgrind.missing_tools()
    if missing:
        if in_ci():
            raise RuntimeError(f"b6 needs {', '.join(missing)}: under CI=true that is a failure")
        return not_measured(scale, missing)
    with tempfile.TemporaryDirectory(prefix="b6-callgrind-") as scratch:
        counts, servers = _count_all(scale, Path(scratch))
    per_call = {variant: found.per_call for variant, found in counts.items()}
    bare, off, full, v2 = (per_call[v] for v in ("bare", "governed_off", "governed_full", "openai_v2"))
    journaled, floor = per_call["governed_journaled"], per_call["sdk_floor"]
    wire, lifecycle = per_call["wire_floor"], per_call["runcycles_floor"]
    governance, telemetry, ratio = off - bare, full - off, full / bare
    derived = {
        "governance_added": governance,
        "telemetry_added": telemetry,
        "governed_over_bare": ratio,
        "openai_v2_added": v2 - bare,
        "journal_added": journaled - full,
        "sdk_floor_of_telemetry": floor - bare,
        "governance_wire": wire - bare,
        "governance_runcycles_lifecycle": lifecycle - wire,
        "governance_ours": off - lifecycle,
    }
    result = BenchResult(NAME, TITLE, COMMAND, scale.name)
    spans = {variant: found.report["spans_per_call"] for variant, found in counts.items()}
    result.figures = {
        "calls": counts["bare"].report["calls"],
        "warmup": counts["bare"].report["warmup"],
        "per_call_instructions": per_call,
        "derived": derived,
        "spans_per_call": spans,
        "versions": {variant: found.report["versions"] for variant, found in counts.items()},
        "servers": servers,
    }
    result.add("(a) bare OpenAIChatCompletionClient.create()", "—", millions(bare))
    result.add("(b) governed, no telemetry (no-op providers, protocol not instrumented)", "—", millions(off))
    result.add(
        "(c) governed, full telemetry (SDK providers, batched spans, metric reader, protocol instrumented)",
        "—",
        f"{millions(full)} ({spans['governed_full']:g} spans per call)",
    )
    result.add(
        "(d) as (c), with runcycles' commit journal on (its default)",
        "—",
        f"{millions(journaled)} (the journal adds {added(journaled - full)})",
    )
    result.add(
        "(e) bare call + the OTel SDK alone making a governed call's spans and measurements",
        "—",
        f"{millions(floor)} ({spans['sdk_floor']:g} spans per call)",
    )
    result.add(
        "(f) bare call + a reserve and a commit on the same transport, nothing around them",
        "—",
        millions(wire),
    )
    result.add(
        "(g) bare call inside runcycles' own AsyncStreamReservation on the same transport",
        "—",
        millions(lifecycle),
    )
    result.add(
        "governance added (b − a)",
        f"<= {added(GOVERNANCE_GOAL)}",
        added(governance),
        governance <= GOVERNANCE_GOAL,
    )
    result.add(
        "of the governance: the wire (f − a) / runcycles' lifecycle (g − f) / our own lifecycle (b − g)",
        "—",
        f"{added(wire - bare)} / {added(lifecycle - wire)} / {added(off - lifecycle)}",
    )
    result.add(
        "telemetry added (c − b)",
        f"<= {added(TELEMETRY_GOAL)}",
        added(telemetry),
        telemetry <= TELEMETRY_GOAL,
    )
    result.add(
        "of the telemetry: the SDK's floor for these signals (e − a) / our own code (c − b − floor)",
        "—",
        f"{added(floor - bare)} / {added(telemetry - (floor - bare))}",
    )
    result.add(
        "whole governed call / bare (c / a)", f"<= {RATIO_GOAL}x", f"{ratio:.2f}x", ratio <= RATIO_GOAL
    )
    versions = counts["openai_v2"].report["versions"]
    official = "opentelemetry-instrumentation-openai-v2"
    result.add(
        f"yardstick: bare client + {official} {versions[official]} (same SDK providers)",
        "—",
        f"{millions(v2)} ({spans['openai_v2']:g} span per call)",
    )
    result.add(
        "yardstick: what the official instrumentation adds (its row − a), against our telemetry (c − b)",
        "—",
        f"{added(derived['openai_v2_added'])} (ours {added(telemetry)})",
    )
    result.notes.append(
        f"each row is {result.figures['calls']} calls after {result.figures['warmup']} uncounted warm-up "
        "calls, in a process of its own under callgrind (all its threads counted, span export included); "
        "authority and fake OpenAI endpoint in other processes; commit journal off but in (d)."
    )
    result.notes.append(
        f"the yardstick runs in {yardstick.VENV.name} (python -m benchmarks.yardstick), every package it "
        "shares with the project's venv at the same version."
    )
    return result
