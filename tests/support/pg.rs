//! A throwaway PostgreSQL server, started from the installed server
//! binaries the way pgtemp does it: initdb into a fresh temporary directory,
//! a free TCP port on 127.0.0.1, a Unix socket in that directory, durability
//! off (fsync, synchronous_commit, full_page_writes) because nothing here
//! outlives the run.
//!
//! Each test binary shares one server ([`shared`]), started on first use;
//! every test makes its own database on it so tests run in parallel. A test
//! that stops, restarts or reconfigures a server takes a [`private`] one,
//! which stops and is removed on Drop.
//!
//! The shared server lives in a static that is never dropped, so each server
//! gets a watchdog shell that stops it and removes its directory once the
//! test process is gone, however that process ended.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls, SimpleQueryMessage};

use super::process::{self, Finished};

/// Where the server binaries are unless PGSENSE_TEST_PGBIN says otherwise.
const DEFAULT_PGBIN: &str = "/usr/lib/postgresql/15/bin";

/// Bound on initdb, and on pg_ctl's own wait for start or stop.
const PG_CTL_SECONDS: u64 = 30;

/// The server shared by every test of this binary, started on first use.
pub fn shared() -> &'static PgServer {
    static SHARED: OnceLock<PgServer> = OnceLock::new();
    SHARED.get_or_init(|| PgServer::start_new(&[]))
}

/// A server of the test's own, for tests that stop, restart or reconfigure
/// it. Stopped and removed on Drop.
pub fn private() -> PgServer {
    PgServer::start_new(&[])
}

/// A [`private`] server started with these lines added to its
/// postgresql.conf (`"max_connections = 10"`): settings that only a
/// restart would change, set before the first start.
pub fn private_with(settings: &[&str]) -> PgServer {
    PgServer::start_new(settings)
}

/// Names unique within this process (databases, directories).
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running (or stopped) throwaway PostgreSQL server.
pub struct PgServer {
    /// The temporary directory: data/ (the cluster), the Unix socket, and
    /// postgres.log.
    root: PathBuf,
    port: u16,
    bin: PathBuf,
    /// Set when the tests run as root: postgres refuses to run as root, so
    /// the cluster is owned by, and the server runs as, this (uid, gid).
    run_as: Option<(u32, u32)>,
}

impl PgServer {
    fn start_new(settings: &[&str]) -> PgServer {
        let server = PgServer::unstarted();
        server.initdb(settings);
        server.start_on_a_free_port()
    }

    /// A server with its temporary directory made (owned by the user the
    /// server runs as) and nothing in it yet: the caller puts a cluster in
    /// [`Self::data_dir`] (initdb, pg_basebackup), then calls
    /// [`Self::start_on_a_free_port`]. Removed on Drop.
    pub(super) fn unstarted() -> PgServer {
        let bin = server_binaries();
        let run_as = unprivileged_user();
        let temp = std::env::temp_dir();
        if run_as.is_some() {
            assert_traversable_by_others(&temp);
        }
        let root = temp.join(unique("pgsense-pg-test-"));
        fs::create_dir(&root).unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .expect("chmod on a directory just created");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("cannot chown {}: {e}", root.display()));
        }
        PgServer {
            root,
            port: 0,
            bin,
            run_as,
        }
    }

    /// Starts the cluster in [`Self::data_dir`] on a free port and waits
    /// until it accepts connections.
    pub(super) fn start_on_a_free_port(mut self) -> PgServer {
        // Another process may take the free port between our probe and the
        // server's bind: try a few ports before giving up.
        let mut last_error = String::new();
        for _ in 0..5 {
            self.port = free_port();
            match self.try_start() {
                Ok(()) => {
                    self.spawn_watchdog();
                    self.wait_until_accepting();
                    return self;
                }
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last_error}")
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP host the server listens on.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// The cluster's data directory.
    pub(super) fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// A command for a server binary, run as the unprivileged user when we
    /// are root.
    pub(super) fn pg_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(program);
                cmd
            }
            None => Command::new(program),
        };
        // The server's children must not depend on the test's environment
        // (PGDATA, PGPORT, locale...), nor on a working directory the
        // unprivileged user may not be able to enter.
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(&self.root);
        cmd
    }

    /// initdb, then the harness's settings and the test's `extra` ones
    /// (later lines win) appended to postgresql.conf.
    fn initdb(&self, extra: &[&str]) {
        let data = self.data_dir();
        process::run_ok(
            self.pg_command("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
                .args(["--locale=C", "--no-sync", "--no-instructions"]),
            Duration::from_secs(PG_CTL_SECONDS + 30),
            "initdb",
        );
        let mut settings = format!(
            "\n# Added by the pgsense-pg test harness.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 100\n\
             shared_buffers = 32MB\n\
             log_min_messages = warning\n\
             log_connections = off\n",
            self.root.display()
        );
        for line in extra {
            settings.push_str(line);
            settings.push('\n');
        }
        self.append_to_conf(&settings);
    }

    /// Appends `text` to postgresql.conf (later lines win); read at the
    /// next start.
    pub(super) fn append_to_conf(&self, text: &str) {
        let conf = self.data_dir().join("postgresql.conf");
        let mut contents =
            fs::read_to_string(&conf).unwrap_or_else(|e| panic!("read {}: {e}", conf.display()));
        contents.push_str(text);
        fs::write(&conf, contents).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
    }

    /// `pg_ctl start` on the current port; Err carries the log on failure.
    fn try_start(&self) -> Result<(), String> {
        let finished = process::spawn(
            self.pg_command("pg_ctl")
                .arg("start")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_file())
                .args(["-w", "-t", &PG_CTL_SECONDS.to_string()])
                .args(["-o", &format!("-p {}", self.port)]),
            process::Stdin::Null,
            "pg_ctl start",
        )
        .wait(Duration::from_secs(PG_CTL_SECONDS + 10));
        if finished.status.success() {
            Ok(())
        } else {
            Err(format!(
                "PostgreSQL did not start on port {} ({}).\n{}\n--- {} ---\n{}",
                self.port,
                finished.status,
                finished.stderr,
                self.log_file().display(),
                fs::read_to_string(self.log_file()).unwrap_or_default()
            ))
        }
    }

    /// pg_ctl -w already waited for "ready"; this also proves a client
    /// gets in, with a bounded number of tries.
    fn wait_until_accepting(&self) {
        let mut last = None;
        for _ in 0..100 {
            match self.try_client("postgres") {
                Ok(mut client) => {
                    client.simple_query("select 1").expect("select 1");
                    return;
                }
                Err(e) => last = Some(e),
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "PostgreSQL on port {} never accepted a connection: {last:?}",
            self.port
        );
    }

    /// Stops the server and removes its directory once this test process is
    /// gone (or as soon as the directory is gone: a private server removed
    /// on Drop). Runs as the current user so it can watch our pid.
    fn spawn_watchdog(&self) {
        // Signals meant for the test run (Ctrl-C, `timeout` killing its
        // process group) must not kill the watchdog before it has cleaned
        // up: it ignores them, in a process group of its own.
        const SCRIPT: &str = r#"
trap '' INT TERM HUP
test_pid=$1 root=$2
while kill -0 "$test_pid" 2>/dev/null && [ -d "$root" ]; do sleep 0.5; done
[ -d "$root" ] || exit 0
pid=$(head -n 1 "$root/data/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ]; then
    kill -INT "$pid" 2>/dev/null
    i=0
    while [ "$i" -lt 100 ] && [ -e "$root/data/postmaster.pid" ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$root"
"#;
        // Every stdio is /dev/null: the cargo test runner waits for EOF on
        // the pipes it gave the test binary, which must not stay open here.
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("pgsense-pg-test-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the watchdog shell");
        // Reaped by a thread when it ends early (a private server dropped);
        // otherwise it outlives this process, which is its purpose.
        thread::spawn(move || watchdog.wait());
    }

    /// Stops the server (fast shutdown: clients are disconnected, as when
    /// an operator stops it). Use on a [`private`] server.
    pub fn stop(&self) {
        self.pg_ctl_stop("fast");
    }

    /// Stops the server the way a crash does (immediate shutdown).
    pub fn stop_immediate(&self) {
        self.pg_ctl_stop("immediate");
    }

    fn pg_ctl_stop(&self, mode: &str) -> Finished {
        process::run_ok(
            self.pg_command("pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", mode, "-w", "-t", &PG_CTL_SECONDS.to_string()]),
            Duration::from_secs(PG_CTL_SECONDS + 10),
            "pg_ctl stop",
        )
    }

    /// Starts a stopped server again, on the same port.
    pub fn start(&self) {
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
        self.wait_until_accepting();
    }

    /// Stops and starts the server.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    /// Replaces pg_hba.conf with `lines` and reloads. A first line keeps
    /// the harness's own superuser access over the Unix socket.
    pub fn set_hba(&self, lines: &[&str]) {
        let mut text = String::from("local all postgres trust\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        let hba = self.data_dir().join("pg_hba.conf");
        fs::write(&hba, text).unwrap_or_else(|e| panic!("write {}: {e}", hba.display()));
        let mut client = self.client("postgres");
        let errors = client
            .query(
                "select line_number, error from pg_hba_file_rules where error is not null",
                &[],
            )
            .expect("read pg_hba_file_rules");
        assert!(errors.is_empty(), "bad pg_hba lines {lines:?}: {errors:?}");
        let loaded = |sql: &str| self.query_one("postgres", sql).expect("not null");
        let before = loaded("select pg_conf_load_time()::text");
        client
            .simple_query("select pg_reload_conf()")
            .expect("reload");
        // pg_reload_conf only signals the postmaster. It reads the config
        // files and then pg_hba.conf in one go, and a backend it starts
        // after that inherits the new load time: once a new connection sees
        // a later one, every connection gets the new rules.
        let reloaded = format!("select pg_conf_load_time() > '{before}'::timestamptz");
        let deadline = Instant::now() + Duration::from_secs(10);
        while loaded(&reloaded) != "t" {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL on port {} did not reload pg_hba.conf within 10 s",
                self.port
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Creates a fresh empty database and returns its name.
    pub fn new_database(&self) -> String {
        let name = unique("t_");
        self.execute("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    fn try_client(&self, db: &str) -> Result<Client, postgres::Error> {
        postgres::Config::new()
            .host_path(&self.root)
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .application_name("pgsense-pg-tests")
            .connect_timeout(Duration::from_secs(10))
            .connect(NoTls)
    }

    /// A superuser connection to `db`, over the Unix socket (so it works
    /// whatever pg_hba says about TCP).
    pub fn client(&self, db: &str) -> Client {
        self.try_client(db)
            .unwrap_or_else(|e| panic!("connect to {db} on port {}: {e:?}", self.port))
    }

    /// Runs SQL statements (no results) as the superuser in `db`.
    pub fn execute(&self, db: &str, sql: &str) {
        self.client(db)
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("in {db}: {sql}\n{e:?}"));
    }

    /// Runs one query as the superuser in `db`; every value as PostgreSQL's
    /// text form (None for NULL).
    pub fn query(&self, db: &str, sql: &str) -> Vec<Vec<Option<String>>> {
        let messages = self
            .client(db)
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("in {db}: {sql}\n{e:?}"));
        messages
            .into_iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    /// The single value of a one-row, one-column query.
    pub fn query_one(&self, db: &str, sql: &str) -> Option<String> {
        let rows = self.query(db, sql);
        assert!(
            rows.len() == 1 && rows[0].len() == 1,
            "expected one value from {sql}, got {rows:?}"
        );
        rows[0][0].clone()
    }

    /// `select count(*)` of a table, as a number.
    pub fn count(&self, db: &str, table: &str) -> i64 {
        self.query_one(db, &format!("select count(*) from {table}"))
            .expect("count is never null")
            .parse()
            .expect("count is a number")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Immediate: the directory goes next, so nothing needs to be saved.
        let _ = process::spawn(
            self.pg_command("pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "-t", "10"]),
            process::Stdin::Null,
            "pg_ctl stop",
        )
        .wait(Duration::from_secs(20));
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The directory of initdb, pg_ctl and postgres, or a panic saying how to
/// get them. Under CI a missing server is a failure like any other, never a
/// skipped test.
fn server_binaries() -> PathBuf {
    let bin = std::env::var_os("PGSENSE_TEST_PGBIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PGBIN));
    let missing: Vec<&str> = ["initdb", "pg_ctl", "postgres"]
        .into_iter()
        .filter(|program| !bin.join(program).is_file())
        .collect();
    if !missing.is_empty() {
        let ci = if std::env::var_os("CI").is_some() {
            "CI is set, and a missing server under CI is a failure: .ci/run must install it. "
        } else {
            ""
        };
        panic!(
            "PostgreSQL server binaries {missing:?} not found in {}. {ci}\
             install postgresql-15 (apt-get install postgresql) or set PGSENSE_TEST_PGBIN",
            bin.display()
        );
    }
    bin
}

/// The server runs as `nobody` and must reach its directory under `dir`.
fn assert_traversable_by_others(dir: &Path) {
    for ancestor in dir.ancestors() {
        let mode = fs::metadata(ancestor)
            .unwrap_or_else(|e| panic!("stat {}: {e}", ancestor.display()))
            .permissions()
            .mode();
        assert!(
            mode & 0o001 != 0,
            "{} is not traversable by other users, and PostgreSQL runs as nobody \
             when the tests run as root: set TMPDIR to a directory such as /tmp",
            ancestor.display()
        );
    }
}

/// (uid, gid) of `nobody` when we run as root, None otherwise.
pub fn unprivileged_user() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> u32 {
        let out = process::run_ok(Command::new("id").args(args), Duration::from_secs(10), "id");
        out.stdout
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("id {args:?} printed {:?}: {e}", out.stdout))
    };
    if id(&["-u"]) != 0 {
        return None;
    }
    Some((id(&["-u", "nobody"]), id(&["-g", "nobody"])))
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
