"""What a test needs from the machine: missing, it skips on a developer's machine and fails under CI."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Debian package that brings each binary the tests use.
DEBIAN_PACKAGE = {"amtool": "prometheus-alertmanager", "valgrind": "valgrind", "gcc": "gcc"}


def missing(message: str) -> NoReturn:
    """Stop the test for want of ``message``'s input: a skip, or under ``CI=true`` a failure."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing input is a failure, not a skip)", pytrace=False)
    pytest.skip(message, allow_module_level=True)  # also from a module that cannot import without it


def require_binary(name: str) -> str:
    """The path of the executable ``name``."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (apt-get install -y {DEBIAN_PACKAGE.get(name, 'prometheus')})")
    return path


def require_module(name: str, install: str) -> ModuleType:
    """The imported module ``name``; ``install`` says how to get it."""
    if importlib.util.find_spec(name) is None:
        missing(f"{name} is not installed ({install})")
    return importlib.import_module(name)


def require_file(path: Path, what: str) -> Path:
    """``path``, which must exist; ``what`` names it and how to provide it."""
    if not path.exists():
        missing(f"{what} not found at {path}")
    return path
