"""Instruction counts from callgrind: the tools it needs, the marks library, one probe run and its total.

A probe (``callgrind_probe.py``) runs under ``valgrind --tool=callgrind --instr-atstart=no``: start-up
and warm-up run uninstrumented, then client requests (``callgrind_marks.c``, loaded with ctypes)
zero the counters, instrument the measured calls and dump what every thread executed under a label.
Counts are repeatable (within about 0.1 % here) whatever else the machine is doing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.callgrind_probe import DUMP_LABEL

ROOT = Path(__file__).resolve().parent.parent
MARKS_SOURCE = Path(__file__).resolve().with_name("callgrind_marks.c")
# Binary -> the Debian package that brings it (valgrind's also brings valgrind/callgrind.h).
TOOLS = {"valgrind": "valgrind", "gcc": "gcc"}
PROBE_TIMEOUT_S = 1800.0


def missing_tools() -> list[str]:
    """Each tool not on ``PATH``, with the command that installs it; empty when counting can start."""
    return [
        f"{tool} (apt-get install -y {package})" for tool, package in TOOLS.items() if not shutil.which(tool)
    ]


def build_marks(directory: Path) -> Path:
    """``callgrind_marks.c`` compiled into a shared library in ``directory``."""
    library = directory / "callgrind_marks.so"
    built = subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(MARKS_SOURCE)],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        raise RuntimeError(
            f"gcc could not build {MARKS_SOURCE.name} (valgrind/callgrind.h comes with Debian's valgrind "
            f"package):\n{built.stderr}"
        )
    return library


@dataclass(frozen=True)
class Count:
    """One probe run: instructions executed by all its threads between the marks, and its own report."""

    instructions: int
    report: dict[str, Any]

    @property
    def per_call(self) -> float:
        calls: int = self.report["calls"]
        return self.instructions / calls


def count(
    python: Path,
    variant: str,
    *,
    marks: Path,
    model_url: str,
    calls: int,
    warmup: int,
    env: Mapping[str, str],
    directory: Path,
) -> Count:
    """Run ``variant`` under callgrind with ``python`` (a venv's interpreter) and read its labelled dump."""
    out = directory / f"{variant}.callgrind"
    log = directory / f"{variant}.valgrind.log"
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        f"--log-file={log}", str(python), "-m", "benchmarks.callgrind_probe", variant,
        "--marks", str(marks), "--model", model_url, "--calls", str(calls), "--warmup", str(warmup),
    ]  # fmt: skip
    # A fixed hash seed: dict and set layouts, and so the counts, repeat from run to run.
    environment = {**os.environ, **env, "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
    )
    if done.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(
            f"{variant} under callgrind exited {done.returncode}:\n{done.stderr[-4000:]}\n{tail}"
        )
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return Count(labelled_total(out, DUMP_LABEL), report)


def labelled_total(out: Path, label: str) -> int:
    """``totals:`` of the dump that client request ``label`` triggered (callgrind numbers them out.1, ...)."""
    trigger = f"desc: Trigger: Client Request: {label}"
    for path in sorted(out.parent.glob(f"{out.name}.*")):
        lines = path.read_text().splitlines()
        if trigger in lines:
            for line in reversed(lines):  # totals close the file
                if line.startswith("totals:"):
                    return int(line.split()[1])
    raise RuntimeError(f"no callgrind dump labelled {label!r} next to {out}: did the probe reach its marks?")
