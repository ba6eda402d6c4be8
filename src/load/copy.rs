//! COPY text format: one finding encoded as a row, its fields in the order
//! of `table::COLUMNS`.

use std::io::Write;

use super::record::Finding;

/// Appends one finding as a row of COPY text format.
pub fn encode(finding: &Finding<'_>, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    for field in [
        &*finding.database,
        &finding.rule_id,
        &finding.description,
        &finding.category,
        finding.severity.as_str(),
        &finding.schema_name,
        &finding.table_name,
        &finding.column_name,
        &finding.masked_sample,
    ] {
        copy_escape(field.as_bytes(), out);
        out.push(b'\t');
    }
    scratch.clear();
    scratch.push(b'{');
    for (index, (name, value)) in finding.primary_key.iter().enumerate() {
        if index > 0 {
            scratch.push(b',');
        }
        serde_json::to_writer(&mut *scratch, name).expect("writing JSON to memory cannot fail");
        scratch.push(b':');
        serde_json::to_writer(&mut *scratch, value).expect("writing JSON to memory cannot fail");
    }
    scratch.push(b'}');
    copy_escape(scratch, out);
    out.push(b'\t');
    write!(out, "{}", finding.lsn).expect("writing to memory cannot fail");
    if let Some(at) = &finding.detected_at {
        out.push(b'\t');
        copy_escape(at.as_bytes(), out);
    }
    out.push(b'\n');
}

/// Escapes a value for COPY text format: backslash, and the characters that
/// would end a column or a row.
fn copy_escape(value: &[u8], out: &mut Vec<u8>) {
    if !value
        .iter()
        .any(|b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t'))
    {
        out.extend_from_slice(value);
        return;
    }
    for &byte in value {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(byte),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_copy_text() {
        let mut out = Vec::new();
        copy_escape(b"a\\b\tc\nd\re", &mut out);
        assert_eq!(out, b"a\\\\b\\tc\\nd\\re");
    }
}
