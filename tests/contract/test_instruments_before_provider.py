"""Instruments made before the global meter provider is set keep counting once it is set."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import json
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from cycles_otel.instruments import get_instruments
    from cycles_otel.tally import Labels

    early = get_instruments()  # e.g. CyclesInstrumentor().instrument() at import time
    early.reservations.add(1, Labels({"cycles.decision": "ALLOW"}))
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)
    late = get_instruments(provider)  # e.g. configure_telemetry() or a client made afterwards
    late.reservations.add(2, Labels({"cycles.decision": "ALLOW"}))
    get_instruments().reservations.add(4, Labels({"cycles.decision": "ALLOW"}))
    points = [
        point.value
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "cycles.client.reservations"
        for point in metric.data.data_points
    ]
    print(json.dumps({"points": points, "same": early is late}))
    """
)


def test_counts_made_before_and_after_the_global_provider_is_set_are_all_exported() -> None:
    # The global provider can be set once per process: each run is a process of its own.
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=True
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["points"] == [7], done.stderr
    assert found["same"] is True


CONFIGURED_LATER = textwrap.dedent(
    """
    import urllib.request
    from cycles_otel import configure_telemetry
    from cycles_otel.instruments import get_instruments
    from cycles_otel.tally import Labels

    get_instruments().charged.add(5, Labels({"cycles.unit": "TOKENS"}))  # instrumented first
    handle = configure_telemetry("early-bird", prometheus_port=0, cardinality_limit=7)
    get_instruments().charged.add(6, Labels({"cycles.unit": "TOKENS"}))
    with urllib.request.urlopen(handle.prometheus_url, timeout=10) as response:
        print(response.read().decode())
    handle.shutdown()
    """
)


def test_configure_telemetry_after_instrumenting_serves_every_count_and_says_its_guard_was_not_applied() -> (
    None
):
    done = subprocess.run(
        [sys.executable, "-c", CONFIGURED_LATER], capture_output=True, text=True, timeout=60, check=True
    )
    charged = [line for line in done.stdout.splitlines() if line.startswith("cycles_client_charged_total{")]
    assert len(charged) == 1 and charged[0].endswith(" 11.0"), done.stdout
    assert "cardinality guard not applied" in done.stderr and "limit 500" in done.stderr
