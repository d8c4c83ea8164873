"""The ``cycles-otel demo`` program end to end."""
