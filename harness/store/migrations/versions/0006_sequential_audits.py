"""audits: sequential audits (harness audit), resumable from the database alone.

Revision ID: 0006
Revises: 0005

One row per audit: its grid, claims and design as resolved when it started, its state, and the
progress its controller last wrote (parts decided, seeds and budget spent) for `harness status`.
The jobs an audit queues are ordinary jobs (grid "audit:NAME"); nothing else changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audits",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("grid", sa.JSON(), nullable=False),
        sa.Column("claims", sa.JSON(), nullable=True),
        sa.Column("claims_source", sa.String(500), nullable=False),
        sa.Column("design", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False,
                  server_default=sa.func.current_timestamp()),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("audits")
