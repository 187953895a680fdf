"""python-liquid in a sandbox with budgets: what a render worker process runs.

python-liquid's own limits are per loop (150 sibling loops of 10,000 steps each pass)
and say nothing of filters, so a template could keep a process busy for seconds with
``(1..3000000) | join``. Here every render draws on a budget of steps, output and
time, and so does the whole job (all the renders of one request's batch):

- a loop's iterations are counted when it starts, whatever loops came before or
  enclose it; a filter call counts one step plus one per item of the lists and one per
  64 characters of the text it is given, since that is the work it does;
- a range longer than a render may iterate, a list or text larger than a filter may
  take or make (``replace``, ``append``, ``join``, ``concat`` are checked before they
  build anything) and integers past a sane size are refused;
- output is counted as it is written, and the clock is read at every step.

Going over raises ``BudgetExceeded``: the render fails alone with ``RENDER_LIMIT``.
Nothing here reaches files or the network: no loader has anything to load, and
``{% include %}``/``{% render %}`` are refused at parse time. This module imports
python-liquid, the standard library and ``order_selection`` (python-liquid too) only,
so a worker process stays small.

    ResourceLimitError (python-liquid)
     └── BudgetExceeded        a step, output, size or time budget was used up
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache, wraps
from typing import Any

from liquid import BoundTemplate, DictLoader, Environment, StrictDefaultUndefined, Undefined
from liquid.builtin.expressions.primitive import RangeLiteral
from liquid.context import RenderContext
from liquid.exceptions import (
    LiquidError,
    OutputStreamLimitError,
    ResourceLimitError,
    UndefinedError,
)
from liquid.output import LimitedStringIO
from liquid.token import TOKEN_EXPRESSION, TOKEN_OUTPUT, TOKEN_TAG

from gateway.templates.order_selection import order_selection

FORBIDDEN_TAGS = frozenset({"include", "render"})
MAX_ITEMS = 10_000  # a list (or range) a filter may take or make
MAX_TEXT = 256 * 1024  # characters of text a filter may take or make
MAX_INT_BITS = 64 * 1024  # integers beyond this are refused (Python's are unbounded)
_CHARS_PER_STEP = 64


class BudgetExceeded(ResourceLimitError):
    """A render or its request used up a budget (steps, output, size or time)."""


@dataclass(slots=True)
class Meter:
    """What the render under way may still spend."""

    steps: int
    deadline: float  # on the monotonic clock
    used: int = 0
    what: str = "render"  # whose budget runs out first: "render" or "request"

    def spend(self, steps: int) -> None:
        self.used += steps
        if self.used > self.steps:
            budget = f"of {self.steps:,} steps" if self.what == "render" else "of steps"
            raise BudgetExceeded(
                f"the {self.what} used up its budget {budget} (loop iterations and filter work)",
                token=None,
            )
        if time.monotonic() > self.deadline:
            raise BudgetExceeded(f"the {self.what} used up its time budget", token=None)


@dataclass(slots=True)
class _Current:
    meter: Meter = field(default_factory=lambda: Meter(0, 0.0))


_current = _Current()  # one render at a time in a worker process


class _MeteredContext(RenderContext):
    def raise_for_loop_limit(self, length: int = 1) -> None:
        _current.meter.spend(length)
        super().raise_for_loop_limit(length)


class _MeteredTemplate(BoundTemplate):
    context_class = _MeteredContext


class _Sandbox(Environment):
    # Generous for an email (Gmail clips at ~100 KB); every limit raises a
    # ResourceLimitError. The step budget bounds what loops add up to.
    loop_iteration_limit = 10_000
    output_stream_limit = 512 * 1024
    context_depth_limit = 20
    local_namespace_limit = MAX_TEXT
    template_class = _MeteredTemplate

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        self.filters = {name: _guarded(name, f) for name, f in self.filters.items()}


def _size_error(what: str, name: str, size: int, most: int) -> BudgetExceeded:
    return BudgetExceeded(
        f"the '{name}' filter was given or would make {what} of {size:,}; at most {most:,}",
        token=None,
    )


def _measure(name: str, value: Any) -> int:
    """The work a value given to a filter stands for, in steps; refuses oversized ones."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise _size_error("text", name, len(value), MAX_TEXT)
        return len(value) // _CHARS_PER_STEP
    if isinstance(value, list | tuple | range | dict):
        if len(value) > MAX_ITEMS:
            raise _size_error("a list", name, len(value), MAX_ITEMS)
        return len(value)
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise _size_error("a number", name, value.bit_length(), MAX_INT_BITS)
    return 0


def _text_length(item: Any) -> int:
    return len(item) if isinstance(item, str) else 24  # others are short once stringified


def _made(name: str, args: tuple[Any, ...]) -> int:
    """Characters (or items) the amplifying filters would make, known before they run."""
    value, rest = (args[0], args[1:]) if args else (None, ())
    if name in {"replace", "replace_first", "replace_last"} and len(rest) >= 1:
        text, old = str(value if value is not None else ""), str(rest[0])
        new = str(rest[1]) if len(rest) > 1 else ""
        count = (text.count(old) if old else len(text) + 1) if name == "replace" else 1
        return len(text) + count * max(0, len(new) - len(old))
    if name in {"append", "prepend"} and rest:
        return _text_length(str(value)) + _text_length(str(rest[0]))
    if name == "join" and isinstance(value, list | tuple | range):
        separator = _text_length(rest[0]) if rest else 1
        return sum(_text_length(item) for item in value) + separator * len(value)
    return 0


def _guarded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(function)  # keeps with_context / with_environment, which liquid reads
    def guarded(*args: Any, **kwargs: Any) -> Any:
        work = 1 + sum(_measure(name, a) for a in (*args, *kwargs.values()))
        _current.meter.spend(work)
        made = _made(name, args)
        if made > MAX_TEXT:
            raise _size_error("text", name, made, MAX_TEXT)
        if name == "concat" and len(args) > 1:
            items = sum(len(a) for a in args[:2] if isinstance(a, list | tuple))
            if items > MAX_ITEMS:
                raise _size_error("a list", name, items, MAX_ITEMS)
        result = function(*args, **kwargs)
        _measure(name, result)
        return result

    return guarded


def _bounded_range(self: RangeLiteral, start: Any, stop: Any) -> range:
    made = _unbounded_range(self, start, stop)
    if len(made) > MAX_ITEMS:
        raise BudgetExceeded(f"a range of {len(made):,} numbers; at most {MAX_ITEMS:,}", token=None)
    return made


# python-liquid builds range literals in its parser, with no hook an environment could
# override; this module runs in render worker processes, whose only job is rendering.
_unbounded_range = RangeLiteral._make_range
RangeLiteral._make_range = _bounded_range  # type: ignore[method-assign]


@lru_cache(maxsize=4)
def environment(html: bool, strict: bool) -> Environment:
    # An empty DictLoader: there is no file system or network behind any template name.
    # StrictDefaultUndefined still lets `| default: "x"` supply a fallback.
    return _Sandbox(
        loader=DictLoader({}),
        autoescape=html,
        undefined=StrictDefaultUndefined if strict else Undefined,
    )


@lru_cache(maxsize=256)
def template(source: str, html: bool, strict: bool) -> BoundTemplate:
    return environment(html, strict).from_string(source)


# --- analysis: what a template reads, or where its syntax error is --------------------


def analyze(source: str, html: bool, strict: bool) -> dict[str, Any]:
    """``{"segments": [...], "paths": [...], "orders": {...}}`` for a template that
    parses: each global variable's path segments, and what it reads of the orders
    (``order_selection``); else ``{"error": message, "line": n, "column": n}``."""
    env = environment(html, strict)
    try:
        parsed = template(source, html, strict)
    except LiquidError as exc:
        line, column = _position(env, source, exc)
        return {"error": str(exc.message), "line": line, "column": column}
    found = parsed.analyze(include_partials=False)
    for tag in sorted(FORBIDDEN_TAGS & found.tags.keys()):
        line, column = _line_column(source, _tag_start(source, found.tags[tag][0].index))
        message = f"'{{% {tag} %}}' is not allowed: templates cannot load other templates or files"
        return {"error": message, "line": line, "column": column}
    variables = [v for vs in found.globals.values() for v in vs]
    return {
        "paths": sorted({str(v) for v in variables}),
        "segments": [_plain(v.segments) for v in variables],
        "orders": order_selection(parsed).as_json(),
    }


def _plain(segments: Iterable[Any]) -> list[Any]:
    """Segments as JSON: names and indexes, or nested paths (computed keys)."""
    return [s if isinstance(s, str | int) else _plain(s) for s in segments]


def _line_column(source: str, index: int) -> tuple[int, int]:
    line = source.count("\n", 0, index) + 1
    return line, index - (source.rfind("\n", 0, index) + 1) + 1


def _tag_start(source: str, name_index: int) -> int:
    # python-liquid places a tag at its name; a person looks for the `{%` before it.
    opening = source.rfind("{%", 0, name_index)
    return opening if opening >= 0 else name_index


def _position(env: Environment, source: str, exc: LiquidError) -> tuple[int, int]:
    """1-based line and column of a syntax error.

    python-liquid reports errors found at the end of an expression or of the
    template without a position; find the markup that caused them instead."""
    if exc.token is not None and exc.token.start_index >= 0:
        index = exc.token.start_index
        return _line_column(
            source, _tag_start(source, index) if exc.token.kind == TOKEN_TAG else index
        )
    message = str(exc.message)
    markup = [t for t in env.tokenizer()(source) if t.kind in (TOKEN_TAG, TOKEN_OUTPUT)]
    if message.startswith("expected tag end"):
        # An unclosed block: point at the last opening tag left without its end tag.
        opener = message.split()[2].removeprefix("end").rstrip(",")
        open_at: list[int] = []
        for token in markup:
            if token.value == opener:
                open_at.append(_tag_start(source, token.start_index))
            elif token.value == f"end{opener}" and open_at:
                open_at.pop()
        if open_at:
            return _line_column(source, open_at[-1])
    else:
        # The first prefix of the source that fails with this message ends just after
        # the faulty markup; parsing stops at the first error, so bisect.
        tokens = [t for t in env.tokenizer()(source) if t.kind != TOKEN_EXPRESSION]
        ends = [t.start_index for t in tokens[1:]] + [len(source)]
        low, high = 0, len(ends) - 1
        while low < high:
            middle = (low + high) // 2
            if _fails_with(env, source[: ends[middle]], message):
                high = middle
            else:
                low = middle + 1
        faulty = tokens[low]
        return _line_column(
            source,
            _tag_start(source, faulty.start_index)
            if faulty.kind == TOKEN_TAG
            else faulty.start_index,
        )
    return _line_column(source, len(source))


def _fails_with(env: Environment, source: str, message: str) -> bool:
    try:
        env.from_string(source)
    except LiquidError as exc:
        return str(exc.message) == message
    return False


# --- rendering with budgets -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Budget:
    """Per render, and for all the renders of one job (a request's share)."""

    steps: int
    output: int  # bytes
    seconds: float
    job_steps: int
    job_output: int
    job_seconds: float


def render_all(
    source: str, html: bool, strict: bool, contexts: Iterable[Mapping[str, Any]], budget: Budget
) -> dict[str, Any]:
    """Render for each context, in order. Each result is ``["ok", body]``, ``["limit",
    reason]``, ``["undefined", name]`` or ``["error", reason]``; ``steps`` and
    ``output`` say what the job used of its budget."""
    try:
        bound = template(source, html, strict)
    except LiquidError as exc:  # analysed before, so not expected: fail each render alike
        return {
            "results": [["error", f"The template failed: {exc.message}"]] * len(list(contexts)),
            "steps": 0,
            "output": 0,
        }
    job_deadline = time.monotonic() + budget.job_seconds
    steps_left, output_left = budget.job_steps, budget.job_output
    results: list[list[str]] = []
    for context in contexts:
        now = time.monotonic()
        if steps_left <= 0 or output_left <= 0 or now >= job_deadline:
            results.append(["limit", "the request used up its rendering budget"])
            continue
        meter = Meter(
            min(budget.steps, steps_left),
            min(now + budget.seconds, job_deadline),
            what="render" if budget.steps <= steps_left else "request",
        )
        limit = min(budget.output, output_left)
        _current.meter = meter
        buffer = LimitedStringIO(limit=limit)
        try:
            globals = bound.make_globals(dict(context))
            bound.render_with_context(bound.context_class(bound, globals=globals), buffer)
            results.append(["ok", buffer.getvalue()])
        except BudgetExceeded as exc:
            results.append(["limit", f"The template exceeded a limit: {exc.message}"])
        except OutputStreamLimitError:
            whose = (
                "the request used up its output budget"
                if limit < budget.output
                else f"the render's output passed {limit:,} bytes"
            )
            results.append(["limit", f"The template exceeded a limit: {whose}"])
        except ResourceLimitError as exc:
            results.append(["limit", f"The template exceeded a limit: {exc.message}"])
        except UndefinedError as exc:
            results.append(["undefined", str(exc.message).removesuffix(" is undefined")])
        except LiquidError as exc:
            results.append(["error", f"The template failed: {exc.message}"])
        except (MemoryError, RecursionError):
            results.append(["limit", "The template exceeded a limit: memory"])
        except Exception as exc:  # noqa: BLE001 - a filter's own failure, e.g. a number too long to print
            results.append(["error", f"The template failed: {type(exc).__name__}"])
        steps_left -= meter.used
        output_left -= buffer.size
    return {
        "results": results,
        "steps": budget.job_steps - steps_left,
        "output": budget.job_output - output_left,
    }
