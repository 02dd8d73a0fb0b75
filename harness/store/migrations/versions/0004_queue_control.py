"""jobs.priority, job_events and queue_flags: queue control (cancel, pause, priorities, show).

Revision ID: 0004
Revises: 0003

Jobs already there get priority 0 (the server default). Their history in job_events starts at
this revision; `harness show` says so for older jobs. queue_flags holds one row per switch the
workers read inside their claim transaction (`paused`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index("ix_job_events_job", "job_events", ["job_id", "id"])
    flags = op.create_table(
        "queue_flags",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=True),
    )
    op.bulk_insert(flags, [{"name": "paused", "value": "0"}])


def downgrade() -> None:
    op.drop_table("queue_flags")
    op.drop_index("ix_job_events_job", table_name="job_events")
    op.drop_table("job_events")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("priority")
