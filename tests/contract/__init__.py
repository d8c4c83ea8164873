"""The shared contract: names, labels, pricing, gauges, the layering rules, safe defaults, bad input."""
