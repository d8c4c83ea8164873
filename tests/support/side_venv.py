"""A venv of its own for tests whose packages cannot share the project's: the project, plus a few pins.

``ensure(name, requirements)`` creates or refreshes ``tests/.venv-<name>`` (gitignored) with pip from
the package index: the project in editable mode with its ``autogen`` extra, and ``requirements``.
Every other package is pinned to the project venv's version (``benchmarks.yardstick.constraints``,
which leaves the two util-genai based packages free), so the code under test is the same in both.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from benchmarks.yardstick import constraints
from tests.support.paths import REPO, TESTS


def ensure(name: str, requirements: Path) -> Path:
    """The interpreter of ``tests/.venv-<name>``, reinstalled when requirements, pins or pyproject change."""
    venv = TESTS / f".venv-{name}"
    python, stamp = venv / "bin" / "python", venv / ".installed"
    pins = constraints()
    sources = requirements.read_text() + pins + (REPO / "pyproject.toml").read_text()
    wanted = hashlib.sha256(sources.encode()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pinned = venv / "constraints.txt"
    pinned.write_text(pins)
    command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["-c", str(pinned), "-r", str(requirements), "-e", f"{REPO}[autogen]"]
    installed = subprocess.run(command, capture_output=True, text=True)
    if installed.returncode != 0:
        raise RuntimeError(
            f"installing {venv} from {requirements.name} failed (pip exited {installed.returncode}); "
            f"it needs the package index:\n{installed.stderr[-4000:]}"
        )
    stamp.write_text(wanted)
    return python
