//! The man page and shell completions are generated from the clap
//! definition and checked in; these tests regenerate them and fail, naming
//! the command to run, when the checked-in copies are stale.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

use pgsense_pg::cli;

const UPDATE: &str = "PGSENSE_PG_UPDATE_GENERATED";

/// Sections the clap definition has no place for.
const MAN_EXTRA: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Every finding read was inserted (or, for \fBinit\fR, the bootstrap succeeded).
.TP
\fB2\fR
Usage error: bad flags or arguments.
.TP
\fB65\fR
The run completed, and some lines were rejected as bad data: by validation, or refused by the server (a constraint, a trigger, a value it rejects).
.TP
\fB66\fR
An input file could not be opened; checked before connecting, nothing loaded.
.TP
\fB69\fR
Could not connect, authenticate or bootstrap at startup; nothing loaded.
.TP
\fB73\fR
The reject file could not be opened; nothing loaded.
.TP
\fB75\fR
Some findings were dropped because the database failed during the run (connection lost, server shut down) and retries ran out; retrying later may succeed. Takes precedence over 65.
Also: another run holds the \fB\-\-state\-file\fR.
.TP
\fB78\fR
Configuration error (missing, unreadable or malformed config file, unknown key, invalid identifier, unreadable password file); nothing attempted.
.TP
\fB130\fR, \fB143\fR
Interrupted by SIGINT or SIGTERM: batches already sent committed, lines read but not sent were dropped (and written to the reject file).
.TP
\fB1\fR
Any other failure, such as an input file that cannot be read to its end, or a reject, state or metrics file that cannot be written.
.SH "JSON SUMMARY"
\fBload \-\-summary json\fR prints one object on stdout at the end, with these fields:
\fBfiles\fR (the inputs, \fB\-\fR for standard input),
\fBlines_read\fR (non-blank lines),
\fBinserted\fR,
\fBrejected_invalid\fR,
\fBrefused_by_server\fR,
\fBdropped_database_failure\fR,
\fBdropped_interrupted\fR,
\fBdropped_outcome_unknown\fR (sent with a COMMIT whose outcome could not be learned),
\fBstopped\fR (where and why reading stopped early, or null),
\fBdry_run\fR,
\fBseconds\fR,
\fBrows_per_second\fR,
\fBexit_status\fR.
\fBlines_read\fR equals \fBinserted\fR plus the five kinds of dropped lines.
.SH METRICS
\fBload \-\-metrics\-file\fR writes, for the last run, in Prometheus text format:
\fBpgsense_alerts_total{channel="postgres",status="ok"|"error"}\fR,
\fBpgsense_pg_dropped_lines{reason="invalid"|"refused"|"database_failure"|"interrupted"|"outcome_unknown"}\fR,
\fBpgsense_pg_lines_read\fR,
\fBpgsense_pg_last_run_duration_seconds\fR,
\fBpgsense_pg_last_run_timestamp_seconds\fR and
\fBpgsense_pg_last_run_exit_status\fR.
.SH ENVIRONMENT
.TP
\fBPGSENSE_PG_CONFIG\fR
The config file, as \fB\-\-config\fR.
.TP
\fBPGHOST\fR, \fBPGPORT\fR, \fBPGDATABASE\fR, \fBPGUSER\fR, \fBPGPASSWORD\fR, \fBPGSSLMODE\fR, \fBPGSSLROOTCERT\fR, \fBPGSSLCERT\fR, \fBPGSSLKEY\fR
Used for whatever neither a flag nor the config file sets.
Precedence, highest first: flags, the config file, these variables, the defaults (localhost, 5432, postgres, postgres, sslmode prefer).
.TP
\fBPGPASSFILE\fR, \fBHOME\fR
When no other source gives a password, it is looked up in libpq's password file, \fBPGPASSFILE\fR or else \fI$HOME/.pgpass\fR: lines of \fIhost\fB:\fIport\fB:\fIdatabase\fB:\fIuser\fB:\fIpassword\fR, \fB*\fR matching anything in the first four fields, \fB\e:\fR and \fB\e\e\fR escaping a colon and a backslash; the first matching line wins.
The file is ignored, with a warning, when group or others can read it.
.TP
\fBRUST_LOG\fR
Log filter (for example \fBpgsense_pg=debug\fR); overrides \fB\-v\fR and \fB\-q\fR.
.SH FILES
The config file is the scanner's own TOML file; only \fB[alerts.postgres]\fR and \fB[alerts.postgres.tls]\fR are read, every other section is ignored:
.PP
.nf
.RS 4
[alerts.postgres]
host     = "db.internal"
port     = 5432
dbname   = "findings"
username = "pgsense_loader"
password = { file = "/run/secrets/alerts\-pw" }
schema   = "pgsense"
table    = "findings"

[alerts.postgres.tls]
enabled = true
trusted_root_certs = "/etc/ssl/private\-ca.pem"
client_cert = "/etc/pgsense/loader.crt"
client_key  = "/etc/pgsense/loader.key"
.RE
.fi
.PP
An unknown key in \fB[alerts.postgres]\fR is an error. \fBtls.enabled = false\fR (the default) uses TLS when the server offers it without verifying it; \fBtrue\fR requires TLS and verifies the certificate chain and host name.
\fBtls.mode\fR, a libpq sslmode, overrides \fBenabled\fR.
\fBtrusted_root_certs\fR, \fBclient_cert\fR and \fBclient_key\fR are paths or PEM text.
The client key is PKCS#8, or PKCS#1 RSA; convert any other with \fBopenssl pkcs8 \-topk8 \-nocrypt \-in\fR \fIKEY\fR \fB\-out\fR \fIKEY.pk8\fR.
.SH EXAMPLES
Load the scanner's output as it is written:
.PP
.nf
.RS 4
tail \-n +1 \-F /var/log/pgsense/findings.jsonl | pgsense\-pg \-c /etc/pgsense/config.toml load
.RE
.fi
.PP
Load the spooled files from cron, every five minutes:
.PP
.nf
.RS 4
*/5 * * * * pgsense\-pg \-q \-c /etc/pgsense/config.toml load /var/spool/pgsense/*.jsonl
.RE
.fi
.PP
Bootstrap once as an admin, then load as a least\-privileged role:
.PP
.nf
.RS 4
pgsense\-pg \-\-username admin init
psql \-c 'CREATE ROLE pgsense_loader LOGIN'
psql \-c 'GRANT USAGE ON SCHEMA pgsense TO pgsense_loader'
psql \-c 'GRANT INSERT ON pgsense.findings TO pgsense_loader'
psql \-c 'GRANT USAGE ON SEQUENCE pgsense.findings_id_seq TO pgsense_loader'
pgsense\-pg \-\-username pgsense_loader load findings.jsonl
.RE
.fi
"#;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compares `path` with `expected`; with PGSENSE_PG_UPDATE_GENERATED=1,
/// rewrites it instead.
fn ensure_file(path: &Path, expected: &[u8]) {
    let actual = std::fs::read(path).unwrap_or_default();
    if actual == expected {
        return;
    }
    if std::env::var_os(UPDATE).is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, expected).unwrap();
        return;
    }
    panic!(
        "{} is stale: run `{UPDATE}=1 cargo test generated` and commit the result",
        path.display()
    );
}

fn man_page() -> Vec<u8> {
    let command = cli::Cli::command();
    let man = clap_mangen::Man::new(command.clone())
        .title("PGSENSE-PG")
        .date("2026-11-27");
    let mut out = Vec::new();
    man.render_title(&mut out).unwrap();
    man.render_name_section(&mut out).unwrap();
    man.render_synopsis_section(&mut out).unwrap();
    man.render_description_section(&mut out).unwrap();
    man.render_options_section(&mut out).unwrap();
    // clap_mangen would point at one page per command, which this project
    // does not ship: the commands are described here instead.
    out.extend_from_slice(b".SH COMMANDS\n");
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let usage = if sub.get_name() == "load" {
            " [FILE]..."
        } else {
            ""
        };
        out.extend_from_slice(
            format!(".TP\n\\fB{}\\fR{usage}\n{about}\n", sub.get_name()).as_bytes(),
        );
    }
    for sub in command.get_subcommands() {
        if sub
            .get_arguments()
            .any(|a| !a.is_global_set() && a.get_id() != "help")
        {
            let mut section = Vec::new();
            clap_mangen::Man::new(sub.clone())
                .render_options_section(&mut section)
                .unwrap();
            let section = String::from_utf8(section).unwrap().replacen(
                ".SH OPTIONS",
                &format!(".SH \"{} OPTIONS\"", sub.get_name().to_uppercase()),
                1,
            );
            out.extend_from_slice(section.as_bytes());
        }
    }
    out.extend_from_slice(MAN_EXTRA.as_bytes());
    man.render_version_section(&mut out).unwrap();
    // clap_mangen puts an empty line between two .br before the list of an
    // option's possible values, which mandoc -Tlint flags: .sp is meant.
    let page = String::from_utf8(out)
        .unwrap()
        .replace("\n.br\n\n.br\n", "\n.sp\n");
    wrap_roff(&page).into_bytes()
}

/// Wraps filled text lines at 80 bytes and trims trailing blanks, as man
/// page style wants; requests and no-fill blocks stay as they are.
fn wrap_roff(page: &str) -> String {
    let mut out = String::new();
    let mut fill = true;
    for line in page.lines() {
        let line = line.trim_end();
        match line {
            ".nf" => fill = false,
            ".fi" => fill = true,
            _ => {}
        }
        if !fill || line.starts_with('.') || line.len() <= 80 {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut width = 0;
        for word in line.split(' ').filter(|w| !w.is_empty()) {
            if width > 0 && width + 1 + word.len() > 80 {
                out.push('\n');
                width = 0;
                if word.starts_with(['.', '\'']) {
                    // A control character at the start of a line would make
                    // the word a request.
                    out.push_str("\\&");
                }
            } else if width > 0 {
                out.push(' ');
                width += 1;
            }
            out.push_str(word);
            width += word.len();
        }
        out.push('\n');
    }
    out
}

#[test]
fn man_page_is_current() {
    ensure_file(&root().join("man/pgsense-pg.1"), &man_page());
}

#[test]
fn completions_are_current() {
    use clap_complete::Shell;
    for (shell, file) in [
        (Shell::Bash, "pgsense-pg.bash"),
        (Shell::Zsh, "_pgsense-pg"),
        (Shell::Fish, "pgsense-pg.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cli::Cli::command(), "pgsense-pg", &mut out);
        ensure_file(&root().join("completions").join(file), &out);
    }
}

#[test]
fn man_page_lints_clean() {
    let page = root().join("man/pgsense-pg.1");
    let output = match Command::new("mandoc")
        .args(["-man", "-Wall", "-Tlint"])
        .arg(&page)
        .output()
    {
        Ok(output) => output,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("mandoc not installed: man page not linted (apt-get install mandoc)");
            return;
        }
        Err(err) => panic!("mandoc is required under CI: {err}"),
    };
    let report = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && report.trim().is_empty(),
        "mandoc -Tlint:\n{report}"
    );
}
