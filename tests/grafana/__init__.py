"""Dashboards, recording and alerting rules, and alerts firing in a real Prometheus."""
