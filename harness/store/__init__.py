"""The results database: tables (schema), connections and the schema lock (connection), `make_engine` (engine), Alembic migrations (migrations), riding out outages (outages)."""
