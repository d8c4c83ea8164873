"""The openai-v2 venv: ``opentelemetry-instrumentation-openai-v2`` beside the project and its OpenAI client.

``python -m benchmarks.yardstick`` creates or refreshes ``benchmarks/.venv-openai-v2`` (B6 and
``tests/coexistence`` do too when it is missing or stale) and prints its interpreter. It lives apart
because the official instrumentation needs an old ``opentelemetry-util-genai`` and registers an
instrumentor that ``opentelemetry-instrument`` would pick up in the project's venv. It holds the
project too (editable, with its ``autogen`` extra): B6 measures the official instrumentation there
(its probe imports no cycles-otel code for that row), and the coexistence tests run governed calls
beside it. Every package both venvs hold is pinned to the project venv's version, so the bare client
measured in either is the same code.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
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
    """The venv's interpreter, after (re)installing it when its requirements, pins or the project changed."""
    pins = constraints()
    sources = REQUIREMENTS.read_text() + pins + (REPO / "pyproject.toml").read_text()
    wanted = hashlib.sha256(sources.encode()).hexdigest()
    if python().exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return python()
    if not python().exists():
        # The project's interpreter makes it: both venvs run the same CPython build.
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    constraints_file = VENV / "constraints.txt"
    constraints_file.write_text(pins)
    installed = subprocess.run(
        [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(constraints_file), "-r", str(REQUIREMENTS), "-e", f"{REPO}[autogen]"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if installed.returncode != 0:
        raise RuntimeError(
            f"installing the openai-v2 venv {VENV} from {REQUIREMENTS.name} failed "
            f"(pip exited {installed.returncode}; it needs the package index):\n{installed.stderr[-4000:]}"
        )
    STAMP.write_text(wanted)
    return python()


if __name__ == "__main__":
    print(ensure())
