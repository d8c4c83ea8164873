"""The application entry points: configure_telemetry, the balance poller and exporter, a Prometheus scrape."""
