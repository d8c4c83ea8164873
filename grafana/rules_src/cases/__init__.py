"""The promtool test cases of grafana/tests/, one module per test file."""
