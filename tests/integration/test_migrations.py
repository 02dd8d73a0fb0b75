"""Schema migrations (harness/migrations, `harness db`) on a real SQLite file and PostgreSQL.

The pre-migration database is built the way the old harness left it: the 0001 tables without
a version table, rows written with plain SQL.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest
from sqlalchemy import inspect, text

from harness.cli import main
from harness.errors import HarnessError
from harness.report.load import PARAM_GHS_COLUMN, load_jobs, load_results
from harness.store.engine import make_engine
from harness.store.migrations import HEAD, VERSION_TABLE, alembic_config, include_name
from harness.store.schema import Base

OUR_TABLES = sorted(Base.metadata.tables)
NEW_IN_0004 = ("job_events", "queue_flags")
NEW_IN_0006 = ("audits",)


@pytest.fixture(params=["sqlite", "postgresql"])
def new_db(request, tmp_path):
    """A factory of fresh, empty databases (several per test) on one backend."""
    if request.param == "sqlite":
        return lambda name: f"sqlite:///{tmp_path / name}.db"
    server = request.getfixturevalue("pg_server")
    request.getfixturevalue("postgres_url")  # counts the test, like the other PG tests
    prefix = f"mig_{request.node.name[-12:].strip('[]').lower()}_{id(request) % 10**6}"
    return lambda name: server.create_database(f"{prefix}_{name}")


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _rows(engine, table: str) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT * FROM {table} ORDER BY 1")).mappings().all()
    return [dict(row) for row in rows]


def _fill_like_the_old_harness(engine) -> None:
    """One done job with its result, two epochs and gradient rows in both modes; one worker."""
    config = {"lr": 1e-3, "weight_decay": 1e-4, "max_epochs": 2, "model": {"dropout": 0.1}}
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (key, grid, model, dataset, seed, split_seed, protocol, config,"
                " harness_version, status, attempts, max_attempts, worker_id, device, epoch,"
                " started_at, finished_at) VALUES ('k1', 'demo', 'resnet18', 'digits', 42, 42,"
                " 'paper', :config, '0.1.0', 'done', 1, 3, 'h:1:1', 'cpu', 2,"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"config": json.dumps(config)},
        )
        conn.execute(
            text(
                "INSERT INTO results (job_id, top1, top3, f1_macro, ece, gen_gap_best,"
                " gen_gap_last, best_epoch, epochs_run, evaluated_epoch, epoch_seconds, params,"
                " slots, device, provenance, extra) VALUES (1, 0.875, 0.97, 0.86, 0.04, 0.05,"
                " 0.06, 2, 2, 2, 1.5, 11172810, 1, 'cpu', :prov, '{}')"
            ),
            {"prov": json.dumps({"git": "e9aa527", "torch": "2.4"})},
        )
        for epoch in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO epochs (job_id, epoch, train_loss, train_acc, val_loss, val_acc,"
                    " lr, train_seconds, eval_seconds, slots) VALUES (1, :e, 1.0, 0.5, 1.1, 0.45,"
                    " 0.001, 1.2, 0.3, 1)"
                ),
                {"e": epoch},
            )
        for mode in ("output", "param"):
            conn.execute(
                text(
                    "INSERT INTO gradient_layers (job_id, mode, layer_index, layer, kind, batches,"
                    " mean, std, min, max) VALUES (1, :mode, 0, 'conv1', 'Conv2d', 4, 0.01, 0.001,"
                    " 0.009, 0.012)"
                ),
                {"mode": mode},
            )
        conn.execute(
            text(
                "INSERT INTO workers (id, host, pid, device, heartbeat_at, jobs_done, jobs_failed,"
                " consecutive_failures, stopped) VALUES ('h:1:1', 'h', 1, 'cpu',"
                " CURRENT_TIMESTAMP, 1, 0, 0, :stopped)"
            ),
            {"stopped": True},
        )


def test_pre_migration_database_is_upgraded_and_stays_readable(new_db, capsys):
    url = new_db("old")
    assert _cli(capsys, "db", "upgrade", "--db", url, "--revision", "0001")[0] == 0
    with pytest.raises(HarnessError, match=f"revision 0001; this harness needs {HEAD}"):
        make_engine(url)  # stamped 0001: behind, refused
    engine = make_engine(url, create=False)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))  # as the pre-migration harness left it
    _fill_like_the_old_harness(engine)
    before = {table: _rows(engine, table) for table in OUR_TABLES
              if table not in NEW_IN_0004 + NEW_IN_0006}

    with pytest.raises(HarnessError) as refused:
        make_engine(url)
    message = str(refused.value)
    assert "\n" not in message
    assert "schema revision 0001 (no version table" in message
    assert "harness db upgrade --db" in message
    assert _cli(capsys, "db", "current", "--db", url)[0] == 1
    assert _rows(engine, "workers") == before["workers"]  # refusing wrote nothing

    rc, out, _ = _cli(capsys, "db", "upgrade", "--db", url)
    assert rc == 0 and "0001 (no version table" in out and f"-> {HEAD}" in out
    engine = make_engine(url)  # accepted now
    for table in before:
        after = _rows(engine, table)
        if table == "jobs":  # 0004: queued work gets the default priority
            assert [row.pop("priority") for row in after] == [0]
            # 0005: no departures recorded (the report computes them from the config)
            assert [row.pop("departures") for row in after] == [None]
        if table == "workers":
            assert [row.pop("stop_reason") for row in after] == [None]
            assert [bool(row.pop("quarantined")) for row in after] == [False]
        assert after == before[table], table

    results = load_results(engine)
    assert results[["model", "dataset", "seed"]].values.tolist() == [["resnet18", "digits", 42]]
    assert results["top1"].tolist() == [0.875] and results["lr"].tolist() == [1e-3]
    assert results[PARAM_GHS_COLUMN].tolist() == [1.0]  # from the gradient rows: one healthy layer
    jobs = load_jobs(engine)
    assert jobs["status"].tolist() == ["done"] and jobs["has_result"].tolist() == [True]
    # Queued before 0005: its departures come from its stored config (ResNet-18 takes no
    # dropout, so the old config's model.dropout changes nothing).
    assert jobs["departures"].tolist() == [[{"key": "max_epochs", "protocol": 100, "run": 2}]]
    rc, out, _ = _cli(capsys, "db", "current", "--db", url)
    assert rc == 0 and out.strip().endswith(f"head {HEAD}: up to date")
    rc, out, _ = _cli(capsys, "db", "upgrade", "--db", url)
    assert rc == 0 and "nothing to do" in out


def _schema(url: str) -> dict:
    """Our tables as the database reports them: columns, keys, indexes, defaults."""
    engine = make_engine(url, create=False)
    with engine.connect() as conn:
        insp = inspect(conn)
        out = {}
        for table in OUR_TABLES:
            out[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in insp.get_columns(table)
                ],
                "pk": insp.get_pk_constraint(table)["constrained_columns"],
                "fks": sorted(
                    (tuple(fk["constrained_columns"]), fk["referred_table"])
                    for fk in insp.get_foreign_keys(table)
                ),
                "indexes": sorted(
                    (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                    for ix in insp.get_indexes(table)
                ),
                "unique": sorted(
                    (str(uq["name"]), tuple(uq["column_names"]))
                    for uq in insp.get_unique_constraints(table)
                ),
            }
    engine.dispose()
    return out


def _drift(url: str) -> list:
    """What Alembic's autogenerate would change to make the database match harness/store/schema.py."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with make_engine(url, create=False).connect() as conn:
        opts = {"include_name": include_name, "compare_type": True}
        return compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata)


def test_migrations_match_the_models(new_db, capsys):
    upgraded, fresh = new_db("upgraded"), new_db("fresh")
    assert _cli(capsys, "db", "upgrade", "--db", upgraded)[0] == 0  # 0001 .. HEAD
    # Not empty: harness/store/schema.py changed without a migration in harness/store/migrations/versions.
    assert _drift(upgraded) == []
    for bad, why in (("0001", "does not downgrade"), ("nope", "unknown schema revision")):
        rc, _, err = _cli(capsys, "db", "upgrade", "--db", upgraded, "--revision", bad)
        assert rc == 1 and why in err
    make_engine(fresh)  # create_all + stamp, what a new database gets
    assert _schema(fresh) == _schema(upgraded)
    fresh_engine = make_engine(fresh, create=False)
    with fresh_engine.begin() as conn:  # as 637a869 wrote it: no version table, nor 0004/5's parts
        conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
        for table in NEW_IN_0004 + NEW_IN_0006:
            conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(text("ALTER TABLE jobs DROP COLUMN priority"))
        conn.execute(text("ALTER TABLE jobs DROP COLUMN departures"))
    # Recognised as 0002 by its columns (the newest schema before migrations), so it is
    # upgraded like any 0002 database.
    with pytest.raises(HarnessError, match="revision 0002"):
        make_engine(fresh)
    assert _cli(capsys, "db", "upgrade", "--db", fresh)[0] == 0
    assert _rows(fresh_engine, VERSION_TABLE) == [{"version_num": HEAD}]
    fresh_engine.dispose()
    assert _cli(capsys, "db", "current", "--db", fresh)[0] == 0


def test_head_constant_is_the_newest_revision(tmp_path):
    from alembic.script import ScriptDirectory

    with make_engine(f"sqlite:///{tmp_path / 'head.db'}", create=False).connect() as conn:
        script = ScriptDirectory.from_config(alembic_config(conn))
    assert script.get_current_head() == HEAD


def test_fresh_database_is_stamped_and_foreign_tables_are_left_alone(new_db, capsys):
    url = new_db("shared")
    engine = make_engine(url, create=False)
    with engine.begin() as conn:  # what Optuna keeps in the same database
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('v3.2.0.a')"))
        conn.execute(text("CREATE TABLE studies (study_id INTEGER PRIMARY KEY)"))
    errors: list[BaseException] = []

    def start() -> None:  # workers starting together on the fresh database
        try:
            make_engine(url).dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert [row["version_num"] for row in _rows(engine, VERSION_TABLE)] == [HEAD]
    assert [row["version_num"] for row in _rows(engine, "alembic_version")] == ["v3.2.0.a"]
    assert set(inspect(engine).get_table_names()) == {*OUR_TABLES, VERSION_TABLE,
                                                      "alembic_version", "studies"}  # fmt: skip
    rc, out, _ = _cli(capsys, "db", "current", "--db", url)
    assert rc == 0 and "up to date" in out
    assert _drift(url) == []  # Optuna's tables are not ours to add, drop or compare

    with engine.begin() as conn:  # a newer harness was here
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
    with pytest.raises(HarnessError, match="0099, unknown to this harness.*newer harness"):
        make_engine(url)
    rc, _, err = _cli(capsys, "db", "upgrade", "--db", url)
    assert rc == 1 and "newer harness" in err


def test_unreachable_postgres_is_one_line_with_the_password_masked(capsys):
    pytest.importorskip("psycopg")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql+psycopg://harness:s3cret-pw@127.0.0.1:{port}/gradattn"
    for action in ("current", "upgrade"):
        rc, out, err = _cli(capsys, "db", action, "--db", url)
        assert rc == 1 and out == ""
        assert err.count("\n") == 1 and err.startswith("harness: error: cannot reach database")
        assert "s3cret-pw" not in err and "harness:***@127.0.0.1" in err
