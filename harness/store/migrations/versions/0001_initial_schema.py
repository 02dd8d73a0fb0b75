"""The schema as the harness wrote it before migrations existed (commit e9aa527).

Revision ID: 0001
Revises: (none)

Explicit tables rather than create_all: this revision must keep describing the old schema
after harness/store/schema.py moves on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("grid", sa.String(200), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("split_seed", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("harness_version", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(200)),
        sa.Column("device", sa.String(200)),
        sa.Column("lease_expires_at", sa.DateTime()),
        sa.Column("heartbeat_at", sa.DateTime()),
        sa.Column("epoch", sa.Integer()),
        sa.Column(
            "created_at", sa.DateTime(), nullable=False, server_default=sa.func.current_timestamp()
        ),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("finished_at", sa.DateTime()),
        sa.Column("error", sa.Text()),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_cell", "jobs", ["protocol", "dataset", "model"])

    op.create_table(
        "results",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("top1", sa.Float(), nullable=False),
        *(
            sa.Column(name, sa.Float())
            for name in (
                "top3",
                "top5",
                "precision_macro",
                "recall_macro",
                "f1_macro",
                "precision_weighted",
                "recall_weighted",
                "f1_weighted",
                "ece",
                "nll",
                "gen_gap_best",
                "gen_gap_last",
            )
        ),  # fmt: skip
        sa.Column("best_epoch", sa.Integer(), nullable=False),
        sa.Column("epochs_run", sa.Integer(), nullable=False),
        sa.Column("evaluated_epoch", sa.Integer(), nullable=False),
        sa.Column("epoch_seconds", sa.Float()),
        sa.Column("train_seconds", sa.Float()),
        sa.Column("eval_seconds", sa.Float()),
        sa.Column("params", sa.Integer(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(200)),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(), nullable=False, server_default=sa.func.current_timestamp()
        ),
        sa.UniqueConstraint("job_id"),
    )

    op.create_table(
        "epochs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        *(
            sa.Column(name, sa.Float(), nullable=False)
            for name in (
                "train_loss",
                "train_acc",
                "val_loss",
                "val_acc",
                "lr",
                "train_seconds",
                "eval_seconds",
            )
        ),  # fmt: skip
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.UniqueConstraint("job_id", "epoch", name="uq_epoch_job_epoch"),
    )

    op.create_table(
        "gradient_layers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("layer_index", sa.Integer(), nullable=False),
        sa.Column("layer", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Float()) for name in ("mean", "std", "min", "max")),
        sa.UniqueConstraint("job_id", "mode", "layer_index", name="uq_gradient_layer"),
    )

    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(200), nullable=False),
        sa.Column(
            "started_at", sa.DateTime(), nullable=False, server_default=sa.func.current_timestamp()
        ),
        sa.Column("heartbeat_at", sa.DateTime()),
        sa.Column("jobs_done", sa.Integer(), nullable=False),
        sa.Column("jobs_failed", sa.Integer(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("stopped", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    for table in ("workers", "gradient_layers", "epochs", "results", "jobs"):
        op.drop_table(table)
