"""Live progress: a span processor that prints one line per governed call as its span ends."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from cycles_otel import semconv as sc
from cycles_otel.demo.accounting import usd
from cycles_otel.demo.span_tree import AGENT_SPAN_PREFIX

_CHAT_PREFIX = f"{sc.GEN_AI_OPERATION_CHAT} "


@dataclass(frozen=True)
class CallRecord:
    """One governed model call or tool run as its telemetry tells it."""

    turn: int
    agent: str
    decision: str
    reason: str | None
    input_tokens: int
    output_tokens: int
    charged: int
    actual: int
    scope: str | None
    remaining: int | None
    tool: str | None = None
    """The tool of a governed tool run; ``None`` for a model call."""

    @property
    def denied(self) -> bool:
        return self.decision == sc.DECISION_DENY

    @property
    def uncharged(self) -> int:
        """Cost the authority did not charge: the overage it capped when too little was left."""
        return max(0, self.actual - self.charged)


class Style:
    """ANSI colour only on a terminal, and never when ``NO_COLOR`` is set."""

    def __init__(self, out: TextIO) -> None:
        self.enabled = out.isatty() and not os.environ.get("NO_COLOR")

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def good(self, text: str) -> str:
        return self.paint(text, "32")

    def bad(self, text: str) -> str:
        return self.paint(text, "1;31")

    def head(self, text: str) -> str:
        return self.paint(text, "1")


HEADER = (
    f"{'turn':>4}  {'agent':<11} {'decision':<9} "
    f"{'in tok':>7} {'out tok':>7} {'cost USD':>10} {'left USD':>10}"
)


class ProgressPrinter(SpanProcessor):
    """Counts agent turns from ``invoke_agent`` spans and prints each ``cycles.reservation`` as it ends.

    ``remaining_of(scope)`` gives a scope's remaining budget as the metrics know it (or ``None``).
    """

    def __init__(self, out: TextIO, remaining_of: Callable[[str], int | None]) -> None:
        self.out = out
        self.style = Style(out)
        self.records: list[CallRecord] = []
        self._remaining_of = remaining_of
        self._turn = 0
        # Facts that child spans (chat, cycles.reserve) end with, kept until their reservation ends.
        self._from_children: dict[int, dict[str, Any]] = {}
        self._scope_of_agent: dict[str, str] = {}  # a denied reserve names no scope: use the agent's last
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.name.startswith(AGENT_SPAN_PREFIX):
            with self._lock:
                self._turn += 1

    def on_end(self, span: ReadableSpan) -> None:
        with contextlib.suppress(Exception):  # a display problem must never break the governed call
            self._on_end(span)

    def _on_end(self, span: ReadableSpan) -> None:
        attrs: dict[str, Any] = dict(span.attributes or {})
        if span.name != sc.SPAN_RESERVATION:
            if span.parent is not None and (
                span.name.startswith(_CHAT_PREFIX) or span.name == sc.SPAN_RESERVE
            ):
                with self._lock:
                    self._from_children.setdefault(span.parent.span_id, {}).update(attrs)
            return
        if span.context is None:
            return
        with self._lock:
            facts = {**self._from_children.pop(span.context.span_id, {}), **attrs}
            turn = self._turn
        agent = str(facts.get(sc.GEN_AI_AGENT_NAME) or facts.get(sc.CYCLES_SUBJECT_PREFIX + "agent") or "?")
        scope = facts.get(sc.CYCLES_SCOPE)
        with self._lock:
            scope = (
                self._scope_of_agent.setdefault(agent, str(scope))
                if scope
                else self._scope_of_agent.get(agent)
            )
        record = CallRecord(
            turn=turn,
            agent=agent,
            decision=str(facts.get(sc.CYCLES_DECISION, "?")),
            reason=facts.get(sc.CYCLES_REASON),
            input_tokens=int(facts.get(sc.GEN_AI_USAGE_INPUT_TOKENS, 0)),
            output_tokens=int(facts.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS, 0)),
            charged=int(facts.get(sc.CYCLES_CHARGED_AMOUNT, 0)),
            actual=int(facts.get(sc.CYCLES_ACTUAL_AMOUNT, 0)),
            scope=scope,
            remaining=self._remaining_of(scope) if scope else None,
            tool=facts.get(sc.GEN_AI_TOOL_NAME),
        )
        with self._lock:
            first = not self.records
            self.records.append(record)
        if first:
            print(self.style.head(HEADER), file=self.out, flush=True)
        print(self._line(record), file=self.out, flush=True)

    def _line(self, r: CallRecord) -> str:
        decision = self.style.bad(f"{r.decision:<9}") if r.denied else self.style.good(f"{r.decision:<9}")
        if r.tool:
            tokens = f"{'(' + r.tool + ')':>15}"
        elif r.denied:
            tokens = f"{'-':>7} {'-':>7}"
        else:
            tokens = f"{r.input_tokens:>7} {r.output_tokens:>7}"
        line = (
            f"{r.turn:>4}  {r.agent:<11} {decision} {tokens} {usd(r.charged if not r.denied else None):>10}"
        )
        line += f" {usd(r.remaining):>10}"
        if r.denied:
            return line + (f"  {self.style.bad(r.reason)}" if r.reason else "")
        if r.uncharged:
            return line + f"  capped: cost {usd(r.actual)}, {usd(r.uncharged)} more than was left"
        return line

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
