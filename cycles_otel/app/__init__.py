"""Application entry points: ``configure_telemetry``, the balance poller and exporter, the command line.

These modules may configure global providers, open ports and read the environment: the library
layers (``cycles_otel.protocol``, ``cycles_otel.autogen``) never do. Documented import paths:
``cycles_otel.configure`` and ``cycles_otel.poller`` (or ``from cycles_otel import
configure_telemetry, BalancePoller``).
"""
