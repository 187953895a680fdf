"""console sessions signed out before they expired

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04

A console session is a signed cookie, valid until GATEWAY_CONSOLE_SESSION_TTL_S has
passed. Signing out used to clear it only in the browser that asked, so a copy of the
cookie (another browser, a proxy's log, a shared machine) stayed signed in. Each
sign-out is now kept here, by the session's own digest, until that session would have
expired; every page refuses a session found here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sign_outs",
        sa.Column("session_digest", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_console_sign_outs_expires_at", "console_sign_outs", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_console_sign_outs_expires_at", table_name="console_sign_outs")
    op.drop_table("console_sign_outs")
