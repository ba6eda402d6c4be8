use super::*;
use crate::load::batch::tests::line;

fn kind(buf: &[u8], at_start: bool) -> String {
    match classify(&Line::Text, buf, at_start, &mut Scratch::new()) {
        Kind::TooLong { length } => format!("too long {length}"),
        Kind::Blank => "blank".into(),
        Kind::Invalid { raw, reason } => {
            format!("invalid {:?}: {reason}", String::from_utf8_lossy(raw))
        }
        Kind::Finding { raw, finding } => {
            format!("finding {} {}", finding.lsn(), raw.len())
        }
    }
}

#[test]
fn blank_lines_are_not_findings() {
    assert_eq!(kind(b"\n", false), "blank");
    assert_eq!(kind(b" \t\r\n", false), "blank");
    assert_eq!(kind(b"", false), "blank");
    assert_eq!(kind(b"\xEF\xBB\xBF\n", true), "blank");
    // Not JSON's white space.
    assert!(kind(b"\x0c\n", false).starts_with("invalid"));
    assert!(kind(b"\x0b\n", false).starts_with("invalid"));
}

#[test]
fn a_bom_is_skipped_at_the_start_of_an_input_only() {
    let text = format!("\u{feff}{}\n", line(5));
    let bare = line(5).len() + 1;
    assert_eq!(kind(text.as_bytes(), true), format!("finding 5 {bare}"));
    assert!(kind(text.as_bytes(), false).starts_with("invalid"));
}

#[test]
fn valid_and_invalid_lines_keep_their_raw_bytes() {
    let text = format!("{}\r\n", line(9));
    assert_eq!(
        kind(text.as_bytes(), false),
        format!("finding 9 {}", text.len())
    );
    let invalid = kind(b"{\"lsn\": 1\n", false);
    assert!(
        invalid.starts_with("invalid \"{\\\"lsn\\\": 1\\n\": invalid JSON"),
        "{invalid}"
    );
}

#[test]
fn too_long_lines_are_classified_before_parsing() {
    let next = Line::TooLong {
        length: 10,
        consumed: 11,
        terminated: true,
    };
    assert!(matches!(
        classify(&next, b"", false, &mut Scratch::new()),
        Kind::TooLong { length: 10 }
    ));
}
