"""Find one governed agent turn among the demo's spans and draw it as a tree."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cycles_otel import semconv as sc
from cycles_otel.demo.accounting import usd
from cycles_otel.testing.telemetry import SpanNode

AGENT_SPAN_PREFIX = "invoke_agent "
RUNTIME_SPAN_PREFIX = "autogen "
"""AutoGen runtime plumbing (publish/create/process spans): left out of the drawing."""

# Attributes worth a glance next to each span name, in display order.
_SHOWN: tuple[tuple[str, str], ...] = (
    (sc.CYCLES_DECISION, "decision"),
    (sc.CYCLES_REASON, "reason"),
    (sc.CYCLES_ESTIMATE_AMOUNT, "estimate"),
    (sc.CYCLES_CHARGED_AMOUNT, "charged"),
    (sc.GEN_AI_USAGE_INPUT_TOKENS, "in"),
    (sc.GEN_AI_USAGE_OUTPUT_TOKENS, "out"),
    (sc.CYCLES_SCOPE, "scope"),
)


_AMOUNTS = frozenset({sc.CYCLES_ESTIMATE_AMOUNT, sc.CYCLES_CHARGED_AMOUNT})


def walk(node: SpanNode) -> Iterator[SpanNode]:
    yield node
    for child in node.children:
        yield from walk(child)


def find_governed_turn(roots: list[SpanNode], agent: str) -> SpanNode | None:
    """The first ``invoke_agent {agent}`` span that holds a committed ``cycles.reservation``."""
    for root in roots:
        for node in walk(root):
            if node.name == AGENT_SPAN_PREFIX + agent and any(
                n.name == sc.SPAN_RESERVATION
                and n.span.attributes.get(sc.CYCLES_OUTCOME) == sc.OUTCOME_COMMITTED
                for n in walk(node)
                if n.span.attributes is not None
            ):
                return node
    return None


def _shown_children(node: SpanNode) -> list[SpanNode]:
    return [child for child in node.children if not child.name.startswith(RUNTIME_SPAN_PREFIX)]


def shape(node: SpanNode) -> dict[str, Any]:
    """Names only, nested, runtime plumbing left out: the tree as drawn, for a reader or a test."""
    return {"name": node.name, "children": [shape(child) for child in _shown_children(node)]}


def _label(node: SpanNode) -> str:
    attrs: dict[str, Any] = dict(node.span.attributes or {})
    details = [
        f"{label}=${usd(int(attrs[key]))}" if key in _AMOUNTS else f"{label}={attrs[key]}"
        for key, label in _SHOWN
        if key in attrs
    ]
    start, end = node.span.start_time, node.span.end_time
    if start is not None and end is not None:
        details.append(f"{(end - start) / 1e6:.1f} ms")
    return f"{node.name}  ({', '.join(details)})" if details else node.name


def render(node: SpanNode) -> str:
    """The tree with box-drawing branches, one span per line."""
    lines = [_label(node)]

    def draw(children: list[SpanNode], prefix: str) -> None:
        for index, child in enumerate(children):
            last = index == len(children) - 1
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}{_label(child)}")
            draw(_shown_children(child), prefix + ("   " if last else "│  "))

    draw(_shown_children(node), "")
    return "\n".join(lines)
