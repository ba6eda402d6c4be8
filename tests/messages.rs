//! What the server's errors become on stderr (issue 12, "Messages"): one
//! ERROR prefix, the real cause named (a timeout, a read-only role), and a
//! next step.

use std::time::Duration;

use crate::support::markers::{assert_table_holds, findings};
use crate::support::run::init;
use crate::support::{TABLE, shared};

/// A trigger that calls a missing function: the server's ERROR is printed
/// once, not as "ERROR: ERROR:".
#[test]
fn a_server_error_has_one_error_prefix() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    server.execute(
        &db,
        &format!(
            "CREATE FUNCTION pgsense.audit() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM no_such_function(); RETURN NEW; END $$;
             CREATE TRIGGER audit BEFORE INSERT ON {TABLE}
               FOR EACH ROW EXECUTE FUNCTION pgsense.audit();"
        ),
    );
    let out = server.pgsense(&db).arg("load").stdin(findings(1..=3)).run();
    out.assert_code(75)
        .assert_stderr_contains("function no_such_function() does not exist");
    assert!(
        !out.stderr.contains("ERROR: ERROR"),
        "a doubled prefix\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("42883"),
        "the SQLSTATE\n{}",
        out.describe()
    );
}

/// A relation the server cannot find: the next step is named.
#[test]
fn a_missing_relation_says_what_to_do() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    server.execute(
        &db,
        &format!(
            "CREATE FUNCTION pgsense.audit() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO audit_log VALUES (NEW.id); RETURN NEW; END $$;
             CREATE TRIGGER audit BEFORE INSERT ON {TABLE}
               FOR EACH ROW EXECUTE FUNCTION pgsense.audit();"
        ),
    );
    let out = server.pgsense(&db).arg("load").stdin(findings(1..=3)).run();
    out.assert_code(75)
        .assert_stderr_contains("relation \"audit_log\" does not exist")
        .assert_stderr_contains("pgsense-pg init")
        .assert_stderr_contains("search_path");
    assert!(!out.stderr.contains("ERROR: ERROR"), "{}", out.describe());
}

/// A role whose statements time out at once, with no table yet: the advice
/// is about statement_timeout, not about GRANT.
#[test]
fn a_statement_timeout_is_named_as_the_cause() {
    let server = shared();
    let db = server.new_database();
    let role = format!("hasty_{db}");
    server.execute(
        &db,
        &format!(
            "CREATE ROLE {role} LOGIN;
             GRANT CREATE ON DATABASE {db} TO {role};
             ALTER ROLE {role} SET statement_timeout = '1ms';"
        ),
    );
    for command in ["init", "load"] {
        let out = server
            .pgsense_as(&db, &role)
            .arg(command)
            .stdin(findings(1..=3))
            .run();
        assert_ne!(out.code, Some(0), "{}", out.describe());
        out.assert_stderr_contains("statement_timeout");
        assert!(!out.stderr.contains("GRANT"), "{}", out.describe());
    }
    server.execute(&db, &format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

/// A role whose transactions are read-only, with no table yet: the advice is
/// to write through a primary or another role, not to GRANT.
#[test]
fn a_read_only_role_is_named_as_the_cause() {
    let server = shared();
    let db = server.new_database();
    let role = format!("reader_{db}");
    server.execute(
        &db,
        &format!(
            "CREATE ROLE {role} LOGIN;
             GRANT CREATE ON DATABASE {db} TO {role};
             ALTER ROLE {role} SET default_transaction_read_only = on;"
        ),
    );
    for command in ["init", "load"] {
        let out = server
            .pgsense_as(&db, &role)
            .arg(command)
            .stdin(findings(1..=3))
            .run();
        assert_ne!(out.code, Some(0), "{}", out.describe());
        out.assert_stderr_contains("read-only");
        assert!(!out.stderr.contains("GRANT"), "{}", out.describe());
        // Connecting to any server, it gets as far as the CREATE.
        let out = server
            .pgsense_as(&db, &role)
            .env("PGTARGETSESSIONATTRS", "any")
            .arg(command)
            .stdin(findings(1..=3))
            .run();
        out.assert_code(69)
            .assert_stderr_contains("cannot create schema pgsense")
            .assert_stderr_contains("(SQLSTATE 25006): the session is read-only")
            .assert_stderr_contains("point --host at the primary");
        assert!(!out.stderr.contains("CREATE on"), "{}", out.describe());
    }
    server.execute(&db, &format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

/// A COPY cancelled by the role's statement_timeout while its rows are
/// being sent (a trigger makes the first row ever slow), then retried: the
/// warning names the cancel and its SQLSTATE, not an "unexpected message
/// from server".
#[test]
fn a_cancelled_copy_is_retried_under_its_real_cause() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let role = format!("timed_{db}");
    server.execute(
        &db,
        &format!(
            "CREATE ROLE {role} LOGIN;
             GRANT USAGE ON SCHEMA pgsense TO {role};
             GRANT SELECT, INSERT ON {TABLE} TO {role};
             GRANT USAGE ON SEQUENCE pgsense.findings_id_seq TO {role};
             ALTER ROLE {role} SET statement_timeout = '300ms';
             CREATE SEQUENCE pgsense.slow_once;
             CREATE FUNCTION pgsense.slow_once() RETURNS trigger LANGUAGE plpgsql
               SECURITY DEFINER AS $$ BEGIN
                 -- A sequence is not rolled back: only the first try is slow.
                 IF nextval('pgsense.slow_once') = 1 THEN PERFORM pg_sleep(2); END IF;
                 RETURN NEW;
               END $$;
             CREATE TRIGGER slow_once BEFORE INSERT ON {TABLE}
               FOR EACH ROW EXECUTE FUNCTION pgsense.slow_once();"
        ),
    );
    let out = server
        .pgsense_as(&db, &role)
        .arg("load")
        .stdin(findings(1..=3000))
        .timeout(Duration::from_secs(60))
        .run();
    out.assert_code(0)
        .assert_stderr_contains("canceling statement due to statement timeout (SQLSTATE 57014)")
        .assert_stderr_contains("retrying");
    assert!(
        !out.stderr.contains("unexpected message"),
        "{}",
        out.describe()
    );
    assert_table_holds(server, &db, 1..=3000);
    server.execute(&db, &format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}
