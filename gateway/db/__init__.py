"""Persistence: SQLAlchemy models and the async engine/session factory."""

from gateway.db import (
    identity_models,  # noqa: F401  (registers the identity tables on Base)
    sync_models,  # noqa: F401  (registers sync_cursors on Base)
)
