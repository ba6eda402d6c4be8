//! The exit statuses are defined once, in `pgsense_pg::exit::STATUSES`
//! (issue 9): `--help`, the man page and README.md's table each list every
//! code of it, in its order, and no other, each with its text.

use std::path::Path;

use pgsense_pg::exit::{Documented, STATUSES, codes_text};

use crate::generated::man_sentence;
use crate::support::pgsense;

/// One documented status as a source lists it: its codes ("130, 143") and
/// its text.
#[derive(Debug, PartialEq)]
struct Listed {
    codes: String,
    text: String,
}

/// Asserts that `listed` are the entries of STATUSES, in order, each with
/// the text `text` gives for it.
#[track_caller]
fn assert_lists_every_status(source: &str, listed: &[Listed], text: fn(&Documented) -> String) {
    let expected: Vec<Listed> = STATUSES
        .iter()
        .map(|entry| Listed {
            codes: codes_text(entry),
            text: text(entry),
        })
        .collect();
    let rows: String = expected
        .iter()
        .map(|entry| format!("| {} | {} |\n", entry.codes, entry.text))
        .collect();
    assert_eq!(
        listed, expected,
        "{source} does not list exactly the exit statuses of src/exit.rs; it should list:\n{rows}"
    );
}

/// The "Exit status:" block of `--help`: `  CODES  brief` lines.
#[test]
fn help_lists_every_exit_status() {
    let out = pgsense().arg("--help").run();
    out.assert_code(0);
    let block = out
        .stdout
        .split_once("\nExit status:\n")
        .unwrap_or_else(|| panic!("no \"Exit status:\" in --help\n{}", out.describe()))
        .1;
    let mut listed: Vec<Listed> = Vec::new();
    for line in block.lines().take_while(|line| line.starts_with("  ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let codes = words
            .iter()
            .take_while(|w| w.trim_end_matches(',').bytes().all(|b| b.is_ascii_digit()))
            .count();
        match listed.last_mut() {
            // A brief wrapped onto the next line.
            Some(last) if codes == 0 => last.text = format!("{} {}", last.text, words.join(" ")),
            _ => listed.push(Listed {
                codes: words[..codes].join(" "),
                text: words[codes..].join(" "),
            }),
        }
    }
    assert_lists_every_status("--help", &listed, |entry| entry.brief.to_owned());
}

/// The EXIT STATUS section of the checked-in man page: `.TP`, the codes in
/// bold, the detail as a sentence.
#[test]
fn man_page_lists_every_exit_status() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("man/pgsense-pg.1");
    let page =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let section = page
        .split_once(".SH \"EXIT STATUS\"\n")
        .map(|(_, rest)| rest.split("\n.SH ").next().unwrap_or(rest))
        .unwrap_or_else(|| panic!("no EXIT STATUS section in {}", path.display()));
    let listed: Vec<Listed> = section
        .split(".TP\n")
        .filter(|paragraph| !paragraph.trim().is_empty())
        .map(|paragraph| {
            let (codes, text) = paragraph.split_once('\n').unwrap_or((paragraph, ""));
            let unroff = |roff: &str| {
                roff.replace("\\fB", "")
                    .replace("\\fR", "")
                    .replace("\\-", "-")
                    .replace("\\&", "")
                    .replace("\\e", "\\")
            };
            Listed {
                codes: unroff(codes),
                text: unroff(&text.split_whitespace().collect::<Vec<_>>().join(" ")),
            }
        })
        .collect();
    assert_lists_every_status("man/pgsense-pg.1", &listed, |entry| {
        man_sentence(entry.detail)
    });
}

/// The `| code | meaning |` table under "## Reporting and exit status":
/// each row's text is the entry's detail, word for word.
#[test]
fn readme_lists_every_exit_status() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let section = readme
        .split_once("\n## Reporting and exit status\n")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .expect("README.md has a section \"## Reporting and exit status\"");
    let table = section
        .split_once("\n| code | meaning |\n|---|---|\n")
        .expect("the section has a table | code | meaning |")
        .1;
    let listed: Vec<Listed> = table
        .lines()
        .take_while(|line| line.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 4, "a row of two cells: {row:?}");
            Listed {
                codes: cells[1].to_owned(),
                text: cells[2].to_owned(),
            }
        })
        .collect();
    assert_lists_every_status("README.md", &listed, |entry| entry.detail.to_owned());
}
