"""workers.quarantined and workers.stop_reason (commit 637a869).

Revision ID: 0002
Revises: 0001

A worker whose device failed N jobs in a row stops claiming and says why. Existing worker rows
get quarantined = false from the server default (NOT NULL needs one for rows already there).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch_alter_table: on SQLite, ALTER TABLE where it can, a table copy where it cannot.
    with op.batch_alter_table("workers") as batch:
        # "0", as in harness/store/schema.py, so a fresh database and an upgraded one carry one default.
        batch.add_column(sa.Column("quarantined", sa.Boolean(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("stop_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("stop_reason")
        batch.drop_column("quarantined")
