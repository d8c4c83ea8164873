"""``python -m benchmarks [b1 ...] [--smoke] [--out DIR] [--profile]``: run, print and save benchmarks."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from types import ModuleType

from benchmarks.common import FULL, RESULTS_DIR, SMOKE, BenchResult, write_results

MODULES = {
    "b1": "benchmarks.b1_overhead",
    "b2": "benchmarks.b2_concurrency",
    "b3": "benchmarks.b3_cardinality",
    "b4": "benchmarks.b4_exporter_outage",
    "b5": "benchmarks.b5_instrumentor",
    "b6": "benchmarks.b6_instructions",
}
MARKS = {True: "met", False: "NOT MET", None: ""}


def _print(result: BenchResult, seconds: float) -> None:
    print(
        f"\n{result.name}: {result.title}  ({seconds:.1f} s, scale {result.scale}; "
        f"reproduce: {result.command})"
    )
    for row in result.rows:
        goal = f"  goal {row.goal}" if row.goal != "—" else ""
        print(f"  {row.measure}: {row.measured}{goal}  {MARKS[row.met]}".rstrip())
    sys.stdout.flush()


def _run(module: ModuleType, smoke: bool, profile: bool) -> BenchResult:
    scale = SMOKE if smoke else FULL
    if not profile:
        result: BenchResult = module.run(scale)
        return result
    from pyinstrument import Profiler  # pip install pyinstrument

    profiler = Profiler(async_mode="disabled")
    with profiler:
        result = module.run(scale)
    print(profiler.output_text(unicode=True, color=False, show_all=False), file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*MODULES, []], help="benchmarks to run (default: all)")
    parser.add_argument(
        "--smoke", action="store_true", help="a few iterations each: checks they run, not speed"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help=f"results directory (default {RESULTS_DIR})"
    )
    parser.add_argument(
        "--profile", action="store_true", help="print a pyinstrument profile of each benchmark"
    )
    args = parser.parse_args(argv)
    results = []
    for name in args.names or list(MODULES):
        started = time.perf_counter()
        result = _run(importlib.import_module(MODULES[name]), args.smoke, args.profile)
        _print(result, time.perf_counter() - started)
        results.append(result)
        write_results([result], args.out)  # saved as it goes: a later failure keeps earlier figures
    print(f"\nresults: {args.out / 'latest.json'}, {args.out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
