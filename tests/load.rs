//! `load` (issue 2, "Input" and "Accounting and reporting"): both input
//! shapes round-trip every column; every non-blank line ends inserted or
//! reported with its file, line number and reason; good lines around bad
//! ones go in; the summary and the exit status say which happened.

use serde_json::{Value, json};

use crate::support::findings::{assert_rows, ndjson, rows};
use crate::support::{Finding, Scratch, Shape, shared};

const TABLE: &str = "pgsense.findings";

#[test]
fn object_shape_round_trips_every_column() {
    let server = shared();
    let db = server.new_database();
    let findings: Vec<Finding> = (0..40).map(Finding::sample).collect();
    let out = server
        .pgsense(&db)
        .arg("load")
        .stdin(ndjson(0, 40, Shape::Object))
        .run();
    out.assert_code(0)
        .assert_stderr_contains("pgsense-pg: 40 read, 40 inserted, 0 dropped");
    assert!(out.reject_lines().is_empty(), "{}", out.describe());
    assert_rows(&rows(server, &db, TABLE), &findings);
}

/// The older shape: `primary_keys` pairs, often no timestamp (then the
/// column default now() applies).
#[test]
fn pairs_shape_round_trips_every_column() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let findings: Vec<Finding> = (0..40)
        .map(|i| {
            let mut finding = Finding::sample(i);
            if i.is_multiple_of(3) {
                finding.timestamp = None;
            }
            finding
        })
        .collect();
    let input: String = findings
        .iter()
        .map(|f| f.line(Shape::Pairs) + "\n")
        .collect();
    let before = server.query_one(&db, "select now()::text").expect("now()");
    let out = server.pgsense(&db).arg("load").stdin(input).run();
    out.assert_code(0)
        .assert_stderr_contains("40 read, 40 inserted, 0 dropped");
    assert_rows(&rows(server, &db, TABLE), &findings);
    // The 14 findings without a timestamp got the column default now():
    // no earlier than the load started, no later than now.
    let defaulted = server.query_one(
        &db,
        &format!(
            "select count(*) from {TABLE} \
             where detected_at >= '{before}'::timestamptz and detected_at <= now()"
        ),
    );
    assert_eq!(defaulted.as_deref(), Some("14"));
}

#[test]
fn mixed_shapes_in_one_input_round_trip() {
    let server = shared();
    let db = server.new_database();
    let findings: Vec<Finding> = (0..20).map(Finding::sample).collect();
    let input: String = findings
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let shape = if i.is_multiple_of(2) {
                Shape::Pairs
            } else {
                Shape::Object
            };
            f.line(shape) + "\n"
        })
        .collect();
    server
        .pgsense(&db)
        .arg("load")
        .stdin(input)
        .run()
        .assert_code(0);
    assert_rows(&rows(server, &db, TABLE), &findings);
}

/// Everything the format allows that is not the plain case: a byte-order
/// mark, CRLF, blank lines (skipped and not counted, but counted for line
/// numbers), severity in any case, unknown fields, identical lines (not
/// deduplicated), `detected_at` for `timestamp`, a non-UTC offset, an empty
/// `primary_keys`, both key shapes present and agreeing, no final newline.
#[test]
fn every_accepted_variant_is_loaded() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();

    let mut expected = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    let mut push = |finding: Finding, json: Value, expected: &mut Vec<Finding>| {
        lines.push(json.to_string());
        expected.push(finding);
    };

    let f = Finding::sample(1);
    push(f.clone(), f.to_json(Shape::Object), &mut expected);

    let mut f = Finding::sample(2);
    f.severity = "high".into();
    push(f.clone(), f.to_json(Shape::Object), &mut expected);

    let mut f = Finding::sample(3);
    f.severity = "Critical".into();
    let mut json = f.to_json(Shape::Object);
    json["scanner_version"] = json!("9.9");
    json["extra"] = json!({"nested": [1, 2, {"deep": null}]});
    push(f.clone(), json.clone(), &mut expected);
    push(f.clone(), json, &mut expected);

    let mut f = Finding::sample(5);
    f.severity = "info".into();
    let mut json = f.to_json(Shape::Object);
    let timestamp = json
        .as_object_mut()
        .and_then(|o| o.remove("timestamp"))
        .expect("sample has a timestamp");
    json["detected_at"] = timestamp;
    push(f.clone(), json, &mut expected);

    let mut f = Finding::sample(6);
    f.timestamp = Some("2024-03-01T12:00:00.5+02:00".into());
    push(f.clone(), f.to_json(Shape::Object), &mut expected);
    // The same instant in UTC is what the row must hold.
    expected.last_mut().expect("just pushed").timestamp =
        Some("2024-03-01T10:00:00.500000+00:00".into());

    let mut f = Finding::sample(8);
    f.primary_key.clear();
    let mut json = f.to_json(Shape::Pairs);
    json["primary_keys"] = json!([]);
    push(f.clone(), json, &mut expected);

    let f = Finding::sample(9);
    let mut json = f.to_json(Shape::Object);
    json["primary_keys"] = f.to_json(Shape::Pairs)["primary_keys"].clone();
    push(f.clone(), json, &mut expected);

    let mut f = Finding::sample(10);
    f.timestamp = None;
    f.severity = "lOw".into();
    push(f.clone(), f.to_json(Shape::Object), &mut expected);

    // Physical layout: BOM, CRLF on the first lines, blank lines (empty
    // and CRLF-only) between, no newline after the last.
    let mut text = String::from("\u{feff}");
    for (i, line) in lines.iter().enumerate() {
        text.push_str(line);
        if i + 1 == lines.len() {
            break;
        }
        text.push_str(if i < 3 { "\r\n" } else { "\n" });
        if i == 0 {
            text.push_str("\r\n");
        }
        if i == 4 {
            text.push_str("\n\n");
        }
    }
    let file = scratch.write("variants.ndjson", text);

    let out = server.pgsense(&db).arg("load").arg(&file).run();
    out.assert_code(0).assert_stderr_contains(&format!(
        "{n} read, {n} inserted, 0 dropped",
        n = expected.len()
    ));
    assert_rows(&rows(server, &db, TABLE), &expected);
}

/// A good line, a bad line, and what the bad line's report must mention.
struct BadLine {
    text: Vec<u8>,
    /// Words the reason must contain (e.g. the field's name).
    reason_mentions: &'static [&'static str],
    what: &'static str,
}

fn bad(what: &'static str, text: impl Into<Vec<u8>>, mentions: &'static [&'static str]) -> BadLine {
    BadLine {
        text: text.into(),
        reason_mentions: mentions,
        what,
    }
}

/// A sample finding's JSON with `edit` applied.
fn edited(i: u64, shape: Shape, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut json = Finding::sample(i).to_json(shape);
    edit(json.as_object_mut().expect("an object"));
    json.to_string()
}

const STRING_FIELDS: [&str; 9] = [
    "database",
    "rule_id",
    "description",
    "category",
    "severity",
    "schema_name",
    "table_name",
    "column_name",
    "masked_sample",
];

/// Every kind of bad line, with what stderr must say about it.
// A list of cases, one after the other: split, it would only be harder to
// see that none is missing.
#[allow(clippy::too_many_lines)]
fn bad_lines() -> Vec<BadLine> {
    let mut lines = vec![
        bad("invalid JSON", "{\"database\": \"x\", ", &[]),
        bad("not JSON at all", "hello world", &[]),
        bad(
            "trailing garbage",
            Finding::sample(0).line(Shape::Object) + " x",
            &[],
        ),
        bad("an array", "[1, 2, 3]", &[]),
        bad("a string", "\"finding\"", &[]),
        bad("a number", "42", &[]),
        bad("null", "null", &[]),
    ];
    for field in STRING_FIELDS {
        lines.push(bad(
            "a missing field",
            edited(1, Shape::Object, |o| {
                o.remove(field);
            }),
            &[],
        ));
        lines.push(bad(
            "a number where a string belongs",
            edited(2, Shape::Object, |o| {
                o.insert(field.into(), json!(7));
            }),
            &[],
        ));
    }
    lines.extend([
        bad(
            "a missing lsn",
            edited(3, Shape::Object, |o| {
                o.remove("lsn");
            }),
            &["lsn"],
        ),
        bad(
            "a null field",
            edited(3, Shape::Object, |o| {
                o.insert("rule_id".into(), Value::Null);
            }),
            &["rule_id"],
        ),
        bad(
            "an object where a string belongs",
            edited(3, Shape::Object, |o| {
                o.insert("masked_sample".into(), json!({"a": "b"}));
            }),
            &["masked_sample"],
        ),
        bad(
            "a boolean where a string belongs",
            edited(3, Shape::Object, |o| {
                o.insert("description".into(), json!(true));
            }),
            &["description"],
        ),
        bad(
            "an unknown severity",
            edited(4, Shape::Object, |o| {
                o.insert("severity".into(), json!("SEVERE"));
            }),
            &["severity"],
        ),
        bad(
            "an lsn string that is not an LSN",
            edited(4, Shape::Object, |o| {
                o.insert("lsn".into(), json!("soon"));
            }),
            &["lsn"],
        ),
        bad(
            "a negative lsn",
            edited(4, Shape::Object, |o| {
                o.insert("lsn".into(), json!(-1));
            }),
            &["lsn"],
        ),
        bad(
            "a NUL in masked_sample",
            edited(5, Shape::Object, |o| {
                o.insert("masked_sample".into(), json!("ab\u{0}cd"));
            }),
            &[],
        ),
        bad(
            "a NUL in database",
            edited(5, Shape::Object, |o| {
                o.insert("database".into(), json!("\u{0}"));
            }),
            &[],
        ),
        bad(
            "a NUL in a primary key value",
            edited(5, Shape::Object, |o| {
                o.insert("primary_key".into(), json!({"id": "4\u{0}2"}));
            }),
            &[],
        ),
        bad(
            "a NUL in a primary key name",
            edited(5, Shape::Pairs, |o| {
                o.insert("primary_keys".into(), json!([["i\u{0}d", "42"]]));
            }),
            &[],
        ),
        bad(
            "primary_key not an object",
            edited(6, Shape::Object, |o| {
                o.insert("primary_key".into(), json!("id=42"));
            }),
            &["primary_key"],
        ),
        bad(
            "primary_keys not an array",
            edited(6, Shape::Pairs, |o| {
                o.insert("primary_keys".into(), json!({"id": "42"}));
            }),
            &["primary_keys"],
        ),
        bad(
            "a primary_keys pair of one",
            edited(6, Shape::Pairs, |o| {
                o.insert("primary_keys".into(), json!([["id"]]));
            }),
            &["primary_keys"],
        ),
        bad(
            "a primary_keys pair with a non-string name",
            edited(6, Shape::Pairs, |o| {
                o.insert("primary_keys".into(), json!([[1, "42"]]));
            }),
            &["primary_keys"],
        ),
        bad(
            "primary_key and primary_keys disagreeing",
            edited(6, Shape::Object, |o| {
                o.insert("primary_key".into(), json!({"id": "1"}));
                o.insert("primary_keys".into(), json!([["id", "2"]]));
            }),
            &[],
        ),
        bad(
            "a timestamp that is not a time",
            edited(7, Shape::Object, |o| {
                o.insert("timestamp".into(), json!("yesterday at noon"));
            }),
            &[],
        ),
        bad(
            "a timestamp that is a number",
            edited(7, Shape::Object, |o| {
                o.insert("timestamp".into(), json!(1_700_000_000));
            }),
            &[],
        ),
    ]);
    // Invalid UTF-8 inside a string value.
    let mut invalid_utf8 = Finding::sample(8).line(Shape::Object).into_bytes();
    let at = invalid_utf8
        .windows(8)
        .position(|w| w == b"\"rule_id")
        .expect("rule_id in the line")
        + 11;
    invalid_utf8.splice(at..at, [0xff, 0xfe, 0xc3]);
    lines.push(bad("invalid UTF-8", invalid_utf8, &[]));
    lines
}

/// Each kind of bad line is dropped and reported with its line number and a
/// reason, while the good lines around it are inserted; exit 65.
#[test]
fn each_kind_of_bad_line_is_reported_with_its_line_number() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();

    let bad_lines = bad_lines();
    let mut text: Vec<u8> = Vec::new();
    let mut good = Vec::new();
    let mut bad_at = Vec::new(); // (line number, BadLine)
    let mut line_number = 0u64;
    let mut next_good = 100u64;
    let mut push_good = |text: &mut Vec<u8>, line_number: &mut u64, good: &mut Vec<Finding>| {
        let finding = Finding::sample(next_good);
        next_good += 1;
        text.extend_from_slice(finding.line(Shape::Object).as_bytes());
        text.push(b'\n');
        *line_number += 1;
        good.push(finding);
    };
    for (i, bad) in bad_lines.iter().enumerate() {
        push_good(&mut text, &mut line_number, &mut good);
        if i.is_multiple_of(5) {
            text.push(b'\n'); // a blank line still counts for numbering
            line_number += 1;
        }
        text.extend_from_slice(&bad.text);
        text.push(b'\n');
        line_number += 1;
        bad_at.push((line_number, bad));
    }
    push_good(&mut text, &mut line_number, &mut good);
    scratch.write("mixed.ndjson", &text);

    // The path exactly as given on the command line: relative here.
    let out = server
        .pgsense(&db)
        .current_dir(scratch.path())
        .args(["load", "mixed.ndjson"])
        .run();
    out.assert_code(65);
    let expected_numbers: Vec<u64> = bad_at.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        out.rejected_line_numbers("mixed.ndjson"),
        expected_numbers,
        "reported line numbers\n{}",
        out.describe()
    );
    for (number, bad) in &bad_at {
        let reason = out.reject_reason("mixed.ndjson", *number);
        assert!(
            !reason.trim().is_empty(),
            "line {number} ({}) has no reason",
            bad.what
        );
        for word in bad.reason_mentions {
            assert!(
                reason.contains(word),
                "the reason for line {number} ({}) should mention {word:?}: {reason:?}",
                bad.what
            );
        }
    }
    let total = good.len() + bad_at.len();
    out.assert_stderr_contains(&format!(
        "{total} read, {} inserted, {} dropped",
        good.len(),
        bad_at.len()
    ));
    assert_rows(&rows(server, &db, TABLE), &good);
}

/// A missing field or a wrongly typed one is named in the reason.
#[test]
fn reasons_name_the_missing_or_mistyped_field() {
    let server = shared();
    let db = server.new_database();
    let mut input = String::new();
    for field in STRING_FIELDS {
        input += &edited(1, Shape::Object, |o| {
            o.remove(field);
        });
        input.push('\n');
        input += &edited(1, Shape::Object, |o| {
            o.insert(field.into(), json!(["x"]));
        });
        input.push('\n');
    }
    let out = server.pgsense(&db).arg("load").stdin(input).run();
    out.assert_code(65);
    for (i, field) in STRING_FIELDS.iter().enumerate() {
        for line in [2 * i as u64 + 1, 2 * i as u64 + 2] {
            let reason = out.reject_reason("-", line);
            assert!(
                reason.contains(field),
                "reason for line {line} should name {field}: {reason:?}"
            );
        }
    }
    assert_eq!(server.count(&db, TABLE), 0);
}

/// lsn as PostgreSQL's text form "HIGH/LOW" (hex) and as a number up to
/// the BIGINT maximum; anything out of range, negative or fractional is
/// rejected, never wrapped or rounded.
#[test]
fn textual_and_out_of_range_lsn() {
    let server = shared();
    let db = server.new_database();
    let accepted: [(Value, i64); 7] = [
        (json!("16/B374D848"), 0x16_B374_D848),
        (json!("16/b374d848"), 0x16_B374_D848),
        (json!("0/0"), 0),
        (json!("0/1"), 1),
        (json!("7FFFFFFF/FFFFFFFF"), i64::MAX),
        (json!(0), 0),
        (json!(9_223_372_036_854_775_807u64), i64::MAX),
    ];
    let rejected: [&str; 11] = [
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "1.5",
        "\"80000000/00000000\"",
        "\"FFFFFFFF/FFFFFFFF\"",
        "\"100000000/0\"",
        "\"16/\"",
        "\"/B374D848\"",
        "\"16-B374D848\"",
    ];
    let mut input = String::new();
    let mut expected = Vec::new();
    for (i, (lsn, value)) in accepted.iter().enumerate() {
        let mut finding = Finding::sample(i as u64);
        input += &edited(i as u64, Shape::Object, |o| {
            o.insert("lsn".into(), lsn.clone());
        });
        input.push('\n');
        finding.lsn = *value as u64;
        expected.push(finding);
    }
    for lsn in rejected {
        // Spliced in as raw text: serde_json would not keep the
        // out-of-range numbers as written.
        let line = edited(0, Shape::Object, |o| {
            o.insert("lsn".into(), json!("LSN"));
        })
        .replace("\"LSN\"", lsn);
        input += &line;
        input.push('\n');
    }
    let out = server.pgsense(&db).arg("load").stdin(input).run();
    out.assert_code(65);
    let first_rejected = accepted.len() as u64 + 1;
    let expected_numbers: Vec<u64> =
        (first_rejected..first_rejected + rejected.len() as u64).collect();
    assert_eq!(
        out.rejected_line_numbers("-"),
        expected_numbers,
        "{}",
        out.describe()
    );
    for line in expected_numbers {
        let reason = out.reject_reason("-", line);
        assert!(reason.contains("lsn"), "line {line}: {reason:?}");
    }
    assert_rows(&rows(server, &db, TABLE), &expected);
}

/// A line the server refuses (a CHECK constraint the user added) is
/// dropped with its line number; the others go in; exit 65.
#[test]
fn a_row_the_server_refuses_gives_65_and_the_others_are_in() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    server.execute(
        &db,
        "alter table pgsense.findings add constraint no_refusals check (rule_id <> 'refuse-me')",
    );
    let mut input = String::new();
    let mut good = Vec::new();
    for i in 0..12u64 {
        let mut finding = Finding::sample(i);
        if i == 2 || i == 7 || i == 11 {
            finding.rule_id = "refuse-me".into();
        } else {
            good.push(finding.clone());
        }
        input += &finding.line(Shape::Object);
        input.push('\n');
    }
    let out = server.pgsense(&db).arg("load").stdin(input).run();
    out.assert_code(65)
        .assert_stderr_contains("12 read, 9 inserted, 3 dropped");
    assert_eq!(
        out.rejected_line_numbers("-"),
        vec![3, 8, 12],
        "{}",
        out.describe()
    );
    assert!(
        out.reject_reason("-", 3).contains("no_refusals"),
        "the server's reason names the constraint\n{}",
        out.describe()
    );
    assert_rows(&rows(server, &db, TABLE), &good);
}

/// A line over --max-line-bytes is dropped with its number, and numbering
/// and loading go on after it.
#[test]
fn an_overlong_line_is_dropped_and_the_rest_goes_on() {
    let server = shared();
    let db = server.new_database();
    let mut huge = Finding::sample(1);
    huge.description = "x".repeat(3 * 1024 * 1024);
    let mut just_fits = Finding::sample(2);
    just_fits.description = String::new();
    let fits_line = just_fits.line(Shape::Object);
    let input = format!(
        "{}\n{}\n{}\n{}\n",
        Finding::sample(0).line(Shape::Object),
        huge.line(Shape::Object),
        fits_line,
        Finding::sample(3).line(Shape::Object),
    );
    let out = server
        .pgsense(&db)
        .arg("load")
        .args(["--max-line-bytes", &fits_line.len().max(2000).to_string()])
        .stdin(input)
        .run();
    out.assert_code(65)
        .assert_stderr_contains("4 read, 3 inserted, 1 dropped");
    assert_eq!(
        out.rejected_line_numbers("-"),
        vec![2],
        "{}",
        out.describe()
    );
    assert_rows(
        &rows(server, &db, TABLE),
        &[Finding::sample(0), just_fits, Finding::sample(3)],
    );
}

/// The default --max-line-bytes is 1 MiB.
#[test]
fn the_default_line_limit_is_one_mebibyte() {
    let server = shared();
    let db = server.new_database();
    let mut big = Finding::sample(1);
    big.description = "y".repeat(900 * 1024);
    let mut too_big = Finding::sample(2);
    too_big.description = "z".repeat(1024 * 1024);
    let input = format!(
        "{}\n{}\n",
        big.line(Shape::Object),
        too_big.line(Shape::Object)
    );
    let out = server.pgsense(&db).arg("load").stdin(input).run();
    out.assert_code(65);
    assert_eq!(
        out.rejected_line_numbers("-"),
        vec![2],
        "{}",
        out.describe()
    );
    assert_rows(&rows(server, &db, TABLE), &[big]);
}

/// After the first 100 dropped lines, further ones are only counted, and
/// the summary says how many were not shown.
#[test]
fn only_the_first_hundred_dropped_lines_are_shown() {
    let server = shared();
    let db = server.new_database();
    let mut input = String::new();
    for i in 0..160u64 {
        if i.is_multiple_of(4) {
            input += &Finding::sample(i).line(Shape::Object);
        } else {
            input += "{broken";
        }
        input.push('\n');
    }
    let out = server.pgsense(&db).arg("load").stdin(input).run();
    out.assert_code(65)
        .assert_stderr_contains("160 read, 40 inserted, 120 dropped");
    assert_eq!(out.reject_lines().len(), 100, "{}", out.describe());
    let reject_lines = out.reject_lines();
    let not_shown = out
        .stderr
        .lines()
        .filter(|line| !reject_lines.contains(line))
        .any(|line| {
            line.split(|c: char| !c.is_ascii_digit())
                .any(|number| number == "20")
        });
    assert!(
        not_shown,
        "the summary says 20 were not shown\n{}",
        out.describe()
    );
    assert_eq!(server.count(&db, TABLE), 40);
}

/// -q: no per-line reasons, no summary; the exit status still tells.
#[test]
fn quiet_prints_nothing_but_the_exit_status_tells() {
    let server = shared();
    let db = server.new_database();
    let input = format!("{}\n{{broken\n", Finding::sample(0).line(Shape::Object));
    let out = server.pgsense(&db).args(["-q", "load"]).stdin(input).run();
    out.assert_code(65);
    assert_eq!(out.stderr, "", "{}", out.describe());
    assert_eq!(out.stdout, "", "{}", out.describe());
    assert_eq!(server.count(&db, TABLE), 1);
}

/// stdin (`-`) and several files in one run: each reported with its own
/// name and its own line numbers, all loaded.
#[test]
fn stdin_and_several_files_have_their_own_line_numbers() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let line = |i: u64| Finding::sample(i).line(Shape::Object) + "\n";
    let first = scratch.write("first.ndjson", format!("{}{{bad\n{}", line(0), line(1)));
    let second = scratch.write("second.ndjson", format!("[]\n{}\n{}", line(5), line(6)));
    let stdin = format!("{}{}not json\n{}", line(2), line(3), line(4));
    let out = server
        .pgsense(&db)
        .arg("load")
        .arg(&first)
        .arg("-")
        .arg(&second)
        .stdin(stdin)
        .run();
    out.assert_code(65)
        .assert_stderr_contains("10 read, 7 inserted, 3 dropped");
    let first = first.display().to_string();
    let second = second.display().to_string();
    assert_eq!(
        out.rejected_line_numbers(&first),
        vec![2],
        "{}",
        out.describe()
    );
    assert_eq!(
        out.rejected_line_numbers("-"),
        vec![3],
        "{}",
        out.describe()
    );
    assert_eq!(
        out.rejected_line_numbers(&second),
        vec![1],
        "{}",
        out.describe()
    );
    assert_eq!(out.reject_lines().len(), 3, "{}", out.describe());
    let findings: Vec<Finding> = (0..7).map(Finding::sample).collect();
    assert_rows(&rows(server, &db, TABLE), &findings);
}

#[test]
fn no_file_reads_stdin() {
    let server = shared();
    let db = server.new_database();
    let out = server
        .pgsense(&db)
        .arg("load")
        .stdin(ndjson(0, 3, Shape::Object) + "oops\n")
        .run();
    out.assert_code(65);
    assert_eq!(out.rejected_line_numbers("-"), vec![4]);
    assert_eq!(server.count(&db, TABLE), 3);
}

#[test]
fn empty_input_loads_nothing_and_succeeds() {
    let server = shared();
    let db = server.new_database();
    let out = server.pgsense(&db).arg("load").stdin("\n\r\n\n").run();
    out.assert_code(0)
        .assert_stderr_contains("0 read, 0 inserted, 0 dropped");
    assert_eq!(server.count(&db, TABLE), 0);
}

/// A larger input goes in whole, whatever the batching.
#[test]
fn a_few_thousand_findings_all_go_in() {
    let server = shared();
    let db = server.new_database();
    let out = server
        .pgsense(&db)
        .arg("load")
        .stdin(ndjson(0, 12_000, Shape::Object))
        .run();
    out.assert_code(0)
        .assert_stderr_contains("12000 read, 12000 inserted, 0 dropped");
    assert_eq!(server.count(&db, TABLE), 12_000);
    assert_eq!(
        server.query_one(&db, "select count(distinct lsn) from pgsense.findings"),
        Some("12000".to_owned())
    );
}
