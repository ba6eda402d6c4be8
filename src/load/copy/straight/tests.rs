//! The straight path against the record path: whatever line the first
//! takes, the second takes too and writes the same row.

use super::*;
use crate::load::copy::encode;
use crate::load::record::parse_line;

const WIRES: [Wire; 4] = [
    Wire {
        primary_key: PrimaryKeyType::Jsonb,
        lsn: LsnType::Bigint,
    },
    Wire {
        primary_key: PrimaryKeyType::Json,
        lsn: LsnType::Bigint,
    },
    Wire {
        primary_key: PrimaryKeyType::Jsonb,
        lsn: LsnType::Numeric,
    },
    Wire {
        primary_key: PrimaryKeyType::Json,
        lsn: LsnType::Numeric,
    },
];

/// Lines of the shapes the straight path is for.
const USUAL: &[&str] = &[
    r#"{"database":"primary/billing","rule_id":"credit-card","description":"Credit card numbers","category":"PCI_DSS","severity":"CRITICAL","schema_name":"public","table_name":"users","column_name":"email","masked_sample":"12****n8","primary_key":{"id":"262950629"},"lsn":23805974,"timestamp":"2026-11-01T00:00:00.000000+00:00"}"#,
    r#"{"database":"d","rule_id":"r","description":"x","category":"c","severity":"high","schema_name":"s","table_name":"t","column_name":"c","masked_sample":"m","lsn":0}"#,
    r#"{"database":"d","rule_id":"r","description":"x","category":"c","severity":"Info","schema_name":"s","table_name":"t","column_name":"c","masked_sample":"m","primary_key":{"id":"4","tenant":"t-7"},"lsn":"16/B374D848","timestamp":"2000-01-01T00:00:00.0000005Z"}"#,
    r#"{"database":"d","rule_id":"r","description":"x","category":"c","severity":"LOW","schema_name":"s","table_name":"t","column_name":"c","masked_sample":"m","primary_keys":[["id","42"],["tenant","t-7"]],"lsn":9223372036854775807}"#,
    r#"{ "lsn" : 7 , "database" : "é€😀" , "rule_id":"r","description":"","category":"c","severity":"medium","schema_name":"s","table_name":"t","column_name":"c","masked_sample":"J\u00e9","primary_key" : { "a" : "1" , "b" : "" } , "timestamp" : "2024-02-29 23:59:60-15:59" }  "#,
    r#"{"version":2,"database":"d","rule_id":"r","description":"x","category":"c","severity":"HIGH","schema_name":"s","table_name":"t","column_name":"c","masked_sample":"m","extra":"yes","flag":true,"none":null,"off":false,"primary_key":null,"timestamp":null,"lsn":1}"#,
    r#"{"database":"d","rule_id":"r","description":"x","category":"c","severity":"HIGH","schema_name":"s","table_name":"t","column_name":"c","masked_sample":"m","primary_key":{},"primary_keys":null,"lsn":1,"detected_at":"2026-11-27T10:15:02.123845643+00:00"}"#,
    r#"{"database":"d","rule_id":"r","description":"x","category":"c","severity":"HIGH","schema_name":"s","table_name":"t","column_name":"c","masked_sample":"m","primary_keys":[],"lsn":1}"#,
    r#"{"database":"primary/orders","rule_id":"windows-path","description":"User paths like C:\\Users\\<name>","category":"PII","severity":"LOW","schema_name":"billing","table_name":"invoices","column_name":"iban","masked_sample":"\\\\fs01\\****\\home \"q\"","primary_key":{"id":"8677","tenant":"t-30"},"lsn":97500124407,"timestamp":"2026-11-27T10:15:02.124713029+00:00"}"#,
    r#"{"database":"a\\b","rule_id":"r\"","description":"IBAN\taccount numbers\n\r\b\f\/","category":"c","severity":"HIGH","schema_name":"s","table_name":"t","column_name":"c","masked_sample":"\\\\fs01\\****\\home","primary_key":{"id":"1"},"note":"say \"hi\"","lsn":1,"timestamp":"2026-11-27T10:15:02.123845643+00:00"}"#,
];

/// The row the record path writes for `line`, or None when it rejects it.
fn record_row(line: &[u8], wire: Wire) -> Option<Vec<u8>> {
    let finding = parse_line(line).ok()?;
    let mut out = Vec::new();
    encode(&finding, &mut out, wire);
    Some(out)
}

thread_local! {
    /// One for every line a test thread scans, as the reader keeps one:
    /// what it kept of a line must not sway the next.
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::new());
}

/// Whether the straight path takes `line`; when it does, the record path
/// must too, with the same row, lsn and timing.
fn agrees(line: &[u8]) -> bool {
    let Some(usual) = SCRATCH.with_borrow_mut(|scratch| Usual::scan(line, scratch)) else {
        return false;
    };
    let finding = parse_line(line).unwrap_or_else(|reason| {
        panic!(
            "taken, but the record path says {reason}: {:?}",
            String::from_utf8_lossy(line)
        )
    });
    assert_eq!(usual.lsn(), finding.lsn);
    assert_eq!(usual.is_timed(), finding.detected_at.is_some());
    for wire in WIRES {
        let mut out = Vec::new();
        usual.encode(&mut out, wire);
        assert_eq!(
            Some(out),
            record_row(line, wire),
            "{:?} {wire:?}",
            String::from_utf8_lossy(line)
        );
    }
    true
}

#[test]
fn usual_lines_are_taken_and_written_as_the_record_path_writes_them() {
    for line in USUAL {
        // The \u escape in one of them is left to the record path.
        let taken = agrees(line.as_bytes());
        assert_eq!(taken, !line.contains(r"\u"), "{line}");
        let unescaped = line.replace(r"\u00e9", "é");
        assert!(agrees(unescaped.as_bytes()), "{unescaped}");
    }
}

#[test]
fn unusual_and_invalid_lines_are_left_to_the_record_path() {
    let good = USUAL[1];
    for line in [
        good.replace(r#""lsn":0"#, r#""lsn":0,"lsn":1"#),
        good.replace(r#""lsn":0"#, r#""lsn":1.0"#),
        good.replace(r#""lsn":0"#, r#""lsn":-1"#),
        good.replace(r#""lsn":0"#, r#""lsn":01"#),
        good.replace(r#""lsn":0"#, r#""lsn":9223372036854775808"#),
        good.replace(r#""lsn":0"#, r#""lsn":0,"x":{"y":1}"#),
        good.replace(r#""lsn":0"#, r#""lsn":0,"x":[1]"#),
        good.replace(
            r#""lsn":0"#,
            r#""lsn":0,"timestamp":"2026-02-30T00:00:00Z""#,
        ),
        good.replace(
            r#""lsn":0"#,
            r#""lsn":0,"timestamp":"2026-01-01T00:00:00Z","detected_at":"2026-01-01T00:00:00Z""#,
        ),
        // Compared as instants by the record path, whatever their text.
        good.replace(
            r#""lsn":0"#,
            r#""lsn":0,"timestamp":"2026-01-01T00:00:00Z","detected_at":"2026-01-01T00:00:00+00:00""#,
        ),
        good.replace(
            r#""lsn":0"#,
            r#""lsn":0,"timestamp":"2026-01-01T00:00:00Z","detected_at":"garbage""#,
        ),
        good.replace(r#""lsn":0"#, r#""lsn":0,"primary_key":{"a":"1","a":"2"}"#),
        good.replace(r#""lsn":0"#, r#""lsn":0,"primary_key":{"a":1}"#),
        good.replace(
            r#""lsn":0"#,
            r#""lsn":0,"primary_key":{},"primary_keys":[]"#,
        ),
        good.replace(r#""high""#, r#""urgent""#),
        good.replace(r#""high""#, r#"null"#),
        good.replace(r#""x""#, "\"a\tb\""),
        good.replace(r#""x""#, r#""a\u0000b""#),
        good.replace(r#""x""#, r#""a\xb""#),
        good.replace(r#""high""#, r#""hi\u0067h""#),
        good.replace(r#""lsn":0"#, r#""lsn":0,"primary_key":{"a":"\n"}"#),
        good.replace(r#","lsn":0"#, ""),
        good.replace(r#""rule_id":"r","#, ""),
        format!("{good},"),
        format!("[{good}]"),
        good[..good.len() - 1].to_string(),
    ] {
        assert!(Usual::scan(line.as_bytes(), &mut Scratch::new()).is_none(), "{line}");
    }
    let nine = (0..9).map(|n| format!(r#""c{n}":"v""#)).collect::<Vec<_>>();
    let wide = good.replace(
        r#""lsn":0"#,
        &format!(r#""lsn":0,"primary_key":{{{}}}"#, nine.join(",")),
    );
    assert!(
        Usual::scan(wide.as_bytes(), &mut Scratch::new()).is_none(),
        "more columns than kept"
    );
    assert!(parse_line(wide.as_bytes()).is_ok());
}

#[test]
fn tails_as_the_scanner_writes_them_and_near_them_agree() {
    let head = r#"{"database":"d","rule_id":"r","description":"x","category":"c","severity":"HIGH","schema_name":"s","table_name":"t","column_name":"c","masked_sample":"m","#;
    let stamp = r#""timestamp":"2026-11-27T10:15:02.123845643+00:00""#;
    let taken = [
        r#""lsn":1}"#.to_owned(),
        format!(r#""lsn":12345678901,{stamp}}}"#),
        format!(r#""primary_key":{{}},"lsn":1,{stamp}}}"#),
        format!(r#""primary_key":{{"id":"42"}},"lsn":1,{stamp}}}"#),
        r#""primary_key":{"id":"4","tenant":"t-7","é":""},"lsn":9223372036854775807}"#.to_owned(),
        format!(r#""primary_key":{{"id":"1"}},"lsn":"16/B374D848",{stamp}}}"#),
        format!(r#""primary_key":{{"id":"1"}} ,"lsn":1,{stamp}}}"#),
        format!(r#""primary_key":{{ "id":"1"}},"lsn":1,{stamp}}}"#),
        format!(r#""primary_key":null,"lsn":1,{stamp}}}"#),
        format!(r#""primary_key":{{"id":"1"}},"lsn":1,{stamp} }}"#),
        r#""primary_key":{"id":"1"},"lsn":1,"timestamp":null}"#.to_owned(),
        format!(r#""primary_key":{{"id":"1"}},"lsn":1,{stamp},"extra":1}}"#),
        format!(r#""lsn":1,"primary_key":{{"id":"1"}},{stamp}}}"#),
        format!(r#""primary_key":{{"id":"1"}},{stamp},"lsn":1}}"#),
    ];
    for tail in &taken {
        let line = format!("{head}{tail}");
        assert!(agrees(line.as_bytes()), "{line}");
    }
    let refused = [
        format!(r#""primary_key":{{"id":"1","id":"2"}},"lsn":1,{stamp}}}"#),
        format!(r#""primary_key":{{"id":1}},"lsn":1,{stamp}}}"#),
        format!(r#""primary_key":{{"id":"a"b"}},"lsn":1,{stamp}}}"#),
        format!(r#""primary_key":{{"id":"1",}},"lsn":1,{stamp}}}"#),
        format!(r#""primary_key":{{"id":"1"}},"lsn":01,{stamp}}}"#),
        format!(r#""primary_key":{{"id":"1"}},"lsn":1.5,{stamp}}}"#),
        r#""primary_key":{"id":"1"},"lsn":1,"timestamp":"2026-11-27"}"#.to_owned(),
        r#""primary_key":{"id":"1"},"lsn":1,"timestamp":"2026\/11"}"#.to_owned(),
        format!(r#""primary_key":{{"id":"1"}},"lsn":1,{stamp},"lsn":2}}"#),
        format!(r#""primary_key":{{"id":"1"}},"lsn":1,{stamp}}}}}"#),
        format!(r#""primary_key":{{"id":"1"}},"lsn":1,{stamp}"#),
        format!(r#""primary_key":{{"id":"1"}},"lsn":1,,{stamp}}}"#),
    ];
    for tail in &refused {
        let line = format!("{head}{tail}");
        assert!(
            Usual::scan(line.as_bytes(), &mut Scratch::new()).is_none(),
            "{line}"
        );
    }
}

#[test]
fn lines_as_the_scanner_writes_them_are_read_by_the_ranks_of_their_quotes() {
    let head = r#"{"database":"d","rule_id":"r","description":"x","category":"c","severity":"HIGH","schema_name":"s","table_name":"t","column_name":"c","masked_sample":"m","#;
    let stamp = r#""timestamp":"2026-11-27T10:15:02.123845643+00:00""#;
    let key = r#""primary_key":{"id":"4","tenant":"t-7","é":""}"#;
    let tails = [
        (r#""lsn":1}"#.to_owned(), true),
        (format!(r#""lsn":12345678901,{stamp}}}"#), true),
        (format!(r#""primary_key":{{}},"lsn":1,{stamp}}}"#), true),
        (format!(r#"{key},"lsn":9223372036854775807}}"#), true),
        (format!(r#"{key},"lsn":7,{stamp}}}"#), true),
        // Taken by the walk, not by rank.
        (format!(r#"{key},"lsn":"16/B374D848",{stamp}}}"#), false),
        (format!(r#"{key},"lsn":1,{stamp} }}"#), false),
        (format!(r#"{key} ,"lsn":1,{stamp}}}"#), false),
        (format!(r#""primary_key":null,"lsn":1,{stamp}}}"#), false),
        (format!(r#"{key},"lsn":1,{stamp},"extra":"x"}}"#), false),
        (format!(r#""lsn":1,{key},{stamp}}}"#), false),
        (format!(r#"{key},"lsn":1,"timestamp":"a\"b"}}"#), false),
        // Taken by neither.
        (
            format!(r#""primary_key":{{"id":"1","id":"2"}},"lsn":1,{stamp}}}"#),
            false,
        ),
        (format!(r#"{key},"lsn":1,{stamp}}}}}"#), false),
        (format!(r#"{key},"lsn":1,"timestamp":"x"y"}}"#), false),
    ];
    let mut lines: Vec<(String, bool)> = tails
        .into_iter()
        .map(|(tail, by_rank)| (format!("{head}{tail}"), by_rank))
        .collect();
    lines.push((USUAL[0].to_owned(), true));
    lines.push((head.replace(r#""x""#, r#""x\ty""#) + r#""lsn":1}"#, false));
    lines.push((format!(" {head}\"lsn\":1}}"), false));
    let mut scratch = Scratch::new();
    for (line, by_rank) in &lines {
        let line = line.as_bytes();
        scratch
            .masks
            .make(line)
            .expect("a short line without control characters");
        let mut ranked = Fields::default();
        let taken = flat::fields(line, &scratch.masks, &mut scratch.quotes, &mut ranked);
        assert_eq!(
            taken.is_some(),
            *by_rank,
            "{}",
            String::from_utf8_lossy(line)
        );
        let mut walked = Fields::default();
        let mut walk = Walk::new(line, &scratch.masks);
        let walks = walk.object(&mut walked).is_some() && {
            walk.spaces();
            walk.at == line.len()
        };
        if *by_rank {
            assert!(walks, "{}", String::from_utf8_lossy(line));
            assert_eq!(ranked, walked, "{}", String::from_utf8_lossy(line));
        }
    }
}

/// A line that differs from `line` by one byte: deleted, doubled, replaced
/// or inserted, at a place and of a value `random` picks.
fn mutation(line: &[u8], mut random: impl FnMut() -> u64) -> Vec<u8> {
    const BYTES: &[u8] = b"\"\\{}[]:, 09-.eEnlt\t\0\x1f\xc3\xa9\xffaZ/";
    let at = random() as usize % line.len();
    let byte = BYTES[random() as usize % BYTES.len()];
    let mut out = line.to_vec();
    match random() % 4 {
        0 => {
            out.remove(at);
        }
        1 => out.insert(at, line[at]),
        2 => out[at] = byte,
        _ => out.insert(at, byte),
    }
    out
}

#[test]
fn whatever_the_straight_path_takes_the_record_path_writes_alike() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut taken, mut tried) = (0, 0);
    for line in USUAL {
        let mut line = line.as_bytes().to_vec();
        for _ in 0..3000 {
            let mutated = mutation(&line, &mut random);
            tried += 1;
            if agrees(&mutated) {
                taken += 1;
                // Walk on from a line still taken, so that mutations pile up.
                if random() % 4 == 0 {
                    line = mutated;
                }
            }
        }
    }
    // Many single-byte changes leave a valid line (a digit, a letter in a
    // string): the comparison above ran on those.
    assert!(taken > tried / 10, "{taken} of {tried} taken");
}
