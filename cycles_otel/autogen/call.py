"""One governed model call: reserve the estimate, shape the request, settle the actual cost, and say so."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage
from runcycles import (  # type: ignore[import-untyped]
    Action,
    Amount,
    AsyncCyclesClient,
    CyclesProtocolError,
    Subject,
    get_cycles_context,
)
from runcycles.context import _set_context  # type: ignore[import-untyped]
from runcycles.streaming import AsyncStreamReservation  # type: ignore[import-untyped]

from cycles_otel import semconv as sc
from cycles_otel.autogen.attribution import CallingAgent
from cycles_otel.autogen.estimate import Estimate, Tools, character_token_count, text_tokens
from cycles_otel.autogen.reservation import (
    AppliedCaps,
    RecordingClient,
    apply_caps,
    charged_amount,
    complete_error,
)
from cycles_otel.autogen.team import record_denial
from cycles_otel.autogen.telemetry import CallTelemetry
from cycles_otel.autogen.usage import stream_usage_kwargs, with_output_cap
from cycles_otel.pricing import PriceTable, UnknownModelError, microcents_to_usd

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Governance:
    """What every call of one client shares: where to reserve, how to price, what to allow."""

    inner: ChatCompletionClient
    cycles: AsyncCyclesClient
    pricing: PriceTable
    model: str
    unit: str
    action_kind: str
    ttl_ms: int
    overage_policy: str
    tool_allowlist: Sequence[str] | None
    tool_denylist: Sequence[str] | None

    def cost(self, input_tokens: int, output_tokens: int) -> int:
        """The amount to commit for this usage, in the client's unit."""
        if self.unit == "TOKENS":
            return input_tokens + output_tokens
        return self.pricing.cost_microcents(self.model, input_tokens, output_tokens)

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float | None:
        try:
            microcents = self.pricing.cost_microcents(self.model, input_tokens, output_tokens)
        except UnknownModelError:  # a TOKENS budget needs no price; then there is no dollar figure
            return None
        return float(microcents_to_usd(microcents))


class GovernedCall:
    """``reserve()``, then ``finish(result)`` + ``commit()`` or ``abort(exc)``; the spans follow along."""

    def __init__(
        self,
        governance: Governance,
        subject: Subject,
        estimate: Estimate,
        agent: CallingAgent | None,
        telemetry: CallTelemetry,
        messages: Sequence[LLMMessage],
    ) -> None:
        self._g = governance
        self._estimate = estimate
        self._agent = agent
        self.telemetry = telemetry
        self._messages = messages
        self._recorder = RecordingClient(governance.cycles)
        # The lifecycle talks to the recorder, which delegates to the (instrumented) client.
        self._reservation = AsyncStreamReservation(
            self._recorder,
            subject=subject,
            action=Action(kind=governance.action_kind, name=governance.model),
            estimate=Amount(unit=governance.unit, amount=estimate.amount),
            ttl_ms=governance.ttl_ms,
            overage_policy=governance.overage_policy,
        )
        self._reserved = False
        self._settled = False
        self._outer_context = get_cycles_context()
        self._result: CreateResult | None = None
        self._usage: tuple[int, int, str] = (0, 0, sc.ACTUAL_SOURCE_USAGE)

    # --- reserve -------------------------------------------------------------------------------
    async def reserve(self) -> None:
        """Reserve the estimate; a denial raises runcycles' typed error with code and request id filled."""
        task = asyncio.current_task()
        cancels_before = task.cancelling() if task is not None else 0
        with self.telemetry.current():
            try:
                await self._reservation.__aenter__()
            except CyclesProtocolError as exc:
                complete_error(exc, self._recorder.last_reserve)
                self.telemetry.denied(exc.error_code, exc.request_id)
                record_denial(exc, self._agent)
                raise
        self._reserved = True
        # Python 3.11's asyncio.wait_for (around runcycles' reserve) swallows a cancellation that
        # lands as the answer arrives: honour it here, before the model costs anything.
        if task is not None and task.cancelling() > cancels_before:
            raise asyncio.CancelledError

    def shape(
        self, tools: Tools, extra_create_args: Mapping[str, Any], *, stream: bool
    ) -> tuple[Tools, Mapping[str, Any], dict[str, Any]]:
        """The tools, ``extra_create_args`` and extra keywords of the inner call, after caps."""
        decision = getattr(self._reservation.decision, "value", str(self._reservation.decision))
        caps = self._reservation.caps if decision == sc.DECISION_ALLOW_WITH_CAPS else None
        applied: AppliedCaps = apply_caps(
            tools,
            self._estimate.output_cap,
            caps=caps,
            allowlist=self._g.tool_allowlist,
            denylist=self._g.tool_denylist,
        )
        self.telemetry.reserved(
            self._reservation.reservation_id, decision, applied.max_tokens, applied.tools_removed
        )
        extra = extra_create_args
        if applied.output_cap is not None:
            extra = with_output_cap(self._g.inner, extra, applied.output_cap)
        self.telemetry.start_inference(self._messages, applied.output_cap)
        kwargs = stream_usage_kwargs(self._g.inner, extra) if stream else {}
        return applied.tools, extra, kwargs

    # --- settle --------------------------------------------------------------------------------
    def finish(self, result: CreateResult) -> None:
        """The inner client answered: work out the usage to charge and close the inference span."""
        self._result = result
        usage = result.usage
        if result.cached or usage.prompt_tokens or usage.completion_tokens:
            self._usage = (usage.prompt_tokens, usage.completion_tokens, sc.ACTUAL_SOURCE_USAGE)
        else:  # the endpoint sent no usage (e.g. a stream that was not asked for it)
            self._usage = (
                self._input_guess(),
                text_tokens(len(_text_of(result.content))),
                sc.ACTUAL_SOURCE_ESTIMATED,
            )
        self.telemetry.inference_done(result, self._usage[0], self._usage[1])

    def _input_guess(self) -> int:
        if self._estimate.input_tokens is not None:
            return self._estimate.input_tokens
        return character_token_count(self._messages)

    async def commit(self) -> None:
        """Commit the actual cost (0 for a cached result: on the ledger, but free)."""
        input_tokens, output_tokens, source = self._usage
        cached = self._result is not None and self._result.cached
        amount = 0 if cached else self._g.cost(input_tokens, output_tokens)
        usage = self._reservation.usage
        usage.tokens_input, usage.tokens_output = input_tokens, output_tokens
        usage.model_version = self._g.model
        usage.actual_cost = amount
        await self._exit(None)
        failed = self._reservation.settlement_error is not None
        self.telemetry.settled(
            sc.OUTCOME_FAILED if failed else sc.OUTCOME_COMMITTED,
            amount,
            charged_amount(self._recorder.last_commit),
            source,
            0.0 if cached else self._g.cost_usd(input_tokens, output_tokens),
        )

    def hand_off(self) -> None:
        """The commit now runs in a task: the caller's context no longer holds this reservation."""
        self._settled = True
        _set_context(self._outer_context)

    async def abort(self, exc: BaseException, streamed_text: str = "") -> None:
        """Settle a call that did not end normally; the caller re-raises ``exc``.

        Output already produced costs money: a final result is committed as usual, streamed text
        is committed priced as estimated input plus the streamed tokens. Otherwise the
        reservation is released.
        """
        abandoned = isinstance(exc, GeneratorExit)
        if not abandoned:
            self.telemetry.failed(exc)
        if not self._reserved or self._settled:
            return
        if self._result is None and streamed_text:
            output = text_tokens(len(streamed_text))
            self._usage = (self._input_guess(), output, sc.ACTUAL_SOURCE_ESTIMATED)
            self.telemetry.inference_done(None, self._usage[0], output, None if abandoned else exc)
        if self._result is not None or streamed_text:
            await self.commit()
            return
        self.telemetry.inference_done(None, 0, 0, exc)
        await self._exit(exc)
        self.telemetry.settled(sc.OUTCOME_RELEASED, None, None, None, None)

    async def _exit(self, exc: BaseException | None) -> None:
        self._settled = True
        with self.telemetry.current():
            try:
                if exc is None:
                    await self._reservation.__aexit__(None, None, None)
                else:
                    await self._reservation.__aexit__(type(exc), exc, exc.__traceback__ or sys.exc_info()[2])
            finally:
                if self._outer_context is not None:  # an enclosing @cycles run keeps its context
                    _set_context(self._outer_context)

    async def settle(self) -> None:
        """Commit, then end the call's span: the body of a settlement task (see :class:`Settlements`)."""
        try:
            await self.commit()
        except BaseException as exc:  # the span says so; the task's owner decides who else hears of it
            self.telemetry.failed(exc)
            raise
        finally:
            self.end()

    def end(self) -> None:
        self.telemetry.end()


class Settlements:
    """The commits of one client that run as tasks, so that ``close()`` can wait for every one.

    A commit runs in its own task, never in the caller's: cancelling the caller once the model has
    answered leaves the commit running. runcycles retries a retryable failure and, when its journal
    is on, writes the commit to disk before sending it: a commit cut off by the process stopping
    is replayed by the next process.

    A background commit is nobody's answer: it lets the calls of this client that still wait for
    theirs go first (for at most ``defer_s``). All share one event loop, and each commit's CPU
    spent ahead of them would delay their answers.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._answering = 0
        self._quiet: list[asyncio.Future[None]] = []  # deferred commits waiting for no call to be answering

    @contextmanager
    def answering(self) -> Iterator[None]:
        """A call waits for its answer meanwhile (from its reserve to the model's reply)."""
        self._answering += 1
        try:
            yield
        finally:
            self._answering -= 1
            if not self._answering:
                quiet, self._quiet = self._quiet, []
                for waiter in quiet:
                    if not waiter.done():
                        waiter.set_result(None)

    def start(self, call: GovernedCall, defer_s: float = 0.0) -> asyncio.Task[None]:
        """Commit ``call`` in a task (it copies the caller's context: the span tree stays the same)."""
        settling = self._after_answers(call, defer_s) if defer_s > 0 else call.settle()
        task = asyncio.get_running_loop().create_task(settling)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        call.hand_off()
        return task

    async def _after_answers(self, call: GovernedCall, defer_s: float) -> None:
        try:
            if self._answering:
                quiet = asyncio.get_running_loop().create_future()
                self._quiet.append(quiet)
                await asyncio.wait([quiet], timeout=defer_s)
        finally:  # cancelled while waiting: commit all the same
            await call.settle()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved here: never "unretrieved"
            logger.warning("cycles_otel: a settlement failed", exc_info=task.exception())

    async def wait(self) -> None:
        """Wait until every commit started so far (and any started meanwhile) has landed or failed.

        Only tasks of the running loop are awaited: a loop that has stopped already ended its own.
        """
        loop = asyncio.get_running_loop()
        while True:
            running = [task for task in self._tasks if task.get_loop() is loop and not task.done()]
            if not running:
                return
            await asyncio.wait(running)  # never cancels them, even if this wait is cancelled


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text_of(getattr(item, "arguments", item)) for item in content)
    return str(content)
