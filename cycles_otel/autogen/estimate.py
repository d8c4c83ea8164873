"""Reservation estimates: a fixed amount, a callable, or priced input tokens plus the output cap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from autogen_core import Image
from autogen_core.models import ChatCompletionClient, LLMMessage
from autogen_core.tools import Tool, ToolSchema

from cycles_otel.autogen.config import MAX_AMOUNT
from cycles_otel.pricing import PriceTable

logger = logging.getLogger(__name__)

Tools: TypeAlias = Sequence[Tool | ToolSchema]
EstimateFunction: TypeAlias = Callable[[Sequence[LLMMessage], Tools], int]
EstimateAmount: TypeAlias = int | EstimateFunction | None

SOURCE_FIXED: Final = "fixed"
SOURCE_CALLABLE: Final = "callable"
SOURCE_TOKENIZER: Final = "tokenizer"
SOURCE_CHARACTERS: Final = "characters"
SOURCE_DEFAULT: Final = "default"

TOKENIZER_TIMEOUT_S: Final = 2.0
"""tiktoken downloads its BPE files on first use: offline that can hang, so it gets this long once."""
CHARS_PER_TOKEN: Final = 3
"""Conservative (English averages about 4): an estimate should err on the high side."""
TOKENS_PER_MESSAGE: Final = 4
TOKENS_PER_IMAGE: Final = 765
"""A 1024x1024 high-detail image on GPT-4o-class models."""


class EstimateError(ValueError):
    """No reservation estimate can be made; nothing was reserved."""


@dataclass(frozen=True)
class Estimate:
    amount: int
    source: str
    input_tokens: int | None = None
    output_cap: int | None = None


class Estimator:
    """Makes the estimate of one call; remembers when the inner tokenizer cannot be used.

    In order: a fixed ``amount``, a callable ``amount(messages, tools)``, priced input tokens plus
    the output cap when a cap is known, else ``default`` (the guide's 2,000,000 per call). With
    ``require_cap`` (a ``REJECT`` overage policy, where a commit above its reservation is refused)
    a call with neither an amount nor a cap fails instead: a flat default could be too small.
    """

    def __init__(
        self,
        inner: ChatCompletionClient,
        amount: EstimateAmount,
        unit: str,
        *,
        default: int,
        require_cap: bool = False,
        tokenizer: bool = True,
    ) -> None:
        self._inner = inner
        self._amount = amount
        self._unit = unit
        self._default = default
        self._require_cap = require_cap
        self._tokenizer_ok: bool | None = None if tokenizer else False  # None: not tried yet
        self._trying = False  # the first count is running

    async def estimate(
        self,
        messages: Sequence[LLMMessage],
        tools: Tools,
        model: str,
        pricing: PriceTable,
        output_cap: int | None,
    ) -> Estimate:
        if isinstance(self._amount, int):
            return Estimate(self._amount, SOURCE_FIXED, output_cap=output_cap)
        if self._amount is not None:
            return Estimate(self._call(messages, tools), SOURCE_CALLABLE, output_cap=output_cap)
        if output_cap is None:
            if self._require_cap:
                raise EstimateError(
                    "cannot estimate the cost of this call under overage_policy='REJECT': no output-token "
                    "cap is known, and a commit above its reservation would be refused. Pass "
                    "max_output_tokens=<int> (or max_tokens on the request or inner client), or "
                    "estimate_amount=<int>"
                )
            return Estimate(self._default, SOURCE_DEFAULT)
        input_tokens, source = await self.input_tokens(messages, tools)
        if self._unit == "TOKENS":
            return Estimate(input_tokens + output_cap, source, input_tokens, output_cap)
        return Estimate(
            pricing.max_cost_microcents(model, input_tokens, output_cap), source, input_tokens, output_cap
        )

    def _call(self, messages: Sequence[LLMMessage], tools: Tools) -> int:
        assert callable(self._amount)
        amount = self._amount(messages, tools)
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_AMOUNT:
            raise EstimateError(
                f"the estimate_amount callable must return an int from 0 to {MAX_AMOUNT}, got {amount!r}"
            )
        return amount

    async def input_tokens(self, messages: Sequence[LLMMessage], tools: Tools) -> tuple[int, str]:
        """The inner client's own count when its tokenizer works, else a character-based count.

        The first count may download tiktoken's files (and hang offline): it runs off the loop,
        time-boxed, once; calls arriving while it runs count characters rather than try too or wait.
        """
        if self._tokenizer_ok is None and not self._trying:
            self._trying = True
            try:
                count = await self._count(messages, tools, off_the_loop=True)
            finally:
                self._trying = False
            if count is not None:
                return count, SOURCE_TOKENIZER
        elif self._tokenizer_ok:  # proven: its encoding is loaded, counting is quick
            count = await self._count(messages, tools, off_the_loop=False)
            if count is not None:
                return count, SOURCE_TOKENIZER
        return character_token_count(messages, tools), SOURCE_CHARACTERS

    async def _count(self, messages: Sequence[LLMMessage], tools: Tools, *, off_the_loop: bool) -> int | None:
        """The inner client's count, or None (and characters from now on) when its tokenizer fails."""
        try:
            if off_the_loop:
                count = await _in_daemon_thread(
                    lambda: self._inner.count_tokens(messages, tools=tools), TOKENIZER_TIMEOUT_S
                )
            else:
                count = self._inner.count_tokens(messages, tools=tools)
        except Exception as exc:  # offline tiktoken, a client without a tokenizer, a timeout
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            logger.warning(
                "cycles_otel: %s.count_tokens failed (%s: %s); estimating from characters from now on "
                "(tokenizer='characters' skips the attempt)",
                type(self._inner).__name__,
                type(exc).__name__,
                first_line,
            )
            self._tokenizer_ok = False
            return None
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            self._tokenizer_ok = True
            return count
        self._tokenizer_ok = False
        return None


def character_token_count(messages: Sequence[LLMMessage], tools: Tools = ()) -> int:
    """A tokenizer-free token count that errs high: characters / 3, plus per-message and image overheads."""
    chars, images = 0, 0
    for message in messages:
        for part in _parts(getattr(message, "content", None)):
            if isinstance(part, Image):
                images += 1
            else:
                chars += len(part)
        thought = getattr(message, "thought", None)
        if isinstance(thought, str):
            chars += len(thought)
    for tool in tools:
        chars += len(str(tool.schema if isinstance(tool, Tool) else tool))
    return text_tokens(chars) + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_IMAGE * images


def text_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def _parts(content: Any) -> list[str | Image]:
    if content is None:
        return []
    if isinstance(content, (str, Image)):
        return [content]
    if isinstance(content, list):
        return [p for item in content for p in _parts(item)]
    # FunctionCall (name + arguments) and FunctionExecutionResult (content)
    texts = [getattr(content, attr, None) for attr in ("name", "arguments", "content")]
    found: list[str | Image] = [t for t in texts if isinstance(t, str)]
    return found if found else [str(content)]


async def _in_daemon_thread(function: Callable[[], int], timeout: float) -> int:
    """Run ``function`` off the event loop; give up after ``timeout`` without waiting for the thread.

    A daemon thread, not the default executor: a download that never returns must not block
    interpreter exit (executor threads are joined at shutdown).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def run() -> None:
        try:
            outcome: tuple[bool, Any] = (True, function())
        except BaseException as exc:  # delivered to the awaiting coroutine
            outcome = (False, exc)
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(deliver, *outcome)

    threading.Thread(target=run, name="cycles-otel-count-tokens", daemon=True).start()
    return await asyncio.wait_for(future, timeout)
