"""Reproducible benchmarks of cycles-otel: ``python -m benchmarks`` runs them all (see README.md)."""
