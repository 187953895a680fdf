"""Template studio: edit a Liquid template, see its syntax errors at their line and column
as you type (the server's own check), preview it for customers or a sample of a saved or
an RFM segment, compare
versions, and save a new one.

The check is the renderer's own analysis (``Renderer.compile``: the parser the sends use,
in the worker pool), answered as JSON to the page's script and as a full page without
it. Saving is the API's ``saveTemplate`` (profiles:write), audited under the key;
reading templates and their versions is the template store's.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData
from starlette.responses import JSONResponse, Response

from gateway.errors import GatewayError
from gateway.templates.render import Compiled, RenderFormat, TemplateSyntaxError, warnings_of
from gateway.templates.store import parse_template_name
from resolvers.console.csrf import studio_form
from resolvers.console.operations import run
from resolvers.console.pages import secure
from resolvers.console.previews import (
    PreviewSet,
    previews,
    saved_segments,
    segment_label,
    segment_members,
    wanted,
)
from resolvers.console.visit import Visit, redirect

SAVE = """mutation Save($name: String!, $source: String!, $format: RenderFormat!) {
  saveTemplate(name: $name, source: $source, format: $format) { name version }
}"""
STARTER = (
    "<h1>Hello {{ customer.first_name | default: 'there' }}</h1>\n"
    "{% for product in customer.recommendations %}\n"
    "  <p>{{ product.title }}: {{ product.reason }}</p>\n"
    "{% endfor %}\n"
)


@dataclass(slots=True)
class Draft:
    """What the studio's form holds."""

    name: str = ""
    source: str = STARTER
    format: RenderFormat = RenderFormat.HTML
    strict: bool = False
    customers: str = ""
    segment: str = ""
    sample: int = 3
    version: int | None = None  # the stored version it was opened from

    @classmethod
    def of(cls, form: FormData) -> Draft:
        raw_format = str(form.get("format", "HTML"))
        try:
            sample = int(str(form.get("sample", "3")))
        except ValueError:
            sample = 3
        return cls(
            name=str(form.get("name", "")).strip(),
            source=str(form.get("source", "")).replace("\r\n", "\n"),
            format=RenderFormat.TEXT if raw_format == "TEXT" else RenderFormat.HTML,
            strict=form.get("strict") == "on",
            customers=str(form.get("customers", "")),
            segment=str(form.get("segment", "")),
            sample=sample,
        )


@dataclass(slots=True)
class Check:
    error: str | None = None
    line: int | None = None
    column: int | None = None
    variables: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    results: PreviewSet = field(default_factory=PreviewSet)


async def check(visit: Visit, draft: Draft) -> tuple[Check, Compiled | None]:
    try:
        compiled = await visit.services.renderer.compile(draft.source, draft.format, draft.strict)
    except TemplateSyntaxError as exc:
        return Check(error=str(exc), line=exc.line, column=exc.column), None
    except GatewayError as exc:  # too long, or the analysis ran out of time
        return Check(error=str(exc)), None
    warnings = tuple(warnings_of(compiled))
    if draft.strict and compiled.unknown:
        warnings = (f"Strict mode: undefined variables {', '.join(compiled.unknown)}",)
    return Check(variables=compiled.variables, warnings=warnings), compiled


async def index(visit: Visit) -> Response:
    return visit.render("templates.html", {"templates": await visit.services.templates.names()})


async def studio(visit: Visit) -> Response:
    params = visit.request.query_params
    draft = Draft()
    history: list[Any] = []
    if params.get("name"):
        try:
            name = parse_template_name(params["name"])
            version = int(params["version"]) if params.get("version", "").isdigit() else None
        except GatewayError as exc:
            return visit.refuse(400, str(exc))
        stored = await visit.services.templates.get(name, version)
        if stored is None:
            return visit.refuse(404, f"No template named {name!r} (or no such version).")
        draft = Draft(name=name, source=stored.source, format=stored.format, version=stored.version)
        history = await visit.services.templates.history(name)
    result, _ = await check(visit, draft)
    return await _page(visit, draft, result, history, done=params.get("done"))


async def _page(
    visit: Visit,
    draft: Draft,
    result: Check,
    history: list[Any] | None = None,
    status_code: int = 200,
    done: str | None = None,
) -> Response:
    if not visit.can_read:
        # A key that may only write (the save page answers it) is not shown what is
        # stored: the API hides a template's history from it too.
        history = []
    elif history is None and draft.name:
        try:
            history = await visit.services.templates.history(parse_template_name(draft.name))
        except GatewayError:
            history = []
    return visit.render(
        "studio.html",
        {
            "draft": draft,
            "check": result,
            "history": history or [],
            "segments": await visit.services.scores.segments() if visit.can_read else [],
            "saved_segments": await saved_segments(visit) if visit.can_read else [],
            "done": done,
            "lines": draft.source.count("\n") + 1,
        },
        status_code,
    )


async def check_json(visit: Visit) -> Response:
    """The as-you-type check: JSON for the page's script."""
    result, _ = await check(visit, Draft.of(await studio_form(visit.request)))
    body = {
        "ok": result.error is None,
        "error": result.error,
        "line": result.line,
        "column": result.column,
        "variables": list(result.variables),
        "warnings": list(result.warnings),
    }
    return secure(JSONResponse(body))


async def preview(visit: Visit) -> Response:
    draft = Draft.of(await studio_form(visit.request))
    result, compiled = await check(visit, draft)
    if compiled is not None:
        asked = wanted(draft.customers)
        sampled: list[str] = []
        if draft.segment:
            sampled = await segment_members(visit, draft.segment, draft.sample)
            asked += sampled
        if not asked:
            result.warnings += (
                f"The {segment_label(draft.segment)} has no customer to preview for."
                if draft.segment
                else "Give customers (ids or emails) or choose a segment to preview.",
            )
        else:
            result.results = await previews(visit, draft.source, draft.format, draft.strict, asked)
        if sampled:
            result.results.sample = (
                f"{len(sampled)} customer{'s' if len(sampled) > 1 else ''} "
                f"of the {segment_label(draft.segment)}"
            )
    return await _page(visit, draft, result, status_code=200 if result.error is None else 422)


async def save(visit: Visit) -> Response:
    draft = Draft.of(await studio_form(visit.request))
    result, compiled = await check(visit, draft)
    if compiled is None:
        return await _page(visit, draft, result, status_code=422)
    answer = await run(visit, SAVE, name=draft.name, source=draft.source, format=draft.format.value)
    if answer.problems:
        result.error = answer.problems[0].message
        status = 403 if answer.problems[0].code == "FORBIDDEN" else 422
        return await _page(visit, draft, result, status_code=status)
    saved = answer.data["saveTemplate"]
    return redirect(
        f"/console/templates/studio?name={saved['name']}&version={saved['version']}&done=saved"
    )


async def diff(visit: Visit) -> Response:
    params = visit.request.query_params
    try:
        name = parse_template_name(params.get("name", ""))
        old, new = int(params.get("from", "")), int(params.get("to", ""))
    except (GatewayError, ValueError):
        return visit.refuse(400, "Name a template and two of its versions.")
    before = await visit.services.templates.get(name, old)
    after = await visit.services.templates.get(name, new)
    if before is None or after is None:
        return visit.refuse(
            404, f"Template {name!r} has no version {old if before is None else new}."
        )
    lines = list(
        difflib.unified_diff(
            before.source.splitlines(),
            after.source.splitlines(),
            fromfile=f"{name} version {old}",
            tofile=f"{name} version {new}",
            lineterm="",
        )
    )
    return visit.render(
        "diff.html",
        {
            "name": name,
            "old": old,
            "new": new,
            "lines": [(_kind(line), line) for line in lines],
            "history": await visit.services.templates.history(name),
        },
    )


def _kind(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "added", "-": "removed"}.get(line[:1], "same")
