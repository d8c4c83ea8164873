"""Faults at every step, outages, crashes and a thousand-call reconciliation: nothing lost, nothing leaked."""
