"""Conversation text leaves the process only when the user opts in, whoever's span carries it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from cycles_otel.semconv import CAPTURE_CONTENT_ENV

logger = logging.getLogger(__name__)

# AutoGen's runtime spans ("autogen core", "autogen agentchat", ...) serialise every message whole.
AUTOGEN_SCOPE_PREFIX: Final = "autogen"
AUTOGEN_MESSAGE_KEY: Final = "message"
REDACTED: Final = f"[not recorded: set {CAPTURE_CONTENT_ENV}=true to record message content]"


def capture_content_enabled(env: Mapping[str, str]) -> bool:
    """The GenAI opt-in: message content is recorded only when the variable is exactly ``true``."""
    return env.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"


class ConversationRedactor(SpanProcessor):
    """Replaces the message text on AutoGen's runtime spans as they start, before any exporter sees it.

    The spans themselves stay (they are the agent trace the governed calls nest in); only the
    ``message`` attribute is overwritten. Attributes can still be set in ``on_start``, and an
    overwrite works for every exporter on the provider, including ones added later.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            scope = span.instrumentation_scope
            if (
                scope is not None
                and scope.name.startswith(AUTOGEN_SCOPE_PREFIX)
                and AUTOGEN_MESSAGE_KEY in (span.attributes or {})
            ):
                span.set_attribute(AUTOGEN_MESSAGE_KEY, REDACTED)
        except Exception:  # telemetry never raises into the caller
            logger.debug("cycles_otel: could not redact a span", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        return None
