"""The template store on each supported database: versions, history, validation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.db.engine import create_engine, create_sessionmaker
from gateway.errors import Conflict, InvalidInput
from gateway.services import render_budgets
from gateway.settings import Settings
from gateway.templates.render import Renderer, RenderFormat, TemplateSyntaxError
from gateway.templates.render_pool import RenderPool
from gateway.templates.store import TemplateStore, open_templates


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[TemplateStore]:
    engine = create_engine(database_url)
    renderer = Renderer(RenderPool(1), render_budgets(Settings.model_construct()))
    yield open_templates(create_sessionmaker(engine), renderer)
    await renderer.aclose()
    await engine.dispose()


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


async def test_each_save_is_a_new_version(store: TemplateStore) -> None:
    name = unique("welcome")
    first = await store.save(name, "Hi {{ first_name }}", RenderFormat.TEXT)
    second = await store.save(name, "Hello {{ first_name }}", RenderFormat.HTML)
    assert (first.version, second.version) == (1, 2)
    assert second.created_at.tzinfo is not None
    latest = await store.get(name)
    assert latest is not None
    assert latest.source == "Hello {{ first_name }}"
    older = await store.get(name, 1)
    assert older is not None
    assert older.format is RenderFormat.TEXT
    assert await store.get(name, 3) is None
    assert [(v.version, v.format) for v in await store.history(name)] == [
        (2, RenderFormat.HTML),
        (1, RenderFormat.TEXT),
    ]
    assert await store.get(unique("nothing")) is None


async def test_a_syntax_error_saves_nothing(store: TemplateStore) -> None:
    name = unique("broken")
    with pytest.raises(TemplateSyntaxError) as raised:
        await store.save(name, "ok\n{% if first_name %}never closed", RenderFormat.HTML)
    assert (raised.value.line, raised.value.column, raised.value.field) == (2, 1, "source")
    assert await store.history(name) == []


@pytest.mark.parametrize("name", ["", " ", "../etc/passwd", "a" * 201, "-leading"])
async def test_names_are_plain(store: TemplateStore, name: str) -> None:
    with pytest.raises(InvalidInput):
        await store.save(name, "x", RenderFormat.TEXT)


async def test_concurrent_saves_take_distinct_versions(store: TemplateStore) -> None:
    name = unique("race")
    results = await asyncio.gather(
        *(store.save(name, f"v{i}", RenderFormat.TEXT) for i in range(3)), return_exceptions=True
    )
    saved = [r.version for r in results if not isinstance(r, BaseException)]
    # Each save either took its own version or was told to retry; none overwrote another.
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
    assert len(set(saved)) == len(saved) >= 1
    assert sorted(v.version for v in await store.history(name)) == sorted(saved)
