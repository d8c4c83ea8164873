"""A throwaway Debian Prometheus for tests: scrapes one target every second, optionally with rule files."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.ports import free_port
from tests.support.waiting import poll


def zero_hold_copies(rule_files: Sequence[Path], workdir: Path) -> list[Path]:
    """Copies of ``rule_files`` in ``workdir`` with every alert's ``for:`` set to ``0s``.

    Shipped hold times are minutes; a test that wants to see an alert fire within seconds reads
    these copies, and every expression, label and annotation stays as shipped.
    """
    copies = []
    for path in rule_files:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in document["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "0s"
        copy = workdir / f"zero-hold-{path.name}"
        copy.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        copies.append(copy)
    return copies


class Prometheus:
    """A Prometheus scraping one target every second and evaluating ``rule_files`` every second."""

    def __init__(self, binary: str, target_url: str, workdir: Path, rule_files: Sequence[Path] = ()) -> None:
        target = httpx.URL(target_url)
        config = workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(path) for path in rule_files],
                    "scrape_configs": [
                        {
                            "job_name": "app",
                            "metrics_path": target.path,
                            "static_configs": [{"targets": [f"{target.host}:{target.port}"]}],
                        }
                    ],
                }
            ),
            encoding="utf-8",
        )
        self.url = f"http://127.0.0.1:{free_port()}"
        # A file, not a pipe: nobody reads a pipe while the test runs, and a full one stalls Prometheus.
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}"],
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    def wait_ready(self) -> None:
        def ready() -> bool | None:
            assert self.process.poll() is None, self.log.read_text(errors="replace")[-2000:]
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200 or None
            except httpx.TransportError:
                return None

        poll(ready, "Prometheus to become ready")

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful ``/api/v1/<path>`` answer."""
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5).json()
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> dict[str, float]:
        """Instant vector as {cycles_scope (or ''): value}."""
        return {
            r["metric"].get("cycles_scope", ""): float(r["value"][1])
            for r in self.api("query", query=expr)["result"]
        }

    def wait_for(self, expr: str, expected: dict[str, float], timeout: float = 20) -> None:
        found: dict[str, float] = {}

        def matches() -> bool | None:
            found.clear()
            found.update(self.query(expr))
            return found == expected or None

        try:
            poll(matches, expr, timeout)
        except AssertionError:
            raise AssertionError(f"{expr}: {found} != {expected}") from None

    def alerts(self) -> list[dict[str, Any]]:
        """Every pending or firing alert (labels, annotations, state, activeAt, value)."""
        found: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return found

    def series_names(self) -> set[str]:
        """Every metric name Prometheus holds (scraped, recorded, ALERTS)."""
        return set(self.api("label/__name__/values"))

    def last_evaluations(self) -> dict[str, float]:
        """Rule group name -> Unix time of its last evaluation (0 before the first)."""
        return {group["name"]: _unix(group["lastEvaluation"]) for group in self.api("rules")["groups"]}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _unix(rfc3339: str) -> float:
    """Prometheus' RFC 3339 times (nanosecond fractions, ``Z``) as Unix seconds."""
    head, _, fraction = rfc3339.rstrip("Z").partition(".")
    if head.startswith("0001-"):  # Go's zero time: never evaluated
        return 0.0
    seconds = datetime.fromisoformat(head + "+00:00").timestamp()
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)
