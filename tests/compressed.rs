//! Compressed inputs (issue 11, "logrotate's compression"): gzip and zstd
//! recognised by their first bytes, from files and standard input; damaged
//! ones load the lines before the damage and say where; with --state-file,
//! logrotate's `compress`, `delaycompress` and `copytruncate` rotations
//! between cron runs load each line exactly once.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::support::markers::{
    append, assert_table_holds, assert_table_holds_after, findings, table_markers,
};
use crate::support::run::{Outcome, pgsense};
use crate::support::{PgServer, Scratch, TABLE, shared};

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).expect("gzip");
    encoder.finish().expect("gzip")
}

fn zstd(text: &str) -> Vec<u8> {
    zstd::encode_all(text.as_bytes(), 3).expect("zstd")
}

/// The line number in "NAME: corrupt or truncated FORMAT data after line
/// N", or a panic.
#[track_caller]
fn damaged_after(out: &Outcome, name: &str, format: &str) -> u64 {
    let prefix = format!("{name}: corrupt or truncated {format} data after line ");
    out.stderr
        .lines()
        .find_map(|line| line.split_once(&prefix))
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} on stderr\n{}", out.describe()))
}

/// Asserts that the table holds the findings `expected` (ascending), each
/// once.
#[track_caller]
fn assert_table_is(
    server: &PgServer,
    db: &str,
    expected: impl Iterator<Item = u64>,
    out: &Outcome,
) {
    let mut markers = table_markers(server, db);
    markers.sort_unstable();
    let expected: Vec<u64> = expected.collect();
    assert_eq!(markers, expected, "{}", out.describe());
}

/// gzip and zstd files, one of them without a suffix and one of two gzip
/// members, load as their text would: the format is told by the bytes.
#[test]
fn gzip_and_zstd_files_load_whatever_their_name() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let gz = scratch.write("a.jsonl.gz", gzip(&findings(1..=100)));
    let zst = scratch.write("b.jsonl.zst", zstd(&findings(101..=200)));
    let bare = scratch.write("c", gzip(&findings(201..=300)));
    let mut members = gzip(&findings(301..=350));
    members.extend(gzip(&findings(351..=400)));
    let two = scratch.write("d.gz", members);
    let plain = scratch.write("e.jsonl", findings(401..=410));
    server
        .pgsense(&db)
        .arg("load")
        .args([&gz, &zst, &bare, &two, &plain])
        .run()
        .assert_code(0)
        .assert_stderr_contains("410 read, 410 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=410);
}

/// A file compressed by pzstd (zstd's parallel compressor), which starts
/// with a skippable frame, loads as its text would.
#[test]
fn a_pzstd_file_loads() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let plain = scratch.write("p.jsonl", findings(1..=300));
    let zst = scratch.path().join("p.jsonl.zst");
    let status = std::process::Command::new("pzstd")
        .args(["-q", "-f", "-p", "2"])
        .arg(&plain)
        .arg("-o")
        .arg(&zst)
        .status()
        .expect("run pzstd (apt-get install zstd)");
    assert!(status.success(), "pzstd failed");
    let bytes = std::fs::read(&zst).expect("read the pzstd file");
    assert_eq!(
        bytes[1..4],
        [0x2a, 0x4d, 0x18],
        "pzstd wrote no skippable frame first: nothing is tested"
    );
    server
        .pgsense(&db)
        .arg("load")
        .arg(&zst)
        .run()
        .assert_code(0)
        .assert_stderr_contains("300 read, 300 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=300);
}

/// Line numbers are those of the decoded text.
#[test]
fn line_numbers_count_the_decoded_lines() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let text = findings(1..=4) + "{\"lsn\": oops\n" + &findings(5..=6);
    let gz = scratch.write("bad.jsonl.gz", gzip(&text));
    server
        .pgsense(&db)
        .arg("load")
        .arg(&gz)
        .run()
        .assert_code(65)
        .assert_stderr_contains(&format!("{}:5: ", gz.display()))
        .assert_stderr_contains("7 read, 6 inserted, 1 dropped");
    assert_table_holds(server, &db, 1..=6);
}

#[test]
fn compressed_standard_input_is_decoded() {
    let server = shared();
    let db = server.new_database();
    server
        .pgsense(&db)
        .arg("load")
        .stdin(gzip(&findings(1..=50)))
        .run()
        .assert_code(0)
        .assert_stderr_contains("50 read, 50 inserted");
    server
        .pgsense(&db)
        .arg("load")
        .arg("-")
        .stdin(zstd(&findings(51..=80)))
        .run()
        .assert_code(0)
        .assert_stderr_contains("30 read, 30 inserted");
    assert_table_holds(server, &db, 1..=80);
}

/// A gzip file cut short: the whole lines before the cut load, the error
/// names the file and the line, the exit status is 1, and the input after
/// it loads too.
#[test]
fn a_truncated_gzip_file_loads_the_lines_before_the_cut() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let whole = gzip(&findings(1..=3000));
    let cut = scratch.write("cut.jsonl.gz", &whole[..whole.len() / 2]);
    let after = scratch.write("after.jsonl", findings(5001..=5010));
    let out = server.pgsense(&db).arg("load").arg(&cut).arg(&after).run();
    out.assert_code(1);
    let lines = damaged_after(&out, &cut.display().to_string(), "gzip");
    assert!(lines > 0 && lines < 3000, "{}", out.describe());
    assert_table_is(server, &db, (1..=lines).chain(5001..=5010), &out);
}

/// A compressed file cut before its first line is said to be damaged
/// before its first line, not "after line 0".
#[test]
fn a_compressed_file_cut_before_its_first_line_says_so() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let whole = zstd(&findings(1..=10));
    let cut = scratch.write("cut.jsonl.zst", &whole[..12]);
    let out = server.pgsense(&db).arg("load").arg(&cut).run();
    out.assert_code(1).assert_stderr_contains(&format!(
        "{}: corrupt or truncated zstd data before its first line",
        cut.display()
    ));
    assert!(!out.stderr.contains("after line 0"), "{}", out.describe());
}

/// A zstd file whose second frame is corrupt: the first frame's lines load,
/// and the error says where the damage is.
#[test]
fn a_corrupt_zstd_file_loads_the_lines_before_the_damage() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let mut bytes = zstd(&findings(1..=1000));
    let mut second = zstd(&findings(1001..=2000));
    second[..4].copy_from_slice(b"oops");
    bytes.extend(second);
    let bad = scratch.write("bad.jsonl.zst", bytes);
    let after = scratch.write("after.jsonl.gz", gzip(&findings(5001..=5010)));
    let out = server.pgsense(&db).arg("load").arg(&bad).arg(&after).run();
    out.assert_code(1);
    assert_eq!(
        damaged_after(&out, &bad.display().to_string(), "zstd"),
        1000
    );
    assert_table_is(server, &db, (1..=1000).chain(5001..=5010), &out);
}

/// A gzip file whose checksum does not match (a byte of its first line
/// changed, stored uncompressed so that it still decodes): the damage is
/// found only at the member's end, and the error says the lines before may
/// hold it, not that they are whole.
#[test]
fn a_gzip_checksum_that_does_not_match_says_the_lines_before_may_be_damaged() {
    let scratch = Scratch::new();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    encoder
        .write_all(findings(1..=20).as_bytes())
        .expect("compress");
    let mut bytes = encoder.finish().expect("compress");
    // Past the 10-byte header and the 5-byte stored block header: in the
    // first line's text.
    bytes[40] ^= 0x01;
    let bad = scratch.write("bad.jsonl.gz", bytes);
    let out = pgsense().args(["load", "--dry-run"]).arg(&bad).run();
    out.assert_code(1)
        .assert_stderr_contains("checksum")
        .assert_stderr_contains("the damage may be in them");
}

/// `load -v --state-file STATE FILE...`, run to its end.
fn cron(server: &PgServer, db: &str, state: &Path, files: &[PathBuf]) -> Outcome {
    server
        .pgsense(db)
        .arg("-v")
        .arg("load")
        .arg("--state-file")
        .arg(state)
        .args(files)
        .run()
}

/// What `findings.jsonl*` expands to in `dir`, as a shell sorts it.
fn glob(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("findings.jsonl"))
        })
        .collect();
    files.sort();
    files
}

/// Every row's lsn is distinct, and they are exactly `1..=last`.
#[track_caller]
fn assert_each_line_once(server: &PgServer, db: &str, last: u64, out: &Outcome) {
    let rows = server.count(db, TABLE) as u64;
    let distinct = server
        .query_one(db, &format!("select count(distinct lsn) from {TABLE}"))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("count");
    assert_eq!(
        (rows, distinct),
        (last, last),
        "rows and distinct lsn\n{}",
        out.describe()
    );
    assert_table_holds_after(server, db, 1..=last, Some(out));
}

/// The scanner's side: appends findings `from..=to` to `path`.
fn scan(path: &Path, from: u64, to: u64) {
    append(path, &findings(from..=to));
}

/// logrotate's `copytruncate`: `live` copied to `copy`, then truncated in
/// place, as the scanner keeps it open.
fn copytruncate(live: &Path, copy: &Path) {
    fs::copy(live, copy).expect("copy");
    OpenOptions::new()
        .write(true)
        .open(live)
        .and_then(|f| f.set_len(0))
        .expect("truncate");
}

/// logrotate's `compress` (with or without `delaycompress`), `rotate 4`:
/// the numbered files move up, the file is renamed to `.1` and a new one
/// created, and the `.1` (the one before, with delaycompress) becomes a
/// `.2.gz` (`.1.gz`): a new file whose content is one already tracked.
/// `late` runs just after the rename: the scanner writes to the renamed
/// file a moment longer (without delaycompress, what it writes after the
/// compression is lost: that is what delaycompress is for).
fn rotate(dir: &Path, delay: bool, late: impl FnOnce()) {
    let name = |suffix: &str| dir.join(format!("findings.jsonl{suffix}"));
    for n in (1..4).rev() {
        let from = name(&format!(".{n}.gz"));
        if from.exists() {
            fs::rename(&from, name(&format!(".{}.gz", n + 1))).expect("shift");
        }
    }
    let compress = |plain: &Path, packed: &Path| {
        let text = fs::read_to_string(plain).expect("read the rotated file");
        fs::write(packed, gzip(&text)).expect("compress");
        fs::remove_file(plain).expect("remove the compressed file");
    };
    if delay && name(".1").exists() {
        compress(&name(".1"), &name(".2.gz"));
    }
    fs::rename(name(""), name(".1")).expect("rename");
    fs::write(name(""), "").expect("create");
    late();
    if !delay {
        compress(&name(".1"), &name(".1.gz"));
    }
}

/// Cron runs between logrotate's rotations, with the scanner writing to the
/// renamed file a moment after the rotation: each line loads once.
fn logrotate_with_compress(delay: bool) {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let dir = scratch.path();
    let state = dir.join("state").join("pgsense-pg.state");
    fs::create_dir(state.parent().expect("parent")).expect("state dir");
    let live = dir.join("findings.jsonl");
    fs::write(&live, "").expect("create");
    let mut last = 0;
    for round in 0..6u64 {
        scan(&live, last + 1, last + 40 + round);
        last += 40 + round;
        let out = cron(server, &db, &state, &glob(dir));
        out.assert_code(0);
        assert_each_line_once(server, &db, last, &out);
        scan(&live, last + 1, last + 7);
        last += 7;
        // The scanner still holds the renamed file for a moment.
        let mut old = OpenOptions::new()
            .append(true)
            .open(&live)
            .expect("the scanner's handle");
        rotate(dir, delay, || {
            old.write_all(findings(last + 1..=last + 3).as_bytes())
                .expect("a late write");
        });
        last += 3;
        if round % 2 == 1 {
            let out = cron(server, &db, &state, &glob(dir));
            out.assert_code(0);
            assert_each_line_once(server, &db, last, &out);
        }
    }
    let out = cron(server, &db, &state, &glob(dir));
    out.assert_code(0);
    assert_each_line_once(server, &db, last, &out);
    // Nothing new: nothing read.
    cron(server, &db, &state, &glob(dir))
        .assert_code(0)
        .assert_stderr_contains("0 read, 0 inserted, 0 dropped");
}

#[test]
fn logrotate_compress_and_delaycompress_between_cron_runs_load_each_line_once() {
    logrotate_with_compress(true);
}

#[test]
fn logrotate_compress_between_cron_runs_loads_each_line_once() {
    logrotate_with_compress(false);
}

/// copytruncate, then a run given the file alone (it reads the truncated
/// file from its start, and its new lines replace the file's mark), then
/// the glob: the copy made before the truncation is still known by the
/// mark the file had, and not loaded again (each line once). The same
/// holds for --follow killed before it recorded the copy as loaded.
#[test]
fn a_copy_made_before_a_truncation_is_known_after_the_file_is_read_again() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let dir = scratch.path();
    let state = dir.join("state");
    let live = dir.join("findings.jsonl");
    fs::write(&live, findings(1..=50)).expect("create");
    cron(server, &db, &state, std::slice::from_ref(&live)).assert_code(0);
    copytruncate(&live, &dir.join("findings.jsonl.1"));
    scan(&live, 51, 60);
    cron(server, &db, &state, std::slice::from_ref(&live)).assert_code(0);
    let out = cron(server, &db, &state, &glob(dir));
    out.assert_code(0);
    assert_each_line_once(server, &db, 60, &out);
}

/// A copy of a loaded file under a name of its own (not a rotation's) is
/// taken for the file it copies, and said without -v: the same lines named
/// again are loaded once, and the user who meant them as new findings sees
/// why nothing was.
#[test]
fn a_copy_under_another_name_is_said_without_verbose() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let dir = scratch.path();
    let state = dir.join("state");
    let first = dir.join("same.ndjson");
    fs::write(&first, findings(1..=20)).expect("create");
    cron(server, &db, &state, std::slice::from_ref(&first)).assert_code(0);
    let second = dir.join("other.ndjson");
    fs::copy(&first, &second).expect("copy");
    let out = server
        .pgsense(&db)
        .arg("load")
        .arg("--state-file")
        .arg(&state)
        .arg(&second)
        .run();
    out.assert_code(0).assert_stderr_contains(&format!(
        "WARN: {}: a copy of {}",
        second.display(),
        first.display()
    ));
    assert_each_line_once(server, &db, 20, &out);
}

/// logrotate's `copytruncate` (then `compress` of the copy): the copy is a
/// new file whose start is what was loaded from the original; it resumes
/// where the original was loaded up to, and the truncated original is read
/// from its start.
#[test]
fn logrotate_copytruncate_between_cron_runs_loads_each_line_once() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let dir = scratch.path();
    let state = dir.join("state");
    let live = dir.join("findings.jsonl");
    fs::write(&live, findings(1..=50)).expect("create");
    cron(server, &db, &state, &glob(dir)).assert_code(0);
    scan(&live, 51, 60);
    copytruncate(&live, &dir.join("findings.jsonl.1"));
    scan(&live, 61, 65);
    let out = cron(server, &db, &state, &glob(dir));
    out.assert_code(0)
        .assert_stderr_contains("findings.jsonl.1: a copy of")
        .assert_stderr_contains("loading it from line 51");
    assert_each_line_once(server, &db, 65, &out);

    // The next rotation compresses the copy, and copies again.
    scan(&live, 66, 80);
    let text = fs::read_to_string(dir.join("findings.jsonl.1")).expect("read");
    fs::write(dir.join("findings.jsonl.2.gz"), gzip(&text)).expect("compress");
    fs::remove_file(dir.join("findings.jsonl.1")).expect("remove");
    fs::copy(&live, dir.join("findings.jsonl.1")).expect("copy");
    fs::write(&live, "").expect("truncate");
    scan(&live, 81, 90);
    let out = cron(server, &db, &state, &glob(dir));
    out.assert_code(0);
    assert_each_line_once(server, &db, 90, &out);
    cron(server, &db, &state, &glob(dir))
        .assert_code(0)
        .assert_stderr_contains("0 read, 0 inserted, 0 dropped");
}

/// A compressed file still being written (cut short now, whole later): the
/// lines before the cut load, and the next run resumes after them.
#[test]
fn a_gzip_file_still_being_written_resumes_in_the_next_run() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("state");
    let whole = gzip(&findings(1..=3000));
    let file = scratch.write("findings.jsonl.gz", &whole[..whole.len() / 2]);
    let out = cron(server, &db, &state, std::slice::from_ref(&file));
    out.assert_code(1);
    let lines = damaged_after(&out, &file.display().to_string(), "gzip");
    assert_table_holds(server, &db, 1..=lines);
    // The writer finishes it, in place.
    OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|mut f| f.write_all(&whole))
        .expect("finish the file");
    let out = cron(server, &db, &state, std::slice::from_ref(&file));
    out.assert_code(0);
    assert_each_line_once(server, &db, 3000, &out);
    cron(server, &db, &state, std::slice::from_ref(&file))
        .assert_code(0)
        .assert_stderr_contains("0 read, 0 inserted, 0 dropped");
}

/// Findings `markers`, the last one without its newline.
fn unterminated(markers: std::ops::RangeInclusive<u64>) -> String {
    let mut text = findings(markers);
    text.pop();
    text
}

/// A compressed file whose last line has no newline (regression: with
/// --state-file that line was "left for the next run", every run): its
/// stream ended properly, so the line is whole and loads, once.
#[test]
fn a_last_line_without_a_newline_in_a_compressed_file_loads_once() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("state");
    let files = [
        scratch.write("a.jsonl.gz", gzip(&unterminated(1..=3))),
        scratch.write("b.jsonl.zst", zstd(&unterminated(4..=6))),
    ];
    let out = cron(server, &db, &state, &files);
    out.assert_code(0)
        .assert_stderr_contains("6 read, 6 inserted, 0 dropped");
    assert!(!out.stderr.contains("no end yet"), "{}", out.describe());
    assert_each_line_once(server, &db, 6, &out);
    let out = cron(server, &db, &state, &files);
    out.assert_code(0)
        .assert_stderr_contains("0 read, 0 inserted, 0 dropped");
    assert_each_line_once(server, &db, 6, &out);
}

/// An invalid last line without a newline in a compressed file is
/// rejected with its file and line, like any other, and not read again.
#[test]
fn an_invalid_last_line_without_a_newline_in_a_compressed_file_is_rejected() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("state");
    let file = scratch.write("c.jsonl.zst", zstd(&(findings(1..=2) + "{\"lsn\": oops")));
    let files = std::slice::from_ref(&file);
    cron(server, &db, &state, files)
        .assert_code(65)
        .assert_stderr_contains(&format!("{}:3: invalid JSON", file.display()))
        .assert_stderr_contains("3 read, 2 inserted, 1 dropped");
    cron(server, &db, &state, files)
        .assert_code(0)
        .assert_stderr_contains("0 read, 0 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=2);
}

/// A gzip file cut short in its unterminated last line is damaged, not
/// ended: that line is not taken as it is; once the file is whole, it loads.
#[test]
fn a_compressed_file_cut_in_its_last_line_leaves_it_for_the_next_run() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("state");
    let whole = gzip(&unterminated(1..=3));
    let file = scratch.write("findings.jsonl.gz", &whole[..whole.len() - 12]);
    let files = std::slice::from_ref(&file);
    let out = cron(server, &db, &state, files);
    out.assert_code(1);
    assert_eq!(damaged_after(&out, &file.display().to_string(), "gzip"), 2);
    assert_table_holds(server, &db, 1..=2);
    fs::write(&file, &whole).expect("finish the file");
    let out = cron(server, &db, &state, files);
    out.assert_code(0)
        .assert_stderr_contains("1 read, 1 inserted, 0 dropped");
    assert_each_line_once(server, &db, 3, &out);
}

/// A compressed file new to the state file (neither tracked nor a copy of
/// a tracked file) loads from its start, also when the state file tracks
/// another file whose first bytes it is compared with first: that decodes
/// it past its start.
#[test]
fn a_new_compressed_file_loads_beside_a_tracked_one() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("state");
    let plain = scratch.write("findings.jsonl", findings(1..=100));
    cron(server, &db, &state, std::slice::from_ref(&plain)).assert_code(0);
    let packed = scratch.write("other.jsonl.gz", gzip(&findings(101..=200)));
    let out = cron(server, &db, &state, &[packed, plain]);
    out.assert_code(0);
    assert_each_line_once(server, &db, 200, &out);
}

/// A compressed copy of a file whose original this run reads too (logrotate
/// still compressing it): read once, from the original.
#[test]
fn a_compressed_copy_beside_its_original_is_read_once() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let dir = scratch.path();
    let state = dir.join("state");
    let rotated = scratch.write("findings.jsonl.1", findings(1..=100));
    cron(server, &db, &state, &glob(dir)).assert_code(0);
    scan(&rotated, 101, 120);
    // Half written, then whole: neither loads a line twice.
    let whole = gzip(&findings(1..=120));
    let packed = scratch.write("findings.jsonl.2.gz", &whole[..whole.len() / 2]);
    let out = cron(server, &db, &state, &glob(dir));
    out.assert_code(0);
    assert_each_line_once(server, &db, 120, &out);
    fs::write(&packed, &whole).expect("finish compressing");
    let out = cron(server, &db, &state, &glob(dir));
    out.assert_code(0)
        .assert_stderr_contains("0 read, 0 inserted, 0 dropped");
    fs::remove_file(&rotated).expect("remove the compressed file");
    let out = cron(server, &db, &state, &glob(dir));
    out.assert_code(0)
        .assert_stderr_contains("0 read, 0 inserted, 0 dropped");
    assert_each_line_once(server, &db, 120, &out);
}

/// kill -9 in the middle of a compressed file, after a batch was journaled
/// and after one committed: the next run settles the journal and resumes
/// in the decoded text, each line once.
#[test]
fn a_compressed_file_is_resumed_exactly_after_a_kill() {
    let server = shared();
    let scratch = Scratch::new();
    let input = scratch.write("findings.jsonl.gz", gzip(&findings(1..=20_000)));
    for point in ["journaled:6", "committed:7"] {
        let db = server.new_database();
        let state = scratch.path().join(format!("state-{point}"));
        let load = || {
            server
                .pgsense(&db)
                .arg("load")
                .args(["--batch-rows", "500"])
                .arg("--state-file")
                .arg(&state)
                .arg(&input)
        };
        let out = load().env("PGSENSE_PG_CRASH_AT", point).run();
        assert_eq!(out.code, None, "expected a kill\n{}", out.describe());
        let out = load().run();
        out.assert_code(0);
        assert_each_line_once(server, &db, 20_000, &out);
    }
}

/// Formats other than gzip and zstd (bzip2, xz, lz4, compress, lzip) are
/// told by their first bytes too, and refused in words that say what to
/// do: a file named is refused before anything connects (66, nothing
/// loaded), standard input when read (1); never read as text, a rejected
/// line for each.
#[test]
fn other_compressed_formats_are_refused_naming_them() {
    let server = shared();
    let db = server.new_database();
    crate::support::run::init(server, &db);
    let scratch = Scratch::new();
    let plain = scratch.write("plain.jsonl", findings(1..=3));
    let starts: [(&[u8], &str); 5] = [
        (b"BZh91AY&SY\x01\x02", "bzip2"),
        (b"\xfd7zXZ\x00\x00\x04", "xz"),
        (b"\x04\x22\x4d\x18\x64\x40", "lz4"),
        (b"\x1f\x9d\x90\x7b", "compress (.Z)"),
        (b"LZIP\x01\x0c", "lzip"),
    ];
    for (start, format) in starts {
        let said = format!("compressed with {format}, which pgsense-pg does not read");
        let file = scratch.write("findings.jsonl.x", start);
        let out = server.pgsense(&db).arg("load").arg(&plain).arg(&file).run();
        out.assert_code(66)
            .assert_stderr_contains(&file.display().to_string())
            .assert_stderr_contains(&said);
        assert_eq!(server.count(&db, TABLE), 0, "{}", out.describe());
        let out = server.pgsense(&db).arg("load").stdin(start).run();
        out.assert_code(1).assert_stderr_contains(&said);
        assert!(
            out.stderr.contains("0 read") && !out.stderr.contains("-:1:"),
            "read as text\n{}",
            out.describe()
        );
    }
}
