//! A state file's journal, as the fault tests read and doctor it: the
//! transactions a killed run left to settle, and one made to stand for a
//! transaction still in progress.

use std::path::Path;
use std::time::Duration;

use postgres::Client;

use super::PgServer;
use super::run::Started;
use super::wait::wait_during;

/// The transaction ids in the journal at `path`, in order.
pub fn journaled_txids(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).expect("read the journal");
    text.lines()
        .filter_map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).expect("a journal entry");
            entry["txid"].as_u64()
        })
        .collect()
}

/// Opens a transaction in `db` and makes the journal at `path` stand for
/// it: its last entry's transaction becomes that one (`replace`), or a
/// copy of its last entry with it is appended. The next run then waits
/// for it, asking the server again and again, until the returned client
/// ends it.
pub fn in_progress_in(server: &PgServer, db: &str, path: &Path, replace: bool) -> Client {
    let mut holder = server.client(db);
    holder.batch_execute("begin").expect("begin");
    let txid: i64 = holder
        .query_one("select txid_current()", &[])
        .expect("txid")
        .get(0);
    let text = std::fs::read_to_string(path).expect("read the journal");
    let mut lines: Vec<&str> = text.lines().collect();
    let last = match replace {
        true => lines.pop(),
        false => lines.last().copied(),
    };
    let mut entry: serde_json::Value =
        serde_json::from_str(last.expect("journaled batches")).expect("an entry");
    entry["txid"] = txid.into();
    let mut doctored: String = lines.iter().map(|line| format!("{line}\n")).collect();
    doctored.push_str(&format!("{entry}\n"));
    std::fs::write(path, doctored).expect("rewrite the journal");
    holder
}

/// Waits until the loader has a backend on `server` (it is settling), and
/// a little more, so that it is asking.
pub fn settling(load: Started, server: &PgServer) -> Started {
    let load = wait_during(
        load,
        "the loader's backend",
        Duration::from_secs(20),
        || {
            !server
                .query(
                    "postgres",
                    "select 1 from pg_stat_activity where application_name = 'pgsense-pg'",
                )
                .is_empty()
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    load
}
