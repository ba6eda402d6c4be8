//! The harness itself works: a server starts, answers, and gives each test
//! a database of its own.

use crate::support::{private, shared};

#[test]
fn shared_server_answers_select_1() {
    let server = shared();
    let db = server.new_database();
    assert_eq!(server.query_one(&db, "select 1").as_deref(), Some("1"));
}

#[test]
fn each_new_database_is_distinct_and_empty() {
    let server = shared();
    let first = server.new_database();
    let second = server.new_database();
    assert_ne!(first, second);
    assert_eq!(
        server
            .query_one(
                &second,
                "select count(*) from pg_namespace where nspname = 'pgsense'"
            )
            .as_deref(),
        Some("0")
    );
}

#[test]
fn private_server_stops_and_starts_again() {
    let server = private();
    let db = server.new_database();
    server.execute(&db, "create table t (x int); insert into t values (1)");
    server.restart();
    assert_eq!(server.count(&db, "t"), 1);
    let dir = server.socket_dir().to_owned();
    drop(server);
    assert!(!dir.exists(), "{} is left behind after Drop", dir.display());
}
