"""Rendering Liquid templates for customers, safely, fetching only what a template uses.

A template is analysed once per distinct source (``Renderer.compile``, cached): the
customer fields it names decide which upstream loaders run, so a greeting that uses
``first_name`` alone costs no upstream call at all. Parsing and rendering run in worker
processes (``gateway.templates.render_pool``), never on the event loop, in python-liquid's
sandbox with budgets (``gateway.templates.liquid_sandbox``): per render and per request, of loop
steps and filter work, output and time. Contexts are built here, from the request's
loaders, a chunk at a time while the previous chunk renders.

    GatewayError
     ├── InvalidInput ── TemplateSyntaxError   BAD_USER_INPUT, with line and column
     └── RenderError                           RENDER_ERROR (strict undefined, a failure)
          └── RenderLimitError                 RENDER_LIMIT (a budget or limit was reached)
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from adapters.errors import UpstreamError
from gateway.errors import GatewayError, InvalidInput
from gateway.observability.tracing import span
from gateway.profiles.customers import CustomerProfile
from gateway.recommendations.serving import Picks
from gateway.templates.render_context import TEMPLATE_LOADERS, customer_context
from gateway.templates.render_pool import RenderPool, RenderPoolError
from gateway.upstreams.federation import Outcome, SourceStatus
from gateway.upstreams.order_reads import EVERYTHING, ORDERS_WINDOW, OrdersNeed

MAX_SOURCE_CHARS = 100_000
ALL_LOADERS = frozenset(name for name in TEMPLATE_LOADERS.values() if name)
CHUNK = 25  # contexts per render job: two jobs' full reservations fit the default budgets
_COMPILED_KEPT = 512
_ANALYSIS_S = 10.0  # parsing is bounded by the source's size; this is the backstop


class RenderFormat(StrEnum):
    HTML = "HTML"
    TEXT = "TEXT"


class TemplateSyntaxError(InvalidInput):
    """The source does not parse; ``extensions`` carries the position for clients."""

    def __init__(self, reason: str, line: int, column: int, *, field: str) -> None:
        super().__init__(
            f"Template syntax error at line {line}, column {column}: {reason}", field=field
        )
        self.line, self.column = line, column
        # graphql-core copies an original error's ``extensions`` onto the GraphQL error.
        self.extensions: dict[str, Any] = {"line": line, "column": column}


class RenderError(GatewayError):
    code = "RENDER_ERROR"

    def __init__(self, message: str, *, variables: Sequence[str] = ()) -> None:
        super().__init__(message, field="template")
        self.extensions: dict[str, Any] = {"variables": list(variables)} if variables else {}


class RenderLimitError(RenderError):
    """A render, or its request, reached a budget: steps, output, size or time."""

    code = "RENDER_LIMIT"


@dataclass(frozen=True, slots=True)
class Budgets:
    """What one render, and all the renders of one request, may use."""

    steps: int
    output: int
    seconds: float
    request_steps: int
    request_output: int
    request_seconds: float


class RequestBudget:
    """What a request's renders may still use, shared by all of them; its clock starts
    at its first render.

    A render job reserves what its renders could use at most, and gives back what they
    did not. Jobs run side by side only while each one's whole reservation fits; when
    the budget runs low, a job waits until it runs alone and then takes what is left.
    So the total never passes the budget, however many render fields or chunks the
    request has, and a render fails for lack of budget only when there is none left."""

    def __init__(self, budgets: Budgets) -> None:
        self.budgets = budgets
        self.steps = budgets.request_steps
        self.output = budgets.request_output
        self.deadline: float | None = None
        self._running = 0
        self._released = asyncio.Condition()

    def seconds_left(self) -> float:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.budgets.request_seconds
        return self.deadline - time.monotonic()

    async def reserve(self, steps: int, output: int) -> tuple[int, int]:
        async with self._released:
            while self._running and (self.steps < steps or self.output < output):
                await self._released.wait()
            steps, output = min(steps, self.steps), min(output, self.output)
            self.steps -= steps
            self.output -= output
            self._running += 1
            return steps, output

    async def settle(self, steps: int, output: int) -> None:
        """Give back what a job reserved and did not use."""
        async with self._released:
            self.steps += steps
            self.output += output
            self._running -= 1
            self._released.notify_all()


@dataclass(frozen=True, slots=True)
class Compiled:
    source: str
    format: RenderFormat
    strict: bool
    variables: tuple[str, ...]  # every customer path the template reads, e.g. customer.orders
    loaders: frozenset[str]  # the upstream loaders those paths need
    fields: frozenset[str]  # the customer fields to put in its context
    unknown: tuple[str, ...]  # paths that are not customer fields: empty, or errors if strict
    orders: OrdersNeed = EVERYTHING  # what it reads of each customer's orders


@dataclass(frozen=True, slots=True)
class Rendered:
    body: str
    variables: tuple[str, ...]
    warnings: tuple[str, ...]


Fetch = Callable[[str, Sequence[CustomerProfile]], Awaitable[Sequence[Outcome[Any]]]]
Outcomes = list[Rendered | GatewayError | UpstreamError]


class Renderer:
    """Templates analysed and rendered in the worker pool, within the budgets."""

    def __init__(self, pool: RenderPool, budgets: Budgets) -> None:
        self.pool = pool
        self.budgets = budgets
        self._compiled: OrderedDict[tuple[str, RenderFormat, bool], Compiled | dict[str, Any]]
        self._compiled = OrderedDict()

    def request_budget(self) -> RequestBudget:
        return RequestBudget(self.budgets)

    async def compile(
        self, source: str, format: RenderFormat, strict: bool = False, *, field: str = "template"
    ) -> Compiled:
        """The analysis of a source (cached): what it reads, or its syntax error."""
        if len(source) > MAX_SOURCE_CHARS:
            raise InvalidInput(f"A template has at most {MAX_SOURCE_CHARS} characters", field=field)
        key = (source, format, strict)
        found = self._compiled.get(key)
        if found is None:
            request = {
                "op": "analyze",
                "source": source,
                "html": format is RenderFormat.HTML,
                "strict": strict,
            }
            try:
                analysis = await self.pool.run(request, _ANALYSIS_S)
            except RenderPoolError as exc:
                raise RenderLimitError(
                    f"The template could not be analysed: {exc.reason}"
                ) from None
            found = analysis if "error" in analysis else _compiled(source, format, strict, analysis)
            self._compiled[key] = found
            if len(self._compiled) > _COMPILED_KEPT:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        if isinstance(found, dict):
            raise TemplateSyntaxError(found["error"], found["line"], found["column"], field=field)
        return found

    async def render_for(
        self,
        compiled: Compiled,
        profiles: Sequence[CustomerProfile],
        fetch: Fetch,
        budget: RequestBudget,
        now: datetime | None = None,
    ) -> Outcomes:
        """Render for each customer, in order; one customer's failure is its own result.

        Each needed loader is asked once for all the customers, so a batch costs one
        upstream call per page where the adapter batches."""
        with span("render", {"gateway.customers": len(profiles)}):
            return await self._render_for(compiled, profiles, fetch, budget, now)

    async def _render_for(
        self,
        compiled: Compiled,
        profiles: Sequence[CustomerProfile],
        fetch: Fetch,
        budget: RequestBudget,
        now: datetime | None,
    ) -> Outcomes:
        check_strict(compiled)
        names = sorted(compiled.loaders)
        columns = await asyncio.gather(*(fetch(name, profiles) for name in names))
        now = now or datetime.now(UTC)
        results: Outcomes = []
        # Chunks render side by side on the pool's workers while the next chunk's
        # contexts are built here.
        pending: deque[asyncio.Future[Outcomes]] = deque()
        for start in range(0, len(profiles), CHUNK):
            chunk: Outcomes = []
            contexts: list[tuple[int, dict[str, Any], list[str], Picks | None]] = []
            for index in range(start, min(start + CHUNK, len(profiles))):
                warnings = warnings_of(compiled)
                try:
                    values: dict[str, Any] = {}
                    for name, column in zip(names, columns, strict=True):
                        outcome = column[index]
                        values[name] = outcome.unwrap()  # a failed upstream fails this render
                        if outcome.status is SourceStatus.STALE:
                            warnings.append(
                                f"{outcome.upstream} failed; its last known data was used"
                            )
                    context = customer_context(profiles[index], values, now, compiled.fields)
                except (GatewayError, UpstreamError) as exc:
                    chunk.append(exc)
                    continue
                # The picks are told of a render that succeeded: its list is recorded then.
                contexts.append((len(chunk), context, warnings, values.get("recommendations")))
                chunk.append(RenderError("not rendered"))  # replaced by the job's answer
            pending.append(asyncio.ensure_future(self._job(compiled, chunk, contexts, budget)))
            await asyncio.sleep(0)  # the job is on its way to a worker before the next chunk
            while len(pending) > self.pool.size:
                results.extend(await pending.popleft())
        while pending:
            results.extend(await pending.popleft())
        return results

    async def _job(
        self,
        compiled: Compiled,
        chunk: Outcomes,
        contexts: list[tuple[int, dict[str, Any], list[str], Picks | None]],
        budget: RequestBudget,
    ) -> Outcomes:
        if not contexts:
            return chunk
        steps, output = await budget.reserve(
            self.budgets.steps * len(contexts), self.budgets.output * len(contexts)
        )
        used_steps, used_output = steps, output
        try:
            seconds = min(budget.seconds_left(), self.budgets.seconds * len(contexts))
            if seconds <= 0 or steps <= 0 or output <= 0:
                reason = "the request used up its rendering budget"
                for position, *_ in contexts:
                    chunk[position] = RenderLimitError(f"The template exceeded a limit: {reason}")
                return chunk
            request = {
                "op": "render",
                "source": compiled.source,
                "html": compiled.format is RenderFormat.HTML,
                "strict": compiled.strict,
                "contexts": [context for _, context, *_ in contexts],
                "budget": {
                    "steps": self.budgets.steps,
                    "output": self.budgets.output,
                    "seconds": self.budgets.seconds,
                    "job_steps": steps,
                    "job_output": output,
                    "job_seconds": seconds,
                },
            }
            try:
                answer = await self.pool.run(request, seconds)
            except RenderPoolError as exc:
                for position, *_ in contexts:
                    chunk[position] = RenderLimitError(
                        f"The template exceeded a limit: {exc.reason}"
                    )
                return chunk  # what it used is unknown: all of its reservation counts
            used_steps = min(steps, int(answer["steps"]))
            used_output = min(output, int(answer["output"]))
            for (position, _, warnings, picks), result in zip(
                contexts, answer["results"], strict=True
            ):
                outcome = chunk[position] = _outcome(compiled, result, warnings)
                if picks is not None and picks.rendered and isinstance(outcome, Rendered):
                    picks.rendered()
            return chunk
        finally:
            await budget.settle(steps - used_steps, output - used_output)

    async def aclose(self) -> None:
        await self.pool.aclose()


def _outcome(compiled: Compiled, result: list[str], warnings: list[str]) -> Rendered | RenderError:
    kind, text = result
    if kind == "ok":
        return Rendered(text, compiled.variables, tuple(warnings))
    if kind == "limit":
        return RenderLimitError(text)
    if kind == "undefined":
        return RenderError(f"Undefined variable: {text}", variables=[text])
    return RenderError(text)


def _compiled(
    source: str, format: RenderFormat, strict: bool, analysis: Mapping[str, Any]
) -> Compiled:
    loaders, fields, unknown = _needs(analysis["segments"])
    variables = tuple(analysis["paths"])
    orders = _orders_need(analysis.get("orders"), fields)
    return Compiled(source, format, strict, variables, loaders, fields, unknown, orders)


def _orders_need(selection: Mapping[str, Any] | None, fields: frozenset[str]) -> OrdersNeed:
    """The orders the template reads (``order_selection``'s answer; everything when it
    could not tell), and the newest one for ``last_order_at``."""
    if selection is None:
        return EVERYTHING
    first = selection["first"]
    first = ORDERS_WINDOW if first is None else min(int(first), ORDERS_WINDOW)
    if "last_order_at" in fields:
        first = max(first, 1)
    return OrdersNeed(max(first, 1), bool(selection["line_items"]))


def _needs(
    all_segments: Iterable[list[Any]],
) -> tuple[frozenset[str], frozenset[str], tuple[str, ...]]:
    loaders: set[str] = set()
    fields: set[str] = set()
    unknown: set[str] = set()
    for segments in all_segments:
        root = segments[0]
        if root == "customer":
            if len(segments) < 2 or not isinstance(segments[1], str):
                loaders |= ALL_LOADERS  # the whole customer, or a computed key: fetch all
                fields |= TEMPLATE_LOADERS.keys()
                continue
            field, shown = segments[1], f"customer.{segments[1]}"
        else:
            field, shown = root, str(root)
        if field in TEMPLATE_LOADERS:
            fields.add(field)
            loader = TEMPLATE_LOADERS[field]
            if loader:
                loaders.add(loader)
        else:
            unknown.add(shown)
    return frozenset(loaders), frozenset(fields), tuple(sorted(unknown))


def check_strict(compiled: Compiled) -> None:
    """In strict mode a name that is not a customer field fails before any fetch."""
    if compiled.strict and compiled.unknown:
        raise RenderError(
            f"Undefined variables: {', '.join(compiled.unknown)}", variables=compiled.unknown
        )


def warnings_of(compiled: Compiled) -> list[str]:
    return [f"'{name}' is not a customer field; it renders empty" for name in compiled.unknown]


__all__ = [
    "Budgets",
    "Compiled",
    "RenderError",
    "RenderFormat",
    "RenderLimitError",
    "Rendered",
    "Renderer",
    "RequestBudget",
    "TemplateSyntaxError",
    "customer_context",
]
