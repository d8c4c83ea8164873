"""deploy/: the compose stack and its configs, checked statically (no Docker engine here)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from grafana.dashboards_src.builder import CYCLES_ADMIN_VARIABLE, DEFAULT_CYCLES_ADMIN_URL
from tests.support.ci import require_binary
from tests.support.grafana import GRAFANA, alerts, load_yaml, rules
from tests.support.paths import REPO

DEPLOY = REPO / "deploy"
COMPOSE = load_yaml(DEPLOY / "docker-compose.yaml")
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
REQUIRED_SERVICES = frozenset(
    [
        "cycles-server",
        "cycles-admin",
        "cycles-dashboard",
        "redis",
        "otel-collector",
        "tempo",
        "prometheus",
        "alertmanager",
        "grafana",
    ]
)
COLLECTOR = load_yaml(DEPLOY / "collector" / "config.yaml")
DATASOURCES = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml")[
    "datasources"
]


def bind_mounts(service: str) -> list[tuple[Path, str]]:
    """(host path, container path) of a service's bind mounts (named volumes left out)."""
    mounts = []
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((DEPLOY / source).resolve(), target))
    return mounts


def container_path(service: str, path: str) -> Path:
    """Which host file a path inside ``service`` is (through its bind mounts)."""
    for source, target in sorted(bind_mounts(service), key=lambda m: -len(m[1])):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return source / path[len(target) :].lstrip("/")
    raise AssertionError(f"{path} is not mounted into {service}")


def command_flag(service: str, flag: str) -> str:
    command = SERVICES[service]["command"]
    words = shlex.split(command) if isinstance(command, str) else command
    for word in words:
        if word.startswith(f"{flag}="):
            return str(word.split("=", 1)[1])
    raise AssertionError(f"{service} has no {flag}= in its command")


def host_of(address: str) -> str:
    return urlsplit(address if "//" in address else f"//{address}").hostname or ""


def test_every_yaml_parses() -> None:
    files = sorted(DEPLOY.rglob("*.y*ml")) + sorted(GRAFANA.rglob("*.y*ml"))
    assert len(files) >= 8
    for path in files:
        assert load_yaml(path) is not None, path


def test_compose_has_the_whole_stack() -> None:
    assert set(SERVICES) >= REQUIRED_SERVICES
    for name, service in SERVICES.items():
        assert service.get("image"), f"{name}: no image"
        for dependency in service.get("depends_on", []):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"


def test_every_published_port_binds_loopback() -> None:
    published = [(name, port) for name, s in SERVICES.items() for port in s.get("ports", [])]
    assert published
    for name, port in published:
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        assert host_ip == "127.0.0.1", f"{name}: {port} must be published on 127.0.0.1"


def test_every_mounted_path_exists_and_named_volumes_are_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: named volume {source} is not declared"


def test_prometheus_config_passes_promtool_as_mounted(tmp_path: Path) -> None:
    """Lay the files out as compose mounts them, then check config and the rule files it loads."""
    promtool = require_binary("promtool")
    root = tmp_path / "container"
    for source, target in bind_mounts("prometheus"):
        destination = root / target.lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, destination)
    config = root / command_flag("prometheus", "--config.file").lstrip("/")
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    loaded = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", output))
    assert loaded == len(list(rules())), output


def test_prometheus_talks_to_services_of_the_stack() -> None:
    config = load_yaml(container_path("prometheus", command_flag("prometheus", "--config.file")))
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    targets += [
        t for am in config["alerting"]["alertmanagers"] for c in am["static_configs"] for t in c["targets"]
    ]
    for target in targets:
        assert host_of(target) in set(SERVICES) | {"localhost"}, target
    exporter_port = COLLECTOR["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    assert f"otel-collector:{exporter_port}" in targets, "Prometheus does not scrape the collector's exporter"


def test_collector_pipelines_name_only_defined_components() -> None:
    service = COLLECTOR["service"]
    assert set(service["pipelines"]) >= {"traces", "metrics"}
    for pipeline_name, pipeline in service["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            undefined = set(pipeline.get(kind, [])) - set(COLLECTOR.get(kind) or {})
            assert undefined == set(), f"pipeline {pipeline_name}: undefined {kind} {undefined}"
    assert set(service.get("extensions", [])) <= set(COLLECTOR.get("extensions") or {})
    endpoints = COLLECTOR["receivers"]["otlp"]["protocols"]
    assert {endpoints["grpc"]["endpoint"][-4:], endpoints["http"]["endpoint"][-4:]} == {"4317", "4318"}


def test_collector_sends_traces_to_tempo() -> None:
    exporters = COLLECTOR["service"]["pipelines"]["traces"]["exporters"]
    hosts = {host_of(COLLECTOR["exporters"][name]["endpoint"]) for name in exporters}
    assert "tempo" in hosts
    assert "prometheus" in COLLECTOR["service"]["pipelines"]["metrics"]["exporters"]


def test_grafana_provisions_the_dashboards_where_they_are_mounted() -> None:
    providers = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")["providers"]
    for provider in providers:
        folder = container_path("grafana", provider["options"]["path"])
        assert folder.resolve() == (GRAFANA / "dashboards").resolve()
        assert sorted(folder.glob("*.json")), "no dashboards in the provisioned folder"
    assert container_path("grafana", "/etc/grafana/provisioning/dashboards").is_dir()
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert container_path("grafana", home).is_file()


# The labels of the metrics the trace-to-metrics queries read (docs/telemetry.md).
METRIC_LABELS = {
    "cycles_client_cost_usd_total": {"gen_ai_request_model", "gen_ai_tool_name", "gen_ai_agent_name"},
    "gen_ai_client_operation_duration_seconds_bucket": {
        "gen_ai_request_model",
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "error_type",
        "le",
    },
    "cycles_client_reservations_total": {
        "cycles_decision",
        "cycles_reason",
        "cycles_action_kind",
        "cycles_action_name",
    },
}


def test_grafana_datasources_link_metrics_and_traces() -> None:
    by_type = {source["type"]: source for source in DATASOURCES}
    assert {"prometheus", "tempo"} <= set(by_type)
    for source in DATASOURCES:
        assert host_of(source["url"]) in SERVICES, source["name"]
    prometheus, tempo = by_type["prometheus"], by_type["tempo"]
    destinations = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert {d["datasourceUid"] for d in destinations if "datasourceUid" in d} == {tempo["uid"]}
    assert tempo["jsonData"]["tracesToMetrics"]["datasourceUid"] == prometheus["uid"]
    mapped = {tag["value"] for tag in tempo["jsonData"]["tracesToMetrics"]["tags"]}
    for query in tempo["jsonData"]["tracesToMetrics"]["queries"]:
        text = query["query"]
        # Grafana expands $VAR in provisioning files: write $$__tags and $${__span.tags[...]}.
        assert "$$__tags" in text or '$${__span.tags["' in text, query["name"]
        if "$$__tags" in text:  # every mapped label must exist on the metric the query reads
            metric = text.split("{", 1)[0].rsplit("(", 1)[-1]
            assert mapped <= METRIC_LABELS[metric], (query["name"], mapped - METRIC_LABELS[metric])


def test_exemplars_open_their_trace_in_tempo_and_its_cycles_events() -> None:
    """Panel field config never reaches exemplars: the datasource gives each exemplar trace id both
    links, the Cycles one on the dashboards' variable (``$$``: Grafana expands ``$VAR`` here)."""
    prometheus = next(source for source in DATASOURCES if source["type"] == "prometheus")
    destinations = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    to_tempo = {d["name"] for d in destinations if d.get("datasourceUid")}
    to_cycles = {
        d["name"]
        for d in destinations
        if d.get("url") == f"$${{{CYCLES_ADMIN_VARIABLE}:raw}}/events?trace_id=$${{__value.raw}}"
    }
    assert to_tempo and to_tempo == to_cycles
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        names = {variable["name"] for variable in json.loads(path.read_text())["templating"]["list"]}
        assert CYCLES_ADMIN_VARIABLE in names, f"{path.name}: exemplar links read ${CYCLES_ADMIN_VARIABLE}"


def test_cycles_links_default_to_the_cycles_dashboard_of_the_stack() -> None:
    url = urlsplit(DEFAULT_CYCLES_ADMIN_URL)
    assert f"{url.hostname}:{url.port}:80" in SERVICES["cycles-dashboard"]["ports"]
    admin = SERVICES["cycles-dashboard"]["environment"]["ADMIN_UPSTREAM"]
    assert host_of(admin) == "cycles-admin" and admin.endswith(":7979")
    for server in ("cycles-server", "cycles-admin"):
        origins = SERVICES[server]["environment"]["DASHBOARD_CORS_ORIGIN"]
        assert DEFAULT_CYCLES_ADMIN_URL in origins, f"{server} refuses the dashboard's origin"


def test_alertmanager_routes_and_inhibitions_name_real_alerts() -> None:
    config = load_yaml(DEPLOY / "alertmanager" / "alertmanager.yml")
    receivers = {receiver["name"] for receiver in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert {route["receiver"] for route in routes} <= receivers
    names = {alert["alert"] for alert in alerts()}
    matchers = " ".join(m for rule in config["inhibit_rules"] for side in rule.values() for m in side)
    mentioned = set(re.findall(r"Cycles[A-Za-z]+", matchers))
    assert mentioned and mentioned <= names


def test_alertmanager_config_passes_amtool() -> None:
    amtool = require_binary("amtool")
    result = subprocess.run(
        [amtool, "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_walks_through_the_admin_calls_and_app_settings() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for needed in (
        "/v1/admin/tenants",
        "/v1/admin/api-keys",
        "/v1/admin/budgets",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ):
        assert needed in readme
    for needed in ("CYCLES_BASE_URL", "CYCLES_API_KEY", "docker compose up"):
        assert needed in readme
    published = {str(p).split(":")[1] for s in SERVICES.values() for p in s.get("ports", [])}
    for port in re.findall(r"http://127\.0\.0\.1:(\d+)", readme):
        assert port in published, f"README points at port {port}, which compose does not publish"
