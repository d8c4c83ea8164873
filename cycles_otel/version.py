"""The package version, in one place for hatch and the tracer/meter scope."""

__version__ = "0.1.0"
