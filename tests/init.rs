//! The bootstrap (issue 2, "Bootstrap"): `init` and the start of every
//! `load` create exactly the reference table, only what is missing, safely
//! under concurrency, and stop at startup when an existing table cannot
//! take the rows.

use std::time::Duration;

use crate::support::findings::{assert_rows, ndjson, rows};
use crate::support::{Finding, Shape, shared};

/// Every column of `schema.table`: name, data type, nullability, default.
fn columns(db: &str, schema: &str, table: &str) -> Vec<(String, String, String, String)> {
    shared()
        .query(
            db,
            &format!(
                "select column_name, data_type, is_nullable, coalesce(column_default, '') \
                 from information_schema.columns \
                 where table_schema = '{schema}' and table_name = '{table}' \
                 order by ordinal_position"
            ),
        )
        .into_iter()
        .map(|row| {
            let text = |i: usize| row[i].clone().unwrap_or_default();
            (text(0), text(1), text(2), text(3))
        })
        .collect()
}

/// Asserts the table is exactly the one in postgres-channel.md.
#[track_caller]
fn assert_reference_table(db: &str, schema: &str, table: &str) {
    assert_reference_columns(db, schema, table);
    assert_reference_keys(db, schema, table);
}

/// The columns, their types, nullability and defaults.
#[track_caller]
fn assert_reference_columns(db: &str, schema: &str, table: &str) {
    let found = columns(db, schema, table);
    let text = |name: &'static str| (name, "text", "NO", "");
    let expected = [
        ("id", "bigint", "NO", "nextval"),
        text("database"),
        text("rule_id"),
        text("description"),
        text("category"),
        text("severity"),
        text("schema_name"),
        text("table_name"),
        text("column_name"),
        text("masked_sample"),
        ("primary_key", "jsonb", "NO", "'{}'::jsonb"),
        ("lsn", "bigint", "NO", ""),
        ("detected_at", "timestamp with time zone", "NO", "now()"),
    ];
    assert_eq!(
        found.len(),
        expected.len(),
        "columns of {schema}.{table}: {found:#?}"
    );
    for (column, (name, data_type, nullable, default)) in found.iter().zip(expected) {
        assert_eq!(
            (column.0.as_str(), column.1.as_str(), column.2.as_str()),
            (name, data_type, nullable),
            "column {name}"
        );
        if name == "id" {
            // BIGSERIAL: a default from a sequence owned by the column (not
            // an identity column).
            assert!(
                column.3.starts_with("nextval('") && column.3.contains(&format!("{table}_id_seq")),
                "id default is {:?}",
                column.3
            );
        } else {
            assert_eq!(column.3, default, "default of column {name}");
        }
    }
}

/// id a BIGSERIAL primary key, and no other constraint, in an ordinary
/// table.
#[track_caller]
fn assert_reference_keys(db: &str, schema: &str, table: &str) {
    let server = shared();
    let qualified = format!("\"{schema}\".\"{table}\"");
    assert_eq!(
        server.query(
            db,
            &format!(
                "select is_identity from information_schema.columns \
                 where table_schema = '{schema}' and table_name = '{table}' and column_name = 'id'"
            )
        ),
        vec![vec![Some("NO".to_owned())]],
        "id is BIGSERIAL, not an identity column"
    );
    assert!(
        server
            .query_one(
                db,
                &format!("select pg_get_serial_sequence('{qualified}', 'id')")
            )
            .is_some(),
        "id's sequence is owned by the column"
    );
    let primary_key = server.query(
        db,
        &format!(
            "select a.attname from pg_index i \
             join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey) \
             where i.indrelid = '{qualified}'::regclass and i.indisprimary"
        ),
    );
    assert_eq!(
        primary_key,
        vec![vec![Some("id".to_owned())]],
        "primary key"
    );
    assert_eq!(
        server.query_one(
            db,
            &format!(
                "select count(*) from pg_constraint \
                 where conrelid = '{qualified}'::regclass and contype <> 'p'"
            )
        ),
        Some("0".to_owned()),
        "no constraint but the primary key"
    );
    assert_eq!(
        server.query_one(
            db,
            &format!("select relkind from pg_class where oid = '{qualified}'::regclass")
        ),
        Some("r".to_owned()),
        "an ordinary table"
    );
}

#[test]
fn init_creates_exactly_the_reference_table() {
    let server = shared();
    let db = server.new_database();
    let out = server.pgsense(&db).arg("init").run();
    out.assert_code(0)
        .assert_stdout_contains("created schema pgsense\n")
        .assert_stdout_contains("created table pgsense.findings\n");
    assert_reference_table(&db, "pgsense", "findings");
    assert_eq!(
        server.count(&db, "pgsense.findings"),
        0,
        "init loads nothing"
    );
}

#[test]
fn init_twice_reports_what_exists_and_changes_nothing() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    server
        .pgsense(&db)
        .arg("load")
        .stdin(ndjson(0, 3, Shape::Object))
        .run()
        .assert_code(0);

    let again = server.pgsense(&db).arg("init").run();
    again
        .assert_code(0)
        .assert_stdout_contains("schema pgsense exists\n")
        .assert_stdout_contains("table pgsense.findings exists\n");
    assert!(
        !again.stdout.contains("created"),
        "second init created something\n{}",
        again.describe()
    );
    assert_reference_table(&db, "pgsense", "findings");
    assert_eq!(
        server.count(&db, "pgsense.findings"),
        3,
        "rows survive init"
    );
}

#[test]
fn init_with_custom_schema_and_table_creates_only_what_is_missing() {
    let server = shared();
    let db = server.new_database();
    server.execute(&db, "create schema alerts_2");
    let out = server
        .pgsense(&db)
        .arg("init")
        .args(["--schema", "alerts_2", "--table", "Found_Here"])
        .run();
    // The schema's line first, then the table's.
    out.assert_code(0)
        .assert_stdout_contains("schema alerts_2 exists\ncreated table alerts_2.Found_Here\n");
    // Identifiers are taken as written (quoted), not folded to lower case.
    assert_reference_table(&db, "alerts_2", "Found_Here");
    assert_eq!(
        server.query_one(
            &db,
            "select count(*) from pg_namespace where nspname = 'pgsense'"
        ),
        Some("0".to_owned()),
        "the default schema must not be created when another is configured"
    );

    let load = server
        .pgsense(&db)
        .args(["--schema", "alerts_2", "--table", "Found_Here", "load"])
        .stdin(ndjson(0, 2, Shape::Object))
        .run();
    load.assert_code(0);
    assert_eq!(server.count(&db, "alerts_2.\"Found_Here\""), 2);
}

#[test]
fn load_bootstraps_a_fresh_database_itself() {
    let server = shared();
    let db = server.new_database();
    let findings: Vec<Finding> = (0..5).map(Finding::sample).collect();
    server
        .pgsense(&db)
        .arg("load")
        .stdin(ndjson(0, 5, Shape::Object))
        .run()
        .assert_code(0);
    assert_reference_table(&db, "pgsense", "findings");
    assert_rows(&rows(server, &db, "pgsense.findings"), &findings);
}

/// A role with only USAGE on the schema, INSERT on the table and USAGE on
/// its sequence loads after an admin ran init (no CREATE anywhere, no
/// SELECT on the table).
#[test]
fn least_privileged_role_loads_after_admin_init() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let role = crate::support::pg::unique("loader_");
    server.execute(
        &db,
        &format!(
            "create role {role} login;
             revoke all on database {db} from public;
             grant connect on database {db} to {role};
             grant usage on schema pgsense to {role};
             grant insert on pgsense.findings to {role};
             grant usage on sequence pgsense.findings_id_seq to {role};"
        ),
    );
    let findings: Vec<Finding> = (0..6).map(Finding::sample).collect();
    let out = server
        .pgsense_as(&db, &role)
        .arg("load")
        .stdin(ndjson(0, 6, Shape::Object))
        .run();
    out.assert_code(0)
        .assert_stderr_contains("6 read, 6 inserted, 0 dropped");
    assert_rows(&rows(server, &db, "pgsense.findings"), &findings);

    // init by the same role finds everything and creates nothing.
    let init = server.pgsense_as(&db, &role).arg("init").run();
    init.assert_code(0)
        .assert_stdout_contains("schema pgsense exists\n")
        .assert_stdout_contains("table pgsense.findings exists\n");
}

/// A role with CREATE on an existing schema but not on the database:
/// the schema is found, not created (which PostgreSQL would refuse even
/// with IF NOT EXISTS), and only the table is created.
#[test]
fn role_with_create_on_the_schema_only_creates_just_the_table() {
    let server = shared();
    let db = server.new_database();
    let role = crate::support::pg::unique("owner_");
    server.execute(
        &db,
        &format!(
            "create role {role} login;
             create schema pgsense;
             grant usage, create on schema pgsense to {role};"
        ),
    );
    let as_role = || server.pgsense_as(&db, &role);
    let init = as_role().arg("init").run();
    init.assert_code(0)
        .assert_stdout_contains("schema pgsense exists\n")
        .assert_stdout_contains("created table pgsense.findings\n");
    assert_reference_table(&db, "pgsense", "findings");
    as_role()
        .arg("load")
        .stdin(ndjson(0, 4, Shape::Object))
        .run()
        .assert_code(0);
    assert_eq!(server.count(&db, "pgsense.findings"), 4);
}

#[test]
fn role_without_create_cannot_bootstrap_and_gets_69() {
    let server = shared();
    let db = server.new_database();
    let role = crate::support::pg::unique("nocreate_");
    server.execute(&db, &format!("create role {role} login"));
    let out = server
        .pgsense_as(&db, &role)
        .arg("load")
        .stdin(ndjson(0, 2, Shape::Object))
        .run();
    out.assert_code(69)
        .assert_stderr_contains("permission denied");
    assert_eq!(
        server.query_one(
            &db,
            "select count(*) from pg_namespace where nspname = 'pgsense'"
        ),
        Some("0".to_owned())
    );
}

/// Cron on many hosts: eight loads start at the same moment against a
/// fresh database; every one succeeds and every row is there.
#[test]
fn eight_concurrent_loads_on_a_fresh_database_all_succeed() {
    let server = shared();
    for _round in 0..2 {
        let db = server.new_database();
        let started: Vec<_> = (0..8u64)
            .map(|i| {
                server
                    .pgsense(&db)
                    .arg("load")
                    .stdin(ndjson(i * 10, 10, Shape::Object))
                    .timeout(Duration::from_secs(60))
                    .spawn()
            })
            .collect();
        for (i, process) in started.into_iter().enumerate() {
            let out = process.wait();
            assert_eq!(
                out.code,
                Some(0),
                "load {i} of 8 failed\n{}",
                out.describe()
            );
            out.assert_stderr_contains("10 read, 10 inserted, 0 dropped");
        }
        let findings: Vec<Finding> = (0..80).map(Finding::sample).collect();
        assert_rows(&rows(server, &db, "pgsense.findings"), &findings);
        assert_reference_table(&db, "pgsense", "findings");
    }
}

#[test]
fn eight_concurrent_inits_on_a_fresh_database_all_succeed() {
    let server = shared();
    let db = server.new_database();
    let started: Vec<_> = (0..8)
        .map(|_| server.pgsense(&db).arg("init").spawn())
        .collect();
    let outs: Vec<_> = started.into_iter().map(|p| p.wait()).collect();
    for out in &outs {
        out.assert_code(0);
    }
    let created = outs
        .iter()
        .filter(|out| out.stdout.contains("created table pgsense.findings"))
        .count();
    assert_eq!(created, 1, "exactly one init creates the table");
    assert_reference_table(&db, "pgsense", "findings");
}

/// The reference columns, for tables the tests make by hand.
const REFERENCE_COLUMNS: &str = "
    id            BIGSERIAL,
    database      TEXT NOT NULL,
    rule_id       TEXT NOT NULL,
    description   TEXT NOT NULL,
    category      TEXT NOT NULL,
    severity      TEXT NOT NULL,
    schema_name   TEXT NOT NULL,
    table_name    TEXT NOT NULL,
    column_name   TEXT NOT NULL,
    masked_sample TEXT NOT NULL,
    primary_key   JSONB NOT NULL DEFAULT '{}',
    lsn           BIGINT NOT NULL,
    detected_at   TIMESTAMPTZ NOT NULL DEFAULT now()";

#[test]
fn existing_table_missing_a_column_stops_at_startup_with_69() {
    let server = shared();
    let db = server.new_database();
    let columns = REFERENCE_COLUMNS.replace("masked_sample TEXT NOT NULL,", "");
    server.execute(
        &db,
        &format!(
            "create schema pgsense; create table pgsense.findings ({columns}, primary key (id))"
        ),
    );
    let out = server
        .pgsense(&db)
        .arg("load")
        .stdin(ndjson(0, 20, Shape::Object))
        .run();
    out.assert_code(69).assert_stderr_contains("masked_sample");
    // One clear error, not one per row.
    assert!(
        out.stderr.matches("masked_sample").count() <= 2,
        "the missing column is reported once, not per row\n{}",
        out.describe()
    );
    assert_eq!(server.count(&db, "pgsense.findings"), 0);
}

#[test]
fn existing_table_with_an_incompatible_column_type_stops_with_69() {
    let server = shared();
    let db = server.new_database();
    let columns = REFERENCE_COLUMNS.replace("severity      TEXT", "severity      INTEGER");
    server.execute(
        &db,
        &format!(
            "create schema pgsense; create table pgsense.findings ({columns}, primary key (id))"
        ),
    );
    let out = server
        .pgsense(&db)
        .arg("load")
        .stdin(ndjson(0, 5, Shape::Object))
        .run();
    out.assert_code(69).assert_stderr_contains("severity");
    assert_eq!(server.count(&db, "pgsense.findings"), 0);
}

/// A table the user turned into a partitioned one, with extra columns
/// that have defaults, still takes the rows.
#[test]
fn partitioned_table_with_extra_defaulted_columns_is_fine() {
    let server = shared();
    let db = server.new_database();
    server.execute(
        &db,
        &format!(
            "create schema pgsense;
             create table pgsense.findings ({REFERENCE_COLUMNS},
                 tenant text not null default 'main',
                 primary key (id, detected_at)) partition by range (detected_at);
             create table pgsense.findings_old partition of pgsense.findings
                 for values from (minvalue) to ('2025-01-01');
             create table pgsense.findings_new partition of pgsense.findings
                 for values from ('2025-01-01') to (maxvalue);"
        ),
    );
    let findings: Vec<Finding> = (0..10).map(Finding::sample).collect();
    let init = server.pgsense(&db).arg("init").run();
    init.assert_code(0)
        .assert_stdout_contains("table pgsense.findings exists\n");
    server
        .pgsense(&db)
        .arg("load")
        .stdin(ndjson(0, 10, Shape::Object))
        .run()
        .assert_code(0);
    assert_rows(&rows(server, &db, "pgsense.findings"), &findings);
    assert_eq!(server.count(&db, "pgsense.findings_old"), 10);
    assert_eq!(
        server.query_one(
            &db,
            "select string_agg(distinct tenant, ',') from pgsense.findings"
        ),
        Some("main".to_owned())
    );
}
