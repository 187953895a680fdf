"""Persistence: SQLAlchemy models and the async engine/session factory."""

from gateway.db import (
    access_models,  # noqa: F401  (registers api_keys and tombstones on Base)
    export_models,  # noqa: F401  (registers export_cursors and export_deletions on Base)
    identity_models,  # noqa: F401  (registers the identity tables on Base)
    recommendation_models,  # noqa: F401  (registers the recommendation tables on Base)
    score_models,  # noqa: F401  (registers customer_scores, score_models, segments on Base)
    sync_models,  # noqa: F401  (registers sync_cursors and sync_runs on Base)
)
