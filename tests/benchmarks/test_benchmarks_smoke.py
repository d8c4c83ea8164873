"""The benchmarks still run: each at smoke scale, checked for complete, sane results (no timing goals)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.support.ci import missing
from tests.support.paths import REPO

BENCHMARKS = ("b1", "b2", "b3", "b4", "b5", "b6")
# B6 runs four processes under callgrind and, the first time, installs its yardstick venv.
RUN_TIMEOUT_S = 600
pytestmark = [pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT_S + 60)]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench")
    # A child process: the benchmarks patch runcycles and start servers; none of that may leak into the suite.
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((out / "latest.json").read_text()), (out / "latest.md").read_text()


def bench(results: tuple[dict[str, Any], str], name: str) -> dict[str, Any]:
    found: dict[str, Any] = results[0]["benchmarks"][name]
    return found


def test_every_benchmark_reports_rows_with_goals_and_figures(results: tuple[dict[str, Any], str]) -> None:
    document, table = results
    assert set(document["benchmarks"]) == set(BENCHMARKS)
    assert {"python", "platform", "cpus", "when"} <= set(document["machine"])
    for name in BENCHMARKS:
        entry = bench(results, name)
        assert entry["scale"] == "smoke"
        assert entry["command"] == f"python -m benchmarks {name}"
        assert entry["rows"] and entry["figures"]
        for row in entry["rows"]:
            assert set(row) == {"measure", "goal", "measured", "met"}
            assert row["met"] in (True, False, None)
            assert (row["met"] is None) == (row["goal"] == "—")
            assert f"| {name} {entry['title']} | {row['measure']} |" in table
    assert "| benchmark | measure | goal | measured | met? |" in table


def test_b1_measures_every_variant_and_exports_telemetry(results: tuple[dict[str, Any], str]) -> None:
    figures = bench(results, "b1")["figures"]
    assert set(figures["per_call"]) == {"inner", "governed_off", "governed_client_telemetry", "governed_full"}
    for variant in figures["per_call"].values():
        assert variant["wall"]["median"] > 0 and variant["cpu"]["median"] > 0
        assert variant["wall"]["p90"] >= variant["wall"]["median"]
    assert figures["spans_exported"] > 0
    assert {"cycles.client.reservations", "gen_ai.client.token.usage"} <= set(figures["metrics_recorded"])
    assert figures["ledger_spent_microcents"] > 0  # the governed calls really committed


def test_b2_bursts_wait_for_the_injected_latency(results: tuple[dict[str, Any], str]) -> None:
    figures = bench(results, "b2")["figures"]
    floor = figures["latency_floor_s"]
    for name in ("guide", "ours", "ours_pool16"):
        # reserve + model + commit are each delayed: a burst finishing sooner did not reach the servers
        assert figures["burst"][name]["wall"]["median"] >= floor
    assert figures["speedup"] > 0
    assert set(figures["over_floor"]) == {"ours", "ours_background"}
    assert all(ratio > 0 for ratio in figures["over_floor"].values())
    # settling in the background waits for one round trip fewer: its ceiling is higher
    assert figures["ceilings"]["background"] > figures["ceilings"]["inline"] > 0
    assert figures["spans_exported"] > 0


def test_b3_guard_bounds_every_user_controlled_label(results: tuple[dict[str, Any], str]) -> None:
    figures = bench(results, "b3")["figures"]
    limit = figures["guard_limit"]
    widest = figures["distinct_values_per_guarded_label"]
    assert figures["calls"] > limit  # more agents than the limit were seen...
    assert widest["gen_ai.agent.name"] == limit + 1  # ...so they collapsed into the limit plus "other"
    assert widest["cycles.scope"] == limit + 1
    assert all(count <= limit + 1 for count in widest.values())
    assert isinstance(figures["rss_growth_bytes"], int)


def test_b4_no_exception_reaches_the_caller_during_an_outage(results: tuple[dict[str, Any], str]) -> None:
    figures = bench(results, "b4")["figures"]
    assert figures["caller_exceptions"] == {}
    assert set(figures["per_call"]) == {"healthy", "refused", "black_hole"}
    assert set(figures["added_p99_s"]) == {"refused", "black_hole"}
    assert figures["spans_received_by_healthy_endpoint"] > 0


def test_b5_compares_both_clients(results: tuple[dict[str, Any], str]) -> None:
    figures = bench(results, "b5")["figures"]
    assert set(figures["per_call"]) == {"async_raw", "async_instrumented", "sync_raw", "sync_instrumented"}
    for kind in ("async", "sync"):
        assert set(figures["added"][kind]) == {"cpu_s", "cpu_ratio", "wall_s", "wall_ratio"}
        assert figures["added"][kind]["cpu_ratio"] > 0


def test_b6_counts_instructions_of_calls_that_really_happened(results: tuple[dict[str, Any], str]) -> None:
    figures = bench(results, "b6")["figures"]
    if "missing" in figures:  # no valgrind: the run said what to install
        missing(f"b6 did not count: missing {', '.join(figures['missing'])}")
    counted = figures["per_call_instructions"]
    assert set(counted) == {
        "bare",
        "governed_off",
        "governed_full",
        "governed_journaled",
        "openai_v2",
        "sdk_floor",
        "wire_floor",
        "runcycles_floor",
    }
    # reserving and committing are real work, and so is telemetry: each layer costs instructions
    assert counted["bare"] < counted["governed_off"] < counted["governed_full"]
    # the wire alone < runcycles' lifecycle on it < ours on runcycles'
    assert counted["bare"] < counted["wire_floor"] < counted["runcycles_floor"] < counted["governed_off"]
    assert counted["bare"] < counted["openai_v2"]
    assert set(figures["derived"]) == {
        "governance_added",
        "telemetry_added",
        "governed_over_bare",
        "openai_v2_added",
        "journal_added",
        "sdk_floor_of_telemetry",
        "governance_wire",
        "governance_runcycles_lifecycle",
        "governance_ours",
    }
    spans = figures["spans_per_call"]
    assert spans["bare"] == spans["governed_off"] == 0  # no-op providers export nothing
    assert spans["wire_floor"] == spans["runcycles_floor"] == 0
    assert spans["governed_full"] >= 2 and spans["openai_v2"] == 1  # the official instrumentation: 1 span
    assert spans["governed_journaled"] == spans["governed_full"]  # the journal adds no spans
    assert spans["sdk_floor"] == spans["governed_full"]  # the floor replays exactly one governed call's spans
    # the SDK alone cannot cost more than the telemetry that includes it
    assert counted["bare"] < counted["sdk_floor"] < counted["governed_full"]
    # every call of all eight variants reached the fake model; the five that reserve committed each call,
    # and the SDK floor committed the one governed call whose signals it replays
    per_variant = figures["calls"] + figures["warmup"]
    assert figures["servers"]["model"] == {"completions": 8 * per_variant}
    assert figures["servers"]["authority"] == {"committed": 5 * per_variant + 1, "active": 0}
    # the yardstick's venv runs the very client the other rows run
    versions = figures["versions"]
    shared = versions["bare"]
    assert all(
        versions[variant] == shared
        for variant in (
            "governed_off",
            "governed_full",
            "governed_journaled",
            "sdk_floor",
            "wire_floor",
            "runcycles_floor",
        )
    )
    assert {name: versions["openai_v2"][name] for name in shared} == shared
