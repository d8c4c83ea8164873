"""``--with-prometheus``: a throwaway Prometheus that scrapes the demo and evaluates the shipped rules."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import cycles_otel

EXHAUSTED_ALERT: Final = "CyclesBudgetExhausted"
RULES_DIR: Final = Path(cycles_otel.__file__).resolve().parent.parent / "grafana" / "prometheus"


class PrometheusSetupError(RuntimeError):
    """Prometheus cannot be started; the message says why and what to do."""


@dataclass(frozen=True)
class FiringAlert:
    name: str
    state: str
    labels: dict[str, str]


def find_prometheus() -> str:
    """Path of the ``prometheus`` binary, or a :class:`PrometheusSetupError` that says how to get it."""
    path = shutil.which("prometheus")
    if path is None:
        raise PrometheusSetupError(
            "--with-prometheus needs the 'prometheus' binary on PATH: install it "
            "(apt-get install -y prometheus, or 'make prometheus') or run the demo without --with-prometheus"
        )
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def demo_rule_files(source: Path, target: Path) -> tuple[list[Path], list[str]]:
    """Copy the shipped rule files to ``target``, with ``for: 0s`` on alerts so the demo sees them fire.

    Returns the copies and ``"<alert> for <duration>"`` for each alert whose ``for:`` was shortened.
    """
    import yaml  # only --with-prometheus needs it; it ships with the dev extra

    files = sorted(source.glob("*.yaml")) + sorted(source.glob("*.yml"))
    if not files:
        raise PrometheusSetupError(
            f"no Prometheus rule files in {source}: --with-prometheus needs the repository checkout's "
            "grafana/prometheus/*.yaml"
        )
    copies, notes = [], []
    for path in files:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in document.get("groups", []):
            for rule in group.get("rules", []):
                if rule.get("alert") and rule.get("for") not in (None, "0s", "0m"):
                    notes.append(f"{rule['alert']} for {rule['for']}")
                    rule["for"] = "0s"
        copy = target / path.name
        copy.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        copies.append(copy)
    return copies, notes


class DemoPrometheus:
    """``prometheus`` in a temporary directory on a free loopback port, scraping one target every second."""

    def __init__(self, metrics_url: str, rules_dir: Path = RULES_DIR) -> None:
        self.binary = find_prometheus()
        self.metrics_url = metrics_url
        self.rules_dir = rules_dir
        self.notes: list[str] = []
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DemoPrometheus:
        self._tmp = tempfile.TemporaryDirectory(prefix="cycles-otel-demo-prometheus-")
        root = Path(self._tmp.name)
        rule_files, self.notes = demo_rule_files(self.rules_dir, root)
        target = urlsplit(self.metrics_url)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {
                    "job_name": "cycles-otel-demo",
                    "metrics_path": target.path or "/metrics",
                    "static_configs": [{"targets": [target.netloc]}],
                }
            ],
        }
        (root / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        self.port = _free_port()
        log = (root / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_ready(root / "prometheus.log")
        return self

    def _wait_ready(self, log: Path, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                self.stop()
                raise PrometheusSetupError("prometheus exited at start-up: " + " | ".join(tail))
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        self.stop()
        raise PrometheusSetupError(f"prometheus did not become ready within {timeout:.0f}s")

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=2) as answer:
            return json.load(answer)

    def alerts(self) -> list[FiringAlert]:
        """Alerts Prometheus holds right now (pending or firing)."""
        try:
            body = self._get("/api/v1/alerts")
        except (OSError, ValueError):
            return []
        return [
            FiringAlert(a["labels"].get("alertname", "?"), a.get("state", "?"), dict(a["labels"]))
            for a in body.get("data", {}).get("alerts", [])
        ]

    def wait_for_alert(self, name: str, timeout: float, settle: float = 2.0) -> list[FiringAlert]:
        """Poll until ``name`` fires or ``timeout`` passes; returns every alert held at the end.

        Once ``name`` fires, alerts built on recording rules may need another evaluation or two:
        ``settle`` seconds more let them show up too.
        """
        deadline = time.monotonic() + timeout
        while True:
            held = self.alerts()
            if any(a.name == name and a.state == "firing" for a in held):
                time.sleep(settle)
                return self.alerts() or held
            if time.monotonic() >= deadline:
                return held
            time.sleep(0.25)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> DemoPrometheus:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
