"""How every `gateway` command reads its settings: an operator's typo is one line naming
the bad setting and exit code 2, never a traceback."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from adapters.config import UpstreamsConfig
from gateway.settings import Settings, SettingsError, load_settings


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, prefixed like every other command's, then exit ``code``."""
    click.echo(f"gateway: {message}", err=True)
    sys.exit(code)


def settings_or_exit(**overrides: object) -> Settings:
    """Settings (with ``overrides`` given on the command line), or exit 2."""
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        fail(str(exc), 2)


def upstreams_or_exit(settings: Settings) -> UpstreamsConfig:
    """The upstreams file the settings name, read and checked, or exit 2."""
    try:
        return settings.load_upstreams()
    except SettingsError as exc:
        fail(str(exc), 2)
