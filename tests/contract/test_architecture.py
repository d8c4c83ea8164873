"""The package's layers, who may import whom, no import cycles, declared dependencies."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import REPO

PACKAGE = REPO / "cycles_otel"

# Each layer and the layers it may import (itself always). The shared contract is every top-level
# module but the two documented aliases of application modules.
LAYERS: dict[str, set[str]] = {
    "contract": set(),
    "protocol": {"contract"},
    "autogen": {"contract", "protocol"},
    "app": {"contract", "protocol"},
    "testing": {"contract"},
    "demo": {"contract", "protocol", "autogen", "app", "testing"},
    "alias": {"app"},
}
ALIASES = {"cycles_otel.configure", "cycles_otel.poller"}
# Third-party packages only some layers may import.
RESTRICTED_IMPORTS: dict[str, set[str]] = {
    "autogen_core": {"autogen", "demo"},
    "autogen_agentchat": {"autogen", "demo"},
    "autogen_ext": {"autogen", "demo"},
    "runcycles": {"protocol", "autogen", "app", "testing", "demo"},
}
# Modules that exist for one extra, and may import what it brings.
MODULE_EXTRAS: dict[str, set[str]] = {"cycles_otel.pricing.genai_source": {"prices"}}
# Extras a layer's third-party imports may come from, beyond [project].dependencies.
LAYER_EXTRAS: dict[str, set[str]] = {
    "autogen": {"autogen"},
    "testing": {"testing"},
    "demo": {"demo", "autogen", "testing"},
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # what it names: a module, or a package one of whose modules it takes
    top_level: bool  # executed when the module is imported (not inside a function or TYPE_CHECKING)
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    if module in ALIASES:
        return "alias"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "contract"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> Iterator[Import]:
    module = module_name(path)
    is_package = path.name == "__init__.py"

    def visit(nodes: list[ast.stmt], top_level: bool) -> Iterator[Import]:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, top_level, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")
                    anchor = anchor if is_package else anchor[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                yield Import(module, base, top_level, node.lineno)
                for alias in node.names:  # ``from pkg import module`` imports that module too
                    candidate = f"{base}.{alias.name}"
                    if importlib.util.find_spec(base.split(".")[0]) is not None and _is_module(candidate):
                        yield Import(module, candidate, top_level, node.lineno)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                yield from visit(node.orelse, top_level)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from visit(node.body, False)
            elif isinstance(node, ast.ClassDef):
                yield from visit(node.body, top_level)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, block, []):
                        yield from visit(
                            child.body if isinstance(child, ast.ExceptHandler) else [child], top_level
                        )

    yield from visit(ast.parse(path.read_text()).body, True)


def _is_module(name: str) -> bool:
    if name.startswith("cycles_otel"):
        relative = Path(*name.split("."))
        return (REPO / relative).with_suffix(".py").exists() or (REPO / relative / "__init__.py").exists()
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


SOURCES = sorted(PACKAGE.rglob("*.py"))
IMPORTS = [found for path in SOURCES for found in imports_of(path)]


def test_every_module_imports_only_its_own_layer_and_the_layers_below() -> None:
    wrong = [
        f"{i.module}:{i.line} ({layer_of(i.module)}) imports {i.target} ({layer_of(i.target)})"
        for i in IMPORTS
        if i.target.startswith("cycles_otel.")
        and layer_of(i.target) != layer_of(i.module)
        and layer_of(i.target) not in LAYERS[layer_of(i.module)]
        and i.target != "cycles_otel.version"
    ]
    assert wrong == []


def test_autogen_and_runcycles_are_imported_only_where_the_design_says() -> None:
    wrong = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in IMPORTS
        if i.target.split(".")[0] in RESTRICTED_IMPORTS
        and layer_of(i.module) not in RESTRICTED_IMPORTS[i.target.split(".")[0]]
    ]
    assert wrong == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node)
    return found


def test_no_import_cycles_among_the_modules_of_the_package() -> None:
    edges: dict[str, set[str]] = {}
    for i in IMPORTS:
        if i.top_level and (i.target == "cycles_otel" or i.target.startswith("cycles_otel.")):
            edges.setdefault(i.module, set()).add(i.target)
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_importing_one_contract_module_loads_no_other_layer(tmp_path: Path) -> None:
    import subprocess

    probe = (
        "import sys, cycles_otel.pricing, cycles_otel.semconv;"
        "print(sorted(m for m in sys.modules if m.startswith(('cycles_otel.protocol', 'cycles_otel.app',"
        " 'cycles_otel.autogen', 'httpx', 'runcycles', 'autogen'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "[]"


# --- declared dependencies ------------------------------------------------------------------------
def _distribution_of_module() -> dict[str, str]:
    """Installed file (relative to site-packages) -> its distribution's normalised name."""
    owners: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            if file.suffix == ".py":
                owners[str(file)] = _normalise(dist.metadata["Name"])
    return owners


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """The installed distribution's requirements: unconditional ones, and those of each extra."""
    base: set[str] = set()
    extras: dict[str, set[str]] = {}
    for requirement in importlib.metadata.requires("cycles-otel") or []:
        extra = re.search(r"extra == ['\"]([^'\"]+)['\"]", requirement)
        (extras.setdefault(extra[1], set()) if extra else base).add(_requirement_name(requirement))
    return base, extras


def _owner(module: str, owners: dict[str, str]) -> str | None:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return None
    origin = Path(spec.origin)
    for root in map(Path, sys.path):
        try:
            relative = origin.relative_to(root)
        except ValueError:
            continue
        if str(relative) in owners:
            return owners[str(relative)]
    return None


@pytest.mark.slow
def test_every_third_party_import_is_a_declared_dependency_of_its_layer() -> None:
    base, extras = _declared()
    owners = _distribution_of_module()
    undeclared: list[str] = []
    for i in IMPORTS:
        top = i.target.split(".")[0]
        if top in sys.stdlib_module_names or top in ("", "cycles_otel", "__future__"):
            continue
        if _is_namespace(i.target):  # ``from opentelemetry import trace``: the module import counts
            continue
        dist = _owner(i.target, owners) or _owner(top, owners)
        if dist is None:
            undeclared.append(f"{i.module}:{i.line} imports {i.target}: not installed")
            continue
        usable = LAYER_EXTRAS.get(layer_of(i.module), set()) | MODULE_EXTRAS.get(i.module, set())
        allowed = base | {name for extra in usable for name in extras[extra]}
        if dist not in allowed and not _required_by(dist, allowed):
            undeclared.append(f"{i.module}:{i.line} imports {i.target} from {dist}")
    assert sorted(set(undeclared)) == []


def _is_namespace(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.origin is None and spec.submodule_search_locations is not None


def _required_by(dist: str, allowed: set[str]) -> bool:
    """Whether ``dist`` is what an allowed requirement's own extra brings (``autogen-ext[openai]``)."""
    for requirement in importlib.metadata.requires("cycles-otel") or []:
        match = re.match(r"([A-Za-z0-9_.-]+)\[([^\]]+)\]", requirement)
        if match and _normalise(match[1]) in allowed:
            for extra in match[2].split(","):
                if any(
                    re.search(rf"extra == ['\"]{extra.strip()}['\"]", r) and _requirement_name(r) == dist
                    for r in importlib.metadata.requires(match[1]) or []
                ):
                    return True
    return False


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_has_source(layer: str) -> None:
    assert any(layer_of(module_name(path)) == layer for path in SOURCES), layer
