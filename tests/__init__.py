"""The test suite: one folder per part of the project (see tests/README.md), shared code in ``support``."""
