//! What the loader takes from the machine and the server (issue 2,
//! "Connection" and "Input"): at most two connections that say who they
//! are, and memory that stays flat whatever the input.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::findings::ndjson;
use crate::support::{Shape, shared};

const MIB: u64 = 1024 * 1024;

/// While a load waits for input, its connections are at most two, named
/// `pgsense-pg`, and each row goes through the configured search_path.
#[test]
fn at_most_two_connections_named_pgsense_pg_with_the_search_path() {
    let server = shared();
    let db = server.new_database();
    server
        .pgsense(&db)
        .args(["--schema", "elsewhere", "init"])
        .run()
        .assert_code(0);
    // A trigger records the search_path each insert ran under.
    server.execute(
        &db,
        "create function elsewhere.record_path() returns trigger language plpgsql as $$
         begin new.category := current_setting('search_path'); return new; end $$;
         create trigger record_path before insert on elsewhere.findings
         for each row execute function elsewhere.record_path();",
    );
    let mut load = server
        .pgsense(&db)
        .args(["--schema", "elsewhere", "load", "--batch-rows", "7"])
        .spawn_piped();
    load.stdin()
        .write_all(ndjson(0, 50, Shape::Object).as_bytes())
        .expect("feed");
    load.stdin().flush().expect("flush");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.count(&db, "elsewhere.findings") < 49 {
        assert!(Instant::now() < deadline, "the batches never arrived");
        thread::sleep(Duration::from_millis(50));
    }
    let connections = server.query(
        &db,
        "select application_name from pg_stat_activity \
         where datname = current_database() and pid <> pg_backend_pid()",
    );
    load.close_stdin();
    let out = load.wait();
    out.assert_code(0);
    assert!(
        (1..=2).contains(&connections.len()),
        "the pool holds at most 2 connections: {connections:?}"
    );
    for connection in &connections {
        assert_eq!(connection[0].as_deref(), Some("pgsense-pg"));
    }
    let paths = server.query(&db, "select distinct category from elsewhere.findings");
    assert_eq!(paths.len(), 1, "{paths:?}");
    let path = paths[0][0].clone().unwrap_or_default();
    assert!(
        path.trim_matches('"') == "elsewhere"
            || path.starts_with("elsewhere")
            || path.starts_with("\"elsewhere\""),
        "search_path was {path:?}"
    );
}

/// A 128 MiB line is rejected without being held in memory whole.
#[test]
fn an_enormous_line_is_not_held_in_memory() {
    let server = shared();
    let db = server.new_database();
    let mut load = server.pgsense(&db).arg("load").spawn_piped();
    let good = ndjson(0, 1, Shape::Object);
    load.stdin().write_all(good.as_bytes()).expect("feed");
    load.stdin().write_all(b"{\"database\": \"").expect("feed");
    let chunk = vec![b'x'; MIB as usize];
    for _ in 0..128 {
        load.stdin().write_all(&chunk).expect("feed the long line");
    }
    load.stdin().write_all(b"\"}\n").expect("feed");
    load.stdin()
        .write_all(ndjson(1, 1, Shape::Object).as_bytes())
        .expect("feed");
    load.stdin().flush().expect("flush");
    // All but a pipe's worth of the long line has been read by now.
    let peak = load.peak_memory();
    load.close_stdin();
    let out = load.wait();
    out.assert_code(65)
        .assert_stderr_contains("3 read, 2 inserted, 1 dropped");
    assert_eq!(
        out.rejected_line_numbers("-"),
        vec![2],
        "{}",
        out.describe()
    );
    assert!(
        peak < 48 * MIB,
        "peak memory {} MiB while reading a 128 MiB line",
        peak / MIB
    );
    assert_eq!(server.count(&db, "pgsense.findings"), 2);
}

/// Memory stays flat whatever the input size: 40 MB of findings, streamed.
#[test]
fn memory_stays_flat_on_a_large_input() {
    let server = shared();
    let db = server.new_database();
    let mut load = server
        .pgsense(&db)
        .arg("load")
        .timeout(Duration::from_secs(120))
        .spawn_piped();
    let mut written = 0u64;
    let mut first = 0;
    while written < 40 * MIB {
        let block = ndjson(first, 2000, Shape::Object);
        load.stdin().write_all(block.as_bytes()).expect("feed");
        written += block.len() as u64;
        first += 2000;
    }
    load.stdin().flush().expect("flush");
    let peak = load.peak_memory();
    load.close_stdin();
    let out = load.wait();
    out.assert_code(0)
        .assert_stderr_contains(&format!("{first} read, {first} inserted, 0 dropped"));
    assert!(
        peak < 64 * MIB,
        "peak memory {} MiB while streaming {} MiB of input",
        peak / MIB,
        written / MIB
    );
    assert_eq!(server.count(&db, "pgsense.findings"), first as i64);
}
