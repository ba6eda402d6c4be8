//! A throwaway PgBouncer (Debian's package, /usr/sbin/pgbouncer) in front of
//! a throwaway PostgreSQL, configured the way a user who only adds a
//! database entry would: every database of the server (`* = host=...
//! port=...`), trust authentication (PostgreSQL's harness trusts everyone
//! on 127.0.0.1, and trust still wants the user in auth_file), the pooling
//! mode and the server-side pool size under test, and nothing else. In
//! particular no `ignore_startup_parameters`: a client that sends startup
//! options must fail, as it does for users.
//!
//! PgBouncer refuses to run as root: as for PostgreSQL, it then runs as
//! `nobody` in a directory it owns. It runs in the foreground as our child,
//! is stopped on Drop, can be stopped and started again on the same port
//! (a restart mid-load), and a watchdog shell stops it if the test process
//! dies first.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use super::pg::{PgServer, free_port, unique, unprivileged_user};
use super::process;
use super::run::{Pgsense, pgsense};

/// Where Debian's package puts the binary (not on a non-root PATH).
const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// Bound on PgBouncer starting to accept, and on it exiting when stopped.
const READY_SECONDS: u64 = 20;

/// How PgBouncer shares server connections among clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per client transaction: the mode that refuses
    /// startup options and hands consecutive transactions of one client to
    /// different server connections.
    Transaction,
    /// A server connection per client connection, reset (DISCARD ALL) when
    /// the client leaves.
    Session,
    /// A server connection per statement: transactions are refused.
    Statement,
}

impl PoolMode {
    fn name(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
            PoolMode::Statement => "statement",
        }
    }
}

/// A PgBouncer listening on 127.0.0.1, in front of one PostgreSQL server.
pub struct PgBouncer {
    /// The temporary directory: pgbouncer.ini, userlist.txt, the log and
    /// the Unix socket.
    root: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    /// The running PgBouncer, None while stopped.
    child: Mutex<Option<Child>>,
    /// The password it asks for, if any.
    password: Option<String>,
}

/// The PgBouncer binary, or None (and a note) when it is not installed
/// outside CI; under CI a missing PgBouncer is a failure.
#[track_caller]
pub fn installed() -> Option<PathBuf> {
    let path = PathBuf::from(PGBOUNCER);
    if path.is_file() {
        return Some(path);
    }
    // Not found where Debian puts it: the PATH lookup says skip or fail.
    process::installed("pgbouncer", "pgbouncer")
}

impl PgBouncer {
    /// Starts PgBouncer in front of `server` with this pooling mode and at
    /// most `pool_size` server connections per database and user.
    pub fn start(binary: &Path, server: &PgServer, mode: PoolMode, pool_size: u32) -> PgBouncer {
        PgBouncer::start_with(binary, server, mode, pool_size, None)
    }

    /// [`PgBouncer::start`], asking clients for `password` by SCRAM when
    /// one is given (its auth_file holds it in plain text).
    pub fn start_with(
        binary: &Path,
        server: &PgServer,
        mode: PoolMode,
        pool_size: u32,
        password: Option<&str>,
    ) -> PgBouncer {
        let run_as = unprivileged_user();
        let root = std::env::temp_dir().join(unique("pgsense-pg-pgbouncer-"));
        fs::create_dir(&root).unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .expect("chmod on a directory just created");
        let bouncer = PgBouncer {
            root,
            port: free_port(),
            run_as,
            child: Mutex::new(None),
            password: password.map(str::to_owned),
        };
        bouncer.configure(server, mode, pool_size, password);
        bouncer.start_again(binary);
        bouncer
    }

    fn configure(&self, server: &PgServer, mode: PoolMode, pool_size: u32, password: Option<&str>) {
        let auth_type = match password {
            Some(_) => "scram-sha-256",
            None => "trust",
        };
        let ini = format!(
            "[databases]\n\
             * = host={} port={}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {}\n\
             unix_socket_dir = {root}\n\
             auth_type = {auth_type}\n\
             auth_file = {root}/userlist.txt\n\
             pool_mode = {}\n\
             default_pool_size = {pool_size}\n\
             logfile = {root}/pgbouncer.log\n",
            server.host(),
            server.port(),
            self.port,
            mode.name(),
            root = self.root.display(),
        );
        fs::write(self.ini(), ini).expect("write pgbouncer.ini");
        let userlist = format!("\"postgres\" \"{}\"\n", password.unwrap_or_default());
        fs::write(self.root.join("userlist.txt"), userlist).expect("write userlist.txt");
        if let Some((uid, gid)) = self.run_as {
            for path in [
                self.root.clone(),
                self.ini(),
                self.root.join("userlist.txt"),
            ] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
            }
        }
    }

    fn ini(&self) -> PathBuf {
        self.root.join("pgbouncer.ini")
    }

    /// PgBouncer's log file.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("pgbouncer.log")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// The TCP port PgBouncer listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts a stopped PgBouncer again, on the same port, and waits until
    /// it lets a client in.
    pub fn start_again(&self, binary: &Path) {
        let mut slot = self.child.lock().unwrap();
        assert!(
            slot.is_none(),
            "PgBouncer on port {} already runs",
            self.port
        );
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        // Its own process group: a Ctrl-C meant for the test run reaches
        // the watchdog's cleanup, not PgBouncer mid-test.
        let child = cmd
            .arg(self.ini())
            .env_clear()
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        spawn_watchdog(child.id());
        *slot = Some(child);
        drop(slot);
        self.wait_until_accepting();
    }

    fn wait_until_accepting(&self) {
        let deadline = Instant::now() + Duration::from_secs(READY_SECONDS);
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait on PgBouncer"))
            {
                panic!(
                    "PgBouncer exited ({status}) before accepting.\n--- {} ---\n{}",
                    self.log_file().display(),
                    self.log()
                );
            }
            match self.try_client("postgres") {
                Ok(mut client) => {
                    client
                        .simple_query("select 1")
                        .expect("select 1 through PgBouncer");
                    return;
                }
                Err(e) => last = Some(e),
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "PgBouncer on port {} did not accept a client within {READY_SECONDS} s: {last:?}\n\
             --- {} ---\n{}",
            self.port,
            self.log_file().display(),
            self.log()
        );
    }

    /// Stops PgBouncer at once (SIGTERM: SHUTDOWN, every client and server
    /// connection cut, as when an operator restarts it) and waits for it to
    /// exit.
    pub fn stop(&self) {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return;
        };
        process::send_signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(READY_SECONDS);
        loop {
            match child.try_wait().expect("try_wait on PgBouncer") {
                Some(_) => return,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "PgBouncer on port {} did not exit within {READY_SECONDS} s of SIGTERM",
                        self.port
                    );
                }
                None => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Stops PgBouncer and starts it again on the same port.
    pub fn restart(&self, binary: &Path) {
        self.stop();
        self.start_again(binary);
    }

    fn try_client(&self, db: &str) -> Result<Client, postgres::Error> {
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .application_name("pgsense-pg-tests")
            .connect_timeout(Duration::from_secs(10));
        if let Some(password) = &self.password {
            config.password(password);
        }
        config.connect(NoTls)
    }

    /// A client connection to `db` through PgBouncer, as the superuser.
    /// Simple queries only: in transaction pooling a statement prepared in
    /// one transaction may not exist in the next.
    pub fn client(&self, db: &str) -> Client {
        self.try_client(db)
            .unwrap_or_else(|e| panic!("connect to {db} through PgBouncer on {}: {e:?}", self.port))
    }

    /// pgsense-pg with connection flags pointing at `db` through PgBouncer,
    /// as the superuser.
    pub fn pgsense(&self, db: &str) -> Pgsense {
        pgsense()
            .args(["--host", "127.0.0.1"])
            .args(["--port", &self.port.to_string()])
            .args(["--dbname", db, "--username", "postgres"])
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.get_mut().ok().and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Stops PgBouncer `pid` once this test process is gone, however it ended;
/// exits by itself when PgBouncer does.
fn spawn_watchdog(pid: u32) {
    const SCRIPT: &str = r#"
trap '' INT TERM HUP
test_pid=$1 pid=$2
while kill -0 "$test_pid" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || exit 0
    sleep 0.5
done
kill -KILL "$pid" 2>/dev/null
"#;
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("pgsense-pg-pgbouncer-watchdog")
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the watchdog shell");
    thread::spawn(move || watchdog.wait());
}
