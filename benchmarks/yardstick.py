"""The yardstick venv: ``opentelemetry-instrumentation-openai-v2`` on the OpenAI client of the project's venv.

``python -m benchmarks.yardstick`` creates or refreshes ``benchmarks/.venv-openai-v2`` (B6 does too
when it is missing or stale) and prints its interpreter. It lives apart because the official
instrumentation needs an old ``opentelemetry-util-genai`` and registers an instrumentor that
``opentelemetry-instrument`` would pick up in the project's venv. Every package both venvs hold is
pinned to the project venv's version, so the bare client measured in either is the same code.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-openai-v2"
REQUIREMENTS = HERE / "yardstick-requirements.txt"
STAMP = VENV / ".installed"
OWN_PACKAGES = ("opentelemetry-instrumentation-openai-v2", "opentelemetry-util-genai")


def python() -> Path:
    return VENV / "bin" / "python"


def constraints() -> str:
    """The project venv's versions (``pip freeze``), less the yardstick's own packages and local paths."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kept = [
        line
        for line in frozen.splitlines()
        if "==" in line and " @ " not in line and not line.lower().startswith(OWN_PACKAGES)
    ]
    return "\n".join(kept) + "\n"


def ensure() -> Path:
    """The yardstick's interpreter, after (re)installing it when its requirements or constraints changed."""
    pins = constraints()
    wanted = hashlib.sha256((REQUIREMENTS.read_text() + pins).encode()).hexdigest()
    if python().exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return python()
    if not python().exists():
        # The project's interpreter makes it: both venvs run the same CPython build.
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    constraints_file = VENV / "constraints.txt"
    constraints_file.write_text(pins)
    installed = subprocess.run(
        [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(constraints_file), "-r", str(REQUIREMENTS)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if installed.returncode != 0:
        raise RuntimeError(
            f"installing the yardstick venv {VENV} from {REQUIREMENTS.name} failed "
            f"(pip exited {installed.returncode}):\n{installed.stderr[-4000:]}"
        )
    STAMP.write_text(wanted)
    return python()


if __name__ == "__main__":
    print(ensure())
