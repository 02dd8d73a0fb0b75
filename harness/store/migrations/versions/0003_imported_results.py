"""results: top1, best_epoch, epochs_run, evaluated_epoch and params may be NULL.

Revision ID: 0003
Revises: 0002

Runs imported from another tool (`harness import FILE.csv`) carry only the metrics that tool
recorded; a run with macro-F1 alone has no top-1 or epoch counts to store. Harness runs still
write every column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    ("top1", sa.Float()),
    ("best_epoch", sa.Integer()),
    ("epochs_run", sa.Integer()),
    ("evaluated_epoch", sa.Integer()),
    ("params", sa.Integer()),
)


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        for name, type_ in COLUMNS:
            batch.alter_column(name, existing_type=type_, nullable=True)


def downgrade() -> None:
    # Fails on a database that holds imported runs without these values: delete them first.
    with op.batch_alter_table("results") as batch:
        for name, type_ in COLUMNS:
            batch.alter_column(name, existing_type=type_, nullable=False)
