"""Shared fixtures and binaries that must exist under CI (``telemetry`` comes from the cycles_otel plugin)."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


# Debian package that brings each binary the tests use.
DEBIAN_PACKAGE = {"amtool": "prometheus-alertmanager"}


def require_binary(name: str) -> str:
    """Path of ``name``; skip when missing, except under ``CI=true`` where it is a failure."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install -y {DEBIAN_PACKAGE.get(name, 'prometheus')})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _no_commit_journal(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """runcycles journals commits under ~/.runcycles; keep each test's journal private."""
    monkeypatch.setenv("CYCLES_JOURNAL_DIR", str(tmp_path_factory.mktemp("journal")))


@pytest.fixture(autouse=True)
def _tiktoken_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken downloads its BPE files on first use; the suite stays on loopback and fails that
    download at once, exactly as on an offline machine, instead of asking DNS for a public host."""
    import tiktoken.load

    def offline(blobpath: str) -> bytes:
        raise ConnectionError(f"offline test run: not downloading {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    # Child processes (pytester, the CLI, opentelemetry-instrument) inherit this instead: any
    # https download goes to a closed loopback port; plain-http loopback servers are unaffected.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
