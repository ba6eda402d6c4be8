use super::*;

const GOOD: &str = r#"{"database":"primary/orders","rule_id":"email-address","description":"Email addresses","category":"PII","severity":"HIGH","schema_name":"public","table_name":"users","column_name":"contact","masked_sample":"ja****om","primary_key":{"id":"42"},"lsn":1234567,"timestamp":"2026-11-27T10:15:02.123456789+00:00"}"#;

fn with(field: &str, value: &str) -> String {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(GOOD).unwrap();
    if value.is_empty() {
        object.remove(field);
    } else {
        object.insert(field.into(), serde_json::from_str(value).unwrap());
    }
    serde_json::to_string(&object).unwrap()
}

fn reason(line: &str) -> String {
    parse_line(line.as_bytes()).unwrap_err().0
}

#[test]
fn parses_the_reference_example() {
    let f = parse_line(GOOD.as_bytes()).unwrap();
    assert_eq!(f.database, "primary/orders");
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.primary_key, vec![("id".into(), "42".into())]);
    assert_eq!(f.lsn, 1234567);
    assert_eq!(f.detected_at, Some(849_089_702_123_457));
    assert!(matches!(f.masked_sample, Cow::Borrowed(_)));
}

#[test]
fn accepts_pairs_and_agreeing_duplicates() {
    let line = with("primary_keys", r#"[["id","42"]]"#);
    let f = parse_line(line.as_bytes()).unwrap();
    assert_eq!(f.primary_key.len(), 1, "object shape wins when both agree");
    let line = with("primary_keys", r#"[["id","43"]]"#);
    assert!(reason(&line).contains("disagree"));
    let line = with("primary_key", "");
    let line = line.replace("\"lsn\"", r#""primary_keys":[["a","1"],["b","2"]],"lsn""#);
    assert_eq!(parse_line(line.as_bytes()).unwrap().primary_key.len(), 2);
}

#[test]
fn duplicate_key_columns_few_or_many() {
    let pairs = |n: usize, dup: bool| {
        let mut list: Vec<String> = (0..n).map(|i| format!(r#"["c{i}","v"]"#)).collect();
        if dup {
            list.push(r#"["c1","w"]"#.into());
        }
        with("primary_key", "").replace(
            "\"lsn\"",
            &format!(r#""primary_keys":[{}],"lsn""#, list.join(",")),
        )
    };
    for n in [3, 5000] {
        assert!(parse_line(pairs(n, false).as_bytes()).is_ok(), "{n}");
        assert!(
            reason(&pairs(n, true)).contains("field `primary_keys`: column \"c1\" appears twice"),
            "{n}"
        );
    }
}

#[test]
fn lsn_forms_and_limits() {
    let lsn = |v: &str| parse_line(with("lsn", v).as_bytes()).map(|f| f.lsn);
    assert_eq!(lsn(r#""16/B374D848""#), Ok(0x16_B374_D848));
    assert_eq!(lsn("9223372036854775807"), Ok(i64::MAX));
    assert!(lsn("9223372036854775808").unwrap_err().0.contains("BIGINT"));
    assert!(
        lsn("18446744073709551616")
            .unwrap_err()
            .0
            .contains("BIGINT")
    );
    assert!(
        lsn("123456789012345678901234567890")
            .unwrap_err()
            .0
            .contains("an integer of about 1.2e29 is above 9223372036854775807")
    );
    // Read as 2^63 by serde_json: the message does not say it is above.
    let reason = lsn("9223372036854775807.0").unwrap_err().0;
    assert!(
        reason.contains("written with a fraction or an exponent, or above"),
        "{reason}"
    );
    assert!(lsn("-1").unwrap_err().0.contains("negative"));
    assert!(lsn("1.5").unwrap_err().0.contains("not as an integer"));
    assert!(lsn("1.0").unwrap_err().0.contains("not as an integer"));
    assert!(
        lsn("1e3")
            .unwrap_err()
            .0
            .contains("written with a fraction or an exponent (a value of 1000)")
    );
    assert!(lsn("-0").unwrap_err().0.contains("-0 has a minus sign"));
    assert!(lsn(r#""FFFFFFFF/0""#).unwrap_err().0.contains("BIGINT"));
    assert!(lsn(r#""16/""#).unwrap_err().0.contains("textual LSN"));
    assert!(lsn(r#""1/123456789""#).is_err());
    assert!(lsn("true").unwrap_err().0.contains("field `lsn`"));
}

#[test]
fn rejects_wrong_types_and_missing_fields() {
    assert_eq!(
        reason(&with("rule_id", "")),
        "missing field `rule_id`",
        "a missing field is named"
    );
    assert!(reason(&with("masked_sample", "5")).starts_with("field `masked_sample`: invalid type"));
    assert!(reason(&with("primary_key", r#"{"id":42}"#)).contains("value of column \"id\""));
    assert!(reason("[1,2]").contains("invalid type"));
    let truncated = reason("{\"database\":");
    assert!(truncated.starts_with("invalid JSON"), "{truncated}");
    assert!(
        reason(&GOOD.replace("\"lsn\"", "\"lsn\":1,\"lsn\"")).contains("duplicate field `lsn`")
    );
    let nulls = GOOD.replace("\"lsn\"", "\"timestamp\":null,\"lsn\"");
    assert!(reason(&nulls).contains("duplicate field `timestamp`"));
    let null_object =
        with("primary_key", "null").replace("\"lsn\"", r#""primary_keys":[["id","1"]],"lsn""#);
    let f = parse_line(null_object.as_bytes()).expect("a null primary_key is absent");
    assert_eq!(f.primary_key, vec![("id".into(), "1".into())]);
}

#[test]
fn unknown_fields_are_ignored_whatever_their_names_hold() {
    // A lone surrogate escape is no string a field of a finding has: in an
    // unknown field's name, as in its value, it is ignored with the field.
    for extra in [r#""x\ud800y":1,"#, r#""xy":"a\udc00","#] {
        let line = GOOD.replace("\"lsn\"", &format!("{extra}\"lsn\""));
        assert_eq!(
            parse_line(line.as_bytes()).map(|f| f.lsn),
            Ok(1234567),
            "{line}"
        );
    }
    // An escaped known name is that field.
    let escaped = GOOD.replace("\"lsn\":1234567", "\"ls\\u006e\":7");
    assert_eq!(parse_line(escaped.as_bytes()).map(|f| f.lsn), Ok(7));
}

#[test]
fn a_lone_surrogate_is_named_as_such() {
    for sample in [
        r#""N\ud800""#,
        r#""N\ud800x""#,
        r#""N\udc00""#,
        r#""N\ud800\u0041""#,
    ] {
        let why = reason(&GOOD.replace(r#""ja****om""#, sample));
        assert!(
            why.starts_with("field `masked_sample`: a \\u escape of half a UTF-16 surrogate pair"),
            "{sample}: {why}"
        );
    }
}

#[test]
fn rejects_nul_and_bad_utf8() {
    assert!(reason(&with("masked_sample", r#""a\u0000b""#)).contains("NUL"));
    assert!(reason(&with("primary_key", r#"{"i\u0000d":"1"}"#)).contains("NUL"));
    let mut bytes = GOOD.as_bytes().to_vec();
    bytes[20] = 0xff;
    assert!(parse_line(&bytes).unwrap_err().0.contains("invalid UTF-8"));
    // A UTF-16 file's first line, with its byte order mark, says so.
    let utf16: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain("{\"a\":1}".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    assert!(
        parse_line(&utf16)
            .unwrap_err()
            .0
            .contains("the file is UTF-16")
    );
    assert!(!parse_line(&bytes).unwrap_err().0.contains("UTF-16"));
}

#[test]
fn severity_any_case_known_only() {
    let sev = |v: &str| parse_line(with("severity", v).as_bytes()).map(|f| f.severity);
    assert_eq!(sev(r#""critical""#), Ok(Severity::Critical));
    assert_eq!(sev(r#""Info""#), Ok(Severity::Info));
    assert!(sev(r#""SEVERE""#).is_err());
}

#[test]
fn timestamps() {
    assert_eq!(
        parse_line(with("timestamp", "").as_bytes())
            .unwrap()
            .detected_at,
        None
    );
    assert!(reason(&with("timestamp", r#""now""#)).contains("RFC 3339"));
}

#[test]
fn timestamp_and_detected_at_are_compared_as_instants() {
    let both = |timestamp: &str, detected_at: &str| {
        let line = with("timestamp", timestamp)
            .replace("\"lsn\"", &format!("\"detected_at\":{detected_at},\"lsn\""));
        parse_line(line.as_bytes()).map(|f| f.detected_at)
    };
    let at = |text: &str| Ok(Some(timestamp::micros(text.as_bytes()).unwrap()));
    assert_eq!(
        both(
            r#""2026-11-27T10:15:02Z""#,
            r#""2026-11-27T10:15:02+00:00""#
        ),
        at("2026-11-27T10:15:02Z"),
        "one instant, written two ways"
    );
    assert_eq!(
        both(
            r#""2026-11-27T12:15:02.5+02:00""#,
            r#""2026-11-27 10:15:02.500000z""#
        ),
        at("2026-11-27T10:15:02.5Z"),
        "another offset, a space, more digits"
    );
    assert_eq!(
        both(
            r#""2026-11-27T10:15:02.1234564Z""#,
            r#""2026-11-27T10:15:02.123456Z""#
        ),
        at("2026-11-27T10:15:02.123456Z"),
        "equal once rounded to microseconds, as stored"
    );
    assert_eq!(
        both(r#""2026-11-27T10:15:02Z""#, "null"),
        at("2026-11-27T10:15:02Z"),
        "null is absent"
    );
    for (timestamp, detected_at) in [
        (
            r#""2026-11-27T10:15:02Z""#,
            r#""2026-11-27T10:15:02+01:00""#,
        ),
        (
            r#""2026-11-27T10:15:02.123456Z""#,
            r#""2026-11-27T10:15:02.123457Z""#,
        ),
    ] {
        let err = both(timestamp, detected_at).unwrap_err().0;
        assert!(
            err.contains("`timestamp` and `detected_at` disagree"),
            "{err}"
        );
    }
    let err = both(r#""2026-11-27T10:15:02Z""#, r#""garbage""#)
        .unwrap_err()
        .0;
    assert!(
        err.starts_with("field `detected_at`: \"garbage\" is not an RFC 3339 timestamp"),
        "{err}"
    );
    let err = both(r#""garbage""#, r#""2026-11-27T10:15:02Z""#)
        .unwrap_err()
        .0;
    assert!(
        err.starts_with("field `timestamp`: \"garbage\" is not an RFC 3339 timestamp"),
        "{err}"
    );
    let err = both(r#""2026-11-27T10:15:02Z""#, r#""2026-11-27T10:15:02""#)
        .unwrap_err()
        .0;
    assert!(err.contains("field `detected_at`"), "{err}");
}

#[test]
fn a_control_character_in_a_key_is_invalid_json() {
    let tail = GOOD.len() - 1;
    for key in ["z\u{1}z", "ls\u{0}n", "tab\there"] {
        let line = format!(r#"{},"{key}":"v"}}"#, &GOOD[..tail]);
        let why = reason(&line);
        assert!(
            why.starts_with("invalid JSON: control character"),
            "{key:?}: {why}"
        );
        let column = GOOD.len() + 2 + key.find(|c: char| c < ' ').expect("a control character");
        assert!(
            why.ends_with(&format!("at column {column}")),
            "{key:?}: {why}"
        );
    }
    // Escaped, it is a key like any other.
    let line = format!(r#"{},"z\u0001z":"v"}}"#, &GOOD[..tail]);
    assert!(parse_line(line.as_bytes()).is_ok());
}
