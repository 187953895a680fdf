"""What the console keeps for the life of the process, in the app's typed state: the
schema its pages query, the session cookies' signer and the page templates."""

from __future__ import annotations

from dataclasses import dataclass

import strawberry

from gateway.settings import Settings
from resolvers.console.pages import Pages
from resolvers.console.session import Sessions


@dataclass(frozen=True, slots=True)
class ConsoleParts:
    schema: strawberry.Schema
    sessions: Sessions
    pages: Pages

    @classmethod
    def build(cls, schema: strawberry.Schema, settings: Settings) -> ConsoleParts:
        return cls(schema, Sessions.from_settings(settings), Pages())
