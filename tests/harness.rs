//! The harness itself works: a server starts, answers, and gives each test
//! a database of its own; the Prometheus parser refuses what it must.

use crate::support::prometheus::Exposition;
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

/// The parser accepts the format and refuses what node_exporter would: it
/// is a check, not a formality.
#[test]
fn prometheus_parser_refuses_malformed_text() {
    let good = "# HELP a_total Things.\n# TYPE a_total counter\n\
                a_total{k=\"v\\\"q\\\\\\n\",j=\"2\",} 3\na_total 4 1700000000000\n\
                # HELP h A histogram.\n# TYPE h histogram\n\
                h_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n# a comment\n\n";
    let parsed = Exposition::parse(good).expect("valid exposition");
    assert_eq!(
        parsed.value("a_total", &[("k", "v\"q\\\n"), ("j", "2")]),
        3.0
    );
    assert_eq!(parsed.value("h_count", &[]), 1.0);
    for bad in [
        "# HELP a x\n# TYPE a gauge\na 1",        // no final newline
        "a 1\n",                                  // no TYPE
        "# HELP a x\na 1\n# TYPE a gauge\n",      // TYPE after
        "# HELP a x\n# TYPE a gauge\na{k=v} 1\n", // unquoted
        "# HELP a x\n# TYPE a gauge\na one\n",    // not a number
        "# HELP a x\n# TYPE a gauge\na 1\na 2\n", // twice
        "# HELP a x\n# TYPE a gauge\na{k=\"1\"} 1\n# HELP b x\n# TYPE b gauge\nb 1\na 2\n", // apart
        "# TYPE a gauge\na 1\n",                  // no HELP
        "# HELP a x\n# TYPE a metre\na 1\n",      // type
        "# HELP 1a x\n# TYPE 1a gauge\n1a 1\n",   // name
        "# HELP a x\n# TYPE a gauge\na{k=\"1\" 1\n", // unclosed
    ] {
        assert!(
            Exposition::parse(bad).is_err(),
            "accepted malformed text {bad:?}"
        );
    }
}
