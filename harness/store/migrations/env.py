"""Alembic environment of the results database, run by harness.store.migrations (never offline).

The caller hands over a connection already inside its (locked) transaction, so each upgrade
or stamp is one transaction with the lock that keeps concurrent workers out.
"""

from __future__ import annotations

from alembic import context

from harness.store.migrations import VERSION_TABLE, include_name
from harness.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("harness migrations run through harness.store.migrations with a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # Not the default alembic_version: Optuna keeps its own in the same database.
    version_table=VERSION_TABLE,
    # Only our tables: Optuna's (studies, trials, ...) are neither touched nor drift.
    include_name=include_name,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
