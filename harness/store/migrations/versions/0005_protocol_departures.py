"""jobs.departures: how each job's configuration differs from its named protocol.

Revision ID: 0005
Revises: 0004

`harness enqueue` writes, per job, every key on which its effective configuration differs from
its protocol (key, the protocol's value, the job's value: harness.experiment.departures), so
the report can label any comparison with the paper's numbers. Jobs already there keep NULL;
the report computes theirs from the stored configuration (docs/PROTOCOL.md, "Departures").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("departures", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("departures")
