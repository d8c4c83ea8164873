"""The benchmarks run in smoke mode, and the SDK floor B1 measures against."""
