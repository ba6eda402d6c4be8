//! Progress (issue 6, "Tests"): a progress line under a terminal for a
//! large file, nothing of the kind in a pipe, with -q or for a small file.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::process::{self, Finished, installed};
use crate::support::{Finding, PgServer, Scratch, Shape, TABLE, shared};

/// Findings, one per line, until the text is over `bytes` long.
fn findings_over(bytes: usize) -> (String, u64) {
    let mut text = String::with_capacity(bytes + 4096);
    let mut count = 0;
    while text.len() <= bytes {
        text += &Finding::sample(count).line(Shape::Object);
        text.push('\n');
        count += 1;
    }
    (text, count)
}

/// A word for `sh -c`.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// What a load of the progress tests reads.
#[derive(Clone, Copy)]
enum Input<'p> {
    File(&'p Path),
    /// Standard input, redirected from the file.
    Stdin(&'p Path),
}

/// How a load is run for the progress tests.
enum Stderr {
    /// Under a pseudo-terminal (`script`): stdout and stderr are the terminal.
    Terminal,
    /// A pipe.
    Pipe,
}

/// Loads `file` into `db` (initialised) while the table is locked, so the
/// load lasts over a second whatever the machine's speed: the lock is held
/// until the loader's COPY waits on it, and one second longer. Returns what
/// the terminal showed (stdout and stderr together) or stderr.
fn load_while_locked(
    server: &PgServer,
    db: &str,
    input: Input<'_>,
    extra: &[&str],
    stderr: Stderr,
) -> Finished {
    let mut lock = server.client(db);
    lock.batch_execute("BEGIN; LOCK TABLE pgsense.findings IN EXCLUSIVE MODE")
        .expect("lock the findings table");
    let mut args: Vec<String> = [
        env!("CARGO_BIN_EXE_pgsense-pg"),
        "--host",
        server.host(),
        "--port",
        &server.port().to_string(),
        "--dbname",
        db,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let redirect = match input {
        Input::File(file) => {
            args.extend(["load".to_owned(), file.display().to_string()]);
            String::new()
        }
        Input::Stdin(file) => {
            args.extend(["load".to_owned(), "-".to_owned()]);
            format!(" < {}", shell_quote(&file.display().to_string()))
        }
    };
    let mut cmd = match stderr {
        Stderr::Terminal => {
            let line: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
            let mut cmd = Command::new("script");
            cmd.args(["-qec", &(line.join(" ") + &redirect), "/dev/null"]);
            cmd
        }
        Stderr::Pipe => {
            assert!(redirect.is_empty(), "standard input under a terminal only");
            let mut cmd = Command::new(&args[0]);
            cmd.args(&args[1..]);
            cmd
        }
    };
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let mut running = process::spawn(&mut cmd, process::Stdin::Null, "pgsense-pg load");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = server.query_one(
            db,
            "select count(*) from pg_stat_activity where datname = current_database() \
             and wait_event_type = 'Lock' and query ilike 'COPY%'",
        );
        if waiting.as_deref() != Some("0") {
            break;
        }
        if running.has_exited() || Instant::now() > deadline {
            let finished = running.wait(Duration::from_secs(10));
            panic!(
                "the load never waited on the locked table: {}\n--- stdout ---\n{}--- stderr ---\n{}",
                finished.status, finished.stdout, finished.stderr
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    // A progress line is drawn every quarter second.
    thread::sleep(Duration::from_secs(1));
    lock.batch_execute("COMMIT").expect("release the lock");
    running.wait(Duration::from_secs(120))
}

/// Whether the text holds a progress line for an input of `total` bytes.
fn has_progress(text: &str, total: u64) -> bool {
    let total = format!("/{:.1} MB (", total as f64 / 1e6);
    text.split('\r').any(|part| {
        part.starts_with("\x1b[K")
            && part.contains(&total)
            && part.contains(" read ")
            && part.contains(" rows/s")
            && part.contains("ETA")
    })
}

/// The progress line was cleared before the summary, which says that all
/// `count` findings were loaded, as the table holds them.
fn assert_cleared_and_loaded(server: &PgServer, db: &str, shown: &Finished, count: u64) {
    assert!(
        shown.stdout.contains(&format!(
            "\r\x1b[Kpgsense-pg: {count} read, {count} inserted"
        )),
        "the progress line is cleared before the summary:\n{:?}",
        shown.stdout
    );
    assert_eq!(server.count(db, TABLE), count as i64);
}

/// A regular file over 4 MiB, stderr a terminal: the progress line shows,
/// and is cleared before the summary.
#[test]
fn progress_shows_under_a_terminal_for_a_large_file() {
    if installed("script", "bsdutils").is_none() {
        return;
    }
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let scratch = Scratch::new();
    let (text, count) = findings_over(4_500_000);
    let file = scratch.write("large.jsonl", &text);
    let size = text.len() as u64;

    let shown = load_while_locked(server, &db, Input::File(&file), &[], Stderr::Terminal);
    assert_eq!(shown.status.code(), Some(0), "{shown:?}");
    assert!(
        has_progress(&shown.stdout, size),
        "no progress line on the terminal:\n{:?}",
        shown.stdout
    );
    assert_cleared_and_loaded(server, &db, &shown, count);
}

/// Standard input, whose size is not known, stderr a terminal: the
/// progress line shows what was read and loaded, without a share or an
/// ETA.
#[test]
fn progress_of_standard_input_has_no_share_or_eta() {
    if installed("script", "bsdutils").is_none() {
        return;
    }
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let scratch = Scratch::new();
    let (text, count) = findings_over(1_000_000);
    let file = scratch.write("piped.jsonl", &text);

    let shown = load_while_locked(server, &db, Input::Stdin(&file), &[], Stderr::Terminal);
    assert_eq!(shown.status.code(), Some(0), "{shown:?}");
    let lines: Vec<&str> = shown
        .stdout
        .split('\r')
        .filter(|part| part.starts_with("\x1b[K") && part.contains(" rows/s"))
        .collect();
    assert!(
        !lines.is_empty(),
        "no progress line for standard input:\n{:?}",
        shown.stdout
    );
    for line in &lines {
        assert!(
            line.contains(" MB  ") && line.contains(" read  ") && line.contains(" inserted  "),
            "{line:?}"
        );
        assert!(!line.contains("ETA") && !line.contains('%'), "{line:?}");
    }
    assert_cleared_and_loaded(server, &db, &shown, count);
}

/// A large compressed file: the progress line counts its file's bytes,
/// not the decoded ones, so it shows and never passes 100%.
#[test]
fn progress_of_a_compressed_file_counts_its_file_bytes() {
    if installed("script", "bsdutils").is_none() {
        return;
    }
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let scratch = Scratch::new();
    let (text, count) = findings_over(4_500_000);
    // Stored, not compressed: over 4 MB as a file too.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    std::io::Write::write_all(&mut encoder, text.as_bytes()).expect("gzip");
    let bytes = encoder.finish().expect("gzip");
    let size = bytes.len() as u64;
    let file = scratch.write("large.jsonl.gz", bytes);

    let shown = load_while_locked(server, &db, Input::File(&file), &[], Stderr::Terminal);
    assert_eq!(shown.status.code(), Some(0), "{shown:?}");
    assert!(
        has_progress(&shown.stdout, size),
        "no progress line of the file's size:\n{:?}",
        shown.stdout
    );
    let over: Vec<&str> = shown
        .stdout
        .split('\r')
        .filter_map(|part| part.split_once(" MB (")?.1.split_once("%)"))
        .map(|(percent, _)| percent)
        .filter(|percent| percent.parse::<u64>().map_or(true, |p| p > 100))
        .collect();
    assert!(over.is_empty(), "{over:?}\n{:?}", shown.stdout);
    assert_eq!(server.count(&db, TABLE), count as i64);
}

/// Nothing of the kind in a pipe, with -q, or for a small file.
#[test]
fn no_progress_in_a_pipe_with_quiet_or_for_a_small_file() {
    if installed("script", "bsdutils").is_none() {
        return;
    }
    let server = shared();
    let scratch = Scratch::new();
    let (large, large_count) = findings_over(4_500_000);
    let large_file = scratch.write("large.jsonl", &large);
    let (small, small_count) = findings_over(1_000_000);
    let small_file = scratch.write("small.jsonl", &small);
    let cases: [(&Path, &[&str], Stderr, u64); 3] = [
        (large_file.as_path(), &[], Stderr::Pipe, large_count),
        (large_file.as_path(), &["-q"], Stderr::Terminal, large_count),
        (small_file.as_path(), &[], Stderr::Terminal, small_count),
    ];
    for (file, extra, stderr, count) in cases {
        let db = server.new_database();
        server.pgsense(&db).arg("init").run().assert_code(0);
        let size = fs::metadata(file).expect("input").len();
        let out = load_while_locked(server, &db, Input::File(file), extra, stderr);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        for text in [&out.stdout, &out.stderr] {
            assert!(
                !has_progress(text, size) && !text.contains("rows/s") && !text.contains("\x1b["),
                "unexpected progress for {} {extra:?}:\n{text:?}",
                file.display()
            );
        }
        assert_eq!(server.count(&db, TABLE), count as i64);
    }
}
