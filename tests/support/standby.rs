//! A primary with a synchronous streaming standby, for the failover test
//! (issue 12): the standby is a pg_basebackup of the primary (`-R` writes
//! standby.signal and primary_conninfo), started on a port of its own, and
//! the primary waits for it at every COMMIT run with
//! `synchronous_commit = on`, as the loader's are
//! (`synchronous_standby_names = '*'`). The harness's other sessions keep
//! `synchronous_commit = off` and never wait.
//!
//! Both servers are [`PgServer`]s: stopped and removed on Drop, with their
//! watchdogs. The primary is stopped with [`PgServer::stop`] or
//! [`PgServer::stop_immediate`]; [`Replicated::promote`] turns the standby
//! into the new primary.

use std::time::Duration;

use super::pg::{self, PgServer};
use super::process;
use super::wait::wait_until;

/// Bound on pg_basebackup, and on pg_ctl's own wait for a promotion.
const PG_CTL_SECONDS: u64 = 60;

/// Bound on the waits for the standby to be streaming in sync, and for the
/// promoted standby to take writes.
const SYNC_WAIT: Duration = Duration::from_secs(60);

/// A primary and its synchronous standby.
pub struct Replicated {
    pub primary: PgServer,
    pub standby: PgServer,
}

/// A private primary, a standby made from it, streaming and synchronous
/// before this returns.
pub fn replicated() -> Replicated {
    // Both are the defaults; said so that the test does not depend on them.
    let primary = pg::private_with(&["wal_level = replica", "max_wal_senders = 10"]);
    // Replication from 127.0.0.1 for the superuser, and the loader's access
    // over TCP. initdb's defaults allow both; said here for the same reason.
    primary.set_hba(&[
        "local replication postgres trust",
        "host replication postgres 127.0.0.1/32 trust",
        "host all all 127.0.0.1/32 trust",
    ]);
    let standby = base_backup_of(&primary);
    // Set on the primary only, after the base backup: a promoted standby
    // that kept it would wait forever for a standby of its own.
    // ALTER SYSTEM cannot share a transaction with the reload.
    primary.execute(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
    );
    primary.execute("postgres", "SELECT pg_reload_conf()");
    wait_until(
        "standby streaming as a synchronous standby",
        SYNC_WAIT,
        || {
            primary.query_one(
                "postgres",
                "select count(*) from pg_stat_replication \
                 where state = 'streaming' and sync_state = 'sync'",
            ) == Some("1".into())
        },
    );
    Replicated { primary, standby }
}

/// A standby of `primary`: pg_basebackup into a new server's directory,
/// which then gets its own socket directory and port.
fn base_backup_of(primary: &PgServer) -> PgServer {
    let standby = PgServer::unstarted();
    process::run_ok(
        standby
            .pg_command("pg_basebackup")
            .arg("-D")
            .arg(standby.data_dir())
            .args(["-h", primary.host()])
            .args(["-p", &primary.port().to_string()])
            .args(["-U", "postgres", "-w", "-R", "-X", "stream"])
            .args(["--checkpoint=fast", "--no-sync"]),
        Duration::from_secs(PG_CTL_SECONDS),
        "pg_basebackup",
    );
    // The copied postgresql.conf names the primary's socket directory.
    standby.append_to_conf(&format!(
        "\n# The standby's own, added by the test harness.\n\
         unix_socket_directories = '{}'\n\
         hot_standby = on\n",
        standby.socket_dir().display()
    ));
    let standby = standby.start_on_a_free_port();
    assert_eq!(
        standby
            .query_one("postgres", "select pg_is_in_recovery()")
            .as_deref(),
        Some("t"),
        "the base backup did not start as a standby"
    );
    standby
}

impl Replicated {
    /// Cuts the standby off from the primary (an empty primary_conninfo,
    /// reloaded): from then on nothing more reaches it, and a COMMIT on the
    /// primary that waits for it waits until the primary goes away.
    /// Everything the primary wrote so far is replayed on the standby
    /// first.
    pub fn cut_off_standby(&self) {
        let written = self
            .primary
            .query_one("postgres", "select pg_current_wal_lsn()")
            .expect("an LSN");
        let replayed = format!("select pg_last_wal_replay_lsn() >= '{written}'::pg_lsn");
        wait_until("the standby replaying up to the primary", SYNC_WAIT, || {
            self.standby.query_one("postgres", &replayed).as_deref() == Some("t")
        });
        self.standby
            .execute("postgres", "ALTER SYSTEM SET primary_conninfo = ''");
        self.standby.execute("postgres", "SELECT pg_reload_conf()");
        wait_until("the standby cut off from the primary", SYNC_WAIT, || {
            self.primary
                .query_one("postgres", "select count(*) from pg_stat_replication")
                == Some("0".into())
        });
    }

    /// `pg_ctl promote` on the standby, then waits until a new connection
    /// can write there.
    pub fn promote(&self) {
        process::run_ok(
            self.standby
                .pg_command("pg_ctl")
                .arg("promote")
                .arg("-D")
                .arg(self.standby.data_dir())
                .args(["-w", "-t", &PG_CTL_SECONDS.to_string()]),
            Duration::from_secs(PG_CTL_SECONDS + 10),
            "pg_ctl promote",
        );
        wait_until("the promoted standby taking writes", SYNC_WAIT, || {
            self.standby
                .query_one(
                    "postgres",
                    "select not pg_is_in_recovery() \
                     and current_setting('transaction_read_only') = 'off'",
                )
                .as_deref()
                == Some("t")
        });
    }
}
