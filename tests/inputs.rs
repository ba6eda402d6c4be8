//! How inputs are read (issue 10): a file named twice, named pipes written
//! one after the other, a file appended to while it is read, a half line
//! at a stop, and output paths checked before anything connects.

use std::fs::OpenOptions;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::markers::{
    HalfLineWriter, assert_table_holds, finding, findings, table_markers,
};
use crate::support::process::{run_ok, send_signal};
use crate::support::run::{Outcome, init, pgsense};
use crate::support::wait::wait_during;
use crate::support::{Scratch, SilentServer, TABLE, shared};

#[test]
fn the_same_file_under_three_names_is_loaded_once() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let input = scratch.write("a.ndjson", findings(1..=30));
    let link = scratch.path().join("b.ndjson");
    std::fs::hard_link(&input, &link).expect("hard link");
    let symlink = scratch.path().join("c.ndjson");
    std::os::unix::fs::symlink(&input, &symlink).expect("symbolic link");
    let out = server
        .pgsense(&db)
        .current_dir(scratch.path())
        .arg("load")
        .arg("a.ndjson")
        .arg("./a.ndjson")
        .arg(&link)
        .arg(&symlink)
        .run();
    out.assert_code(0)
        .assert_stderr_contains("./a.ndjson is the same file as a.ndjson: reading it once")
        .assert_stderr_contains("30 read, 30 inserted");
    assert_table_holds(server, &db, 1..=30);
}

/// Two named pipes whose writer fills one after the other: the second is
/// opened only once the first is read to its end, so nothing waits forever.
#[test]
fn two_named_pipes_written_one_after_the_other_are_both_loaded() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let (first, second) = (scratch.path().join("fa"), scratch.path().join("fb"));
    for fifo in [&first, &second] {
        run_ok(
            Command::new("mkfifo").arg(fifo),
            Duration::from_secs(10),
            "mkfifo",
        );
    }
    let one = scratch.write("one.ndjson", findings(1..=40));
    let two = scratch.write("two.ndjson", findings(41..=80));
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(r#"cat "$1" > "$2" && cat "$3" > "$4""#)
        .args(["sh".as_ref(), one.as_os_str(), first.as_os_str()])
        .args([two.as_os_str(), second.as_os_str()])
        .spawn()
        .expect("start the writer");
    let out = server
        .pgsense(&db)
        .arg("load")
        .arg(&first)
        .arg(&second)
        .timeout(Duration::from_secs(30))
        .run();
    let _ = writer.wait();
    out.assert_code(0)
        .assert_stderr_contains("80 read, 80 inserted");
    assert_table_holds(server, &db, 1..=80);
}

/// A stop while a named pipe waits for its writer to open it ends the run
/// at once, with what was read before it loaded.
#[test]
fn a_stop_while_a_named_pipe_has_no_writer_yet_ends_the_run() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let fifo = scratch.path().join("fifo");
    run_ok(
        Command::new("mkfifo").arg(&fifo),
        Duration::from_secs(10),
        "mkfifo",
    );
    let before = scratch.write("before.ndjson", findings(1..=20));
    let load = server
        .pgsense(&db)
        .arg("load")
        .arg(&before)
        .arg(&fifo)
        .timeout(Duration::from_secs(60))
        .spawn();
    let load = wait_during(
        load,
        "the rows before the pipe in",
        Duration::from_secs(30),
        || server.count(&db, TABLE) == 20,
    );
    let pid = load.id();
    let load = wait_during(
        load,
        "the pipe's open to wait",
        Duration::from_secs(30),
        || waits_in_fifo_open(pid),
    );
    let signalled = Instant::now();
    send_signal(load.id(), "TERM");
    let out = load.wait();
    out.assert_code(143)
        .assert_stderr_contains("20 read, 20 inserted")
        .assert_stderr_contains(&format!(
            "stopped reading {} before its first line",
            fifo.display()
        ));
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "the stop waited for the pipe's writer: {}",
        out.describe()
    );
    assert_table_holds(server, &db, 1..=20);
}

/// Whether a thread of process `pid` waits in the open of a named pipe for
/// the other end (Linux names the wait `wait_for_partner`).
fn waits_in_fifo_open(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("wchan")).is_ok_and(|w| w == "wait_for_partner")
    })
}

/// A named pipe that cannot be read is refused before connecting.
#[test]
fn an_unreadable_named_pipe_is_refused_before_connecting() {
    let scratch = Scratch::new();
    let fifo = scratch.path().join("fifo");
    run_ok(
        Command::new("mkfifo").args(["-m", "000"]).arg(&fifo),
        Duration::from_secs(10),
        "mkfifo",
    );
    let silent = SilentServer::new();
    let out = pgsense()
        .args(["--host", "127.0.0.1", "--port", &silent.port().to_string()])
        .arg("load")
        .arg(&fifo)
        .arg(scratch.path().join("missing.ndjson"))
        .run();
    // As root the pipe is readable whatever its mode: the missing file
    // after it is what stops the run then.
    out.assert_code(66).assert_stderr_contains("cannot open");
    assert!(!silent.was_contacted(), "{}", out.describe());
}

/// Loads 3000 findings into a new database of the shared server without a
/// state file, in batches of 10, two at a time (the reader is held back
/// far before the end of its first read buffer, 64 KiB), and truncates the
/// file to the end of line `lines` plus `more` bytes once the first rows
/// are in. The database, the file's text, where it was cut, and the run.
fn truncated_while_loading(lines: usize, more: usize) -> (String, String, usize, Outcome) {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let text = findings(1..=3000);
    let input = scratch.write("in.ndjson", &text);
    let load = server
        .pgsense(&db)
        .args(["load", "--batch-rows", "10"])
        .arg(&input)
        .spawn();
    let load = wait_during(load, "the first rows in", Duration::from_secs(30), || {
        server.count(&db, TABLE) >= 10
    });
    let cut = text.match_indices('\n').nth(lines - 1).expect("lines").0 + 1 + more;
    OpenOptions::new()
        .write(true)
        .open(&input)
        .and_then(|file| file.set_len(cut as u64))
        .expect("truncate");
    (db, text, cut, load.wait())
}

/// A file truncated by another process while it is loaded without a state
/// file: what was read loads, the line the truncation cut is invalid, and
/// the run says the file shrank.
#[test]
fn a_file_truncated_while_read_is_said_to_have_shrunk() {
    // After the first read buffer.
    let (db, text, cut, out) = truncated_while_loading(1000, 19);
    out.assert_code(65)
        .assert_stderr_contains(&format!(
            "shrank while it was read, from {} to {cut} bytes",
            text.len()
        ))
        .assert_stderr_contains("1001 read, 1000 inserted, 1 dropped (1 invalid,");
    assert_table_holds(shared(), &db, 1..=1000);
}

/// A file truncated behind the reader, within what it had read already:
/// the warning gives the file's new size, and where reading ended.
#[test]
fn a_file_truncated_behind_the_reader_says_its_new_size() {
    // Inside the first read buffer, which the reader holds.
    let (_, text, cut, out) = truncated_while_loading(50, 0);
    out.assert_stderr_contains(&format!(
        "shrank while it was read, from {} to {cut} bytes",
        text.len()
    ))
    .assert_stderr_contains("read up to byte ");
}

/// A tiny, repeatable generator of chunk sizes and pauses.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// A file appended to in chunks that end anywhere, while it is loaded
/// without a state file: no finding is split in two, none is rejected, and
/// what was loaded is the file's first lines, each once.
#[test]
fn a_file_appended_in_random_chunks_while_loaded_splits_no_line() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = scratch.write("growing.ndjson", "");
    let text = findings(1..=400);
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || {
            let mut file = OpenOptions::new().append(true).open(&input).expect("open");
            let mut random = Lcg(7);
            let mut bytes = text.as_bytes();
            while !bytes.is_empty() {
                let take = (1 + random.below(300) as usize).min(bytes.len());
                file.write_all(&bytes[..take]).expect("append");
                bytes = &bytes[take..];
                std::thread::sleep(Duration::from_millis(random.below(15)));
            }
        })
    };
    let mut runs = Vec::new();
    while !writer.is_finished() {
        runs.push(server.pgsense(&db).arg("load").arg(&input).run());
    }
    writer.join().expect("the writer");
    for out in &runs {
        let (read, inserted, dropped) = out.summary();
        assert_eq!(
            (inserted, dropped),
            (read, 0),
            "a line was split:\n{}",
            out.describe()
        );
        assert_eq!(out.code, Some(0), "{}", out.describe());
    }
    // Every run read the file from its start: its rows are a prefix of it.
    let mut markers = table_markers(server, &db);
    markers.sort_unstable();
    let mut expected: Vec<u64> = Vec::new();
    for out in &runs {
        let (read, _, _) = out.summary();
        expected.extend(1..=read);
    }
    expected.sort_unstable();
    assert_eq!(markers, expected, "rows in {TABLE}");
}

/// Without a state file, a run over a file its writer keeps ending
/// mid-line reads on with the writer; the rows it read are committed as it
/// waits for each line's end, not held until a batch fills, so a stop
/// loses none of them.
#[test]
fn rows_read_before_a_wait_for_a_lines_end_are_committed() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = scratch.path().join("findings.ndjson");
    let writer = HalfLineWriter::start(&input, 10);
    let load = server.pgsense(&db).arg("load").arg(&input).spawn();
    let load = wait_during(
        load,
        "10 rows in the table",
        Duration::from_secs(20),
        || server.count(&db, TABLE) >= 10,
    );
    send_signal(load.id(), "TERM");
    let out = load.wait();
    drop(writer);
    out.assert_code(143);
    let (read, inserted, dropped) = out.summary();
    assert_eq!(read, inserted + dropped, "{}", out.describe());
    assert!(inserted >= 10, "{}", out.describe());
    assert_table_holds(server, &db, 1..=inserted);
}

/// A Ctrl-C that stops the writer of a pipe mid-line: the half line is
/// reported as interrupted, not as invalid JSON, and goes nowhere.
#[test]
fn a_half_line_at_a_stop_is_interrupted_not_invalid() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let rejects = scratch.path().join("rejects.ndjson");
    let mut load = server
        .pgsense(&db)
        .arg("load")
        .arg("--reject-file")
        .arg(&rejects)
        .spawn_piped();
    load.stdin()
        .write_all(findings(1..=10).as_bytes())
        .expect("feed");
    let half = finding(11);
    load.stdin()
        .write_all(&half.as_bytes()[..half.len() / 2])
        .expect("feed");
    load.stdin().flush().expect("flush");
    let mut load = wait_during(load, "ten rows in", Duration::from_secs(20), || {
        server.count(&db, TABLE) == 10
    });
    load.close_stdin();
    send_signal(load.id(), "INT");
    let out = load.wait();
    out.assert_code(130)
        .assert_stderr_contains("-:11: not loaded: interrupted in the middle of the line")
        .assert_stderr_contains("11 read, 10 inserted, 1 dropped (0 invalid,")
        .assert_stderr_contains("stopped reading - after line 11");
    assert_table_holds(server, &db, 1..=10);
    assert_eq!(std::fs::read(&rejects).expect("reject file"), b"");
}

/// Every file a load writes is checked before it connects: one that
/// cannot be created is 73, whichever flag named it, and nothing connects.
#[test]
fn every_output_path_is_checked_before_connecting() {
    let scratch = Scratch::new();
    let input = scratch.write("in.ndjson", findings(1..=3));
    let missing = scratch.path().join("no-such-dir");
    for flag in ["--metrics-file", "--state-file", "--reject-file"] {
        let silent = SilentServer::new();
        let started = Instant::now();
        let out = pgsense()
            .args(["--host", "127.0.0.1", "--port", &silent.port().to_string()])
            .args(["--connect-timeout", "30"])
            .arg("load")
            .arg(flag)
            .arg(missing.join("out"))
            .arg(&input)
            .run();
        out.assert_code(73).assert_stderr_contains("no-such-dir");
        assert_eq!(
            out.stderr.matches("error:").count(),
            1,
            "{flag}: said once\n{}",
            out.describe()
        );
        assert!(!silent.was_contacted(), "{flag}: {}", out.describe());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{flag}: {}",
            out.describe()
        );
    }
}

/// A metrics file that is there and is not a regular file (a directory,
/// a named pipe, a device such as /dev/null) would be replaced by a file
/// on its first write: refused before connecting, and left as it was.
#[test]
fn a_metrics_file_that_is_not_a_regular_file_is_refused() {
    let scratch = Scratch::new();
    let input = scratch.write("in.ndjson", findings(1..=3));
    let dir = scratch.path().join("dir");
    std::fs::create_dir(&dir).expect("mkdir");
    let fifo = scratch.path().join("fifo");
    run_ok(
        Command::new("mkfifo").arg(&fifo),
        Duration::from_secs(10),
        "mkfifo",
    );
    for (path, why) in [
        (&dir, "it is a directory"),
        (&fifo, "it is not a regular file"),
    ] {
        let silent = SilentServer::new();
        let out = pgsense()
            .args(["--host", "127.0.0.1", "--port", &silent.port().to_string()])
            .arg("load")
            .arg("--metrics-file")
            .arg(path)
            .arg(&input)
            .run();
        out.assert_code(73).assert_stderr_contains(&format!(
            "cannot write metrics file {}: {why}",
            path.display()
        ));
        assert!(!silent.was_contacted(), "{}", out.describe());
    }
    assert!(dir.is_dir());
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(&fifo).expect("still there").file_type();
    assert!(kind.is_fifo(), "the pipe was replaced");
    // Nor is its temporary file opened when it is a named pipe: that
    // would wait for a reader.
    let metrics = scratch.path().join("m.prom");
    run_ok(
        Command::new("mkfifo").arg(scratch.path().join("m.prom.tmp")),
        Duration::from_secs(10),
        "mkfifo",
    );
    let silent = SilentServer::new();
    let out = pgsense()
        .args(["--host", "127.0.0.1", "--port", &silent.port().to_string()])
        .arg("load")
        .arg("--metrics-file")
        .arg(&metrics)
        .arg(&input)
        .timeout(Duration::from_secs(30))
        .run();
    out.assert_code(73)
        .assert_stderr_contains("cannot write metrics file");
    assert!(!silent.was_contacted(), "{}", out.describe());
}

/// A metrics file that is a symbolic link stays one: the file it leads to
/// is what is replaced.
#[test]
fn a_metrics_file_behind_a_symbolic_link_is_written_through_it() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let input = scratch.write("in.ndjson", findings(1..=3));
    let target = scratch.write("real.prom", "");
    let link = scratch.path().join("link.prom");
    std::os::unix::fs::symlink(&target, &link).expect("symbolic link");
    server
        .pgsense(&db)
        .arg("load")
        .arg("--metrics-file")
        .arg(&link)
        .arg(&input)
        .run()
        .assert_code(0);
    let kind = std::fs::symlink_metadata(&link).expect("link").file_type();
    assert!(kind.is_symlink(), "the link was replaced by a file");
    let text = std::fs::read_to_string(&target).expect("target");
    assert!(text.contains("pgsense_pg_lines_read 3\n"), "{text}");
}

/// A state or metrics file that is also an input (`findings.jsonl*` that
/// takes in `findings.jsonl.state`, say) is a usage error before anything
/// connects: the file given is left as it was.
#[test]
fn a_state_or_metrics_file_that_is_an_input_is_refused() {
    let scratch = Scratch::new();
    let input = scratch.write("findings.jsonl", findings(1..=3));
    let state = scratch.write("findings.jsonl.state", "{\"files\":{}}\n");
    let journal = scratch.write("findings.jsonl.state.journal", "");
    // Left by a run killed while it rewrote the journal.
    let journal_tmp = scratch.write("findings.jsonl.state.journal.tmp", "");
    let link = scratch.path().join("link.jsonl");
    std::os::unix::fs::symlink(&state, &link).expect("symbolic link");
    for (flag, output, also) in [
        ("--state-file", &state, &state),
        ("--state-file", &state, &link),
        ("--state-file", &state, &journal),
        ("--state-file", &state, &journal_tmp),
        ("--metrics-file", &input, &input),
    ] {
        let silent = SilentServer::new();
        let before = std::fs::read(output).expect("read");
        let out = pgsense()
            .args(["--host", "127.0.0.1", "--port", &silent.port().to_string()])
            .arg("load")
            .arg(flag)
            .arg(output)
            .arg(&input)
            .arg(also)
            .run();
        out.assert_code(2)
            .assert_stderr_contains(&format!("{flag} {} is also an input", output.display()));
        assert!(!silent.was_contacted(), "{flag}: {}", out.describe());
        assert_eq!(std::fs::read(output).expect("read"), before, "{flag}");
    }
}

/// `-` is standard input for inputs, but an output named `-` would be a
/// file called "-": refused (issue 12).
#[test]
fn an_output_named_dash_is_refused() {
    let scratch = Scratch::new();
    let input = scratch.write("in.ndjson", findings(1..=2));
    for flag in ["--reject-file", "--state-file", "--metrics-file"] {
        let out = pgsense()
            .current_dir(scratch.path())
            .arg("load")
            .args([flag, "-"])
            .arg(&input)
            .run();
        out.assert_code(2).assert_stderr_contains("name a file");
        assert!(
            !scratch.path().join("-").exists(),
            "{flag} created a file named -"
        );
    }
}

/// A file whose lines end with CR alone reads as one line: the reason says
/// how to convert it (issue 12).
#[test]
fn cr_only_line_endings_get_a_hint() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let input = scratch.write("mac.ndjson", findings(1..=3).replace('\n', "\r"));
    let out = server.pgsense(&db).arg("load").arg(&input).run();
    out.assert_code(65)
        .assert_stderr_contains("mac.ndjson:1: ")
        .assert_stderr_contains("convert it first");
}

/// `count` files of one finding each, findings 1..=count.
fn one_finding_files(scratch: &Scratch, count: u64) -> Vec<std::path::PathBuf> {
    (1..=count)
        .map(|n| scratch.write(&format!("{n:03}.ndjson"), findings(n..=n)))
        .collect()
}

/// A backlog of many files: more than the usual soft limit of open files
/// (here 64) is fine while the hard limit allows them.
#[test]
fn more_files_than_the_soft_limit_of_open_files_are_loaded() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let files = one_finding_files(&scratch, 200);
    let out = server
        .pgsense(&db)
        .open_files_limit(64, 4096)
        .arg("load")
        .args(&files)
        .run();
    out.assert_code(0)
        .assert_stderr_contains("200 read, 200 inserted");
    assert_table_holds(server, &db, 1..=200);
}

/// Beyond the hard limit, the run says so before connecting, and loads
/// nothing rather than part of what it was given.
#[test]
fn more_files_than_the_hard_limit_of_open_files_load_nothing() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let files = one_finding_files(&scratch, 200);
    let out = server
        .pgsense(&db)
        .open_files_limit(64, 64)
        .arg("load")
        .args(&files)
        .run();
    out.assert_code(66).assert_stderr_contains(
        "more inputs than this process may hold open at once (at most 64 open files, ulimit -n)",
    );
    assert_eq!(server.count(&db, TABLE), 0, "{}", out.describe());
}
