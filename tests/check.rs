//! `check` (issue 6, "Tests"): names each missing grant with the GRANT
//! that fixes it, and exits 78 or 69 when it cannot tell. Each test has a
//! database (and, where it needs one, a role) of its own.

use crate::support::findings::ndjson;
use crate::support::markers::{assert_table_holds, findings};
use crate::support::pg::{free_port, unique};
use crate::support::run::Outcome;
use crate::support::{PgServer, Scratch, Shape, SilentServer, TABLE, pgsense, shared};

/// One line of `pgsense-pg check`: `ok       WHAT`, or
/// `missing  WHAT: PROBLEM` or `wrong    WHAT: PROBLEM`.
#[derive(Debug)]
struct CheckLine {
    what: String,
    problem: Option<String>,
    label: &'static str,
}

/// The lines `check` printed on stdout; panics on a line of neither form.
#[track_caller]
fn check_lines(out: &Outcome) -> Vec<CheckLine> {
    out.stdout
        .lines()
        .map(|line| {
            let label = ["missing", "wrong"]
                .into_iter()
                .find(|label| line.starts_with(&format!("{label:<8} ")))
                .unwrap_or("ok");
            if let Some(what) = line.strip_prefix("ok       ") {
                CheckLine {
                    what: what.to_owned(),
                    problem: None,
                    label,
                }
            } else if let Some((what, problem)) = line
                .get(9..)
                .filter(|_| label != "ok")
                .and_then(|rest| rest.split_once(": "))
            {
                CheckLine {
                    what: what.to_owned(),
                    problem: Some(problem.to_owned()),
                    label,
                }
            } else {
                panic!(
                    "check printed a line that is not `ok`, `missing` or `wrong`: {line:?}\n{}",
                    out.describe()
                )
            }
        })
        .collect()
}

/// Asserts that check passed: exit 0 and every line ok.
#[track_caller]
fn assert_check_passes(out: &Outcome) {
    out.assert_code(0);
    let lines = check_lines(out);
    assert!(
        !lines.is_empty(),
        "check printed nothing\n{}",
        out.describe()
    );
    assert!(
        lines.iter().all(|line| line.problem.is_none()),
        "check exited 0 with a missing line\n{}",
        out.describe()
    );
}

/// The GRANT statement a problem quotes in backquotes.
#[track_caller]
fn quoted_grant<'a>(problem: &'a str, out: &Outcome) -> &'a str {
    problem
        .split('`')
        .skip(1)
        .step_by(2)
        .find(|quoted| quoted.starts_with("GRANT "))
        .unwrap_or_else(|| {
            panic!(
                "no `GRANT ...` in backquotes in {problem:?}\n{}",
                out.describe()
            )
        })
}

/// `check` as `role` fails (69) naming exactly one missing thing, `what`,
/// with a GRANT starting `grant_start` and ending `TO role`; the superuser
/// runs exactly that GRANT; then check passes and a load as `role` works.
#[track_caller]
fn missing_grant_is_named_and_its_grant_fixes_it(
    server: &PgServer,
    db: &str,
    role: &str,
    what: &str,
    grant_start: &str,
) {
    let before = server.pgsense_as(db, role).arg("check").run();
    if before.code == Some(0) {
        // Show whether a load agrees: check passing must mean a load works.
        let load = server
            .pgsense_as(db, role)
            .arg("load")
            .stdin(ndjson(0, 3, Shape::Object))
            .run();
        panic!(
            "check passed without {what}; a load as {role} then exits {:?}\n{}\n{}",
            load.code,
            before.describe(),
            load.describe()
        );
    }
    before.assert_code(69);
    let lines = check_lines(&before);
    let missing: Vec<&CheckLine> = lines.iter().filter(|l| l.problem.is_some()).collect();
    assert_eq!(
        missing.len(),
        1,
        "expected exactly one missing line, for {what}\n{}",
        before.describe()
    );
    assert_eq!(missing[0].what, what, "{}", before.describe());
    let problem = missing[0].problem.as_deref().expect("a missing line");
    let grant = quoted_grant(problem, &before);
    assert!(
        grant.starts_with(grant_start) && grant.ends_with(&format!(" TO {role}")),
        "expected `{grant_start} ... TO {role}`, got `{grant}`\n{}",
        before.describe()
    );

    server.execute(db, grant);

    let after = server.pgsense_as(db, role).arg("check").run();
    assert_check_passes(&after);
    // check exits 0 only when a load would succeed.
    server
        .pgsense_as(db, role)
        .arg("load")
        .stdin(ndjson(0, 3, Shape::Object))
        .run()
        .assert_code(0);
    assert_eq!(server.count(db, TABLE), 3);
}

/// A superuser on a fresh database: everything ok, exit 0, and check
/// creates nothing; after init, the table's lines are all ok too.
#[test]
fn check_as_superuser_on_a_fresh_database_is_all_ok() {
    let server = shared();
    let db = server.new_database();
    let out = server.pgsense(&db).arg("check").run();
    assert_check_passes(&out);
    let version = server
        .query_one(&db, "show server_version")
        .expect("server_version is set");
    let connected = &check_lines(&out)[0].what;
    let target = format!("postgres@127.0.0.1:{}/{db}", server.port());
    assert!(
        connected.starts_with("connected to")
            && connected.contains(&target)
            && connected.contains(&version)
            && connected.contains("no TLS"),
        "the first line names the target, the server version and TLS\n{}",
        out.describe()
    );
    assert_eq!(
        server.query_one(
            &db,
            "select count(*) from pg_namespace where nspname = 'pgsense'"
        ),
        Some("0".into()),
        "check must not create anything"
    );

    server.pgsense(&db).arg("init").run().assert_code(0);
    let out = server.pgsense(&db).arg("check").run();
    assert_check_passes(&out);
    let whats: Vec<String> = check_lines(&out).into_iter().map(|l| l.what).collect();
    for expected in [
        "USAGE on schema pgsense",
        "INSERT on table pgsense.findings",
        "USAGE on sequence pgsense.findings_id_seq",
        "column masked_sample",
        "column detected_at",
    ] {
        assert!(
            whats.iter().any(|w| w == expected),
            "no line for {expected:?}\n{}",
            out.describe()
        );
    }
}

/// A role (with its name unique on the shared server) that may log in, for
/// the grant tests: `sql`, run as the superuser in `db` after the role is
/// created, gives it its grants.
fn role_with(server: &PgServer, db: &str, sql: &str) -> String {
    let role = unique("checker_");
    server.execute(db, &format!("CREATE ROLE {role} LOGIN"));
    server.execute(db, &sql.replace("{role}", &role));
    role
}

/// INSERT granted on some of the loaded columns only: the columns without
/// it are named, with the GRANT for them alone.
#[test]
fn check_names_the_loaded_columns_without_insert() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let role = role_with(
        server,
        &db,
        "GRANT USAGE ON SCHEMA pgsense TO {role};
         GRANT USAGE ON SEQUENCE pgsense.findings_id_seq TO {role};
         GRANT INSERT (database, rule_id, description, category, severity, schema_name,
             table_name, column_name, masked_sample, primary_key)
             ON pgsense.findings TO {role};",
    );
    missing_grant_is_named_and_its_grant_fixes_it(
        server,
        &db,
        &role,
        "INSERT on column(s) lsn, detected_at of table pgsense.findings",
        "GRANT INSERT (lsn, detected_at) ON ",
    );
}

/// A role that may not connect to the database (REVOKE CONNECT FROM
/// PUBLIC): check fails (69) with the GRANT that fixes it, which, run as
/// is, does.
#[test]
fn check_names_missing_connect_on_the_database() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let role = role_with(
        server,
        &db,
        "GRANT USAGE ON SCHEMA pgsense TO {role};
         GRANT INSERT ON pgsense.findings TO {role};
         GRANT USAGE ON SEQUENCE pgsense.findings_id_seq TO {role};",
    );
    server.execute(&db, &format!("REVOKE CONNECT ON DATABASE {db} FROM PUBLIC"));
    let before = server.pgsense_as(&db, &role).arg("check").run();
    before.assert_code(69);
    let grant = quoted_grant(&before.stderr, &before);
    assert_eq!(
        grant,
        format!("GRANT CONNECT ON DATABASE \"{db}\" TO \"{role}\""),
        "{}",
        before.describe()
    );
    server.execute(&db, grant);
    assert_check_passes(&server.pgsense_as(&db, &role).arg("check").run());
}

#[test]
fn check_names_missing_usage_on_the_schema() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let role = role_with(
        server,
        &db,
        "GRANT INSERT ON pgsense.findings TO {role};
         GRANT USAGE ON SEQUENCE pgsense.findings_id_seq TO {role};",
    );
    missing_grant_is_named_and_its_grant_fixes_it(
        server,
        &db,
        &role,
        "USAGE on schema pgsense",
        "GRANT USAGE ON SCHEMA ",
    );
}

#[test]
fn check_names_missing_insert_on_the_table() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let role = role_with(
        server,
        &db,
        "GRANT USAGE ON SCHEMA pgsense TO {role};
         GRANT USAGE ON SEQUENCE pgsense.findings_id_seq TO {role};",
    );
    missing_grant_is_named_and_its_grant_fixes_it(
        server,
        &db,
        &role,
        "INSERT on table pgsense.findings",
        "GRANT INSERT ON ",
    );
}

#[test]
fn check_names_missing_usage_on_the_id_sequence() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let role = role_with(
        server,
        &db,
        "GRANT USAGE ON SCHEMA pgsense TO {role};
         GRANT INSERT ON pgsense.findings TO {role};",
    );
    missing_grant_is_named_and_its_grant_fixes_it(
        server,
        &db,
        &role,
        "USAGE on sequence pgsense.findings_id_seq",
        "GRANT USAGE ON SEQUENCE ",
    );
}

/// A table made by hand with an identity `id` (no sequence privilege is
/// needed for it), and INSERT granted on the loaded columns only: check
/// passes and a load inserts. Before, both were said to be missing.
#[test]
fn an_identity_id_and_insert_on_the_loaded_columns_are_enough() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    server.execute(
        &db,
        "DROP TABLE pgsense.findings;
         CREATE TABLE pgsense.findings (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             database text NOT NULL, rule_id text NOT NULL, description text NOT NULL,
             category text NOT NULL, severity text NOT NULL, schema_name text NOT NULL,
             table_name text NOT NULL, column_name text NOT NULL,
             masked_sample text NOT NULL, primary_key jsonb NOT NULL DEFAULT '{}',
             lsn bigint NOT NULL, detected_at timestamptz NOT NULL DEFAULT now(),
             triaged boolean NOT NULL DEFAULT false)",
    );
    let role = role_with(
        server,
        &db,
        "GRANT USAGE ON SCHEMA pgsense TO {role};
         GRANT INSERT (database, rule_id, description, category, severity, schema_name,
             table_name, column_name, masked_sample, primary_key, lsn, detected_at)
             ON pgsense.findings TO {role};",
    );
    let out = server.pgsense_as(&db, &role).arg("check").run();
    assert_check_passes(&out);
    let whats: Vec<String> = check_lines(&out).into_iter().map(|l| l.what).collect();
    assert!(
        !whats.iter().any(|w| w.contains("sequence")),
        "{}",
        out.describe()
    );
    let scratch = Scratch::new();
    let input = scratch.write("findings.ndjson", findings(1..=3));
    server
        .pgsense_as(&db, &role)
        .arg("load")
        .arg(&input)
        .run()
        .assert_code(0)
        .assert_stderr_contains("3 read, 3 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=3);
}

/// Schema and table missing: the role must be able to create the schema.
#[test]
fn check_names_missing_create_on_the_database() {
    let server = shared();
    let db = server.new_database();
    let role = role_with(server, &db, "SELECT 1");
    missing_grant_is_named_and_its_grant_fixes_it(
        server,
        &db,
        &role,
        &format!("CREATE on database {db}"),
        "GRANT CREATE ON DATABASE ",
    );
}

/// The schema exists (with USAGE), the table does not: the role must be
/// able to create it.
#[test]
fn check_names_missing_create_on_the_schema() {
    let server = shared();
    let db = server.new_database();
    server.execute(&db, "CREATE SCHEMA pgsense");
    let role = role_with(server, &db, "GRANT USAGE ON SCHEMA pgsense TO {role}");
    missing_grant_is_named_and_its_grant_fixes_it(
        server,
        &db,
        &role,
        "CREATE on schema pgsense",
        "GRANT CREATE ON SCHEMA ",
    );
}

/// The schema exists and the role may create the table in it, but has no
/// USAGE on it: a load fails (it cannot use the table it would create), so
/// check must not pass; it names USAGE on the schema.
#[test]
fn check_names_missing_usage_when_the_table_is_yet_to_be_created() {
    let server = shared();
    let db = server.new_database();
    server.execute(&db, "CREATE SCHEMA pgsense");
    let role = role_with(server, &db, "GRANT CREATE ON SCHEMA pgsense TO {role}");
    missing_grant_is_named_and_its_grant_fixes_it(
        server,
        &db,
        &role,
        "USAGE on schema pgsense",
        "GRANT USAGE ON SCHEMA ",
    );
}

/// The scanner's table without one of its columns, or with a column of a
/// type the loader cannot write: check names the column, exit 69.
#[test]
fn check_names_a_missing_or_mistyped_column() {
    let server = shared();
    for (alter, column, says, label) in [
        (
            "ALTER TABLE pgsense.findings DROP COLUMN masked_sample",
            "masked_sample",
            "no column masked_sample",
            "missing",
        ),
        (
            "ALTER TABLE pgsense.findings ALTER COLUMN lsn TYPE text",
            "lsn",
            "is text",
            "wrong",
        ),
    ] {
        let db = server.new_database();
        server.pgsense(&db).arg("init").run().assert_code(0);
        server.execute(&db, alter);
        let out = server.pgsense(&db).arg("check").run();
        out.assert_code(69);
        let lines = check_lines(&out);
        let missing: Vec<&CheckLine> = lines.iter().filter(|l| l.problem.is_some()).collect();
        assert_eq!(missing.len(), 1, "after {alter}\n{}", out.describe());
        assert_eq!(
            missing[0].what,
            format!("column {column}"),
            "{}",
            out.describe()
        );
        let problem = missing[0].problem.as_deref().expect("a missing line");
        assert!(problem.contains(says), "{problem:?}\n{}", out.describe());
        assert_eq!(missing[0].label, label, "{}", out.describe());
    }
}

/// Names that PostgreSQL folds or cannot parse unquoted (upper-case
/// letters, a hyphen): each GRANT check prints runs as printed, and then
/// check passes and a load works.
#[test]
fn printed_grants_quote_names_that_need_it() {
    let server = shared();
    let names = ["--schema", "Sens", "--table", "Find"];
    let check = |db: &str, role: &str| server.pgsense_as(db, role).args(names).arg("check").run();
    for schema_made in ["", "CREATE SCHEMA \"Sens\"", "init"] {
        let db = server.new_database();
        match schema_made {
            "" => {}
            "init" => {
                server
                    .pgsense(&db)
                    .args(names)
                    .arg("init")
                    .run()
                    .assert_code(0);
            }
            sql => server.execute(&db, sql),
        }
        let role = format!("Loader-{}", unique("q"));
        server.execute(&db, &format!("CREATE ROLE \"{role}\" LOGIN"));
        for _ in 0..3 {
            let out = check(&db, &role);
            if out.code == Some(0) {
                break;
            }
            out.assert_code(69);
            for line in check_lines(&out) {
                if let Some(problem) = line.problem {
                    let grant = quoted_grant(&problem, &out);
                    server.execute(&db, grant);
                }
            }
        }
        assert_check_passes(&check(&db, &role));
        server
            .pgsense_as(&db, &role)
            .args(names)
            .arg("load")
            .stdin(ndjson(0, 3, Shape::Object))
            .run()
            .assert_code(0);
    }
}

/// A read-only server (here a database whose sessions are read-only,
/// reached with target_session_attrs=any) where the table is yet to be
/// created: a load cannot create it, so check must not pass.
#[test]
fn check_fails_on_a_read_only_server_where_the_table_is_missing() {
    let server = shared();
    for schema_exists in [false, true] {
        let db = server.new_database();
        if schema_exists {
            server.execute(&db, "CREATE SCHEMA pgsense");
        }
        server.execute(
            &db,
            &format!("ALTER DATABASE {db} SET default_transaction_read_only = on"),
        );
        let load = server
            .pgsense(&db)
            .env("PGTARGETSESSIONATTRS", "any")
            .arg("load")
            .stdin(ndjson(0, 3, Shape::Object))
            .run();
        load.assert_code(69);
        let out = server
            .pgsense(&db)
            .env("PGTARGETSESSIONATTRS", "any")
            .arg("check")
            .run();
        out.assert_code(69);
        let lines = check_lines(&out);
        assert!(
            lines
                .iter()
                .any(|l| l.what == "the server accepts writes" && l.problem.is_some()),
            "check must say the server is read-only\n{}",
            out.describe()
        );
    }
}

/// A configuration error is 78, before connecting; a server that cannot be
/// reached is 69.
#[test]
fn check_exits_78_on_bad_config_and_69_without_a_server() {
    let silent = SilentServer::new();
    let out = pgsense()
        .args(["--host", "127.0.0.1", "--port", &silent.port().to_string()])
        .args(["--schema", "not-an-identifier!", "check"])
        .run();
    out.assert_code(78);
    assert!(!silent.was_contacted(), "a config error must not connect");

    let out = pgsense()
        .args(["--host", "127.0.0.1", "--port", &free_port().to_string()])
        .args(["--connect-timeout", "5", "check"])
        .run();
    out.assert_code(69).assert_stderr_contains("cannot connect");
}
